"""How fast DQN over the glimpse grid updates: SB3's ``DQN.train`` against GridDQN's, measured in one run.

The benchmark's ``dqn_grid`` (:func:`agents.algorithms.build_algorithm`) is built on the ``map`` observation and
fills its replay buffer with ``--fill-steps`` random steps; an SB3 ``DQN`` with the same policy, settings and
weights replays the same buffer. Then, in alternating blocks of ``--updates`` updates, ``--repeats`` times:
SB3's update (all 845 glimpses of the state and of the next state scored), GridDQN's without symmetry
augmentation (the replayed glimpse and the 147 of the target's sub-grid), and GridDQN's as the benchmark runs it
(with augmentation). The table gives each one's median updates/s and its ratio to SB3's, taken pair by pair
(pairing keeps the ratio honest on a noisy machine). :mod:`agents.grid_dqn_learner` says why the updates differ;
tests/agent_tests/test_grid_dqn_learner.py checks that they take the same step where they should.

Usage::

    python scripts/benchmark_grid_dqn.py --threads 1 --updates 10 --repeats 3
    python scripts/benchmark_grid_dqn.py --device cuda
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
from typing import Any

import numpy as np
import torch
from benchmark_sac import updates_per_second  # a sibling script (scripts/ is on the path when run)
from stable_baselines3 import DQN
from stable_baselines3.common.logger import configure

import adaglimpse_env  # noqa: F401  (registers the ids)
from agents.algorithms import build_algorithm
from agents.grid_dqn import GlimpseGridQPolicy
from agents.grid_dqn_learner import GridDQN
from agents.sb3_adapter import make_sb3_vec_env

#: The timed updates, in the order of each block.
UPDATES = ("SB3 DQN.train", "GridDQN, no augmentation", "GridDQN (dqn_grid)")


def measure(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """Median updates/s of each of :data:`UPDATES` and their ratios to SB3's, pair by pair."""
    torch.set_num_threads(threads)
    env = make_sb3_vec_env(args.env_id, num_envs=args.num_envs, observation="map")
    fill = max(args.batch_size, args.fill_steps)
    settings = {"learning_starts": fill, "buffer_size": max(fill, 2_000), "batch_size": args.batch_size}
    grid_dqn = build_algorithm("dqn_grid", env, 0, args.device, settings)
    assert isinstance(grid_dqn, GridDQN)
    grid_dqn.learn(total_timesteps=fill)  # random steps fill the buffer that every update replays
    grid_env = grid_dqn.get_env()
    assert grid_env is not None
    sb3 = DQN(GlimpseGridQPolicy, grid_env, policy_kwargs=grid_dqn.policy_kwargs, seed=0, device=args.device,
              **settings)  # fmt: skip
    sb3.policy.load_state_dict(grid_dqn.policy.state_dict())
    sb3.replay_buffer = grid_dqn.replay_buffer
    plain = build_algorithm("dqn_grid", env, 0, args.device, {**settings, "symmetry_augment": False})
    assert isinstance(plain, GridDQN)
    plain.policy.load_state_dict(grid_dqn.policy.state_dict())
    plain.replay_buffer = grid_dqn.replay_buffer
    runs: list[tuple[DQN, Any]] = [(sb3, DQN.train), (plain, GridDQN.train), (grid_dqn, GridDQN.train)]
    for model, train in runs:
        model.set_logger(configure(None, []))
        train(model, gradient_steps=2, batch_size=args.batch_size)  # warm-up
    rates: list[list[float]] = [[] for _ in runs]
    for _ in range(args.repeats):
        for rate, (model, train) in zip(rates, runs, strict=True):
            rate.append(updates_per_second(model, train, args.updates, args.batch_size))
    env.close()
    return {
        "threads": threads,
        "rates": [statistics.median(rate) for rate in rates],
        "ratios": [statistics.median(a / b for a, b in zip(rate, rates[0], strict=True)) for rate in rates],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="AdaGlimpse-ClutteredDigits-Fast-v0", help="registered id to learn on")
    parser.add_argument("--batch-size", type=int, default=64, help="transitions per update (dqn_grid's 64)")
    parser.add_argument("--updates", type=int, default=10, help="updates per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks of each update (median)")
    parser.add_argument("--num-envs", type=int, default=16, help="envs stepped together while filling the buffer")
    parser.add_argument("--fill-steps", type=int, default=512, help="random env steps put in the buffer first")
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()], help="torch threads")
    parser.add_argument("--device", default="cpu", help="where the networks train (the env runs on the CPU)")
    args = parser.parse_args(argv)
    for name in ("batch_size", "updates", "repeats", "num_envs", "fill_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} requires a positive integer, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    np.random.seed(0)
    print(f"# {datetime.date.today()} {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"# {args.env_id}, batch {args.batch_size}, device {args.device}, {args.updates} updates x {args.repeats}")
    rows = [measure(args, threads) for threads in args.threads]
    print("\n| threads | " + " | ".join(f"{name} updates/s" for name in UPDATES) + " | " +
          " | ".join(f"{name} / SB3" for name in UPDATES[1:]) + " |")  # fmt: skip
    print("|---:|" + "---:|" * (2 * len(UPDATES) - 1))
    for row in rows:
        rates = " | ".join(f"{rate:.2f}" for rate in row["rates"])
        ratios = " | ".join(f"{ratio:.2f}" for ratio in row["ratios"][1:])
        print(f"| {row['threads']} | {rates} | {ratios} |")
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
