"""Evaluate glimpse policies on any env id: the task metric after every glimpse, the final score, pixels seen.

Policies: a baseline name (``random``, ``raster``, ``centre-zoom``, ``whole-first``), an SB3 zip
(``sb3:<algo>:<path.zip>``, e.g. ``sb3:sac:runs/sac/model.zip``), or the actor of an original AdaGlimpse
checkpoint (``original:<path.ckpt>``). For reconstruction envs ``--mean-image`` adds the mean-image predictor
(the per-pixel mean of the training images, no glimpse at all) as a reference row.

Prints one table and writes ``<output>.csv`` and ``<output>.json``.

Usage::

    python scripts/evaluate.py --policies random raster centre-zoom --episodes 64 --mean-image
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
from agents.config import parse_key_values
from agents.evaluation import mean_image_rmse, run_policy
from agents.policies import POLICY_SPEC_HELP, load_policy

DEFAULT_ENV_ID = "AdaGlimpse-Photos-v0"


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default=DEFAULT_ENV_ID)
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE", help="extra gym.make kwargs")
    parser.add_argument(
        "--policies", nargs="+", default=["random", "raster", "centre-zoom", "whole-first"], help=POLICY_SPEC_HELP
    )
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--split", default="val")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mean-image", action="store_true", help="add the mean-image predictor (reconstruction)")
    parser.add_argument("--show-glimpses", type=int, nargs="+", default=[0, 1, 2, 4, 8, 12])
    parser.add_argument("--output", type=Path, default=Path("runs/evaluate/results"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env_kwargs = parse_key_values(args.env_kwargs)
    env_kwargs.setdefault("device", args.device)
    # --env-kwargs split=... is the same setting as --split (and wins): never pass it twice.
    args.split = env_kwargs.pop("split", args.split)
    rows = []
    for spec in args.policies:
        env = gym.make_vec(args.env_id, num_envs=args.num_envs, split=args.split, **env_kwargs)
        assert isinstance(env, GlimpseVectorEnv)
        policy = load_policy(spec, env, args.seed, args.device)
        result = run_policy(env, policy, args.episodes, args.seed)
        rows.append({"policy": spec, "env_id": args.env_id, **result})
        env.close()
        print(f"{spec}: done ({result['episodes']} episodes)", file=sys.stderr)
    if args.mean_image:
        if rows[0]["metric"] != "rmse":
            raise SystemExit("--mean-image needs a reconstruction env")
        value = mean_image_rmse(args.env_id, env_kwargs, args.episodes, args.seed)
        steps = len(rows[0]["metric_by_glimpse"])
        rows.append({
            "policy": "mean-image predictor", "env_id": args.env_id, "episodes": args.episodes, "metric": "rmse",
            "metric_by_glimpse": [value] * steps, "final_score": -value, "return": 0.0, "pixel_fraction": 0.0,
            "mean_glimpses": 0.0,
        })  # fmt: skip
    print(f"\n{args.env_id}, {args.split} split, {args.episodes} episodes, seed {args.seed}\n")
    print(format_table(rows, args.show_glimpses))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    with args.output.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        steps = len(rows[0]["metric_by_glimpse"])
        writer.writerow(
            ["policy", "final_score", "pixel_fraction", "mean_glimpses", *[f"metric@{k}" for k in range(steps)]]
        )
        for row in rows:
            writer.writerow([row["policy"], row["final_score"], row["pixel_fraction"], row["mean_glimpses"],
                             *row["metric_by_glimpse"]])  # fmt: skip
    print(f"\nwrote {args.output.with_suffix('.csv')} and {args.output.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
