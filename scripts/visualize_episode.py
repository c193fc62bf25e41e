"""See where a policy looks: an animated GIF and a PNG contact sheet per episode, and one sheet comparing policies.

Every policy runs on the same images (same env id, split and seed). For each policy and episode it writes
``<output>/<policy>/episode_<k>.gif`` (one frame after the reset and one after every glimpse: the image with the
glimpse boxes coloured by step, what the agent has seen so far, the model's prediction and the score curve) and
``episode_<k>.png`` (the same frames as a contact sheet). ``<output>/comparison.png`` puts the policies side by
side: their final frame on every image and the task metric after each glimpse. Frames come from
``env.render()``, so they are the pictures TensorBoard shows during training.

Policies: a baseline name (``random``, ``raster``, ``centre-zoom``, ``whole-first``), an SB3 zip
(``sb3:<algo>:<path.zip>``) or the actor of an original AdaGlimpse checkpoint (``original:<path.ckpt>``).

Usage::

    python scripts/visualize_episode.py --policies sb3:sac:runs/sac_embedded/model.zip random --episodes 4
    python scripts/visualize_episode.py --env-id AdaGlimpse-ImageNet-v0 --env-kwargs data_root=/data/imagenet \\
        --policies original:adaglimpse_cls.ckpt random --episodes 3
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
from PIL import Image

import adaglimpse_env  # noqa: F401  (registers the ids)
from adaglimpse_env import GlimpseVectorEnv
from adaglimpse_env.rendering import animation_frame, comparison_sheet, episode_sheet, save_gif
from agents.config import parse_key_values
from agents.evaluation import EpisodeRecorder, run_policy
from agents.policies import POLICY_SPEC_HELP, load_policy, policy_label

DEFAULT_ENV_ID = "AdaGlimpse-ClutteredDigits-v0"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default=DEFAULT_ENV_ID)
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE", help="extra gym.make kwargs")
    parser.add_argument("--policies", nargs="+", default=["random", "centre-zoom"], help=POLICY_SPEC_HELP)
    parser.add_argument("--episodes", type=int, default=4, help="images per policy (the same for every policy)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fps", type=float, default=2.0, help="GIF frames per second")
    parser.add_argument("--scale", type=float, default=0.5, help="size of frames in the sheets (1 = env frame)")
    parser.add_argument("--columns", type=int, default=2, help="frames per row of an episode sheet")
    parser.add_argument("--no-gif", action="store_true", help="only write the PNG sheets")
    parser.add_argument("--comparison-only", action="store_true", help="only write comparison.png")
    parser.add_argument(
        "--palette", action="store_true", help="256-colour PNGs (about 3x smaller; for pictures kept in git)"
    )
    parser.add_argument("--output", type=Path, default=Path("runs/visualize"), help="folder of the pictures")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="unpickle SB3 zips as plain SB3 does (runs code a crafted zip holds; only for files you trust)",
    )
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes requires a positive count, got {args.episodes}")
    if args.columns < 1:
        parser.error(f"--columns requires a positive count, got {args.columns}")
    if args.scale <= 0:
        parser.error(f"--scale requires a positive factor, got {args.scale}")
    return args


def folder_name(label: str) -> str:
    """A file-system-safe folder name for a policy label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "policy"


def save_png(picture: np.ndarray, path: Path, palette: bool) -> None:
    """Write ``picture`` as PNG, optionally reduced to 256 colours."""
    image = Image.fromarray(picture)
    (image.quantize(256, dither=Image.Dither.NONE) if palette else image).save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env_kwargs = parse_key_values(args.env_kwargs)
    env_kwargs.setdefault("device", args.device)
    final_frames: dict[str, list[np.ndarray]] = {}
    metric_curves: dict[str, list[float]] = {}
    metric = ""
    for spec in args.policies:
        label = policy_label(spec)
        # One round with one env per episode: every policy sees the same images (same seed, fresh env).
        env = gym.make_vec(args.env_id, num_envs=args.episodes, split=args.split, render_mode="rgb_array", **env_kwargs)
        assert isinstance(env, GlimpseVectorEnv)
        policy = load_policy(spec, env, args.seed, args.device, trust_pickle=args.trust_pickle)
        recorder = EpisodeRecorder(render_episodes=None)
        result = run_policy(env, policy, args.episodes, args.seed, recorder)
        num_steps = env.num_glimpses
        env.close()

        folder = args.output / folder_name(label)
        for episode, (frames, scores) in enumerate(zip(recorder.frames, recorder.scores, strict=True)):
            if args.comparison_only:
                break
            folder.mkdir(parents=True, exist_ok=True)
            title = f"{label}, {args.env_id} ({args.split}), episode {episode}"
            sheet = episode_sheet(frames, scores, title, columns=args.columns, scale=args.scale)
            save_png(sheet, folder / f"episode_{episode:02d}.png", args.palette)
            if not args.no_gif:
                animation = [
                    animation_frame(frame, scores, step, num_steps, f"{label}, episode {episode}")
                    for step, frame in enumerate(frames)
                ]
                save_gif(animation, folder / f"episode_{episode:02d}.gif", fps=args.fps)
        final_frames[label] = [frames[-1] for frames in recorder.frames]
        metric, metric_curves[label] = result["metric"], result["metric_by_glimpse"]
        final = ", ".join(f"{value:.3f}" for value in result["metric_by_glimpse"][-1:])
        where = "" if args.comparison_only else f" -> {folder}"
        print(f"{label}: {args.episodes} episodes, {metric} after {num_steps} glimpses {final}{where}")

    args.output.mkdir(parents=True, exist_ok=True)
    comparison = comparison_sheet(final_frames, metric_curves, metric, scale=args.scale)
    save_png(comparison, args.output / "comparison.png", args.palette)
    print(f"wrote {args.output / 'comparison.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
