"""Fixed and random glimpse policies with stable-baselines3's ``predict()`` signature.

The fixed policies read only how many glimpses were taken (the empty-slot ``mask``, or the ``map`` preset's budget
channel), so they work with any env id and any observation preset. ``salient`` also reads what the agent has seen
(it needs ``observation="map"``): a hand-made adaptive policy, the yardstick a learned one should pass. Actions
are ``(x, y, scale)`` in ``[-1, 1]``; scale -1 is the smallest glimpse, +1 the largest.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

from adaglimpse_env import GlimpseVectorEnv
from adaglimpse_env.envs.glimpse_map import cell_detail


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
        elif np.ndim(observation) >= 3:  # the map preset: channel 4 is the share of the budget used
            maps = np.asarray(observation)
            batched = maps.ndim == 4
            used = (maps if batched else maps[None])[:, 4, 0, 0]
            return np.rint(used * self.num_glimpses).astype(np.int64), batched
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
        actions = self.batch_actions(observation, index, batched).astype(np.float32)
        return (actions if batched else actions[0]), state

    def batch_actions(self, observation: Any, index: np.ndarray, batched: bool) -> np.ndarray:
        """``(B, 3)`` actions for envs at glimpse ``index`` (fixed policies: from the index alone)."""
        return np.stack([self.action(int(i)) for i in index])

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


class SalientPolicy(GlimpsePolicy):
    """Look at everything, then at the most conspicuous spot not yet seen closely, and so on: a hand-made adaptive
    policy that reads only the agent's own ``map`` observation (no oracle).

    Glimpse 0 is the whole image. Each later glimpse is a ``side``-px square whose cell nearest the image centre
    is centred on the map pixel that differs most from the seen background (per-channel median), smoothed over
    3x3 pixels, among those whose detail is still below what a ``side``-px glimpse gives: spots already examined
    are skipped.

    Args:
        side: glimpse side of the close looks, as a fraction of the image side (0.18: 40 px on 224 px, 2-3
            times a default digit).
    """

    def __init__(self, *args: Any, side: float = 0.18, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.side = max(float(self.min_glimpse), side * self.image_size)

    def batch_actions(self, observation: Any, index: np.ndarray, batched: bool) -> np.ndarray:
        """The next glimpse of each env from its map."""
        if isinstance(observation, dict) or np.ndim(observation) < 3:
            raise ValueError(
                "the salient policy requires the map observation (make the env with observation='map'), got "
                f"{'a dict' if isinstance(observation, dict) else f'an array of shape {np.shape(observation)}'}"
            )
        maps = np.asarray(observation, dtype=np.float32)
        maps = maps if batched else maps[None]
        return np.stack([self._look(m, int(i)) for m, i in zip(maps, index, strict=True)])

    def _look(self, glimpse_map: np.ndarray, glimpse: int) -> np.ndarray:
        if glimpse == 0:
            return np.array([0.0, 0.0, 1.0])
        rgb, detail = glimpse_map[:3], glimpse_map[3]
        seen = detail > 0
        if not seen.any():
            return np.array([0.0, 0.0, 1.0])
        background = np.median(rgb[:, seen], axis=1)[:, None, None]
        salience = np.abs(rgb - background).sum(axis=0) * seen
        padded = np.pad(salience, 1)
        size = salience.shape[0]
        salience = np.sum([padded[dy : dy + size, dx : dx + size] for dy in range(3) for dx in range(3)], axis=0)
        close = float(cell_detail(torch.tensor([self.side / 2]), self.image_size)[0])
        salience[detail >= close - 1e-3] = -1.0  # examined at this detail already
        row, col = np.unravel_index(int(salience.argmax()), salience.shape)
        spot = (np.array([row, col]) + 0.5) * self.image_size / size
        # The spot goes to the centre of the cell facing the image centre, not to the glimpse's centre: the
        # classifiers read a digit inside one cell far better than one cut across four (docs/tasks.md).
        centre = spot + np.where(spot < self.image_size / 2, 1.0, -1.0) * self.side / 4
        corner = np.clip(np.round(centre - self.side / 2), 0, self.image_size - self.side).astype(int)
        return self.box_action(int(corner[0]), int(corner[1]), round(self.side))

    def action(self, glimpse: int) -> np.ndarray:
        """Not defined: the action depends on what was seen, see :meth:`predict`."""
        raise NotImplementedError("SalientPolicy chooses from its map observation: call predict(observation)")


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

    def batch_actions(self, observation: Any, index: np.ndarray, batched: bool) -> np.ndarray:
        """The best candidate of each env of ``env`` (the observation is only used for its batch shape)."""
        num_envs = self.env.num_envs
        coarse = np.broadcast_to(self.candidates, (num_envs, *self.candidates.shape))
        scores = self.env.score_candidates(coarse, max_batch=self.max_batch)
        best = self.candidates[scores.argmax(axis=1)]  # (B, 3)
        if len(self.refinements):
            local = np.clip(best[:, None] + self.refinements[None], -1.0, 1.0).astype(np.float32)
            local_scores = self.env.score_candidates(local, max_batch=self.max_batch)
            better = local_scores.max(axis=1) > scores.max(axis=1)
            best = np.where(better[:, None], local[np.arange(num_envs), local_scores.argmax(axis=1)], best)
        return best

    def action(self, glimpse: int) -> np.ndarray:
        """Not defined: the oracle's action depends on the image, see :meth:`predict`."""
        raise NotImplementedError("GreedyOraclePolicy chooses from the image: call predict(observation)")


BASELINES: dict[str, type[GlimpsePolicy]] = {
    "random": RandomPolicy,
    "raster": RasterPolicy,
    "centre-zoom": CentreZoomOutPolicy,
    "whole-first": WholeImageFirstPolicy,
    "salient": SalientPolicy,
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
