"""The glimpse canvas: a reconstruction reference with no model, every glimpse's pixels drawn back where they
were cut.

A reconstruction model that has seen some glimpses should predict the image at least as well as the glimpses
themselves say it: each token's 16x16 patch resampled bilinearly over its cell, a finer cell drawn over a coarser
one (never the reverse), and the ImageNet mean colour where nothing was seen. The canvas is that prediction, so
``model RMSE - canvas RMSE`` after the same glimpses measures what the model adds to, or loses from, the pixels
it was given; and the canvas's ratio between two image sets measures how much harder one set is for *anything*
that reconstructs from glimpses of that resolution, with no training involved.

The drawing is the ``map`` observation's (:class:`~adaglimpse_env.envs.glimpse_map.GlimpseMap`) at one map pixel
per image pixel: the same pixels a map-reading agent sees, at full resolution.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
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
        height, width = env.image_size
        self._map = GlimpseMap(env.num_envs, max(height, width), (height, width), env.device)
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
        canvas = self._map.pixels
        if tuple(canvas.shape[-2:]) != tuple(self.env.image_size):  # the map is square; stretch it back
            canvas = F.interpolate(canvas, size=self.env.image_size, mode="bilinear", align_corners=False)
        return to_pixels(canvas)

    def rmse(self) -> np.ndarray:
        """``(B,)`` float64 RMSE of each env's canvas against its image, on the 0-255 scale."""
        buffers = self.env.buffers
        truth = buffers.image_pixels if buffers.image_pixels is not None else to_pixels(buffers.images.float())
        error = (self.pixels() - truth).double()
        return error.square().flatten(1).mean(dim=1).sqrt().cpu().numpy()


class CanvasScores:
    """The canvas's RMSE after every glimpse of :func:`agents.evaluation.run_policy`'s episodes, and, on the pixels
    some glimpse covered, the canvas's and the model's RMSE side by side (where both had the same pixels to work
    from: the split that says whether a model keeps what it was shown).

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
        whose episode already ended keeps its last values."""
        if self._round and not live.any():
            self._round.append(self._round[-1])
            return
        env, buffers = self.env, self.env.buffers
        if not self._round:
            self.canvas.reset()
        self.canvas.update()
        canvas = self.canvas.pixels()
        truth = buffers.image_pixels if buffers.image_pixels is not None else to_pixels(buffers.images.float())
        predicted = env.task.prediction_images(env.model, env.prediction)
        assert predicted is not None  # a reconstruction task (checked when the canvas was made)
        model = to_pixels(predicted.float())
        seen = buffers.coverage[:, None].expand_as(truth)
        canvas_error = (canvas - truth).double().square()
        model_error = (model - truth).double().square()
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
        """Close a round of ``num_envs`` episodes, of which the first ``take`` count."""
        steps = np.stack(self._round, axis=1)  # (B, steps + 1, 4)
        self._episodes.extend(steps[:take])
        self._round = []

    def summary(self) -> dict[str, list[float] | float]:
        """``metric_by_glimpse`` (canvas RMSE, aggregated as the env's metric: global over the images),
        ``final_score`` (its mean ``-RMSE`` per episode, as the env's score), and per glimpse the RMSE of the
        canvas and of the model on the covered pixels only (``seen_canvas_rmse_by_glimpse``,
        ``seen_model_rmse_by_glimpse``; 0 before the first glimpse) and the share of pixels covered."""
        episodes = np.stack(self._episodes)  # (E, steps + 1, 4)
        count = episodes[..., 3].sum(axis=0)
        pixels = float(np.prod(self.env.image_size) * 3)
        return {
            "metric_by_glimpse": np.sqrt(np.mean(np.square(episodes[..., 0]), axis=0)).tolist(),
            "final_score": float(-np.mean(episodes[:, -1, 0])),
            "seen_canvas_rmse_by_glimpse": np.sqrt(episodes[..., 1].sum(axis=0) / np.maximum(count, 1)).tolist(),
            "seen_model_rmse_by_glimpse": np.sqrt(episodes[..., 2].sum(axis=0) / np.maximum(count, 1)).tolist(),
            "seen_share_by_glimpse": (count / (pixels * len(episodes))).tolist(),
        }
