"""How a step's and an episode's cost grow with the glimpse count, before and after the incremental reuse.

Each step re-encodes every token so far (original `forward_game_state`): step k runs the encoder over ``k * g * g``
tokens and the decoder over those plus its ``G`` grid queries, so it costs about ``a + b * k`` (plus a small ``k**2``
term from attention) and an episode of ``N`` glimpses about ``a * N + b * N**2 / 2``. One run measures, for the
reference
path (``incremental=False``: everything recomputed each step) and the default incremental one:

1. the time of step ``k`` against ``k = 1 .. max(N)`` (median over ``--repeats`` episodes), with the fitted line
   ``a + b * k``;
2. the time of a whole episode against ``N`` (``--glimpse-counts``, default 4 8 12 16),

prints both tables and draws them with Pillow (``--plot``, default ``docs/cost_growth.png``).
Random weights: timing does not depend on them.

Usage::

    python scripts/benchmark_cost_growth.py                            # tiny, 16 envs, CPU
    python scripts/benchmark_cost_growth.py --model-size base --num-envs 64 --device cuda --plot docs/x.png
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from adaglimpse_env import EpisodeConfig, GlimpseVectorEnv
from adaglimpse_env.datasets import TransformConfig, embedded_photos
from adaglimpse_env.models import ElasticMAE, create_model

MODES = {"reference": False, "incremental": True}
COLOURS = {"reference": (217, 95, 2), "incremental": (27, 158, 119)}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_times(env: GlimpseVectorEnv, seed: int) -> list[float]:
    """Seconds of each step of one episode (``reset`` first, not timed)."""
    steps = env.num_glimpses
    actions = np.random.default_rng(seed).uniform(-1, 1, size=(steps, env.num_envs, 3)).astype(np.float32)
    env.reset(seed=seed)
    times = []
    for action in actions:
        synchronize(env.device)
        start = time.perf_counter()
        env.step(action)
        synchronize(env.device)
        times.append(time.perf_counter() - start)
    return times


def make_env(model: ElasticMAE, args: argparse.Namespace, num_glimpses: int, incremental: bool) -> GlimpseVectorEnv:
    source = embedded_photos("train", TransformConfig(size=model.config.img_size[0], train=True))
    episode = EpisodeConfig(task=args.task, num_glimpses=num_glimpses)
    return GlimpseVectorEnv(args.num_envs, model, source, episode, device=args.device, incremental=incremental)


def measure(model: ElasticMAE, args: argparse.Namespace) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """``(per_step, per_episode)``: mode -> median seconds per glimpse index / per glimpse count."""
    longest = max(args.glimpse_counts)
    per_step: dict[str, list[float]] = {}
    per_episode: dict[str, list[float]] = {mode: [] for mode in MODES}
    envs = {mode: make_env(model, args, longest, incremental) for mode, incremental in MODES.items()}
    for env in envs.values():
        step_times(env, seed=0)  # warm-up
    runs: dict[str, list[list[float]]] = {mode: [] for mode in MODES}
    for repeat in range(args.repeats):  # modes interleaved, so a load change hits both alike
        for mode, env in envs.items():
            runs[mode].append(step_times(env, seed=repeat))
    for mode, episodes in runs.items():
        per_step[mode] = [statistics.median(times) for times in zip(*episodes, strict=True)]
        envs[mode].close()
    for count in args.glimpse_counts:
        envs = {mode: make_env(model, args, count, incremental) for mode, incremental in MODES.items()}
        for env in envs.values():
            step_times(env, seed=0)
        totals: dict[str, list[float]] = {mode: [] for mode in MODES}
        for repeat in range(args.repeats):
            for mode, env in envs.items():
                totals[mode].append(sum(step_times(env, seed=repeat)))
        for mode, env in envs.items():
            per_episode[mode].append(statistics.median(totals[mode]))
            env.close()
    return per_step, per_episode


def fit_line(values: list[float]) -> tuple[float, float]:
    """Least-squares ``a + b * k`` over ``k = 1 .. len(values)``: ``(a, b)``."""
    slope, intercept = np.polyfit(np.arange(1, len(values) + 1), values, 1)
    return float(intercept), float(slope)


def print_tables(per_step: dict[str, list[float]], per_episode: dict[str, list[float]], counts: list[int]) -> None:
    print("\nPer step (ms, median), against the glimpse index k:\n")
    print("| k | reference | incremental | reference / incremental |")
    print("|---:|---:|---:|---:|")
    for k, (before, after) in enumerate(zip(per_step["reference"], per_step["incremental"], strict=True), 1):
        print(f"| {k} | {1e3 * before:.1f} | {1e3 * after:.1f} | {before / after:.3f} |")
    for mode in MODES:
        a, b = fit_line(per_step[mode])
        print(f"\n{mode}: step time = {1e3 * a:.1f} ms + {1e3 * b:.2f} ms x k")
    print("\nWhole episode (s, median), against the glimpse count N:\n")
    print("| N | reference | incremental | reference / incremental | reference vs N=" + f"{counts[0]} |")
    print("|---:|---:|---:|---:|---:|")
    for i, count in enumerate(counts):
        before, after = per_episode["reference"][i], per_episode["incremental"][i]
        growth = before / per_episode["reference"][0]
        print(f"| {count} | {before:.3f} | {after:.3f} | {before / after:.3f} | {growth:.2f}x |")


# ------------------------------------------------------------------------------------------------------ plot
def nice_ticks(high: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``high``."""
    raw = high / count
    magnitude = 10 ** np.floor(np.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [float(step * i) for i in range(int(np.ceil(high / step)) + 1)]


def draw_panel(
    draw: ImageDraw.ImageDraw, x0: int, title: str, x_label: str, xs: list[int], series: dict[str, list[float]]
) -> None:
    """One line chart in the 440 x 330 px box at horizontal offset ``x0``; y starts at 0."""
    left, top, width, height = x0 + 56, 36, 360, 240
    text, small = ImageFont.load_default(size=14), ImageFont.load_default(size=12)
    y_ticks = nice_ticks(max(max(values) for values in series.values()))
    x_low, x_high, y_high = min(xs), max(xs), y_ticks[-1]

    def point(x: float, y: float) -> tuple[float, float]:
        return left + (x - x_low) / (x_high - x_low) * width, top + height - y / y_high * height

    draw.text((left + width / 2, 10), title, fill="black", font=text, anchor="mt")
    for tick in y_ticks:
        _, y = point(x_low, tick)
        draw.line((left, y, left + width, y), fill=(225, 225, 225))
        draw.text((left - 6, y), f"{tick:g}", fill=(60, 60, 60), font=small, anchor="rm")
    for x in xs:
        draw.text((point(x, 0)[0], top + height + 6), str(x), fill=(60, 60, 60), font=small, anchor="mt")
    draw.text((left + width / 2, top + height + 24), x_label, fill="black", font=small, anchor="mt")
    draw.rectangle((left, top, left + width, top + height), outline=(90, 90, 90))
    for i, (mode, values) in enumerate(series.items()):
        points = [point(x, y) for x, y in zip(xs, values, strict=True)]
        draw.line(points, fill=COLOURS[mode], width=2)
        for px, py in points:
            draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=COLOURS[mode])
        legend_y = top + height - 16 * (len(series) - i)
        draw.text((left + width - 10, legend_y), mode, fill=COLOURS[mode], font=small, anchor="rt")


def write_plot(
    path: Path, per_step: dict[str, list[float]], per_episode: dict[str, list[float]], counts: list[int], note: str
) -> None:
    """Both measurements side by side as a PNG: step time against k, episode time against N."""
    canvas = Image.new("RGB", (880, 350), "white")
    draw = ImageDraw.Draw(canvas)
    steps = list(range(1, len(per_step["reference"]) + 1))
    step_ms = {mode: [1e3 * t for t in values] for mode, values in per_step.items()}
    draw_panel(draw, 0, "ms per vector step, against the glimpse index k", "k", steps, step_ms)
    draw_panel(draw, 440, "s per episode, against its glimpse count N", "N", counts, per_episode)
    draw.text((440, 342), note, fill=(100, 100, 100), font=ImageFont.load_default(size=11), anchor="mb")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


# ------------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model-size", default="tiny")
    parser.add_argument("--task", default="reconstruction")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--glimpse-counts", type=int, nargs="+", default=[4, 8, 12, 16])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="episodes per measurement (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--plot", type=Path, default=Path("docs/cost_growth.png"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.glimpse_counts = sorted(args.glimpse_counts)
    torch.manual_seed(0)
    model = create_model(args.model_size, args.task).to(args.device).eval()
    note = (
        f"{args.model_size} model, {args.task}, {args.num_envs} envs, {args.device}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}, {datetime.date.today()}"
    )
    print(f"# benchmark_cost_growth: {note}, torch {torch.__version__}")
    print(f"# load average at start {os.getloadavg()[0]:.2f}")
    per_step, per_episode = measure(model, args)
    print_tables(per_step, per_episode, args.glimpse_counts)
    print(f"\n# load average at end {os.getloadavg()[0]:.2f}")
    write_plot(args.plot, per_step, per_episode, args.glimpse_counts, note)
    print(f"# plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
