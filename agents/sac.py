"""The paper's SAC on stable-baselines3: hyper-parameters, learning-rate schedule and policy (original `rl_glimpse.py`
SAC).

Differences from the original that SB3 imposes, kept on purpose and documented: Adam instead of AdamW, a halved
critic loss, ``log_std`` clamped to [-20, 2] instead of a biased softplus, and no gradient updates during the
random warm-up (SB3's ``learning_starts`` does both).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.vec_env import VecEnv

from agents.features import STREAMS, sac_policy_kwargs
from agents.replay import Float16DictReplayBuffer

#: original `rl_glimpse.py` SAC (CLI defaults of the original).
PAPER_SAC: dict[str, Any] = {
    "learning_rate": 1e-3,
    "gamma": 0.99,
    "tau": 0.005,
    "batch_size": 128,
    "buffer_size": 10_000,
    "learning_starts": 10_000,
    "ent_coef": "auto_1.0",
    "target_entropy": -3.0,
    "train_freq": 1,
    "gradient_steps": 1,
}


def one_cycle_cosine(
    learning_rate: float, flat_fraction: float = 0.01, final_divisor: float = 1000.0
) -> Callable[[float], float]:
    """The original's OneCycle schedule as an SB3 schedule: flat for the first ``flat_fraction`` of training,
    then cosine-annealed to ``learning_rate / final_divisor``.

    SB3 calls it with ``progress_remaining`` going from 1 to 0.
    """

    def schedule(progress_remaining: float) -> float:
        progress = 1.0 - progress_remaining
        if progress <= flat_fraction:
            return learning_rate
        t = (progress - flat_fraction) / (1.0 - flat_fraction)
        low = learning_rate / final_divisor
        return low + 0.5 * (learning_rate - low) * (1.0 + math.cos(math.pi * min(t, 1.0)))

    return schedule


def make_sac(
    env: VecEnv,
    seed: int | None = None,
    device: str = "auto",
    tensorboard_log: str | None = None,
    float16_buffer: bool = True,
    lr_schedule: bool = True,
    verbose: int = 0,
    **overrides: Any,
) -> SAC:
    """SAC with the paper's settings and actor/critic trunks (separate, as the original) on a glimpse env.

    Args:
        env: an SB3 ``VecEnv`` of a glimpse env (e.g. :func:`agents.sb3_adapter.make_sb3_vec_env`). The ``full``
            and ``latent`` presets get the original trunk over the streams they hold, ``flat`` SB3's MLP policy.
        seed: seeds SB3, the policy and the env.
        device: where the networks train.
        tensorboard_log: TensorBoard folder.
        float16_buffer: store replayed observations in float16 (half the memory; see :mod:`agents.replay`).
        lr_schedule: use the original's flat-then-cosine learning rate (else constant).
        verbose: SB3 verbosity.
        **overrides: any SAC argument, e.g. ``learning_starts=500``.
    """
    settings = {**PAPER_SAC, **overrides}
    if lr_schedule and not callable(settings["learning_rate"]):
        settings["learning_rate"] = one_cycle_cosine(float(settings["learning_rate"]))
    space = env.observation_space
    if isinstance(space, spaces.Dict):
        policy = "MultiInputPolicy"
        if float16_buffer:
            settings.setdefault("replay_buffer_class", Float16DictReplayBuffer)
        # The original trunk over the streams the preset has (the latent preset has no patches or importance).
        missing = tuple(name for name in STREAMS if name not in space.spaces)
        settings.setdefault("policy_kwargs", sac_policy_kwargs(exclude_inputs=missing))
    elif isinstance(space, spaces.Box):
        policy = "MlpPolicy"  # the flat preset: one vector, SB3's MLP trunk
    else:
        raise ValueError(f"make_sac requires a Dict or Box observation space, got {space}")
    return SAC(policy, env, seed=seed, device=device, tensorboard_log=tensorboard_log, verbose=verbose, **settings)
