"""Train the paper's SAC agent to choose where to look (original `rl_glimpse.py` SAC), on any registered glimpse env.

Readable top to bottom (CleanRL style): configuration, seeding, envs, agent, callbacks, training, final save.
Hyper-parameters are the paper's (lr 1e-3 with its flat-then-cosine schedule, gamma 0.99, tau 0.005, batch 128,
10k-transition replay, 10k random warm-up steps, automatic entropy with target -3); the default budget (34k env
steps on the embedded photos) takes about 15 minutes on 2 CPU cores (docs/results.md). A YAML preset under
``configs/sac/`` sets any subset and flags override both.

Outputs in ``--output``: ``model.zip`` (SB3), ``replay_buffer.pkl``, ``progress.json`` (written last: the
checkpoint it names is complete), ``evaluation.json``, and ``tensorboard/`` (episode return, final score and task
metric, metric after each glimpse count on held-out images, losses, entropy coefficient, episode pictures).
``--resume`` continues from ``checkpoints/model_N.zip`` and ``replay_buffer_N.pkl``, N from ``progress.json``
(:func:`agents.callbacks.save_checkpoint`). The run fails at start-up if ``--output`` cannot be written or its disk
cannot hold two checkpoints (the replay buffer included).

Usage::

    python scripts/train_sac.py                                   # embedded photos and model, ~15 min on 2 cores
    python scripts/train_sac.py --resume                          # continue a killed run
    python scripts/train_sac.py --deterministic --seed 1          # bit-for-bit repeatable (docs/determinism.md)
    python scripts/train_sac.py --config configs/sac/paper.yaml --env-kwargs data_root=/data/imagenet ...
    python scripts/train_sac.py --env-id AdaGlimpse-ImageNet-Reconstruction-v0 \\
        --env-kwargs data_root=/data/imagenet checkpoint=mae.ckpt --device cuda --num-envs 64 --total-timesteps 2000000
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecMonitor

import adaglimpse_env  # noqa: F401  (registers the ids)
from adaglimpse_env import GlimpseVectorEnv
from adaglimpse_env.config import OBSERVATION_PRESETS
from agents.callbacks import (
    CheckpointCallback,
    EpisodeMetricsCallback,
    EvaluationCallback,
    ProgressBarCallback,
    atomic_write,
    checkpoint_paths,
    remove_stale_checkpoint_files,
    save_checkpoint,
)
from agents.config import parse_config
from agents.preflight import OutputDirectoryError, check_free_space, check_writable, format_bytes, required_free_bytes
from agents.replay import replay_buffer_bytes
from agents.sac import PAPER_SAC, make_sac
from agents.sb3_adapter import GlimpseSB3VecEnv


@dataclass
class TrainConfig:
    """Every setting of a run."""

    env_id: str = "AdaGlimpse-Photos-v0"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    # Held-out evaluation: random crops of the held-out photos give many distinct episodes from few photos.
    eval_env_kwargs: dict[str, Any] = field(default_factory=lambda: {"augment": True})
    num_envs: int = 32
    total_timesteps: int = 34_000
    learning_rate: float = PAPER_SAC["learning_rate"]
    lr_schedule: bool = True
    gamma: float = PAPER_SAC["gamma"]
    tau: float = PAPER_SAC["tau"]
    batch_size: int = PAPER_SAC["batch_size"]
    buffer_size: int = PAPER_SAC["buffer_size"]
    learning_starts: int = PAPER_SAC["learning_starts"]
    target_entropy: float = PAPER_SAC["target_entropy"]
    gradient_steps: int = PAPER_SAC["gradient_steps"]
    float16_buffer: bool = True
    eval_every: int = 8_000
    eval_episodes: int = 64
    eval_envs: int = 16
    checkpoint_every: int = 10_000
    save_replay_buffer: bool = True
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms(True): see docs/determinism.md
    device: str = "auto"
    env_device: str = "cpu"
    threads: int | None = None
    output: str = "runs/sac_embedded"
    resume: bool = False
    progress_bar: bool = True


def read_progress(output: Path) -> dict[str, Any] | None:
    """The commit marker of the run folder's last complete checkpoint, or ``None`` when there is none."""
    path = output / "progress.json"
    return json.loads(path.read_text()) if path.exists() else None


def checkpoint_bytes(model: SAC, observation_space: gym.spaces.Dict, replay_bytes: int) -> int:
    """Estimate of one checkpoint on disk: the policy's weights and the Adam moments of its optimised ones (an upper
    bound: the target critics have none), each env's last observation, which SB3 pickles twice (``_last_obs``,
    ``_last_original_obs``) as base64 text, and ``replay_bytes`` for a saved replay buffer."""
    weights = sum(parameter.numel() * parameter.element_size() for parameter in model.policy.parameters())
    last_observations = replay_buffer_bytes(model.n_envs, observation_space, np.float32) * 4 // 3
    return 3 * weights + last_observations + replay_bytes


def main(argv: list[str] | None = None) -> int:
    config = parse_config(TrainConfig, argv, __doc__.splitlines()[0])
    output = Path(config.output)
    check_writable(output, "train_sac.py")  # before any model or data is built
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        # PyTorch's reproducibility notes: cuBLAS on CUDA >= 10.2 needs a fixed workspace before its first call
        # (torch 2.14 no longer asks for it, older releases do); CPU results are the same either way.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    set_random_seed(config.seed)

    # The last complete checkpoint, if any. A fresh run drops the folder's previous one (so that a later --resume
    # never mixes two runs); leftovers of killed saves go now rather than at the first checkpoint.
    progress = read_progress(output)
    if progress is not None and not config.resume:
        print(f"starting afresh in {output}: dropping its checkpoint at {progress['num_timesteps']} env steps")
        (output / "progress.json").unlink()
        progress = None
    remove_stale_checkpoint_files(output, progress["num_timesteps"] if progress else None)
    resuming = progress is not None

    # Envs: training images with augmentation; held-out images for evaluation (with pictures).
    env_kwargs = {"device": config.env_device, **config.env_kwargs}
    train_env = gym.make_vec(
        config.env_id, num_envs=config.num_envs, autoreset_mode="same_step", split="train", **env_kwargs
    )
    eval_env = gym.make_vec(
        config.env_id,
        num_envs=config.eval_envs,
        split="val",
        render_mode="rgb_array",
        **{**env_kwargs, **config.eval_env_kwargs},
    )
    assert isinstance(train_env, GlimpseVectorEnv) and isinstance(eval_env, GlimpseVectorEnv)
    observation_space = train_env.single_observation_space
    if train_env.episode.observation != "full" or not isinstance(observation_space, gym.spaces.Dict):
        # Before any model is built: the paper's actor and critics read every stream of the 'full' preset.
        train_env.close()
        eval_env.close()
        raise SystemExit(
            f"train_sac.py requires observation='full' (the original agent's state: latent, importance, coords, "
            f"patches, mask), got observation={train_env.episode.observation!r}; the presets are "
            f"{', '.join(repr(preset) for preset in OBSERVATION_PRESETS)}. Drop the observation override from "
            f"--env-kwargs, or train another algorithm on it with scripts/benchmark_agents.py"
        )
    vec_env = VecMonitor(GlimpseSB3VecEnv(train_env))
    task = train_env.episode.task

    # Agent: a new one, or the last complete checkpoint of this run folder.
    if progress is not None:
        step = int(progress["num_timesteps"])
        model_path, buffer_path = checkpoint_paths(output, step)
        model = SAC.load(model_path, env=vec_env, device=config.device)
        if progress["replay_buffer"]:
            model.load_replay_buffer(buffer_path)
        # A new random stream for each resume point: a resumed run does not replay the images and actions it began with.
        model.set_random_seed(config.seed + step)
        buffer = model.replay_buffer
        replayed = buffer.size() * buffer.n_envs if buffer is not None else 0  # size() counts rows of n_envs
        print(f"resumed {output} at {model.num_timesteps} env steps (replay buffer: {replayed} transitions)")
    else:
        if config.resume:
            print(f"--resume: no complete checkpoint in {output}, starting afresh")
        model = make_sac(
            vec_env,
            seed=config.seed,
            device=config.device,
            tensorboard_log=str(output / "tensorboard"),
            float16_buffer=config.float16_buffer,
            lr_schedule=config.lr_schedule,
            learning_rate=config.learning_rate,
            gamma=config.gamma,
            tau=config.tau,
            batch_size=config.batch_size,
            buffer_size=config.buffer_size,
            learning_starts=config.learning_starts,
            target_entropy=config.target_entropy,
            gradient_steps=config.gradient_steps,
        )
    dtype = np.float16 if config.float16_buffer else np.float32
    memory = replay_buffer_bytes(model.buffer_size, observation_space, dtype)
    print(
        f"{config.env_id}: {task}, {train_env.episode.num_glimpses} glimpses, {config.num_envs} envs; "
        f"replay buffer {model.buffer_size} transitions = {memory / 2**30:.2f} GiB "
        f"({np.dtype(dtype).name} observations)"
    )
    # Disk: fail now, not at the first checkpoint. Actions, rewards, dones and timeouts: 4 bytes each per value.
    action_bytes = model.buffer_size * (int(np.prod(model.action_space.shape or ())) + 3) * 4
    one_checkpoint = checkpoint_bytes(
        model, observation_space, memory + action_bytes if config.save_replay_buffer else 0
    )
    check_free_space(
        output,
        "train_sac.py",
        required_free_bytes(one_checkpoint, resuming),
        f"a checkpoint takes up to {format_bytes(one_checkpoint)} and the next one is written before it is removed",
        ", --no-save-replay-buffer, or a smaller --buffer-size",
    )
    atomic_write(output / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(asdict(config), indent=2) + "\n"))

    # Callbacks: episode metrics, held-out evaluation, atomic checkpoints, progress bar.
    evaluation = EvaluationCallback(eval_env, config.eval_every, config.eval_episodes)
    callbacks: list[Any] = [
        EpisodeMetricsCallback(task),
        evaluation,
        CheckpointCallback(output, config.checkpoint_every, config.save_replay_buffer),
    ]
    if config.progress_bar:
        callbacks.append(ProgressBarCallback(config.total_timesteps))

    start = time.perf_counter()
    remaining = max(0, config.total_timesteps - model.num_timesteps)
    model.learn(remaining, callback=CallbackList(callbacks), reset_num_timesteps=not resuming, tb_log_name="sac")
    wall = time.perf_counter() - start
    save_checkpoint(model, output, config.save_replay_buffer)
    final = evaluation.evaluate()
    summary = {"wall_time_s": round(wall, 1), "num_timesteps": model.num_timesteps, "evaluations": evaluation.history}
    atomic_write(output / "evaluation.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2) + "\n"))
    by_glimpse = ", ".join(f"{k}:{v:.2f}" for k, v in enumerate(final["metric_by_glimpse"]))
    print(f"final held-out {final['metric']} by glimpse: {by_glimpse}")
    print(f"done: {model.num_timesteps} env steps in {wall / 60:.1f} min; model in {output / 'model.zip'}")
    vec_env.close()
    eval_env.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OutputDirectoryError as error:
        sys.exit(str(error))
