"""How fast SAC learns on a glimpse env: updates per second, env steps per second while learning, and where an
update's time goes, for each observation preset, measured in one run.

For each ``--presets`` entry (``full`` and ``latent`` get the original trunk, ``flat`` SB3's MLP, ``map`` the small
CNN of :mod:`agents.map_features`), a SAC with the paper's settings (:func:`agents.sac.make_sac`, batch
``--batch-size``) fills its replay buffer with random steps, then SB3's own update (``SAC.train``) and ours
(:class:`agents.sac.GlimpseSAC`, the same numbers with one trunk backward fewer) run ``--updates`` updates each, in
turn, ``--repeats`` times; the table gives the median updates/s of each and their ratio taken pair by pair (pairing
keeps the ratio honest on a noisy machine). Then a breakdown of our update by phase (replay sample and float16
decode, actor forward, target computation, critic forward/backward/step, actor loss/backward/step, target
update; on ``map`` the actor loss includes the where-map loss, which the paired comparison leaves out as SB3 has
none), and env steps/s while learning (``learn`` with one update per vector step, ``--num-envs`` envs).

``--critic-search`` measures instead the default agent of ``train_sac.py`` (``map``, acting by critic search,
:mod:`agents.critic_search`) against the same agent with 256-wide Q heads (session 7's, before the heads shrank
to :data:`agents.sac.SEARCH_CRITIC_WIDTH`): updates/s at batch ``--batch-size`` and milliseconds to act for
``--num-envs`` envs, both timed in alternating blocks, ratios pair by pair.

``--against-paper`` measures the issue's before and after in one run: SB3's own update of the paper's SAC on the
``full`` preset (the original trunk, batch ``--batch-size``, as ``train_sac.py`` ran before the default moved to
critic search) against the default agent of ``train_sac.py`` (its settings from ``configs/sac/digits.yaml``), in
alternating blocks, with env steps/s while learning at each one's own updates per vector step and the number of
updates each README run plans (``configs/sac/embedded.yaml``, the README run when the issue was filed, against
today's defaults).

Usage::

    python scripts/benchmark_sac.py                                  # digits id, full latent flat map, CPU
    python scripts/benchmark_sac.py --env-id AdaGlimpse-ClutteredDigits-Fast-v0 --critic-search --batch-size 64
    python scripts/benchmark_sac.py --presets latent --threads 1 2   # thread counts side by side
    python scripts/benchmark_sac.py --env-id AdaGlimpse-ClutteredDigits-Fast-v0 --against-paper --threads 2
    python scripts/benchmark_sac.py --device cuda                    # the networks on a GPU (env on the CPU)
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from stable_baselines3 import SAC
from stable_baselines3.common.logger import configure
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

import adaglimpse_env  # noqa: F401  (registers the ids)
from agents.critic_search import CriticSearch
from agents.sac import SEARCH_CRITIC_WIDTH, GlimpseSAC, make_sac
from agents.sb3_adapter import make_sb3_vec_env

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "sac"
#: The README's SAC run when the issue on learning per CPU minute was filed (the photo preset since), and today's
#: (train_sac.py's defaults written out; tests/scripts/test_agent_scripts.py keeps the two equal).
ISSUE_README_RUN, DEFAULT_README_RUN = CONFIGS / "embedded.yaml", CONFIGS / "digits.yaml"


def updates_per_second(model: OffPolicyAlgorithm, train: Any, updates: int, batch_size: int) -> float:
    """Updates/s of ``train(model, gradient_steps=updates, batch_size=batch_size)`` (e.g. ``SAC.train`` or
    ``GlimpseSAC.train``; benchmark_grid_dqn.py times ``DQN.train`` and ``GridDQN.train`` with it)."""
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    start = time.perf_counter()
    train(model, gradient_steps=updates, batch_size=batch_size)
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    return updates / (time.perf_counter() - start)


def phase_milliseconds(model: GlimpseSAC, updates: int, batch_size: int) -> dict[str, float]:
    """Milliseconds per update of ``GlimpseSAC.train`` by phase (:attr:`GlimpseSAC.phase_seconds`), over ``updates``."""
    model.phase_seconds = {}
    GlimpseSAC.train(model, gradient_steps=updates, batch_size=batch_size)
    phases = {name: 1000 * seconds / updates for name, seconds in model.phase_seconds.items()}
    model.phase_seconds = None
    return phases


def learn_env_steps_per_second(model: GlimpseSAC, num_envs: int, vector_steps: int, gradient_steps: int) -> float:
    """Env steps/s of ``model.learn`` with ``gradient_steps`` updates per vector step, its buffer already filled.

    Sets ``model.learning_starts`` to 0 and ``model.gradient_steps`` to ``gradient_steps`` (the model is a
    benchmark's, used up by this call); ``learn`` updates with ``GlimpseSAC.train``.
    """
    model.learning_starts, model.gradient_steps = 0, gradient_steps
    steps = num_envs * vector_steps
    start = time.perf_counter()
    model.learn(total_timesteps=steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - start)


def measure_preset(args: argparse.Namespace, preset: str, threads: int) -> dict[str, Any]:
    """One row of the table: SB3's and our update rates, our breakdown, env steps/s while learning."""
    torch.set_num_threads(threads)
    env = make_sb3_vec_env(args.env_id, num_envs=args.num_envs, observation=preset)
    fill = max(args.batch_size, args.fill_steps)
    model = make_sac(env, seed=0, device=args.device, learning_starts=fill, buffer_size=max(fill, 2_000))
    model.learn(total_timesteps=fill)  # random warm-up only: fills the buffer, no update
    model.set_logger(configure(None, []))
    GlimpseSAC.train(model, gradient_steps=2, batch_size=args.batch_size)  # warm-up: allocator, kernels
    sb3, ours, ratios = [], [], []
    # SB3's update has no where-map loss (agents/map_critic.py): compare the same numbers, then time it below.
    where_loss_weight, model.where_loss_weight = model.where_loss_weight, 0.0
    for _ in range(args.repeats):
        sb3.append(updates_per_second(model, SAC.train, args.updates, args.batch_size))
        ours.append(updates_per_second(model, GlimpseSAC.train, args.updates, args.batch_size))
        ratios.append(ours[-1] / sb3[-1])
    model.where_loss_weight = where_loss_weight
    phases = phase_milliseconds(model, args.updates, args.batch_size)
    # Env steps/s while learning: one update per vector step, the paper's setting.
    learn_rate = learn_env_steps_per_second(model, args.num_envs, args.learn_vector_steps, model.gradient_steps)
    env.close()
    return {
        "preset": preset,
        "threads": threads,
        "sb3": statistics.median(sb3),
        "ours": statistics.median(ours),
        "ratio": statistics.median(ratios),
        "phases": phases,
        "learn_env_steps": learn_rate,
    }


def measure_critic_search(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """Updates/s and acting time of the critic-search agent with Q heads of ``SEARCH_CRITIC_WIDTH`` and of 256,
    timed in alternating blocks on the same replayed transitions and observations."""
    torch.set_num_threads(threads)
    env = make_sb3_vec_env(args.env_id, num_envs=args.num_envs, observation="map")
    fill = max(args.batch_size, args.fill_steps)
    settings: dict[str, Any] = {
        "seed": 0,
        "device": args.device,
        "learning_starts": fill,
        "buffer_size": max(fill, 2_000),
        "lr_schedule": False,
        "critic_search": CriticSearch(),
    }
    default = make_sac(env, **settings)
    # The same agent with session 7's 256-wide heads: its policy arguments with that net_arch.
    wide_kwargs = {**default.policy_kwargs, "net_arch": {"pi": [256, 256], "qf": [256, 256]}}
    models = {256: make_sac(env, **settings, policy_kwargs=wide_kwargs), SEARCH_CRITIC_WIDTH: default}
    models[256].learn(total_timesteps=fill)  # random steps fill one buffer; the other replays the same one
    models[SEARCH_CRITIC_WIDTH].replay_buffer = models[256].replay_buffer
    observations = np.asarray(env.reset())
    rates: dict[int, list[float]] = {width: [] for width in models}
    acting: dict[int, list[float]] = {width: [] for width in models}
    for model in models.values():
        model.set_logger(configure(None, []))
        GlimpseSAC.train(model, gradient_steps=2, batch_size=args.batch_size)  # warm-up
    for _ in range(args.repeats):
        for width, model in models.items():
            rates[width].append(updates_per_second(model, GlimpseSAC.train, args.updates, args.batch_size))
            start = time.perf_counter()
            for _ in range(args.updates):
                model.predict(observations, deterministic=False)
            acting[width].append(1000 * (time.perf_counter() - start) / args.updates)
    env.close()
    narrow = SEARCH_CRITIC_WIDTH
    return {
        "threads": threads,
        "updates": {width: statistics.median(values) for width, values in rates.items()},
        "act_ms": {width: statistics.median(values) for width, values in acting.items()},
        "update_ratio": statistics.median(a / b for a, b in zip(rates[narrow], rates[256], strict=True)),
        "act_ratio": statistics.median(b / a for a, b in zip(acting[narrow], acting[256], strict=True)),
    }


def planned_updates(config: dict[str, Any]) -> int:
    """Gradient steps a fresh ``train_sac.py`` run of a ``configs/sac`` preset takes: ``gradient_steps`` per
    vector step after the warm-up."""
    warm = max(0, config["total_timesteps"] - config["learning_starts"])
    return warm // config["num_envs"] * config["gradient_steps"]


#: The sides of ``--against-paper``: name -> label.
AGAINST_PAPER_SIDES = {
    "paper": "paper SAC, `full`, SB3 update",
    "default": "train_sac.py default, its batch",
    "default_paper_batch": "train_sac.py default, the paper's batch",
}


def measure_against_paper(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """The paper's SAC on ``full`` through SB3's update against train_sac.py's default agent (at its own batch and
    at the paper's), in alternating blocks; ratios to the paper side pair by pair."""
    torch.set_num_threads(threads)
    default, issue_run = (yaml.safe_load(path.read_text()) for path in (DEFAULT_README_RUN, ISSUE_README_RUN))
    fill = max(args.batch_size, default["batch_size"], args.fill_steps)
    paper_env = make_sb3_vec_env(args.env_id, num_envs=args.num_envs, observation="full")
    paper = make_sac(paper_env, seed=0, device=args.device, learning_starts=fill, buffer_size=max(fill, 2_000))
    search_env = make_sb3_vec_env(args.env_id, num_envs=args.num_envs, **default["env_kwargs"])
    search = make_sac(
        search_env, seed=0, device=args.device, learning_starts=fill, buffer_size=max(fill, 2_000),
        lr_schedule=default["lr_schedule"], critic_search=CriticSearch(sharpness=default["critic_search_sharpness"]),
    )  # fmt: skip
    search.symmetry_augment = default["symmetry_augment"]
    batch = {"paper": args.batch_size, "default": default["batch_size"], "default_paper_batch": args.batch_size}
    sides = {
        "paper": (paper, SAC.train, batch["paper"]),
        "default": (search, GlimpseSAC.train, batch["default"]),
        "default_paper_batch": (search, GlimpseSAC.train, batch["default_paper_batch"]),
    }
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for model in (paper, search):
        model.learn(total_timesteps=fill)  # random warm-up only: fills the buffer
        model.set_logger(configure(None, []))
    for model, train, batch_size in sides.values():
        train(model, gradient_steps=2, batch_size=batch_size)  # warm-up: allocator, kernels
    for _ in range(args.repeats):
        for name, (model, train, batch_size) in sides.items():
            rates[name].append(updates_per_second(model, train, args.updates, batch_size))
    phases = phase_milliseconds(search, args.updates, batch["default"])
    gradient_steps = {"paper": issue_run["gradient_steps"], "default": default["gradient_steps"]}
    learning = {
        "paper": learn_env_steps_per_second(paper, args.num_envs, args.learn_vector_steps, gradient_steps["paper"]),
        "default": learn_env_steps_per_second(
            search, args.num_envs, args.learn_vector_steps, gradient_steps["default"]
        ),
    }
    paper_env.close()
    search_env.close()
    return {
        "threads": threads,
        "batch": batch,
        "updates": {name: statistics.median(values) for name, values in rates.items()},
        "ratio": {
            name: statistics.median(a / b for a, b in zip(rates[name], rates["paper"], strict=True))
            for name in ("default", "default_paper_batch")
        },
        "phases": phases,
        "learn_env_steps": learning,
        "gradient_steps": gradient_steps,
        "planned_updates": {"paper": planned_updates(issue_run), "default": planned_updates(default)},
    }


def print_against_paper(rows: list[dict[str, Any]]) -> None:
    """The ``--against-paper`` tables (the learning rate and the planned updates belong to a side's own run)."""
    print("\n| threads | side | batch | updates/s | ratio to paper | transitions/s ratio | updates per vector step |"
          " env steps/s learning | updates in its README run |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        for name, label in AGAINST_PAPER_SIDES.items():
            ratio = row["ratio"].get(name)
            ratios = f"{ratio:.2f} | {ratio * row['batch'][name] / row['batch']['paper']:.2f}" if ratio else " | "
            own = name if name in row["gradient_steps"] else None
            run = (
                f"{row['gradient_steps'][own]} | {row['learn_env_steps'][own]:.1f} | {row['planned_updates'][own]}"
                if own
                else "- | - | -"
            )
            print(
                f"| {row['threads']} | {label} | {row['batch'][name]} | {row['updates'][name]:.2f} | {ratios} | {run} |"
            )
    planned = rows[0]["planned_updates"]
    print(f"\nREADME run updates: {planned['default']} against {planned['paper']} "
          f"({planned['default'] / max(planned['paper'], 1):.1f}x)")  # fmt: skip
    print("\nMilliseconds per update of the default agent at its batch, by phase:\n")
    names = list(rows[0]["phases"])
    print("| threads | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for row in rows:
        print(f"| {row['threads']} | " + " | ".join(f"{row['phases'].get(name, 0.0):.1f}" for name in names) + " |")


def print_critic_search(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The ``--critic-search`` table."""
    narrow = SEARCH_CRITIC_WIDTH
    envs = args.num_envs
    print(f"\n| threads | updates/s, 256-wide heads | updates/s, {narrow}-wide | ratio | act ms ({envs} envs), 256 | "
          f"act ms, {narrow} | ratio |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['threads']} | {row['updates'][256]:.2f} | {row['updates'][narrow]:.2f} | "
            f"{row['update_ratio']:.2f} | {row['act_ms'][256]:.0f} | {row['act_ms'][narrow]:.0f} | "
            f"{row['act_ratio']:.2f} |"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="AdaGlimpse-ClutteredDigits-v0", help="registered id to learn on")
    parser.add_argument("--presets", nargs="+", default=["full", "latent", "flat", "map"], help="observation presets")
    parser.add_argument("--batch-size", type=int, default=128, help="transitions per update (the paper's 128)")
    parser.add_argument("--updates", type=int, default=10, help="updates per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks of each side (median)")
    parser.add_argument("--num-envs", type=int, default=16, help="envs stepped together while learning")
    parser.add_argument("--fill-steps", type=int, default=1_024, help="random env steps put in the buffer first")
    parser.add_argument("--learn-vector-steps", type=int, default=8, help="vector steps of the learning timing")
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()], help="torch threads")
    parser.add_argument("--device", default="cpu", help="where the networks train (the env runs on the CPU)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--critic-search", action="store_true", help="time the critic-search agent's update and acting instead"
    )
    mode.add_argument(
        "--against-paper", action="store_true", help="time the paper's SAC on full against train_sac.py's default"
    )
    args = parser.parse_args(argv)
    for name in ("batch_size", "updates", "repeats", "num_envs", "learn_vector_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} requires a positive integer, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    np.random.seed(0)
    print(f"# {datetime.date.today()} {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"# {args.env_id}, batch {args.batch_size}, device {args.device}, {args.num_envs} envs")
    if args.against_paper:
        print_against_paper([measure_against_paper(args, threads) for threads in args.threads])
        print(f"# load average at end {os.getloadavg()[0]:.2f}")
        return 0
    if args.critic_search:
        print_critic_search([measure_critic_search(args, threads) for threads in args.threads], args)
        print(f"# load average at end {os.getloadavg()[0]:.2f}")
        return 0
    rows = [measure_preset(args, preset, threads) for threads in args.threads for preset in args.presets]
    print("\n| preset | threads | SB3 SAC.train updates/s | GlimpseSAC updates/s | ours / SB3 | env steps/s learning |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['preset']} | {row['threads']} | {row['sb3']:.2f} | {row['ours']:.2f} | {row['ratio']:.2f} | "
            f"{row['learn_env_steps']:.1f} |"
        )
    print("\nMilliseconds per update of GlimpseSAC, by phase:\n")
    names = list(rows[0]["phases"])
    print("| preset | threads | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for row in rows:
        cells = " | ".join(f"{row['phases'].get(name, 0.0):.1f}" for name in names)
        print(f"| {row['preset']} | {row['threads']} | {cells} |")
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
