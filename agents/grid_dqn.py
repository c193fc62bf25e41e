"""Discrete glimpse actions, and DQN with a Q-network that reads the map under each glimpse.

The env's action is a continuous ``(x, y, scale)`` box. Value-based algorithms of the DQN family (SB3's DQN,
sb3-contrib's QR-DQN, CleanRL's DQN and Rainbow-style agents) need a finite action set instead, as Atari gives
them. :class:`GridActions` (an SB3 ``VecEnv`` wrapper) and :class:`DiscreteGlimpses` (a Gymnasium wrapper of one
env) offer the candidates of a :class:`~agents.grid_policy.GlimpseGrid` (by default 13 x 13 places x 5 zoom
levels) as ``Discrete(K)``: action ``k`` is the grid's ``k``-th glimpse, in the order of
:meth:`~agents.grid_policy.GlimpseGrid.candidates`.

:class:`GlimpseGridQPolicy` is SB3's ``DQNPolicy`` with the grid policy's features extractor
(:class:`~agents.grid_policy.GlimpseGridExtractor`) as its Q-network: candidate ``k``'s value is read from the map
under glimpse ``k`` by one small network shared by every place, as in the fully-convolutional Q-networks of
spatial action maps (Wu et al., *Spatial Action Maps for Mobile Manipulation*, 2020, which trained them with
DQN). What a rewarded glimpse on a digit teaches carries over to a digit anywhere else on the map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn

from agents.grid_policy import (
    GlimpseGrid,
    GlimpseGridExtractor,
    check_map_observation,
    grid_constructor_parameters,
    grid_extractor_kwargs,
)
from agents.map_critic import GlimpseGeometry, glimpse_geometry_of


def grid_candidates(env: Any, grid: GlimpseGrid) -> tuple[dict[str, Any], np.ndarray]:
    """The glimpse geometry of a glimpse env (as a dict) and its grid's ``(K, 3)`` float32 actions.

    Raises:
        ValueError: ``env`` is not a glimpse env (or a wrapper of one).
    """
    geometry = glimpse_geometry_of(env)
    if geometry is None:
        raise ValueError(f"discrete glimpse actions need a glimpse env (or a wrapper of one), got {type(env).__name__}")
    candidates = grid.candidates(GlimpseGeometry.from_dict(geometry)).numpy().astype(np.float32)
    return geometry, candidates


class GridActions(VecEnvWrapper):
    """An SB3 ``VecEnv`` of glimpse envs with ``Discrete(K)`` actions: the candidates of ``grid``.

    Args:
        venv: an SB3 ``VecEnv`` of a glimpse env (e.g. :func:`agents.sb3_adapter.make_sb3_vec_env`).
        grid: the glimpse grid (default :class:`~agents.grid_policy.GlimpseGrid`'s 13 x 13 x 5).

    Attributes:
        grid: the grid.
        glimpse_geometry: the env's :class:`~agents.map_critic.GlimpseGeometry` fields (for the policy).
        candidates: ``(K, 3)`` the action each index stands for.
    """

    def __init__(self, venv: VecEnv, grid: GlimpseGrid | None = None) -> None:
        self.grid = grid or GlimpseGrid()
        self.glimpse_geometry, self.candidates = grid_candidates(venv, self.grid)
        super().__init__(venv, action_space=spaces.Discrete(len(self.candidates)))

    def step_async(self, actions: np.ndarray) -> None:
        """Step every env with the glimpses of ``actions``, ``(N,)`` indices in ``[0, K)``.

        Raises:
            ValueError: not one index per env, or an index outside ``[0, K)`` or a fractional one.
        """
        indices = _indices(actions, len(self.candidates))
        if len(indices) != self.num_envs:
            raise ValueError(f"GridActions.step takes one index per env ({self.num_envs}), got {len(indices)}")
        self.venv.step_async(self.candidates[indices])

    def step_wait(self) -> Any:
        return self.venv.step_wait()

    def reset(self) -> Any:
        return self.venv.reset()

    def policy_kwargs(self) -> dict[str, Any]:
        """The :class:`GlimpseGridQPolicy` arguments that match this env's actions."""
        return {"glimpse_geometry": self.glimpse_geometry, "grid": self.grid.to_dict()}


class DiscreteGlimpses(gym.ActionWrapper):
    """A single glimpse env (``gym.make``) with ``Discrete(K)`` actions: the candidates of ``grid``.

    Args:
        env: a glimpse env.
        grid: the glimpse grid (default :class:`~agents.grid_policy.GlimpseGrid`'s 13 x 13 x 5).
    """

    def __init__(self, env: gym.Env, grid: GlimpseGrid | None = None) -> None:
        super().__init__(env)
        self.grid = grid or GlimpseGrid()
        # gym.make's GlimpseEnv is a one-env view of the vector env, which holds the geometry.
        base = env.unwrapped
        self.glimpse_geometry, self.candidates = grid_candidates(getattr(base, "vector_env", base), self.grid)
        self.action_space = spaces.Discrete(len(self.candidates))

    def action(self, action: Any) -> np.ndarray:
        """The glimpse of index ``action``.

        Raises:
            ValueError: not one index, or an index outside ``[0, K)`` or a fractional one.
        """
        index = _indices(action, len(self.candidates))
        if len(index) != 1:
            raise ValueError(f"DiscreteGlimpses.step takes one index, got {np.asarray(action).tolist()}")
        return self.candidates[index[0]]


def _indices(actions: Any, count: int) -> np.ndarray:
    array = np.asarray(actions)
    flat = array.reshape(-1)
    integral = np.issubdtype(array.dtype, np.integer) or (
        np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(flat)) and np.all(flat == np.round(flat))
    )
    if not integral or flat.size == 0 or flat.min() < 0 or flat.max() >= count:
        raise ValueError(
            f"discrete glimpse actions must be whole numbers in [0, {count}) (indices of the glimpse grid), got "
            f"{array.tolist() if array.size <= 8 else array.dtype}"
        )
    return flat.astype(np.int64)


class GridActing:
    """A model trained on :class:`GridActions` acting on the continuous glimpse env (for evaluation with
    :func:`agents.evaluation.run_policy`): its ``predict`` returns the glimpses of the indices the model picks.

    Args:
        model: anything with SB3's ``predict`` returning ``(N,)`` indices: an SB3 model with a
            :class:`GlimpseGridQPolicy` (its grid is read from it), or any other (e.g. QR-DQN's) with
            ``candidates`` given.
        candidates: ``(K, 3)`` the action of each index (:attr:`GridActions.candidates`); needed unless the model
            has a :class:`GlimpseGridQPolicy`.
    """

    def __init__(self, model: Any, candidates: np.ndarray | None = None) -> None:
        if candidates is None:
            extractor = getattr(getattr(getattr(model, "policy", None), "q_net", None), "features_extractor", None)
            if not isinstance(extractor, GlimpseGridExtractor):
                raise ValueError(
                    f"GridActing reads the grid of a model with a GlimpseGridQPolicy, got {type(model).__name__}; "
                    "give the grid's candidates (GridActions(env).candidates) for any other"
                )
            candidates = extractor.candidates.cpu().numpy()
        self.model = model
        self.candidates = np.asarray(candidates, dtype=np.float32)

    def predict(
        self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False
    ) -> tuple[np.ndarray, Any]:
        """SB3's ``predict``, with ``(N, 3)`` glimpse actions instead of indices."""
        indices, state = self.model.predict(observation, state, episode_start, deterministic)
        return self.candidates[_indices(indices, len(self.candidates))], state


def acting_policy(model: Any) -> Any:
    """What acts on the continuous glimpse env for ``model``: :class:`GridActing` for a model with a
    :class:`GlimpseGridQPolicy`, else the model."""
    policy = getattr(model, "policy", None)
    return GridActing(model) if isinstance(policy, GlimpseGridQPolicy) else model


class _FirstColumns(nn.Module):
    """``(B, K + D) -> (B, K)``: the candidates' values out of the grid extractor's features."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features[:, : self.count]


class GlimpseGridQNetwork(QNetwork):
    """SB3's ``QNetwork`` whose values are the :class:`~agents.grid_policy.GlimpseGridExtractor`'s per-candidate
    outputs (no MLP after the extractor)."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        features_extractor: GlimpseGridExtractor,
        features_dim: int,
        **kwargs: Any,
    ) -> None:
        kwargs["net_arch"] = []
        # QNetwork builds Linear(features_dim, K) as its head; built from one feature it costs nothing before it
        # is replaced (K + D wide it would be a million parameters, in the target network too).
        super().__init__(observation_space, action_space, features_extractor, 1, **kwargs)
        self.features_dim = features_dim
        extractor = self.features_extractor
        assert isinstance(extractor, GlimpseGridExtractor)
        self.q_net = nn.Sequential(_FirstColumns(extractor.grid.size))


class GlimpseGridQPolicy(DQNPolicy):
    """SB3 ``DQNPolicy`` over a grid of glimpses on the ``map`` observation (see the module).

    Args:
        observation_space: the ``map`` observation ``Box`` ``(C, M, M)``.
        action_space: ``Discrete(K)``, the grid's candidates (:class:`GridActions`).
        lr_schedule: SB3's learning-rate schedule.
        glimpse_geometry: :class:`~agents.map_critic.GlimpseGeometry` fields as a dict
            (:meth:`GridActions.policy_kwargs` gives it with ``grid``).
        grid: :class:`~agents.grid_policy.GlimpseGrid` fields as a dict (default: its defaults).
        **kwargs: SB3's ``DQNPolicy`` keyword arguments (``features_extractor_kwargs`` go to
            :class:`~agents.grid_policy.GlimpseGridExtractor`).

    Raises:
        ValueError: an observation that is not the map, an action space that is not the grid's, no geometry, or
            a ``net_arch`` (the values come from the per-glimpse scorer).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Any,
        glimpse_geometry: dict[str, Any] | None = None,
        grid: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        check_map_observation(observation_space, "GlimpseGridQPolicy")
        if glimpse_geometry is None:
            raise ValueError("GlimpseGridQPolicy needs glimpse_geometry (GridActions(env).policy_kwargs())")
        settings = GlimpseGrid(**(grid or {}))
        if not isinstance(action_space, spaces.Discrete) or int(action_space.n) != settings.size:
            raise ValueError(
                f"GlimpseGridQPolicy requires Discrete({settings.size}) actions, the grid's candidates "
                f"(wrap the env in agents.grid_dqn.GridActions with the same grid); got {action_space}"
            )
        if kwargs.get("net_arch"):
            raise ValueError("GlimpseGridQPolicy takes no net_arch: each glimpse's value comes from its scorer")
        if kwargs.get("features_extractor_class") not in (None, GlimpseGridExtractor):
            raise ValueError("GlimpseGridQPolicy takes no features_extractor_class: its values come from the map")
        kwargs["net_arch"] = []  # saved as such, so that a loaded policy passes the check above
        self.glimpse_geometry = glimpse_geometry
        self.grid_settings = settings.to_dict()
        kwargs["features_extractor_kwargs"] = grid_extractor_kwargs(
            kwargs.get("features_extractor_kwargs"), glimpse_geometry, self.grid_settings
        )
        kwargs.setdefault("normalize_images", False)
        kwargs["features_extractor_class"] = GlimpseGridExtractor
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def make_q_net(self) -> QNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return GlimpseGridQNetwork(**net_args).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return grid_constructor_parameters(
            super()._get_constructor_parameters(), self.glimpse_geometry, self.grid_settings
        )


def saved_grid_actions(path: str | Path) -> spaces.Discrete:
    """The ``Discrete(K)`` action space of a model saved with a :class:`GlimpseGridQPolicy`, from the grid in the
    zip's readable ``policy_kwargs`` (nothing unpickled).

    Raises:
        SB3FileError: the zip cannot be read, or does not hold a grid policy's settings.
    """
    from agents.sb3_files import SB3FileError, read_sb3_data

    policy_kwargs = read_sb3_data(path).get("policy_kwargs")
    grid = policy_kwargs.get("grid") if isinstance(policy_kwargs, dict) else None
    if not isinstance(grid, dict):
        raise SB3FileError(f"SB3 zip '{path}': no glimpse grid in its policy_kwargs (not a GlimpseGridQPolicy model)")
    try:
        return spaces.Discrete(GlimpseGrid(**grid).size)
    except (TypeError, ValueError) as error:
        raise SB3FileError(f"SB3 zip '{path}': its glimpse grid {grid} is not valid ({error})") from error
