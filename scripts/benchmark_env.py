"""How fast the vector env steps, and how much it costs on top of the frozen model it wraps, measured in one run.

For each device, model size and ``num_envs``, one episode of ``num_glimpses`` vector steps is timed (after
``reset``, so image decoding is not counted), and so is the *bare* model work the env cannot avoid, on tensors
already in place: for the same token counts, the new glimpse's token embeddings, one batched encoder forward
with attention maps, the rollout, the task head and the score, read back to the host as the numpy API needs.
``env / bare`` is the env's overhead (glimpse extraction, bookkeeping, observations); the target is <= 1.15 at
``num_envs >= 64``. Both sides take the same path: the default incremental one, or with ``--reference`` the
one that recomputes everything each step (``incremental=False``). Random weights: timing does not depend on them.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` during the row ("alloc"); on the CPU the process's
peak resident set so far (``getrusage`` ``ru_maxrss``, "process peak RSS"), which only grows from row to row.

Usage::

    python scripts/benchmark_env.py                       # the full table: tiny and base, 1 16 64 256, CPU (+ CUDA)
    python scripts/benchmark_env.py --model-sizes tiny    # a quick look (minutes on a CPU)
    python scripts/benchmark_env.py --devices cuda        # the GPU rows only
    python scripts/benchmark_env.py --env-id AdaGlimpse-ClutteredDigits-Fast-v0 --num-envs 64 --threads 1

With ``--env-id`` it measures a registered id as a user runs it instead: env steps per second over
``--seconds`` of random actions, with its own model and image source, resets (and so image decoding or scene
drawing) and autoreset included, after one warm-up episode.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch

from adaglimpse_env import EpisodeConfig, GlimpseVectorEnv, ResolvedEpisodeConfig
from adaglimpse_env.datasets import TransformConfig, embedded_photos
from adaglimpse_env.models import ElasticMAE, attention_rollout, create_model
from adaglimpse_env.normalization import to_pixels
from adaglimpse_env.tasks import TaskTargets, get_task


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: str | None) -> AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=getattr(torch, dtype)) if dtype else nullcontext()


def bare_episode(
    model: ElasticMAE,
    num_envs: int,
    episode: ResolvedEpisodeConfig,
    device: torch.device,
    incremental: bool,
    autocast_dtype: str | None,
) -> Callable[[], None]:
    """The model work of one episode's steps, at each token count, taking the path the env takes."""
    task = get_task(episode.task)
    head = task.head
    per_glimpse, budget = episode.tokens_per_glimpse, episode.max_tokens
    images = torch.randn(num_envs, 3, *model.config.img_size, device=device)
    patches = torch.randn(num_envs, budget, 3, 16, 16, device=device)
    corner = torch.randint(0, 190, (num_envs, budget, 2), device=device)
    boxes = torch.cat((corner, corner + 32), dim=-1)
    targets = TaskTargets(
        labels=torch.randint(0, model.config.num_classes, (num_envs,), device=device),
        masks=torch.randint(0, model.config.out_chans, (num_envs, *model.config.img_size), device=device)
        if task.needs_masks
        else None,
    )
    # The env converts each image to 0-255 pixels once when the score reads them.
    image_pixels = to_pixels(images) if incremental and task.reads_image_pixels else None
    with torch.inference_mode(), autocast(device, autocast_dtype):
        dtype = model.embed_tokens(patches[:1, :1], boxes[:1, :1]).dtype
        constants = model.decoder_constants(dtype) if incremental and head.needs_decoder else None
    tokens = torch.zeros(num_envs, budget, model.config.embed_dim, dtype=dtype, device=device)

    num_glimpses = episode.num_glimpses

    @torch.inference_mode()
    def run() -> None:
        for glimpse in range(1, num_glimpses + 1):
            n = glimpse * per_glimpse
            with autocast(device, autocast_dtype):
                if incremental:
                    tokens[:, n - per_glimpse : n] = model.embed_tokens(
                        patches[:, n - per_glimpse : n], boxes[:, n - per_glimpse : n]
                    )
                    encoded = model.encode_tokens(tokens[:, :n], return_attention=True)
                    prediction = head.predict(model, encoded.latent, decoder_constants=constants)
                else:
                    encoded = model.forward_encoder(patches[:, :n], boxes[:, :n], return_attention=True)
                    prediction = head.predict(model, encoded.latent)
            attention_rollout([attention.float() for attention in encoded.attentions])
            task.score(model, prediction, images, targets, image_pixels=image_pixels).cpu()

    return run


def env_episode(env: GlimpseVectorEnv, seed: int) -> Callable[[], float]:
    """One timed episode of the env (``reset`` first, outside the timed part); returns its seconds."""
    rng = np.random.default_rng(seed)
    steps = env.num_glimpses
    actions: Any = rng.uniform(-1, 1, size=(steps, env.num_envs, 3)).astype(np.float32)
    if env.output == "torch":
        actions = torch.from_numpy(actions).to(env.device)

    def run() -> float:
        env.reset(seed=seed)
        synchronize(env.device)
        start = time.perf_counter()
        for step in range(steps):
            env.step(actions[step])
        synchronize(env.device)
        return time.perf_counter() - start

    return run


def timed(function: Callable[[], None], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} alloc"
    # Linux reports ru_maxrss in KiB.
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} process peak RSS"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    # The defaults are the full table of docs/benchmarks.md; base at 256 envs dominates on a CPU (most of an
    # hour on 2 cores), so pass --model-sizes tiny or fewer --num-envs for a quick look.
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--model-sizes", nargs="+", default=["tiny", "base"], help="tiny small base large")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when present")
    parser.add_argument("--task", default="reconstruction")
    parser.add_argument("--num-glimpses", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3, help="timed episodes per row (median)")
    parser.add_argument("--reference", action="store_true", help="incremental=False on both sides")
    parser.add_argument("--output", default="numpy", choices=["numpy", "torch"])
    parser.add_argument("--autocast-dtype", default=None, choices=["bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--env-id", default=None, help="measure this registered id end to end instead (see above)")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE", help="gym.make_vec kwargs")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per row with --env-id")
    return parser.parse_args(argv)


def registered_throughput(args: argparse.Namespace) -> int:
    """Env steps per second of a registered id, resets included, one row per ``num_envs``."""
    import gymnasium as gym

    from agents.config import parse_key_values

    kwargs = parse_key_values(args.env_kwargs)
    print(f"# benchmark_env: {args.env_id} {kwargs}, random actions, resets included, {args.seconds:.0f} s a row,")
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {datetime.datetime.now():%Y-%m-%d %H:%M},")
    print(f"# load average at start {os.getloadavg()[0]:.2f}")
    print("| num_envs | vector steps | episodes | env steps/s | peak memory (MiB) |")
    print("|---:|---:|---:|---:|---:|")
    for num_envs in args.num_envs:
        env = gym.make_vec(args.env_id, num_envs=num_envs, **kwargs)
        assert isinstance(env, GlimpseVectorEnv)
        rng = np.random.default_rng(0)
        env.reset(seed=0)
        actions = [rng.uniform(-1, 1, size=(num_envs, 3)).astype(np.float32) for _ in range(64)]
        for step in range(env.num_glimpses):  # warm-up episode
            env.step(actions[step % 64])
        steps = episodes = 0
        start = time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            _, _, terminated, truncated, _ = env.step(actions[steps % 64])
            steps += 1
            episodes += int((terminated | truncated).sum())
        seconds = time.perf_counter() - start
        memory = peak_memory(torch.device("cpu"))
        print(f"| {num_envs} | {steps} | {episodes} | {num_envs * steps / seconds:.0f} | {memory} |", flush=True)
        env.close()
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.env_id is not None:
        return registered_throughput(args)
    devices = args.devices or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    episode = EpisodeConfig(task=args.task, num_glimpses=args.num_glimpses).resolve()
    incremental = not args.reference
    path = "reference (incremental=False)" if args.reference else "incremental"
    print(f"# benchmark_env: {args.task}, {args.num_glimpses} glimpses, {path} path, output={args.output}, ")
    print(f"# autocast={args.autocast_dtype}, torch {torch.__version__}, median of {args.repeats} episodes, ")
    print(f"# {datetime.datetime.now():%Y-%m-%d %H:%M}, load average at start {os.getloadavg()[0]:.2f}")
    for device_type in devices:
        print(f"# {device_type}: {device_name(torch.device(device_type))}")
    columns = ["device", "model", "num_envs", "env episode (s)", "bare model (s)", "env / bare", "env steps/s"]
    print("| " + " | ".join([*columns, "peak memory (MiB)"]) + " |")
    print("|---|---|" + "---:|" * 6)
    for device_type in devices:
        device = torch.device(device_type)
        for size in args.model_sizes:
            torch.manual_seed(0)
            model = create_model(size, args.task).to(device).eval()
            source = embedded_photos("train", TransformConfig(size=model.config.img_size[0], train=True))
            for num_envs in args.num_envs:
                env = GlimpseVectorEnv(
                    num_envs,
                    model,
                    source,
                    episode,
                    device=device,
                    output=args.output,
                    autocast_dtype=args.autocast_dtype,
                    incremental=incremental,
                )
                bare = bare_episode(model, num_envs, episode, device, incremental, args.autocast_dtype)
                run_env = env_episode(env, seed=0)
                bare()  # warm-up both
                run_env()
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                env_times, bare_times = [], []
                for _ in range(args.repeats):  # interleaved, so a load change hits both sides alike
                    env_times.append(run_env())
                    bare_times.append(timed(bare, device))
                env_seconds, bare_seconds = statistics.median(env_times), statistics.median(bare_times)
                steps_per_second = num_envs * args.num_glimpses / env_seconds
                print(
                    f"| {device.type} | {size} | {num_envs} | {env_seconds:.3f} | {bare_seconds:.3f} "
                    f"| {env_seconds / bare_seconds:.3f} | {steps_per_second:.0f} | {peak_memory(device)} |",
                    flush=True,
                )
                env.close()
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
