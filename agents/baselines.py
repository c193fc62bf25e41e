"""Fixed and random glimpse policies with stable-baselines3's ``predict()`` signature.

Every policy reads only the observation's empty-slot ``mask`` to know how many glimpses were taken, so they work
with any env id and any observation preset (``full``, ``latent``, or ``flat``, whose last ``P`` values are the
mask). Actions are ``(x, y, scale)`` in ``[-1, 1]``; scale -1 is the smallest glimpse, +1 the largest.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from adaglimpse_env import GlimpseVectorEnv


class GlimpsePolicy(ABC):
    """Base of the baselines: maps the glimpse index of each env to an action.

    Args:
        num_glimpses: glimpses per episode.
        tokens_per_glimpse: ``g * g`` (to read the glimpse index off the mask).
        image_size: image side in pixels (to size tiles exactly).
        min_glimpse: smallest glimpse side (``16 * g``).
        max_glimpse: largest glimpse side.
    """

    def __init__(
        self,
        num_glimpses: int,
        tokens_per_glimpse: int = 4,
        image_size: int = 224,
        min_glimpse: int = 32,
        max_glimpse: float = 224.0,
    ) -> None:
        self.num_glimpses = num_glimpses
        self.tokens_per_glimpse = tokens_per_glimpse
        self.image_size = image_size
        self.min_glimpse = min_glimpse
        self.max_glimpse = max_glimpse

    @classmethod
    def for_env(cls, env: GlimpseVectorEnv, **kwargs: Any) -> GlimpsePolicy:
        """The policy sized for an env's episode configuration."""
        episode = env.episode
        return cls(
            env.num_glimpses,
            episode.tokens_per_glimpse,
            env.image_size[0],
            16 * env.grid_size,
            env.image_size[0] * episode.max_glimpse_ratio,
            **kwargs,
        )

    def scale_for_side(self, side: float) -> float:
        """The action scale in ``[-1, 1]`` whose glimpse side is ``side`` pixels."""
        unit = (side - self.min_glimpse) / (self.max_glimpse - self.min_glimpse)
        return float(np.clip(unit, 0.0, 1.0) * 2 - 1)

    def box_action(self, y: int, x: int, side: int) -> np.ndarray:
        """The action whose glimpse is the ``side``-px square at pixel ``(y, x)``.

        Positions aim at the pixel's centre so that float32 rounding in the env cannot floor them to the pixel
        before (original `_calculate_crops` floors ``u * (H - s)``).
        """
        free = self.image_size - side
        unit_y = 1.0 if free <= 0 else min(1.0, (y + 0.5) / free)
        unit_x = 1.0 if free <= 0 else min(1.0, (x + 0.5) / free)
        return np.array([2 * unit_x - 1, 2 * unit_y - 1, self.scale_for_side(side)])

    def glimpse_index(self, observation: Any) -> tuple[np.ndarray, bool]:
        """Glimpses taken so far per env, and whether the observation was batched."""
        if isinstance(observation, dict):
            mask = np.asarray(observation["mask"])
            batched = mask.ndim == 3
            filled = (mask.reshape(mask.shape[0], -1) if batched else mask.reshape(1, -1)) < 0.5
        else:
            flat = np.asarray(observation)
            batched = flat.ndim == 2
            flat = flat if batched else flat[None]
            budget = self.num_glimpses * self.tokens_per_glimpse
            filled = flat[:, -budget:] < 0.5
        return filled.sum(axis=1) // self.tokens_per_glimpse, batched

    def predict(
        self,
        observation: Any,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3-compatible: ``(actions, state)`` with actions ``(B, 3)`` (or ``(3,)`` for one observation)."""
        index, batched = self.glimpse_index(observation)
        actions = np.stack([self.action(int(i)) for i in index]).astype(np.float32)
        return (actions if batched else actions[0]), state

    @abstractmethod
    def action(self, glimpse: int) -> np.ndarray:
        """The ``(x, y, scale)`` action of glimpse number ``glimpse`` (0-based)."""


class RandomPolicy(GlimpsePolicy):
    """Uniform random actions (the original's warm-up policy), seeded."""

    def __init__(self, *args: Any, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rng = np.random.default_rng(seed)

    def action(self, glimpse: int) -> np.ndarray:
        """A fresh uniform draw."""
        return self.rng.uniform(-1.0, 1.0, size=3)


class RasterPolicy(GlimpsePolicy):
    """A fixed ``k x k`` tiling at one scale, row by row, with ``k = ceil(sqrt(num_glimpses))``: the tiles cover
    the image exactly when ``k * k`` glimpses are taken (the rest are left out in raster order)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tiles = max(1, math.ceil(math.sqrt(self.num_glimpses)))

    def tile_action(self, glimpse: int, tiles: int) -> np.ndarray:
        """Tile ``glimpse`` (row-major) of a ``tiles x tiles`` tiling of the image."""
        row, col = divmod(glimpse % (tiles * tiles), tiles)
        side = self.image_size // tiles
        step = (self.image_size - side) / max(1, tiles - 1)
        return self.box_action(round(row * step), round(col * step), side)

    def action(self, glimpse: int) -> np.ndarray:
        """Tile ``glimpse`` of the raster."""
        return self.tile_action(glimpse, self.tiles)


class CentreZoomOutPolicy(GlimpsePolicy):
    """Start with the smallest glimpse at the centre, then grow it linearly to the largest at the last step."""

    def action(self, glimpse: int) -> np.ndarray:
        """Centre, scale rising from -1 to +1 over the episode."""
        fraction = glimpse / max(1, self.num_glimpses - 1)
        return np.array([0.0, 0.0, 2 * fraction - 1])


class WholeImageFirstPolicy(RasterPolicy):
    """The whole image first (a coarse view of everything), then a raster of the remaining glimpses."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tiles = max(1, math.ceil(math.sqrt(max(1, self.num_glimpses - 1))))

    def action(self, glimpse: int) -> np.ndarray:
        """Glimpse 0 covers everything; glimpse ``k >= 1`` is tile ``k - 1`` of the raster."""
        if glimpse == 0:
            return np.array([0.0, 0.0, 1.0])
        return self.tile_action(glimpse - 1, self.tiles)


class GreedyOraclePolicy(GlimpsePolicy):
    """**An upper bound, not a policy**: at every step it scores candidate glimpses with the env's frozen model on
    the true image (and label, mask or pixels), in batched forwards, and takes the best one.

    It sees what no agent sees, so its numbers say how far a policy could get with this model and budget (one
    step ahead; a non-greedy plan could in principle do better). Tables must label it as an oracle.

    Candidates, per step: a coarse grid of ``positions x positions`` places times ``scales`` glimpse sides spaced
    geometrically from the smallest to the largest glimpse, then a ``refine x refine x 3`` grid around each env's
    best coarse candidate (half a coarse step either way in position and scale), so that small targets are hit
    precisely at a fraction of the cost of a fine grid: ``positions**2 * scales + refine**2 * 3`` forwards per env.

    Args:
        oracle_env: the vector env it is evaluated on (it reads that env's current episodes, so call ``predict``
            with the observation that env just returned).
        positions: coarse candidate positions per axis.
        scales: coarse candidate glimpse sides.
        refine: local candidates per axis around the best coarse one (0 or 1: no refinement).
        max_batch: most (env, candidate) sequences per model forward (memory bound).
    """

    def __init__(
        self, *args: Any, oracle_env: GlimpseVectorEnv, positions: int = 9, scales: int = 5, refine: int = 5,
        max_batch: int = 1024, **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        if positions < 1 or scales < 1 or refine < 0:
            raise ValueError(
                f"GreedyOraclePolicy requires positions >= 1, scales >= 1 and refine >= 0, got {positions}, "
                f"{scales}, {refine}"
            )
        self.env = oracle_env
        self.max_batch = max_batch
        grid = np.linspace(-1.0, 1.0, positions) if positions > 1 else np.zeros(1)
        sides = np.geomspace(self.min_glimpse, self.max_glimpse, scales) if scales > 1 else [self.max_glimpse]
        scale_values = np.array([self.scale_for_side(float(side)) for side in sides])
        self.candidates = np.array([(x, y, s) for s in scale_values for y in grid for x in grid], dtype=np.float32)
        # Half a coarse step either way; the scale step is the mean gap between coarse scale values.
        position_step = 1.0 if positions < 2 else 1.0 / (positions - 1)
        scale_step = 0.5 * float(np.diff(scale_values).mean()) if scales > 1 else 0.25
        offsets = np.linspace(-position_step, position_step, refine) if refine > 1 else np.zeros(0)
        self.refinements = np.array(
            [(dx, dy, ds) for ds in (-scale_step, 0.0, scale_step) for dy in offsets for dx in offsets],
            dtype=np.float32,
        ).reshape(-1, 3)

    def predict(
        self,
        observation: Any,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """The best candidate of each env of ``env`` (the observation is only used for its batch shape)."""
        _, batched = self.glimpse_index(observation)
        num_envs = self.env.num_envs
        coarse = np.broadcast_to(self.candidates, (num_envs, *self.candidates.shape))
        scores = self.env.score_candidates(coarse, max_batch=self.max_batch)
        best = self.candidates[scores.argmax(axis=1)]  # (B, 3)
        if len(self.refinements):
            local = np.clip(best[:, None] + self.refinements[None], -1.0, 1.0).astype(np.float32)
            local_scores = self.env.score_candidates(local, max_batch=self.max_batch)
            better = local_scores.max(axis=1) > scores.max(axis=1)
            best = np.where(better[:, None], local[np.arange(num_envs), local_scores.argmax(axis=1)], best)
        return (best if batched else best[0]), state

    def action(self, glimpse: int) -> np.ndarray:
        """Not defined: the oracle's action depends on the image, see :meth:`predict`."""
        raise NotImplementedError("GreedyOraclePolicy chooses from the image: call predict(observation)")


BASELINES: dict[str, type[GlimpsePolicy]] = {
    "random": RandomPolicy,
    "raster": RasterPolicy,
    "centre-zoom": CentreZoomOutPolicy,
    "whole-first": WholeImageFirstPolicy,
    "greedy": GreedyOraclePolicy,
}
#: Baselines that see the true image: upper bounds to report beside policies, never as one of them.
ORACLES = ("greedy",)


def make_baseline(name: str, env: GlimpseVectorEnv, seed: int | None = None) -> GlimpsePolicy:
    """A baseline by name, sized for ``env`` (``greedy`` also reads ``env``'s episodes: an oracle)."""
    if name not in BASELINES:
        raise ValueError(f"baseline must be one of {list(BASELINES)}, got {name!r}")
    if name == "random":
        return RandomPolicy.for_env(env, seed=seed)
    if name == "greedy":
        return GreedyOraclePolicy.for_env(env, oracle_env=env)
    return BASELINES[name].for_env(env)
