"""Learning curves, a picture and a Markdown table: of a ``scripts/benchmark_agents.py --curve-every N`` run over
env steps, or of ``scripts/train_sac.py`` run folders over minutes of training.

Benchmark results: each algorithm's curve is the held-out metric after the last glimpse at every evaluation
point, the mean over its seeds; baselines in the same results file are drawn as flat lines at their value (what
an agent has to beat). Curve points are measured on the first ``--curve-episodes`` val scenes, baselines on
``--eval-episodes``.

Run folders (``--runs``): each run's held-out metric after the last glimpse against the wall-clock minutes it had
trained when it was evaluated (its evaluations' own time left out), read from ``evaluation.json``: learning per
minute, for settings that differ in cost per step (trunk, replay ratio, batch). Every ``--minute-step`` minutes a
run shows its latest evaluation up to then (taken up to ``--eval-every`` env steps earlier); runs should share
the machine alike.

Usage::

    python scripts/plot_learning_curves.py runs/benchmark_agents/results.json --output docs/images/curves.png
    python scripts/plot_learning_curves.py --runs runs/a runs/b --output docs/images/per_minute.png
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from adaglimpse_env.rendering import draw_curves
from agents.baselines import BASELINES


def load_runs(paths: list[Path]) -> list[dict[str, Any]]:
    """The runs of one or more benchmark results files, in file order.

    Raises:
        SystemExit: a file that is missing or is not a benchmark_agents results file.
    """
    runs: list[dict[str, Any]] = []
    for path in paths:
        try:
            record = json.loads(path.read_text())
            runs.extend(record["results"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise SystemExit(f"{path} is not a results file of scripts/benchmark_agents.py: {error}") from error
    return runs


def mean_curves(runs: list[dict[str, Any]]) -> tuple[list[int], dict[str, list[float]], dict[str, int]]:
    """Per algorithm, the mean over seeds of the final metric at every evaluation point.

    The points are those every learned run was evaluated at (PPO-style algorithms may overshoot the budget to a
    whole rollout and add a point or two; those are left out, with a note). Baselines (:data:`BASELINES` names)
    are drawn flat at their value.

    Returns:
        ``(timesteps, curves, seeds)``: the shared evaluation points, name -> values at them, and name ->
        number of seeds averaged.

    Raises:
        SystemExit: no learned run, a learned run without a curve, or no evaluation point shared by all.
    """
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_name[run["name"]].append(run)
    learned = {name: rows for name, rows in by_name.items() if name not in BASELINES}
    if not learned:
        raise SystemExit("no learned run in the results: run benchmark_agents.py with --algorithms and --curve-every")
    steps_by_run: dict[str, set[int]] = {}
    for name, rows in learned.items():
        for row in rows:
            points = row.get("curve") or []
            if not points:
                raise SystemExit(
                    f"{name} seed {row['seed']} has no learning curve: run benchmark_agents.py with --curve-every "
                    "STEPS (fewer than --timesteps)"
                )
            steps_by_run[f"{name} seed {row['seed']}"] = {point["timesteps"] for point in points}
    timesteps = sorted(set.intersection(*steps_by_run.values()))
    if not timesteps:
        raise SystemExit(f"the runs share no evaluation point: {steps_by_run}; plot runs with the same --curve-every")
    for run_name, steps in steps_by_run.items():
        if len(steps) > len(timesteps):
            print(f"note: {run_name}'s points at {sorted(steps - set(timesteps))} are left out", file=sys.stderr)
    curves: dict[str, list[float]] = {}
    for name, rows in learned.items():
        values = [{point["timesteps"]: point["final_metric"] for point in row["curve"]} for row in rows]
        curves[name] = [float(np.mean([row_values[step] for row_values in values])) for step in timesteps]
    for name, rows in by_name.items():
        if name not in learned:
            curves[f"{name} (baseline)"] = [float(np.mean([row["final_metric"] for row in rows]))] * len(timesteps)
    return timesteps, curves, {name: len(rows) for name, rows in by_name.items()}


def minute_curves(
    run_dirs: list[Path], minute_step: float
) -> tuple[list[float], dict[str, list[float]], dict[str, int], str]:
    """Per ``train_sac.py`` run folder, its latest held-out metric after the last glimpse every ``minute_step``
    minutes of training (NaN before its first evaluation).

    A run stopped by ``--time-limit-min`` (its ``config.json``) stops at the first step past its budget; its
    final evaluation is placed at the budget, so that it is the value at the grid's last minute.

    Returns:
        ``(minutes, curves, steps, metric)``: the grid of training minutes, run name -> values on it, run name ->
        env steps it trained, and the metric's name (the first run's).

    Raises:
        SystemExit: a folder without a readable ``evaluation.json`` with evaluations that record their training
            time, a resumed run (its training time restarts at 0), or two folders of the same name.
    """
    if not minute_step > 0:
        raise SystemExit(f"--minute-step must be > 0, got {minute_step}")
    points: dict[str, list[tuple[float, int, float]]] = {}
    steps: dict[str, int] = {}
    metric = "metric"
    for folder in run_dirs:
        if folder.name in points:
            raise SystemExit(f"two run folders are named {folder.name!r}: the curves are named by folder; rename one")
        config_file = folder / "config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        if config.get("resume"):
            raise SystemExit(
                f"{folder} is a resumed run: its evaluations count training time from the resume, not from the "
                "start; plot runs trained in one call"
            )
        limit = config.get("time_limit_min")
        path = folder / "evaluation.json"
        try:
            record = json.loads(path.read_text())
            rows = [
                (float(row["train_wall_s"]) / 60.0, int(row["timesteps"]), float(row["metric_by_glimpse"][-1]))
                for row in record["evaluations"]
            ]
            steps[folder.name] = int(record["num_timesteps"])
            if len(points) == 0 and rows:
                metric = str(record["evaluations"][-1].get("metric", metric))
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as error:
            raise SystemExit(
                f"{path} is not the evaluation.json of a finished scripts/train_sac.py run that records each "
                f"evaluation's training time (train_wall_s): {error!r}; runs from before train_wall_s was recorded "
                "can be compared over env steps instead"
            ) from error
        if not rows:
            raise SystemExit(f"{path} holds no evaluation: train with --eval-every below --total-timesteps")
        if limit is not None:
            rows = [(min(minute, float(limit)), timesteps, value) for minute, timesteps, value in rows]
        points[folder.name] = sorted(rows)  # by training time, then env steps: the later of two at one time wins
    end = max(minute for rows in points.values() for minute, _, _ in rows)
    count = int(np.floor(end / minute_step + 1e-9)) + 1
    minutes = [round(index * minute_step, 6) for index in range(count)]
    curves = {
        name: [
            next((value for at, _, value in reversed(rows) if at <= minute + 1e-9), float("nan")) for minute in minutes
        ]
        for name, rows in points.items()
    }
    return minutes, curves, steps, metric


def write_outputs(picture: np.ndarray, table: str, output: Path) -> None:
    """Save the picture and print the table with where the picture went."""
    output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(output)
    print(table)
    print(f"\nwrote {output}")


def minute_table(minutes: list[float], curves: dict[str, list[float]], steps: dict[str, int], metric: str) -> str:
    """The per-minute curves as a Markdown table: one row per minute, one column per run."""
    names = list(curves)
    header = " | ".join(f"{name} ({steps[name]} steps)" if name in steps else name for name in names)
    lines = [f"| training minutes | {header} |", "|---:|" + "---:|" * len(names)]
    for index, minute in enumerate(minutes):
        cells = ["" if np.isnan(curves[name][index]) else f"{curves[name][index]:.3f}" for name in names]
        lines.append(f"| {minute:g} | " + " | ".join(cells) + " |")
    return f"{metric} after the last glimpse, latest evaluation by then:\n\n" + "\n".join(lines)


def markdown_table(timesteps: list[int], curves: dict[str, list[float]], seeds: dict[str, int], metric: str) -> str:
    """The curves as a Markdown table: one row per evaluation point, one column per algorithm."""
    names = list(curves)
    header = " | ".join(f"{name} ({seeds.get(name.removesuffix(' (baseline)'), 0)} seeds)" for name in names)
    lines = [f"| env steps | {header} |", "|---:|" + "---:|" * len(names)]
    for index, steps in enumerate(timesteps):
        lines.append(f"| {steps} | " + " | ".join(f"{curves[name][index]:.3f}" for name in names) + " |")
    return f"{metric} after the last glimpse, mean over seeds:\n\n" + "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="*", help="results JSON files of benchmark_agents.py")
    parser.add_argument("--runs", type=Path, nargs="+", help="train_sac.py run folders: curves over training minutes")
    parser.add_argument(
        "--minute-step", type=float, default=None, help="grid of the --runs curves, in minutes (default: 1)"
    )
    parser.add_argument(
        "--reference", nargs="+", default=[], metavar="NAME=VALUE",
        help="flat lines drawn beside the --runs curves, e.g. random=0.085 (a baseline measured elsewhere)",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=Path("runs/benchmark_agents/learning_curves.png"))
    parser.add_argument("--size", type=int, nargs=2, default=(300, 480), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--title", default=None, help="text above the plot (default: the metric)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if bool(args.results) == bool(args.runs):
        got = "both" if args.results else "neither"
        raise SystemExit(f"give benchmark_agents.py results files or --runs with train_sac.py run folders, got {got}")
    if args.results and (args.reference or args.minute_step is not None):
        raise SystemExit("--reference and --minute-step draw beside --runs curves; leave them out with results files")
    if args.runs:
        minutes, per_minute, steps, metric = minute_curves(args.runs, args.minute_step or 1.0)
        for reference in args.reference:
            name, _, value = reference.partition("=")
            try:
                per_minute[f"{name} (reference)"] = [float(value)] * len(minutes)
            except ValueError:
                raise SystemExit(f"--reference takes NAME=VALUE with a number, got {reference!r}") from None
        picture = draw_curves(
            per_minute, tuple(args.size), args.title or f"held-out {metric} after the last glimpse",
            x_label="training minutes", x_ends=("0", f"{minutes[-1]:g}"),
        )  # fmt: skip
        write_outputs(picture, minute_table(minutes, per_minute, steps, metric), args.output)
        return 0
    runs = load_runs(args.results)
    timesteps, curves, seeds = mean_curves(runs)
    metric = str(runs[0].get("metric", "metric"))
    title = args.title or f"held-out {metric} after the last glimpse (mean over seeds)"
    picture = draw_curves(
        curves, tuple(args.size), title, x_label="env steps", x_ends=(str(timesteps[0]), str(timesteps[-1]))
    )
    write_outputs(picture, markdown_table(timesteps, curves, seeds, metric), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
