"""Our native vector env as a stable-baselines3 ``VecEnv``: SB3 algorithms step every env in one batched model
forward, with no subprocesses.

SB3 expects same-step autoreset: when an env finishes, ``step`` already returns the next episode's first
observation and the finished one goes in ``infos[i]["terminal_observation"]``. The adapter therefore requires a
:class:`~adaglimpse_env.GlimpseVectorEnv` built with ``autoreset_mode="same_step"`` (``make_sb3_vec_env`` does
this for any registered id).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from adaglimpse_env import GlimpseVectorEnv


class GlimpseSB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` view of a :class:`GlimpseVectorEnv`.

    Args:
        env: the vector env, with ``autoreset_mode="same_step"``.
    """

    def __init__(self, env: GlimpseVectorEnv) -> None:
        if env.autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"GlimpseSB3VecEnv requires a GlimpseVectorEnv with autoreset_mode='same_step', got "
                f"{env.autoreset_mode}; build it with gym.make_vec(id, num_envs=N, autoreset_mode='same_step')"
            )
        self.env = env
        self.render_mode = env.render_mode
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self._actions: np.ndarray | None = None

    # ------------------------------------------------------------------------------------------ VecEnv API
    def reset(self) -> VecEnvObs:
        """Reset every env; the seed set by :meth:`seed` (SB3 passes ``seed + i``; env 0's seeds the stream) and
        the options set by :meth:`set_options` (one dict for the whole vector env, e.g. ``{"reset_mask": ...}``).

        Raises:
            ValueError: the envs were given different options (they share one vector env and one reset).
        """
        seed = self._seeds[0]
        options = self._options[0]
        if not all(_same_options(options, other) for other in self._options[1:]):
            raise ValueError(
                "GlimpseSB3VecEnv.reset requires the same options for every env (one vector env, one reset), "
                f"got {self._options}"
            )
        observation, info = self.env.reset(seed=seed, options=options or None)
        self.reset_infos = self._per_env(info)
        self._reset_seeds()
        self._reset_options()
        return observation

    def step_async(self, actions: np.ndarray) -> None:
        """Store the actions for :meth:`step_wait`."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step every env; finished envs restart at once, their last observation in ``terminal_observation``."""
        if self._actions is None:
            raise RuntimeError("step_wait() requires step_async(actions) first")
        observation, reward, terminated, truncated, info = self.env.step(self._actions)
        self._actions = None
        dones = terminated | truncated
        infos = self._per_env(info)
        if dones.any():
            final_obs = info["final_obs"]
            final_infos = self._per_env(info["final_info"])
            for i in np.flatnonzero(dones).tolist():
                infos[i] = final_infos[i]  # metrics of the episode that just ended
                infos[i]["terminal_observation"] = _index(final_obs, i)
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return observation, reward, dones, infos

    def close(self) -> None:
        """Close the vector env."""
        self.env.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        """``rgb_array`` frames of every env (needs ``render_mode="rgb_array"``)."""
        frames = self.env.render()
        return [None] * self.num_envs if frames is None else list(frames)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """An attribute of the vector env, once per requested index (all envs share it)."""
        value = getattr(self.env, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the shared vector env."""
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: VecEnvIndices = None, **kwargs: Any) -> list[Any]:
        """Call a method of the shared vector env, once per requested index."""
        return [getattr(self.env, method_name)(*args, **kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """No sub-env is a Gymnasium wrapper: they are slices of one vector env."""
        return [False for _ in self._get_indices(indices)]

    # ------------------------------------------------------------------------------------------ helpers
    def _per_env(self, info: dict[str, Any]) -> list[dict[str, Any]]:
        keys = [k for k in info if not k.startswith("_") and k not in ("final_obs", "final_info")]
        return [{key: info[key][i] for key in keys} for i in range(self.num_envs)]


def _same_options(first: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether two envs' reset options are equal (values may be arrays or tensors, e.g. a ``reset_mask``)."""
    if first.keys() != other.keys():
        return False
    for key, value in first.items():
        if isinstance(value, np.ndarray | torch.Tensor | list | tuple):
            pair = (value, other[key])
            mine, theirs = (v.cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in pair)
            if not np.array_equal(mine, theirs):
                return False
        elif value != other[key]:
            return False
    return True


def _index(observation: Any, i: int) -> Any:
    if isinstance(observation, dict):
        return {key: value[i] for key, value in observation.items()}
    return observation[i]


def make_sb3_vec_env(env_id: str, num_envs: int = 1, **kwargs: Any) -> GlimpseSB3VecEnv:
    """``gym.make_vec(env_id, num_envs, autoreset_mode="same_step", **kwargs)`` as an SB3 ``VecEnv``."""
    env = gym.make_vec(env_id, num_envs=num_envs, autoreset_mode="same_step", **kwargs)
    if not isinstance(env, GlimpseVectorEnv):
        raise TypeError(f"{env_id} did not build a GlimpseVectorEnv (got {type(env).__name__})")
    return GlimpseSB3VecEnv(env)
