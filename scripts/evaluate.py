"""Evaluate glimpse policies on any env id: the task metric after every glimpse, the final score, pixels seen.

Policies: a baseline name (``random``, ``raster``, ``centre-zoom``, ``whole-first``; ``greedy`` is an oracle that
scores candidate glimpses on the true image, reported as an upper bound), an SB3 zip (``sb3:<algo>:<path.zip>``),
an exported actor (``sb3:sac:runs/sac_digits/agent.pt``), the shipped agent (``sb3:sac:embedded``), or the actor of
an original AdaGlimpse checkpoint (``original:<path.ckpt>``). For reconstruction envs ``--mean-image`` adds the
mean-image predictor (the per-pixel mean of the training images, no glimpse at all) as a reference row, and
``--canvas`` a row per policy for its glimpse canvas: the same episodes' glimpses drawn back where they were cut,
with no model (``agents/glimpse_canvas.py``), which says what the model adds to the pixels it was given.

Prints one table and writes ``<output>.csv`` and ``<output>.json``.

Usage::

    python scripts/evaluate.py --policies sb3:sac:embedded random raster whole-first greedy --episodes 200
    python scripts/evaluate.py --env-id AdaGlimpse-Photos-v0 --env-kwargs augment=true --policies random raster \
        centre-zoom --episodes 64 --mean-image --canvas
    python scripts/evaluate.py --env-id AdaGlimpse-ImageNet-v0 --env-kwargs data_root=/data/imagenet \\
        --policies original:adaglimpse_cls.ckpt random --episodes 1000 --device cuda
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym

import adaglimpse_env  # noqa: F401  (registers the ids)
from adaglimpse_env import GlimpseVectorEnv
from agents.baselines import ORACLES
from agents.config import ConfigError, output_files, parse_key_values, positive_int
from agents.evaluation import mean_image_rmse, run_policy
from agents.policies import POLICY_SPEC_HELP, load_policy
from agents.sb3_files import SB3FileError

DEFAULT_ENV_ID = "AdaGlimpse-ClutteredDigits-v0"
CANVAS_LABEL = "glimpse canvas (its glimpses drawn back, no model)"


def format_table(rows: list[dict[str, Any]], show: list[int]) -> str:
    metric = rows[0]["metric"]
    header = ["policy", *[f"{metric}@{k}" for k in show], "final score", "pixels seen", "glimpses"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        by_glimpse = row["metric_by_glimpse"]
        cells = [row["policy"], *[f"{by_glimpse[k]:.3f}" if k < len(by_glimpse) else "" for k in show]]
        cells += [f"{row['final_score']:.3f}", f"{row['pixel_fraction']:.3f}", f"{row['mean_glimpses']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_seen_table(rows: list[dict[str, Any]], show: list[int]) -> str:
    """Model and canvas RMSE on the pixels the glimpses covered, one line per policy run with ``--canvas``."""
    header = ["policy", "covered share", *[f"model / canvas @{k}" for k in show if k > 0]]
    suffix = f": {CANVAS_LABEL}"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if "seen_canvas_rmse_by_glimpse" not in row:
            continue
        model, canvas = row["seen_model_rmse_by_glimpse"], row["seen_canvas_rmse_by_glimpse"]
        cells = [row["policy"].removesuffix(suffix), f"{row['seen_share_by_glimpse'][-1]:.3f}"]
        cells += [f"{model[k]:.2f} / {canvas[k]:.2f}" if k < len(model) else "" for k in show if k > 0]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default=DEFAULT_ENV_ID, help=f"registered env id (default: {DEFAULT_ENV_ID})")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE", help="extra gym.make kwargs")
    parser.add_argument(
        "--policies", nargs="+", default=["random", "raster", "centre-zoom", "whole-first"], help=POLICY_SPEC_HELP
    )
    parser.add_argument("--episodes", type=positive_int, default=64, help="episodes per policy (default: 64)")
    parser.add_argument("--num-envs", type=positive_int, default=16, help="envs stepped together (default: 16)")
    parser.add_argument("--split", default="val", help="image split (default: val)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the images and the random baseline")
    parser.add_argument("--device", default="cpu", help="where the frozen model and SB3 policies run")
    parser.add_argument("--mean-image", action="store_true", help="add the mean-image predictor (reconstruction)")
    parser.add_argument(
        "--canvas",
        action="store_true",
        help="add each policy's glimpse canvas: its glimpses drawn back, no model (reconstruction; a full-size "
        "canvas per env: about 200 MB more per step at 64 envs)",
    )
    parser.add_argument(
        "--show-glimpses", type=int, nargs="+", default=None,
        help="glimpse counts shown in the table (default 0 1 2 4 8 and the budget)",
    )  # fmt: skip
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("runs/evaluate/results"),
        help="results prefix: writes <output>.csv and <output>.json (dots in the name are kept)",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="unpickle SB3 zips as plain SB3 does (runs code a crafted zip holds; only for files you trust)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    json_path, csv_path = output_files(args.output, (".json", ".csv"))
    env_kwargs = parse_key_values(args.env_kwargs)
    env_kwargs.setdefault("device", args.device)
    # --env-kwargs split=... is the same setting as --split (and wins): never pass it twice.
    args.split = env_kwargs.pop("split", args.split)
    rows = []
    image_size = 0
    for spec in args.policies:
        env = gym.make_vec(args.env_id, num_envs=args.num_envs, split=args.split, **env_kwargs)
        assert isinstance(env, GlimpseVectorEnv)
        if args.canvas and env.task.metric_name != "rmse":
            env.close()
            raise SystemExit(f"--canvas needs a reconstruction env; {args.env_id} reports {env.task.metric_name}")
        image_size = env.image_size[0]
        policy = load_policy(spec, env, args.seed, args.device, trust_pickle=args.trust_pickle)
        result = run_policy(env, policy, args.episodes, args.seed, canvas=args.canvas)
        label = f"{spec} (oracle: sees the image)" if spec in ORACLES else spec
        canvas = result.pop("canvas", None)
        rows.append({"policy": label, "env_id": args.env_id, **result})
        if canvas is not None:
            rows.append(
                {**result, **canvas, "policy": f"{spec}: {CANVAS_LABEL}", "env_id": args.env_id, "return": None}
            )
        env.close()
        print(f"{spec}: done ({result['episodes']} episodes)", file=sys.stderr)
    if args.mean_image:
        if rows[0]["metric"] != "rmse":
            raise SystemExit("--mean-image needs a reconstruction env")
        value = mean_image_rmse(args.env_id, env_kwargs, image_size, args.episodes, args.seed, split=args.split)
        steps = len(rows[0]["metric_by_glimpse"])
        rows.append({
            "policy": "mean-image predictor", "env_id": args.env_id, "episodes": args.episodes, "metric": "rmse",
            "metric_by_glimpse": [value] * steps, "final_score": -value, "return": 0.0, "pixel_fraction": 0.0,
            "mean_glimpses": 0.0,
        })  # fmt: skip
    print(f"\n{args.env_id}, {args.split} split, {args.episodes} episodes, seed {args.seed}\n")
    budget = len(rows[0]["metric_by_glimpse"]) - 1
    show = args.show_glimpses or sorted({0, 1, 2, 4, 8, budget} & set(range(budget + 1)))
    print(format_table(rows, show))
    if args.canvas:
        print("\nRMSE on the pixels some glimpse covered (the same pixels for the model and its glimpse canvas):\n")
        print(format_seen_table(rows, show))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(rows, indent=2) + "\n")
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        steps = len(rows[0]["metric_by_glimpse"])
        writer.writerow(
            ["policy", "final_score", "pixel_fraction", "mean_glimpses", *[f"metric@{k}" for k in range(steps)]]
        )
        for row in rows:
            writer.writerow([row["policy"], row["final_score"], row["pixel_fraction"], row["mean_glimpses"],
                             *row["metric_by_glimpse"]])  # fmt: skip
    print(f"\nwrote {csv_path} and {json_path}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ConfigError, SB3FileError) as error:
        sys.exit(str(error))
