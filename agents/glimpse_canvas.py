"""The glimpse canvas: a reconstruction reference with no model, every glimpse's pixels drawn back where they
were cut.

A reconstruction model that has seen some glimpses should predict the image at least as well as the glimpses
themselves say it: each token's 16x16 patch resampled bilinearly over its cell, a finer cell drawn over a coarser
one (never the reverse), and the ImageNet mean colour where nothing was seen. The canvas is that prediction, so
``model RMSE - canvas RMSE`` after the same glimpses measures what the model adds to, or loses from, the pixels
it was given; and the canvas's ratio between two image sets measures how much harder one set is for *anything*
that reconstructs from glimpses of that resolution, with no training involved.

The drawing is the ``map`` observation's (:class:`~adaglimpse_env.envs.glimpse_map.GlimpseMap`) at one map pixel
per image pixel: the same pixels a map-reading agent sees, at full resolution. That costs memory the 64-pixel map
does not: each step samples every new cell over the whole ``H x W`` canvas (about 0.8 MB per cell at 224 px, so
about 200 MB for a step of 64 envs with 2x2 glimpses), which is why it is an evaluation tool, not an observation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from adaglimpse_env import GlimpseVectorEnv
from adaglimpse_env.envs.glimpse_map import GlimpseMap
from adaglimpse_env.normalization import to_pixels


class GlimpseCanvas:
    """Follows a vector env's episodes and scores the canvas of each, as the env scores its model.

    Call :meth:`reset` after ``env.reset()`` and :meth:`update` after every ``env.step()``; :meth:`rmse` is the
    canvas's RMSE per env on the 0-255 scale, the env's reconstruction metric.

    Args:
        env: a reconstruction env (``metric_name == "rmse"``) in ``next_step`` or ``disabled`` autoreset mode
            (in ``same_step`` mode a finished env already holds its next image when ``step()`` returns).

    Raises:
        ValueError: another task, or ``same_step`` autoreset.
    """

    def __init__(self, env: GlimpseVectorEnv) -> None:
        if env.task.metric_name != "rmse":
            raise ValueError(
                f"the glimpse canvas is a reconstruction reference: it needs an env whose metric is 'rmse', got "
                f"{env.task.metric_name!r} ({type(env.task).__name__}); use a reconstruction id such as "
                "AdaGlimpse-Photos-v0"
            )
        if env.autoreset_mode == AutoresetMode.SAME_STEP:
            raise ValueError(
                "the glimpse canvas reads each episode's glimpses after step(), which same_step autoreset has "
                "already replaced for finished envs; make the env with autoreset_mode='next_step' (the default)"
            )
        self.env = env
        side = env.image_size[0]  # the env's images are square (it refuses other models)
        self._map = GlimpseMap(env.num_envs, side, env.image_size, env.device)
        self._drawn = np.zeros(env.num_envs, dtype=np.int64)  # glimpses drawn so far, per env

    def reset(self) -> None:
        """Every env starts a new episode: nothing drawn."""
        self._map.clear(slice(None))
        self._drawn[:] = 0

    def update(self) -> None:
        """Draw the glimpses taken since the last call (an env that started a new image starts a clean canvas)."""
        buffers = self.env.buffers
        taken = buffers.glimpses
        restarted = np.flatnonzero(taken < self._drawn)
        if restarted.size:
            self._map.clear(torch.as_tensor(restarted, device=self.env.device))
            self._drawn[restarted] = 0
        per_glimpse = buffers.tokens_per_glimpse
        while True:
            rows = np.flatnonzero(self._drawn < taken)
            if rows.size == 0:
                return
            index = torch.as_tensor(rows, device=self.env.device)
            slots = torch.as_tensor(self._drawn[rows] * per_glimpse, device=self.env.device)
            slots = slots[:, None] + torch.arange(per_glimpse, device=self.env.device)  # (R, g*g)
            self._map.paint(index, buffers.patches[index[:, None], slots], buffers.boxes[index[:, None], slots])
            self._drawn[rows] += 1

    def pixels(self) -> torch.Tensor:
        """``(B, 3, H, W)`` the canvases on the 0-255 scale."""
        return to_pixels(self._map.pixels)

    def squared_errors(self) -> torch.Tensor:
        """``(B, 3, H, W)`` float64 squared error of each canvas against its image, on the 0-255 scale."""
        return (self.pixels() - image_pixels(self.env)).double().square()

    def rmse(self) -> np.ndarray:
        """``(B,)`` float64 RMSE of each env's canvas against its image, on the 0-255 scale (the env's metric)."""
        return self.squared_errors().flatten(1).mean(dim=1).sqrt().cpu().numpy()


def image_pixels(env: GlimpseVectorEnv) -> torch.Tensor:
    """``(B, 3, H, W)`` the env's current images on the 0-255 scale, as its reconstruction score reads them."""
    buffers = env.buffers
    return buffers.image_pixels if buffers.image_pixels is not None else to_pixels(buffers.images.float())


class CanvasScores:
    """The canvas's RMSE after every glimpse of :func:`agents.evaluation.run_policy`'s episodes.

    Also, on the pixels some glimpse covered, the canvas's and the model's RMSE side by side: there both had the
    same pixels to work from, so the pair says whether a model keeps what it was shown.

    ``run_policy`` calls :meth:`observe` after the reset and after every step, then :meth:`end_round`, as it
    calls :class:`~agents.evaluation.EpisodeRecorder`.

    Args:
        env: as :class:`GlimpseCanvas`.
    """

    def __init__(self, env: GlimpseVectorEnv) -> None:
        self.canvas = GlimpseCanvas(env)
        self.env = env
        # Per step of the current round, per env: canvas RMSE, then summed squared errors on the covered pixels
        # (canvas, model) and their count.
        self._round: list[np.ndarray] = []
        self._episodes: list[np.ndarray] = []  # per episode: (steps + 1, 4)

    def observe(self, live: np.ndarray) -> None:
        """After ``env.reset()`` (every env live) or ``env.step()``: score what each live env has drawn; an env
        whose episode already ended keeps its last values.

        Args:
            live: ``(B,)`` bool, the envs whose episode is still running (all of them after a reset).
        """
        if self._round and not live.any():
            self._round.append(self._round[-1])
            return
        env, buffers = self.env, self.env.buffers
        if not self._round:
            self.canvas.reset()
        self.canvas.update()
        canvas_error = self.canvas.squared_errors()
        predicted = env.task.prediction_images(env.model, env.prediction)
        assert predicted is not None  # a reconstruction task (checked when the canvas was made)
        model_error = (to_pixels(predicted.float()) - image_pixels(env)).double().square()
        seen = buffers.coverage[:, None].expand_as(canvas_error)
        columns = (
            canvas_error.flatten(1).mean(dim=1).sqrt(),
            (canvas_error * seen).flatten(1).sum(dim=1),
            (model_error * seen).flatten(1).sum(dim=1),
            seen.flatten(1).sum(dim=1).double(),
        )
        values = torch.stack(columns, dim=1).cpu().numpy()  # (B, 4)
        if self._round:
            values = np.where(live[:, None], values, self._round[-1])
        self._round.append(values)

    def end_round(self, take: int) -> None:
        """Close a round of ``num_envs`` episodes.

        Args:
            take: how many of them count (the first ``take``; the last round may need fewer than ``num_envs``).
        """
        steps = np.stack(self._round, axis=1)  # (B, steps + 1, 4)
        self._episodes.extend(steps[:take])
        self._round = []

    def summary(self) -> dict[str, Any]:
        """What was measured, over every episode closed so far.

        Returns:
            ``metric_by_glimpse``: the canvas's RMSE after 0, 1, ... glimpses, aggregated as the env's metric
            (``task.aggregate``: global over the images); ``final_score``: its mean ``-RMSE`` per episode, as the
            env scores; ``seen_canvas_rmse_by_glimpse`` and ``seen_model_rmse_by_glimpse``: the canvas's and the
            model's RMSE on the covered pixels only, pooled over the episodes (``None`` before the first glimpse,
            when nothing is covered); ``seen_share_by_glimpse``: the share of pixels covered.
        """
        episodes = np.stack(self._episodes)  # (E, steps + 1, 4)
        count = episodes[..., 3].sum(axis=0)
        pixels = float(np.prod(self.env.image_size) * 3)

        def on_seen(column: int) -> list[float | None]:
            return [
                float(np.sqrt(error / n)) if n > 0 else None
                for error, n in zip(episodes[..., column].sum(axis=0), count, strict=True)
            ]

        aggregate = self.env.task.aggregate
        return {
            "metric_by_glimpse": [aggregate(episodes[:, step, 0]) for step in range(episodes.shape[1])],
            "final_score": float(-np.mean(episodes[:, -1, 0])),
            "seen_canvas_rmse_by_glimpse": on_seen(1),
            "seen_model_rmse_by_glimpse": on_seen(2),
            "seen_share_by_glimpse": (count / (pixels * len(episodes))).tolist(),
        }
