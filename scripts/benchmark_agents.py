"""Train and evaluate RL algorithms and baselines on one glimpse env, same budget and seeds, one table.

Every algorithm trains for ``--timesteps`` env steps on the training images through the native vector env
(:class:`agents.sb3_adapter.GlimpseSB3VecEnv`), then acts deterministically on held-out images; baselines are only
evaluated. The table gives the task metric after the last glimpse (mean ± std over seeds), the final score, the
training wall time and env steps per second. Runs can be spread over worker processes (``--workers``).

Add an algorithm in a few lines: put a factory in ``agents.algorithms.ALGORITHMS`` (it takes ``**overrides`` too
if it should honour ``--algorithm-kwargs``; the built-in factories also name their constructors, so that a
misspelt override is refused before any run starts)::

    ALGORITHMS["my_sac"] = lambda env, seed, device, **overrides: SAC(
        "MultiInputPolicy", env, seed=seed, device=device, policy_kwargs=sac_policy_kwargs(), **overrides)

Usage::

    python scripts/benchmark_agents.py --algorithms sac --baselines random raster --seeds 0 1 2 --timesteps 10000
    python scripts/benchmark_agents.py --env-kwargs observation=map --algorithms ppo_grid --algorithm-kwargs \
        learning_rate=0.001 n_steps=32          # one algorithm's settings changed
    python scripts/benchmark_agents.py --env-id AdaGlimpse-ImageNet-Reconstruction-v0 \\
        --env-kwargs data_root=/data/imagenet checkpoint=mae.ckpt --algorithms sac td3 ppo tqc --workers 4
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import adaglimpse_env  # noqa: F401  (registers the ids)
from adaglimpse_env import GlimpseVectorEnv
from agents.algorithms import ALGORITHMS, AlgorithmSettingsError, build_algorithm, check_overrides
from agents.baselines import BASELINES, make_baseline
from agents.callbacks import EvaluationCallback
from agents.config import parse_key_values
from agents.evaluation import run_policy
from agents.grid_dqn import acting_policy
from agents.sb3_adapter import make_sb3_vec_env
from agents.workers import worker_pool


def job_devices(device: str, count: int) -> list[str]:
    """The device of each of ``count`` runs: ``cuda`` spreads them round-robin over every visible GPU; anything
    else (``cpu``, ``cuda:1``) is used as given."""
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    if gpus > 1:
        return [f"cuda:{index % gpus}" for index in range(count)]
    return [device] * count


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train (unless a baseline) and evaluate one (policy, seed) pair; runs in a worker process."""
    torch.set_num_threads(job["threads"])
    kwargs = {"device": job["device"], **job["env_kwargs"]}  # the frozen model runs where the agent does
    eval_env = gym.make_vec(job["env_id"], num_envs=job["eval_envs"], split="val", **kwargs)
    assert isinstance(eval_env, GlimpseVectorEnv)
    train_seconds, steps_per_second = 0.0, float("nan")
    curve: list[dict[str, Any]] = []
    if job["name"] in BASELINES:
        policy: Any = make_baseline(job["name"], eval_env, seed=job["seed"])
    else:
        train_env = make_sb3_vec_env(job["env_id"], num_envs=job["num_envs"], split="train", **kwargs)
        model = build_algorithm(job["name"], train_env, job["seed"], job["device"], job["algorithm_kwargs"])
        policy = acting_policy(model)  # a model trained on discrete glimpses acts on the env's continuous ones
        callback = None
        if job["curve_every"]:
            # Learning curve on its own held-out env (the first curve_episodes val scenes, the same every time);
            # a point's wall_s counts the earlier points' evaluations too, train_seconds below does not.
            curve_env = gym.make_vec(job["env_id"], num_envs=job["eval_envs"], split="val", **kwargs)
            assert isinstance(curve_env, GlimpseVectorEnv)
            callback = EvaluationCallback(
                curve_env, job["curve_every"], job["curve_episodes"], seed=10_000, acting=policy
            )
        start = time.perf_counter()
        try:
            model.learn(job["timesteps"], callback=callback)
        finally:
            train_env.close()
            if callback is not None:
                callback.env.close()
        # Training only: the learning curve's evaluations are left out of the wall time and the speed.
        train_seconds = time.perf_counter() - start - (callback.evaluation_seconds if callback is not None else 0.0)
        steps_per_second = model.num_timesteps / train_seconds
        if callback is not None:
            curve = [curve_point(entry) for entry in callback.history]
    result = run_policy(eval_env, policy, job["eval_episodes"], seed=10_000)
    eval_env.close()
    early: dict[str, Any] = {}
    if job["early_stop"] is not None:  # the same policy on the same scenes, episodes ending once solved
        stop_env = gym.make_vec(job["env_id"], num_envs=job["eval_envs"], split="val",
                                early_stop_threshold=job["early_stop"], **kwargs)  # fmt: skip
        assert isinstance(stop_env, GlimpseVectorEnv)
        if job["name"] in BASELINES:
            policy = make_baseline(job["name"], stop_env, seed=job["seed"])
        stopped = run_policy(stop_env, policy, job["eval_episodes"], seed=10_000)
        stop_env.close()
        early = {"early_stop_metric": stopped["metric_by_glimpse"][-1], "early_stop_glimpses": stopped["mean_glimpses"]}
    return {
        "name": job["name"],
        "seed": job["seed"],
        "metric": result["metric"],
        "final_metric": result["metric_by_glimpse"][-1],
        "metric_by_glimpse": result["metric_by_glimpse"],
        "final_score": result["final_score"],
        "train_seconds": train_seconds,
        "env_steps_per_second": steps_per_second,
        **({"curve": curve} if job["curve_every"] and job["name"] not in BASELINES else {}),
        **early,
    }


def curve_point(evaluation: dict[str, Any]) -> dict[str, Any]:
    """One point of a learning curve from an :class:`~agents.callbacks.EvaluationCallback` history entry."""
    return {
        "timesteps": int(evaluation["timesteps"]),
        "wall_s": evaluation["wall_s"],
        "final_metric": float(evaluation["metric_by_glimpse"][-1]),
        "metric_by_glimpse": [float(value) for value in evaluation["metric_by_glimpse"]],
    }


def summarise(results: list[dict[str, Any]], order: list[str]) -> str:
    """The Markdown table: the metric after 1, 2, 4, 8 glimpses and the last (mean ± std over seeds), with early
    stop when measured, the final score, training wall time and env steps per second."""
    metric = results[0]["metric"]
    last = len(results[0]["metric_by_glimpse"]) - 1
    counts = [k for k in (1, 2, 4, 8) if k < last] + [last]
    early = any("early_stop_metric" in r for r in results)
    header = [f"{metric} @{k}" for k in counts] + (["early stop: " + metric, "glimpses used"] if early else [])
    lines = [
        f"| policy | seeds | {' | '.join(header)} | final score | train wall time (s) | env steps/s |",
        "|---|---:|" + "---:|" * (len(header) + 3),
    ]

    def cell(values: list[float], digits: int = 3) -> str:
        return (
            f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"
            if len(values) > 1
            else f"{values[0]:.{digits}f}"
        )

    for name in order:
        rows = [r for r in results if r["name"] == name]
        if not rows:
            continue
        cells = [cell([r["metric_by_glimpse"][k] for r in rows]) for k in counts]
        if early:
            stopped = [r for r in rows if "early_stop_metric" in r]
            cells += (
                [cell([r["early_stop_metric"] for r in stopped]), cell([r["early_stop_glimpses"] for r in stopped], 1)]
                if stopped
                else ["-", "-"]
            )
        wall = np.mean([r["train_seconds"] for r in rows])
        speed = np.mean([r["env_steps_per_second"] for r in rows])
        scores = np.mean([r["final_score"] for r in rows])
        lines.append(
            f"| {name} | {len(rows)} | {' | '.join(cells)} | {scores:.3f} | {wall:.0f} | "
            f"{'-' if np.isnan(speed) else f'{speed:.0f}'} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="AdaGlimpse-Photos-v0")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--algorithms", nargs="*", default=["sac"], choices=sorted(ALGORITHMS))
    parser.add_argument(
        "--algorithm-kwargs", nargs="*", default=[], metavar="KEY=VALUE",
        help="constructor arguments replacing the algorithms' own (e.g. learning_rate=0.001 n_steps=32); they go "
        "to every algorithm of the run, so n_steps is PPO's rollout length and, for the off-policy entries, the "
        "length of their n-step returns",
    )  # fmt: skip
    parser.add_argument("--baselines", nargs="*", default=["random", "raster"], choices=sorted(BASELINES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=10_000)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--eval-episodes", type=int, default=64)
    parser.add_argument("--eval-envs", type=int, default=16)
    parser.add_argument(
        "--early-stop", type=float, default=None, metavar="SCORE",
        help="also evaluate with episodes that end once the score reaches SCORE (e.g. 0.9 true-class probability)",
    )  # fmt: skip
    parser.add_argument(
        "--curve-every", type=int, default=0, metavar="STEPS",
        help="also evaluate every STEPS env steps while training (a learning curve per run; 0: only at the end); "
        "scripts/plot_learning_curves.py draws them",
    )  # fmt: skip
    parser.add_argument("--curve-episodes", type=int, default=48, help="held-out episodes per learning-curve point")
    parser.add_argument(
        "--device", default="cpu", help="cpu, cuda (runs spread round-robin over all visible GPUs) or cuda:N"
    )
    parser.add_argument("--workers", type=int, default=1, help="parallel runs (processes; e.g. one per GPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run")
    parser.add_argument("--output", type=Path, default=Path("runs/benchmark_agents/results.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env_kwargs = parse_key_values(args.env_kwargs)
    algorithm_kwargs = parse_key_values(args.algorithm_kwargs, "--algorithm-kwargs")
    try:  # a wrong name fails now, not after the runs before it
        check_overrides(args.algorithms, algorithm_kwargs)
    except AlgorithmSettingsError as error:
        raise SystemExit(f"--algorithm-kwargs: {error}") from error
    threads = args.threads or max(1, torch.get_num_threads() // args.workers)
    names = [*args.algorithms, *args.baselines]
    devices = iter(job_devices(args.device, len(names) * len(args.seeds)))
    jobs = [
        {
            "name": name,
            "seed": seed,
            "env_id": args.env_id,
            "env_kwargs": env_kwargs,
            "timesteps": args.timesteps,
            "num_envs": args.num_envs,
            "eval_envs": args.eval_envs,
            "eval_episodes": args.eval_episodes,
            "early_stop": args.early_stop,
            "curve_every": args.curve_every,
            "curve_episodes": args.curve_episodes,
            "device": next(devices),
            "threads": threads,
            "algorithm_kwargs": algorithm_kwargs,
        }
        for name in names
        for seed in args.seeds
    ]
    start = time.perf_counter()
    results: list[dict[str, Any]] = []

    def record(job: dict[str, Any], result: dict[str, Any]) -> None:
        # Every finished run is written at once, so a long benchmark that is stopped keeps what it measured.
        results.append(result)
        print(f"{job['name']} seed {job['seed']}: {result['final_metric']:.3f}", file=sys.stderr)
        write_results(args, results, partial=len(results) < len(jobs))

    if args.workers > 1:
        with worker_pool(args.workers) as pool:  # workers end if this process is killed
            for job, result in zip(jobs, pool.map(run_one, jobs), strict=True):
                record(job, result)
    else:
        for job in jobs:
            record(job, run_one(job))
    total = time.perf_counter() - start
    print(
        f"\n{args.env_id}: {args.timesteps} env steps per run, seeds {args.seeds}, "
        f"{args.eval_episodes} held-out episodes per run; {total / 60:.1f} min in all\n"
    )
    print(summarise(results, names))
    print(f"\nwrote {args.output}")
    return 0


def write_results(args: argparse.Namespace, results: list[dict[str, Any]], partial: bool) -> None:
    """Write the arguments and the runs so far to ``args.output`` (``"partial": true`` until the last run)."""
    args.output.parent.mkdir(parents=True, exist_ok=True)
    record = {"args": vars(args) | {"output": str(args.output)}, "partial": partial, "results": results}
    args.output.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    sys.exit(main())
