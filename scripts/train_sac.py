"""Train the paper's SAC agent to choose where to look (original `rl_glimpse.py` SAC), on any registered glimpse env.

Readable top to bottom (CleanRL style): configuration, seeding, envs, agent, callbacks, training, final save.
The default run trains on the offline find-and-zoom task in its fast variant ``AdaGlimpse-ClutteredDigits-Fast-v0``
(6 glimpses; docs/tasks.md) with the ``map`` observation, acting by searching its map critic
(agents/critic_search.py): the setting that has learnt to find the digit on 2 CPU cores (docs/results.md); SAC
with the paper's actor, on the paper's settings, is ``--config configs/sac/paper.yaml`` and the photo reconstruction
run ``--config configs/sac/embedded.yaml``. Beyond the critic search the default differs from the paper's settings
in a constant learning rate, batch 64, four updates per vector step, a 30k-transition replay replayed under random
mirrors and transposes of the map (agents/symmetry.py) and a 4k-step warm-up in which the hand-made ``salient``
baseline acts in half of the envs, for a 36k-step budget on 16 envs (docs/results.md). A YAML preset under
``configs/sac/`` sets any subset and flags override both.

Outputs in ``--output`` (:mod:`agents.run_folder`): ``model.zip`` (SB3), ``replay_buffer.npz`` (plain arrays),
``progress.json`` (written last: the checkpoint it names is complete), ``evaluation.json``, ``run_manifest.json``
(every file the run wrote: the only files it ever deletes), ``agent.pt`` + ``agent.json`` (the network that acts,
without pickle: ``sb3:sac:<output>/agent.pt`` in evaluate.py) and ``tensorboard/`` (episode return, final score and
task metric, metric after each glimpse count on held-out images, losses, entropy coefficient, episode pictures).
``--resume`` validates ``progress.json``, ``checkpoints/model_N.zip`` and ``replay_buffer_N.npz`` before touching
anything, then continues from them; nothing in them is unpickled (:mod:`agents.sb3_files`). The run fails at
start-up if ``--output`` cannot be written or its disk cannot hold two checkpoints (the replay buffer included).

Usage::

    python scripts/train_sac.py                                   # find-and-zoom digits, about 17 min on 2 cores
    python scripts/train_sac.py --config configs/sac/embedded.yaml  # photo reconstruction, ~15 min on 2 cores
    python scripts/train_sac.py --resume                          # continue a killed run
    python scripts/train_sac.py --deterministic --seed 1          # bit-for-bit repeatable (docs/determinism.md)
    python scripts/train_sac.py --config configs/sac/paper.yaml --env-kwargs data_root=/data/imagenet ...
    python scripts/train_sac.py --env-id AdaGlimpse-ImageNet-Reconstruction-v0 \\
        --env-kwargs data_root=/data/imagenet checkpoint=mae.ckpt --device cuda --num-envs 64 --total-timesteps 2000000
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
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
from agents.baselines import BASELINES, make_baseline
from agents.callbacks import (
    CheckpointCallback,
    EpisodeMetricsCallback,
    EvaluationCallback,
    ProgressBarCallback,
    WallClockLimitCallback,
)
from agents.config import ConfigError, parse_config
from agents.critic_search import CriticSearch
from agents.preflight import OutputDirectoryError, check_free_space, check_writable, format_bytes, required_free_bytes
from agents.replay import ReplayBufferFileError, load_replay_buffer, replay_buffer_bytes
from agents.run_folder import RunFolder, RunFolderError, save_checkpoint
from agents.sac import PAPER_SAC, GlimpseSAC, make_sac, one_cycle_cosine
from agents.sb3_adapter import GlimpseSB3VecEnv
from agents.sb3_files import SB3FileError, load_sb3
from agents.shipped import export_agent

#: SAC settings a resumed run takes from its checkpoint (SB3 saves them in the zip), whatever the config says.
RESUMED_FROM_ZIP = ("gradient_steps", "batch_size", "buffer_size", "learning_starts", "gamma", "tau")


@dataclass
class TrainConfig:
    """Every setting of a run; a YAML preset under ``configs/sac/`` sets any subset, flags override it.

    Attributes:
        env_id: registered env id to train on.
        env_kwargs: extra gym.make_vec keyword arguments of the training and evaluation envs (KEY=VALUE).
        eval_env_kwargs: keyword arguments of the held-out evaluation env only, over env_kwargs (KEY=VALUE).
        num_envs: training envs stepped together (one batched model forward per step).
        total_timesteps: env steps to train for, summed over envs (a resumed run counts its past steps).
        learning_rate: Adam learning rate (the peak of the schedule with --lr-schedule).
        lr_schedule: the original's flat-then-cosine learning-rate schedule (else constant).
        gamma: discount factor.
        tau: soft target-update coefficient.
        batch_size: transitions per gradient step.
        buffer_size: replay buffer capacity in transitions.
        learning_starts: random warm-up env steps before the first gradient step.
        target_entropy: target entropy of the automatic entropy coefficient.
        warmup_policy: a baseline (e.g. salient, with observation=map) that acts in a share of the envs during the
            random warm-up, so the replay buffer starts with episodes that find the target (salient is skipped,
            with a note, on other observation presets).
        warmup_share: share of the envs the warm-up policy acts in (the rest act uniformly at random).
        initial_ent_coef: starting value of the automatic entropy coefficient (the paper's 1.0 suits its long
            runs; rewards here sum to at most 1 per episode, so a short run needs a smaller start to act on them).
        gradient_steps: gradient steps per env step.
        float16_buffer: store replayed observations in float16 (half the memory).
        spatial_critic: with observation=map, a critic that reads the map under each action's glimpse
            (agents/map_critic.py) instead of SB3's critic over one feature vector; other presets ignore it.
        where_loss_weight: with the map critic, weight of the loss that pulls the actor's heat map towards the
            cells the critic values most (agents/map_critic.py where_map_loss); 0 gives SAC's actor loss alone.
        critic_search: with the map critic, act by searching the critic over a grid of glimpses (a Boltzmann
            policy over its values, agents/critic_search.py) instead of with SAC's actor; the critic's target
            values the next state under that policy. Other presets, or spatial_critic off, ignore it (SAC's actor
            acts). A fresh run's setting (a resumed run keeps its own).
        critic_search_sharpness: that policy's inverse temperature, in standard deviations of the grid's values.
        symmetry_augment: with critic search, replay each transition under a random mirror or transpose of its
            map and action (agents/symmetry.py); off otherwise. On resume this value applies (as
            where_loss_weight's), not the run's earlier one.
        eval_every: env steps between held-out evaluations.
        eval_episodes: episodes per held-out evaluation.
        eval_envs: envs of the held-out evaluation.
        checkpoint_every: env steps between checkpoints.
        save_replay_buffer: save the replay buffer with each checkpoint (needed to resume with nothing lost).
        seed: seed of SB3, the policy and the envs.
        deterministic: torch.use_deterministic_algorithms(True); see docs/determinism.md.
        device: where the agent's networks train (auto, cpu, cuda, cuda:1, ...).
        env_device: where the envs' frozen model runs.
        threads: torch CPU threads (default: torch's choice).
        time_limit_min: stop learning after this many wall-clock minutes of training (held-out evaluations not
            counted; checkpoints are), then save and evaluate as at the end (for comparisons at equal time; the
            step count then depends on the machine). A resumed run gets the budget anew.
        output: run folder (checkpoints, progress, evaluation, TensorBoard logs).
        resume: continue from the run folder's last complete checkpoint.
        progress_bar: show a progress bar.
    """

    env_id: str = "AdaGlimpse-ClutteredDigits-Fast-v0"
    env_kwargs: dict[str, Any] = field(default_factory=lambda: {"observation": "map"})
    # Held-out evaluation on the id's val split (for the digits: the fixed val scenes over held-out photos). The
    # photos preset (configs/sac/embedded.yaml) adds augment: true, as random crops of the 8 held-out photos give
    # many distinct episodes.
    eval_env_kwargs: dict[str, Any] = field(default_factory=dict)
    num_envs: int = 16
    total_timesteps: int = 36_000
    learning_rate: float = PAPER_SAC["learning_rate"]
    lr_schedule: bool = False
    gamma: float = PAPER_SAC["gamma"]
    tau: float = PAPER_SAC["tau"]
    # Smaller batches, four updates per vector step and a larger replay than the paper's: more updates per CPU
    # minute on a critic that learns where to look (docs/results.md).
    batch_size: int = 64
    buffer_size: int = 30_000
    # 4k warm-up steps instead of the paper's 10k (on 2 CPU cores the whole run is 36k steps), with the salient
    # baseline acting in half of the envs: the replay starts with episodes that find the digit (docs/results.md).
    learning_starts: int = 4_000
    target_entropy: float = PAPER_SAC["target_entropy"]
    initial_ent_coef: float = 1.0
    warmup_policy: str | None = "salient"
    warmup_share: float = 0.5
    gradient_steps: int = 4
    float16_buffer: bool = True
    spatial_critic: bool = True
    where_loss_weight: float = 5.0
    critic_search: bool = True
    critic_search_sharpness: float = CriticSearch.sharpness
    # Eight views of every replayed transition: the same experience teaches the critic more (docs/results.md).
    symmetry_augment: bool = True
    eval_every: int = 8_000
    eval_episodes: int = 96
    eval_envs: int = 16
    checkpoint_every: int = 8_000
    save_replay_buffer: bool = True
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    env_device: str = "cpu"
    threads: int | None = None
    time_limit_min: float | None = None
    output: str = "runs/sac_digits"
    resume: bool = False
    progress_bar: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.initial_ent_coef < float("inf"):
            raise ValueError(f"initial_ent_coef must be a positive finite number, got {self.initial_ent_coef!r}")
        if self.warmup_policy is not None and self.warmup_policy not in BASELINES:
            raise ValueError(f"warmup_policy must be one of {sorted(BASELINES)} or unset, got {self.warmup_policy!r}")
        if not 0.0 <= self.warmup_share <= 1.0:
            raise ValueError(f"warmup_share must be in [0, 1], got {self.warmup_share!r}")
        if not 0.0 <= self.where_loss_weight < float("inf"):
            raise ValueError(
                f"where_loss_weight must be a finite number >= 0 (0 turns the map actor's extra loss off), got "
                f"{self.where_loss_weight!r}"
            )


def checkpoint_bytes(model: SAC, observation_space: gym.spaces.Dict | gym.spaces.Box, replay_bytes: int) -> int:
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

    # The last complete checkpoint, if any, validated (progress record, model, replay buffer) before anything is
    # touched. A fresh run drops the files of the folder's previous run (never a file no run of it wrote), so that a
    # later --resume never mixes two runs.
    run = RunFolder(output)
    progress = run.resumable_progress() if config.resume else None
    if progress is None:
        dropped = run.prepare_fresh()
        if config.resume:
            print(f"--resume: no complete checkpoint in {output}, starting afresh")
        elif dropped is not None:
            print(f"starting afresh in {output}: dropping its checkpoint at {dropped} env steps")
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
    vec_env = VecMonitor(GlimpseSB3VecEnv(train_env))
    task = train_env.episode.task

    # Critic search needs the map critic; with another observation preset SAC's actor acts, as the paper's.
    searching = config.critic_search and config.spatial_critic and train_env.episode.observation == "map"
    if config.critic_search and not searching:
        print("critic_search applies to observation=map with the spatial critic only: SAC's actor acts here")

    # Agent: a new one, or the last complete checkpoint of this run folder.
    if progress is not None:
        step = int(progress["num_timesteps"])
        model_path, buffer_path = run.checkpoint_paths(step)
        learning_rate = one_cycle_cosine(config.learning_rate) if config.lr_schedule else config.learning_rate
        try:
            # Nothing in the zip is unpickled (agents.sb3_files): the run's own schedule replaces the pickled one.
            model = load_sb3(
                GlimpseSAC, model_path, vec_env.observation_space, vec_env.action_space, env=vec_env,
                device=config.device,
                custom_objects={"learning_rate": learning_rate, "train_freq": PAPER_SAC["train_freq"]},
            )  # fmt: skip
            if progress["replay_buffer"]:
                assert model.replay_buffer is not None
                load_replay_buffer(model.replay_buffer, buffer_path, step)
        except (SB3FileError, ReplayBufferFileError) as error:
            raise RunFolderError(f"cannot resume from {output}: {error}; nothing was changed") from error
        run.remove_stale(progress)  # leftovers of killed saves go now rather than at the first checkpoint
        # SB3 restores the folder the run was started in; a copied or moved run logs to its own.
        model.tensorboard_log = str(output / "tensorboard")
        # A new random stream for each resume point: a resumed run does not replay the images and actions it began with.
        model.set_random_seed(config.seed + step)
        buffer = model.replay_buffer
        replayed = buffer.size() * buffer.n_envs if buffer is not None else 0  # size() counts rows of n_envs
        print(f"resumed {output} at {model.num_timesteps} env steps (replay buffer: {replayed} transitions)")
        # The zip's hyperparameters are what runs on: config.json must record them, not today's defaults or flags.
        saved = {name: getattr(model, name) for name in RESUMED_FROM_ZIP}
        ignored = {name: getattr(config, name) for name, value in saved.items() if getattr(config, name) != value}
        if ignored:
            print(f"the run keeps its own {saved}; the given or default {ignored} do not apply on resume")
        config = replace(config, **saved)
    else:
        model = make_sac(
            vec_env,
            seed=config.seed,
            device=config.device,
            tensorboard_log=str(output / "tensorboard"),
            float16_buffer=config.float16_buffer,
            lr_schedule=config.lr_schedule,
            spatial_critic=config.spatial_critic,
            critic_search=CriticSearch(sharpness=config.critic_search_sharpness) if searching else None,
            learning_rate=config.learning_rate,
            gamma=config.gamma,
            tau=config.tau,
            batch_size=config.batch_size,
            buffer_size=config.buffer_size,
            learning_starts=config.learning_starts,
            target_entropy=config.target_entropy,
            ent_coef=f"auto_{config.initial_ent_coef}",
            gradient_steps=config.gradient_steps,
        )
    # These two: the config's value wins on resume too. Without critic search there is nothing to augment, and
    # config.json records what runs.
    model.where_loss_weight = config.where_loss_weight
    model.symmetry_augment = config.symmetry_augment and getattr(model.policy, "critic_search", None) is not None
    config = replace(config, symmetry_augment=model.symmetry_augment)
    warmup_policy = config.warmup_policy
    if warmup_policy == "salient" and train_env.episode.observation != "map":
        print("the salient warm-up reads the map observation: the warm-up acts at random here")
        warmup_policy = None
        config = replace(config, warmup_policy=None)  # config.json records what runs
    if warmup_policy is not None:  # a fresh or resumed run: only acts while num_timesteps < learning_starts
        model.warmup_policy = make_baseline(warmup_policy, train_env, seed=config.seed)
        model.warmup_share = config.warmup_share
    dtype = np.float16 if config.float16_buffer else np.float32
    # Every preset trains: 'full' and 'latent' with the original trunk over their streams, 'flat' with an MLP,
    # 'map' with a small CNN (agents/trunks.py).
    assert isinstance(observation_space, gym.spaces.Dict | gym.spaces.Box)
    memory = replay_buffer_bytes(model.buffer_size, observation_space, dtype)
    print(
        f"{config.env_id}: {task}, {train_env.episode.num_glimpses} glimpses, "
        f"observation={train_env.episode.observation}{' (critic search)' if searching else ''}, "
        f"{config.num_envs} envs; "
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
    run.write_json("config.json", asdict(config))

    # Callbacks: episode metrics, held-out evaluation, atomic checkpoints, progress bar.
    evaluation = EvaluationCallback(eval_env, config.eval_every, config.eval_episodes)
    callbacks: list[Any] = [
        EpisodeMetricsCallback(task),
        evaluation,
        CheckpointCallback(output, config.checkpoint_every, config.save_replay_buffer),
    ]
    if config.progress_bar:
        callbacks.append(ProgressBarCallback(config.total_timesteps))
    if config.time_limit_min is not None:
        callbacks.append(WallClockLimitCallback(config.time_limit_min, evaluation))

    start = time.perf_counter()
    remaining = max(0, config.total_timesteps - model.num_timesteps)
    model.learn(remaining, callback=CallbackList(callbacks), reset_num_timesteps=not resuming, tb_log_name="sac")
    wall = time.perf_counter() - start
    train_seconds = wall - evaluation.evaluation_seconds  # before the final checkpoint and evaluation
    save_checkpoint(model, output, config.save_replay_buffer)
    final = evaluation.evaluate(train_seconds)
    summary = {"wall_time_s": round(wall, 1), "num_timesteps": model.num_timesteps, "evaluations": evaluation.history}
    run.write_json("evaluation.json", summary)
    # The actor alone, without pickle: what `sb3:sac:<output>/agent.pt` (and a shipped agent) loads.
    command = "python scripts/train_sac.py " + " ".join(sys.argv[1:] if argv is None else argv)
    run.claim("agent.pt", "agent.json")
    export_agent(
        model, output / "agent", config.env_id, train_env.episode.observation,
        {"command": command.strip(), "wall_time_s": summary["wall_time_s"], "num_timesteps": model.num_timesteps,
         "final_evaluation": final},
        num_glimpses=train_env.episode.num_glimpses,
    )  # fmt: skip
    by_glimpse = ", ".join(f"{k}:{v:.2f}" for k, v in enumerate(final["metric_by_glimpse"]))
    print(f"final held-out {final['metric']} by glimpse: {by_glimpse}")
    print(f"done: {model.num_timesteps} env steps in {wall / 60:.1f} min; model in {output / 'model.zip'}")
    vec_env.close()
    eval_env.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OutputDirectoryError, RunFolderError, ConfigError) as error:
        sys.exit(str(error))
