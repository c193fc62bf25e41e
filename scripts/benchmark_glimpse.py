"""Benchmark glimpse extraction: the vectorised path against the original's per-cell loop (original `_crop_and_resize`).

Both run in the same process, on the same random images and the same seeded random actions:

* **vectorised**: :func:`adaglimpse_env.glimpse.extract_glimpses`, i.e. crop boxes plus one batched gather
  for every patch of every image;
* **loop**: :func:`~adaglimpse_env.glimpse.compute_glimpse_boxes` once, then
  :func:`~adaglimpse_env.glimpse.extract_patches_loop`, i.e. one slice and one ``F.interpolate`` per grid
  cell, as the original's ``_crop_and_resize`` does.

Both are warmed up, then timed ``--repeats`` times each with :func:`time.perf_counter` (synchronising on
CUDA), in ``--rounds`` alternating blocks so that a busy machine slows both alike. The script prints a markdown table
with the median and fastest ms per call, the minor page faults per call (where the OS reports them: on CPU,
fresh memory for temporaries can cost more than the arithmetic), the speed ratio ``loop / vectorised`` of the
medians, and the largest absolute difference between the two sets of patches. It exits with status 1 if that
difference is ``>= 1e-5``.

Run from the repository root::

    python scripts/benchmark_glimpse.py                                # B=64, 224x224, g=2, CPU
    python scripts/benchmark_glimpse.py --threads 1 --repeats 50
    python scripts/benchmark_glimpse.py --device cuda --batch-size 256
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from adaglimpse_env.glimpse import compute_glimpse_boxes, extract_glimpses, extract_patches_loop

try:
    import resource
except ImportError:  # not available on Windows
    resource = None  # type: ignore[assignment]

MAX_ABS_DIFF = 1e-5
"""Largest tolerated difference between the vectorised and the loop patches."""


@dataclass(frozen=True)
class Timing:
    """Wall-clock statistics of one benchmarked function.

    Attributes:
        median_ms: median time per call in milliseconds.
        min_ms: fastest call in milliseconds.
        faults_per_call: minor page faults per call, or ``None`` where the OS does not report them.
    """

    median_ms: float
    min_ms: float
    faults_per_call: float | None


def _minor_faults() -> int:
    """Minor page faults of this process so far; always 0 without the ``resource`` module (Windows)."""
    if resource is None:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_in_rounds(
    functions: Sequence[Callable[[], object]], device: torch.device, warmup: int, repeats: int, rounds: int
) -> list[Timing]:
    """Time several functions in alternating rounds.

    Each round gives every function, in turn, one untimed call and then a block of timed calls. Blocks measure the
    steady state of one function (warm caches and threads), and alternating the blocks makes a busy machine or a
    clock change slow all functions alike instead of biasing their ratio.

    Args:
        functions: the calls to time; their results are discarded.
        device: device the work runs on; CUDA is synchronised before and after every timed call.
        warmup: untimed calls of every function before the first round.
        repeats: timed calls of every function over all rounds.
        rounds: number of rounds the timed calls are split into.

    Returns:
        One :class:`Timing` per function, in the order given.
    """

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for function in functions:
        for _ in range(warmup):
            function()
    synchronize()
    seconds: list[list[float]] = [[] for _ in functions]
    faults = [0 for _ in functions]
    for round_index in range(rounds):
        calls = repeats // rounds + (round_index < repeats % rounds)
        for index, function in enumerate(functions):
            function()  # untimed: the previous block left other data in the caches
            synchronize()
            faults_before = _minor_faults()
            for _ in range(calls):
                start = time.perf_counter()
                function()
                synchronize()
                seconds[index].append(time.perf_counter() - start)
            faults[index] += _minor_faults() - faults_before
    counted = resource is not None
    return [
        Timing(statistics.median(times) * 1e3, min(times) * 1e3, total / repeats if counted else None)
        for times, total in zip(seconds, faults, strict=True)
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The parsed arguments.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--batch-size", type=int, default=64, help="images per call (default: 64)")
    parser.add_argument("--image-size", type=int, default=224, help="side of the square images (default: 224)")
    parser.add_argument("--grid-size", type=int, default=2, help="g: cells per glimpse side (default: 2)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per method (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per method first (default: 3)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating rounds the timed calls are split into (default: 5)"
    )
    parser.add_argument("--device", default="cpu", help='torch device, e.g. "cpu" or "cuda" (default: cpu)')
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the images and actions (default: 0)")
    args = parser.parse_args(argv)
    for name in ("batch_size", "image_size", "grid_size", "repeats", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} requires a positive integer, got {getattr(args, name)}")
    if args.rounds > args.repeats:
        parser.error(f"--rounds requires at most --repeats ({args.repeats}) rounds, got {args.rounds}")
    if args.warmup < 0:
        parser.error(f"--warmup requires a non-negative integer, got {args.warmup}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads requires a positive integer, got {args.threads}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its markdown report.

    Args:
        argv: command-line arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        0 if the two methods agree to within ``MAX_ABS_DIFF``, 1 if they do not, 2 if ``--device`` names CUDA
        on a machine without it.
    """
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"--device {args.device} requires CUDA, got torch.cuda.is_available() == False", file=sys.stderr)
        return 2

    generator = torch.Generator().manual_seed(args.seed)
    size = (args.image_size, args.image_size)
    images = torch.randn(args.batch_size, 3, *size, generator=generator).to(device)
    unit_action = torch.rand(args.batch_size, 3, generator=generator).to(device)

    def vectorised() -> torch.Tensor:
        return extract_glimpses(images, unit_action, args.grid_size)[0]

    def loop() -> torch.Tensor:
        boxes = compute_glimpse_boxes(unit_action, size, args.grid_size).cells
        return extract_patches_loop(images, boxes)

    max_diff = (vectorised() - loop()).abs().max().item()
    fast, slow = time_in_rounds((vectorised, loop), device, args.warmup, args.repeats, args.rounds)

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    cells = args.batch_size * args.grid_size**2
    print(
        f"Glimpse extraction: B={args.batch_size}, {args.image_size}x{args.image_size}, g={args.grid_size} "
        f"({cells} cells per call), device={device_name}, torch {torch.__version__}, "
        f"threads={torch.get_num_threads()}, repeats={args.repeats} in {args.rounds} rounds, "
        f"warmup={args.warmup}, seed={args.seed}"
    )
    print()
    print("| method | median ms / call | min ms / call | minor page faults / call |")
    print("|---|---:|---:|---:|")
    for name, timing in (
        ("vectorised (`extract_glimpses`)", fast),
        ("loop (`compute_glimpse_boxes` + `extract_patches_loop`)", slow),
    ):
        faults = "n/a" if timing.faults_per_call is None else f"{timing.faults_per_call:.0f}"
        print(f"| {name} | {timing.median_ms:.3f} | {timing.min_ms:.3f} | {faults} |")
    print()
    print(f"speed ratio (loop / vectorised, medians): {slow.median_ms / fast.median_ms:.1f}x")
    agree = max_diff < MAX_ABS_DIFF
    print(f"max |vectorised - loop|: {max_diff:.3g} (limit {MAX_ABS_DIFF:g}): {'ok' if agree else 'MISMATCH'}")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
