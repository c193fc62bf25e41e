"""How often random glimpses of each size earn a reward on an env: mean reward and the share of big gains and
big losses per scale band, over uniform random actions. A task designer's check of how sparse the signal is.

Usage::

    python scripts/probe_rewards.py                                          # the fast find-and-zoom id
    python scripts/probe_rewards.py --env-id AdaGlimpse-Photos-v0 --threshold 1.0
"""

from __future__ import annotations

import argparse
import itertools
import sys

import gymnasium as gym
import numpy as np

import adaglimpse_env  # noqa: F401  (registers the ids)
from adaglimpse_env import GlimpseVectorEnv
from agents.config import parse_key_values, positive_int


def probe(env: GlimpseVectorEnv, steps: int, bands: int, threshold: float, seed: int) -> list[dict[str, float]]:
    """Rows of ``{low, high, mean, gain, loss}`` per band of the scale action, over ``steps`` vector steps."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    scales, rewards = [], []
    for _ in range(steps):
        actions = rng.uniform(-1.0, 1.0, size=(env.num_envs, 3)).astype(np.float32)
        _, reward, *_ = env.step(actions)
        scales.append(actions[:, 2])
        rewards.append(np.asarray(reward))
    scale, reward = np.concatenate(scales), np.concatenate(rewards)
    edges = np.linspace(-1.0, 1.0, bands + 1)
    rows = []
    for low, high in itertools.pairwise(edges):
        band = reward[(scale >= low) & (scale <= high if high == 1.0 else scale < high)]
        rows.append({"low": low, "high": high, "mean": float(band.mean()), "gain": float(np.mean(band > threshold)),
                     "loss": float(np.mean(band < -threshold)), "steps": int(band.size)})  # fmt: skip
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="AdaGlimpse-ClutteredDigits-Fast-v0", help="registered id")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE", help="extra gym.make_vec kwargs")
    parser.add_argument("--num-envs", type=positive_int, default=64, help="envs stepped together")
    parser.add_argument("--steps", type=positive_int, default=120, help="vector steps of random actions")
    parser.add_argument("--bands", type=positive_int, default=5, help="scale bands")
    parser.add_argument("--threshold", type=float, default=0.1, help="gain above it, loss below minus it")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scenes and the actions")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = gym.make_vec(args.env_id, num_envs=args.num_envs, **parse_key_values(args.env_kwargs))
    assert isinstance(env, GlimpseVectorEnv)
    rows = probe(env, args.steps, args.bands, args.threshold, args.seed)
    env.close()
    print(f"# {args.env_id}, {args.steps} x {args.num_envs} random steps, threshold {args.threshold}")
    print("| scale band | mean reward | share of gains | share of losses | steps |\n|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| [{row['low']:+.1f}, {row['high']:+.1f}) | {row['mean']:+.4f} | {row['gain']:.3f} | "
              f"{row['loss']:.3f} | {row['steps']} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
