"""A single-image ``gymnasium.Env``: a ``num_envs=1`` view of :class:`GlimpseVectorEnv`, with identical numbers."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from adaglimpse_env.envs.vector_env import GlimpseVectorEnv


class GlimpseEnv(gym.Env):
    """One episode = one image; see :class:`GlimpseVectorEnv` for the arguments (all but ``num_envs`` and
    ``autoreset_mode``; ``autocast_dtype``, ``compile_model`` and ``incremental`` apply as there, and ``output``
    must be ``"numpy"``: a single env follows Gymnasium's ``Env`` API). After ``terminated``, call ``reset()``.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 2}  # noqa: RUF012

    def __init__(self, **kwargs: Any) -> None:
        for forbidden in ("num_envs", "autoreset_mode"):
            if forbidden in kwargs:
                raise TypeError(f"GlimpseEnv does not take {forbidden!r}; use GlimpseVectorEnv for batches")
        if kwargs.get("output", "numpy") != "numpy":
            raise ValueError(
                f"GlimpseEnv requires output='numpy' (Gymnasium's single-env API), got {kwargs['output']!r}; "
                "use GlimpseVectorEnv(num_envs=1, output='torch', ...) for device tensors"
            )
        self.vector_env = GlimpseVectorEnv(num_envs=1, autoreset_mode=AutoresetMode.DISABLED, **kwargs)
        self.render_mode = self.vector_env.render_mode
        self.action_space = self.vector_env.single_action_space
        self.observation_space = self.vector_env.single_observation_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Start an episode on the next image (order and augmentation from ``seed``)."""
        super().reset(seed=seed)
        observation, info = self.vector_env.reset(seed=seed, options=options)
        return _first(observation), _first_info(info)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Take one glimpse; ``action`` is ``(x, y, scale)`` in ``[-1, 1]``, shape ``(3,)``."""
        if isinstance(action, torch.Tensor | np.ndarray):
            array = action
        else:
            try:
                array = np.asarray(action)
            except (TypeError, ValueError) as error:  # e.g. a ragged nested list
                raise ValueError(
                    f"GlimpseEnv.step requires an action of shape (3,) ordered (x, y, scale), got {action!r}"
                ) from error
        if tuple(array.shape) != (3,):
            raise ValueError(
                f"GlimpseEnv.step requires an action of shape (3,) ordered (x, y, scale), got {tuple(array.shape)}"
            )
        observation, reward, terminated, truncated, info = self.vector_env.step(array[None])
        return _first(observation), float(reward[0]), bool(terminated[0]), bool(truncated[0]), _first_info(info)

    def render(self) -> np.ndarray | None:
        """The ``rgb_array`` frame of the episode so far."""
        frames = self.vector_env.render()
        return None if frames is None else frames[0]

    def close(self) -> None:
        """Stop the decoding workers."""
        self.vector_env.close()


def _first(observation: Any) -> Any:
    if isinstance(observation, dict):
        return {key: value[0] for key, value in observation.items()}
    return observation[0]


def _first_info(info: dict[str, Any]) -> dict[str, Any]:
    return {key: value[0] for key, value in info.items() if not key.startswith("_")}
