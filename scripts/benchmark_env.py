"""How much the vector env costs on top of the frozen model it wraps, measured in one run.

For each ``num_envs``, one episode of ``num_glimpses`` vector steps is timed (after ``reset``, so image decoding
is not counted), and so is the *bare* work the env cannot avoid: for the same token counts, one batched encoder
forward with attention maps, the rollout, the task head and the score, on tensors already in place. The ratio
env / bare is the env's overhead (glimpse extraction, bookkeeping, observation copies to numpy).

Usage::

    python scripts/benchmark_env.py                       # tiny model, CPU, num_envs 1 16 64
    python scripts/benchmark_env.py --model-size base --device cuda --num-envs 1 16 64 256
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from adaglimpse_env import EpisodeConfig, GlimpseVectorEnv
from adaglimpse_env.datasets import TransformConfig, embedded_photos
from adaglimpse_env.models import ElasticMAE, attention_rollout, create_model, create_task_head


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(function: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of ``function`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bare_episode(model: ElasticMAE, num_envs: int, episode: EpisodeConfig, device: torch.device) -> Callable[[], None]:
    """The model work of one episode's steps: encoder + rollout + head + score at each token count."""
    head = create_task_head(episode.task)
    per_glimpse = episode.tokens_per_glimpse
    images = torch.randn(num_envs, 3, *model.config.img_size, device=device)
    patches = torch.randn(num_envs, episode.max_tokens, 3, 16, 16, device=device)
    corner = torch.randint(0, 190, (num_envs, episode.max_tokens, 2), device=device)
    boxes = torch.cat((corner, corner + 32), dim=-1)

    @torch.inference_mode()
    def run() -> None:
        for glimpse in range(1, (episode.num_glimpses or 0) + 1):
            n = glimpse * per_glimpse
            encoded = model.forward_encoder(patches[:, :n], boxes[:, :n], return_attention=True)
            attention_rollout(encoded.attentions)
            prediction = head.predict(model, encoded.latent)
            head.score(model, prediction, images, None).cpu()

    return run


def env_episode(env: GlimpseVectorEnv, seed: int) -> Callable[[], None]:
    rng = np.random.default_rng(seed)
    steps = env.episode.num_glimpses or 0
    actions = rng.uniform(-1, 1, size=(steps, env.num_envs, 3)).astype(np.float32)

    def run() -> None:
        env.reset(seed=seed)  # the reset is outside the timed part: see `timed` below
        run.timed = 0.0  # type: ignore[attr-defined]
        synchronize(env.device)
        start = time.perf_counter()
        for step in range(steps):
            env.step(actions[step])
        synchronize(env.device)
        run.timed = time.perf_counter() - start  # type: ignore[attr-defined]

    return run


def measure_env(env: GlimpseVectorEnv, repeats: int) -> float:
    run = env_episode(env, seed=0)
    times = []
    for _ in range(repeats):
        run()
        times.append(run.timed)  # type: ignore[attr-defined]
    return statistics.median(times)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--model-size", default="tiny")
    parser.add_argument("--task", default="reconstruction")
    parser.add_argument("--num-glimpses", type=int, default=12)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model(args.model_size, args.task).to(device).eval()
    episode = EpisodeConfig(task=args.task, num_glimpses=args.num_glimpses)
    source = embedded_photos("train", TransformConfig(size=model.config.img_size[0], train=True))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# benchmark_env: {args.model_size} {args.task}, {args.num_glimpses} glimpses, device {device} ({name}), ")
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats} episodes\n")
    print("| num_envs | env episode (s) | bare model (s) | env / bare | env steps/s | peak memory (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for num_envs in args.num_envs:
        env = GlimpseVectorEnv(num_envs, model, source, episode, device=device)
        bare = bare_episode(model, num_envs, episode, device)
        bare()  # warm-up
        measure_env(env, 1)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        env_seconds = measure_env(env, args.repeats)
        bare_seconds = time_call(bare, device, args.repeats)
        memory = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
        steps_per_second = num_envs * args.num_glimpses / env_seconds
        print(
            f"| {num_envs} | {env_seconds:.3f} | {bare_seconds:.3f} | {env_seconds / bare_seconds:.3f} "
            f"| {steps_per_second:.0f} | {memory:.0f} |"
        )
        env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
