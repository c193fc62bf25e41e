"""Per-env state of the episodes in progress: images and their targets, the tokens gathered so far, what was seen.

Everything lives on the env's device between steps, except the glimpse counts: they set the batch shapes of the
next forward, so a host copy spares a device read every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from adaglimpse_env.config import ResolvedEpisodeConfig
from adaglimpse_env.envs.glimpse_map import GlimpseMap
from adaglimpse_env.glimpse import GlimpseBoxes
from adaglimpse_env.normalization import to_pixels
from adaglimpse_env.tasks import Task, TaskTargets

#: Rows index either every env (a plain slice: views, no index tensor) or some of them (an index tensor).
Rows = slice | torch.Tensor


def upload(value: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host data on ``device``; on CUDA through pinned memory, so the copy does not wait for the device."""
    tensor = torch.as_tensor(value)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class EpisodeBuffers:
    """The ``B`` episodes of a vector env, padded to the token budget ``P = num_glimpses * g * g``.

    Args:
        num_envs: ``B``.
        episode: glimpse budget and grid.
        task: says whether the images come with segmentation masks.
        image_size: ``(H, W)``.
        device: where the buffers live.
        token_dtype: dtype of the cached token embeddings (the encoder's, autocast's if on); None keeps no cache
            (the env's reference path recomputes them each step).
        keep_image_pixels: keep each image on the 0-255 scale too (the reconstruction score compares with it).

    Attributes:
        images: ``(B, 3, H, W)`` float32, ImageNet-normalised.
        labels: ``(B,)`` int64, ``-1`` where the source has no label.
        target_boxes: ``(B, 4)`` int64 pixel box ``(y1, x1, y2, x2)`` of the object to find, for sources that
            place one (procedural scenes); ``-1`` elsewhere. Reported in ``info``, never observed.
        masks: ``(B, H, W)`` int64 segmentation masks, or None when the task needs none.
        image_pixels: ``(B, 3, H, W)`` float32 images on the 0-255 scale, or None.
        patches: ``(B, P, 3, 16, 16)`` float32 patches gathered so far, zero in empty slots.
        boxes: ``(B, P, 4)`` int64 pixel box of each token, 0 in empty slots.
        tokens: ``(B, P, D)`` token embeddings (patch + box embedding) or None.
        coverage: ``(B, H, W)`` bool, pixels inside any glimpse so far.
        token_count: ``(B,)`` int64 on the device, ``glimpses * g * g``.
        crops: ``(B, N, 4)`` int64 glimpse boxes ``(y1, x1, y2, x2)``, ``-1`` for glimpses not taken.
        clipped: ``(B,)`` int64 actions clipped to the box this episode.
        glimpses: ``(B,)`` int64 on the host, glimpses taken.
        glimpse_map: the ``map`` observation's pictures (:class:`GlimpseMap`), only with that preset.
    """

    def __init__(
        self,
        num_envs: int,
        episode: ResolvedEpisodeConfig,
        task: Task,
        image_size: tuple[int, int],
        device: torch.device,
        token_dtype: torch.dtype | None,
        token_dim: int,
        keep_image_pixels: bool,
    ) -> None:
        b, p, dev = num_envs, episode.max_tokens, device
        height, width = image_size
        self.num_envs = num_envs
        self.device = device
        self.image_size = image_size
        self.tokens_per_glimpse = episode.tokens_per_glimpse
        self.images = torch.zeros(b, 3, height, width, device=dev)
        self.labels = torch.full((b,), -1, dtype=torch.long, device=dev)
        self.target_boxes = torch.full((b, 4), -1, dtype=torch.long, device=dev)
        self.masks = torch.zeros(b, height, width, dtype=torch.long, device=dev) if task.needs_masks else None
        self.image_pixels = torch.zeros(b, 3, height, width, device=dev) if keep_image_pixels else None
        self.patches = torch.zeros(b, p, 3, 16, 16, device=dev)
        self.boxes = torch.zeros(b, p, 4, dtype=torch.long, device=dev)
        self.tokens = None if token_dtype is None else torch.zeros(b, p, token_dim, dtype=token_dtype, device=dev)
        self.coverage = torch.zeros(b, height, width, dtype=torch.bool, device=dev)
        self.token_count = torch.zeros(b, dtype=torch.long, device=dev)
        self.crops = torch.full((b, episode.num_glimpses, 4), -1, dtype=torch.long, device=dev)
        self.clipped = torch.zeros(b, dtype=torch.long, device=dev)
        self.glimpses = np.zeros(b, dtype=np.int64)
        #: Index of each env's image in its source (host copy, for error messages).
        self.sample_index = np.full(b, -1, dtype=np.int64)
        self.all_rows = torch.arange(b, device=dev)
        self.glimpse_map = GlimpseMap(b, episode.map_size, image_size, dev) if episode.observation == "map" else None

    def rows(self, rows: np.ndarray) -> Rows:
        """Host row numbers as an index of the buffers: a plain slice when they are every env."""
        return slice(None) if rows.size == self.num_envs else upload(rows, self.device)

    def targets(self) -> TaskTargets:
        """The current images' labels and masks."""
        return TaskTargets(labels=self.labels, masks=self.masks)

    def load(self, rows: np.ndarray, samples: Sequence[dict[str, Any]]) -> None:
        """New images for ``rows`` (one sample of the image stream each), and a clean slate: no tokens, nothing
        seen."""
        index = self.rows(rows)
        images = upload(torch.stack([s["image"] for s in samples]), self.device)
        self.images[index] = images
        if self.image_pixels is not None:
            self.image_pixels[index] = to_pixels(images.float())
        self.labels[index] = upload(torch.stack([s["label"] for s in samples]), self.device)
        self.sample_index[rows] = [int(s["index"]) for s in samples]
        if "target_box" in samples[0]:
            self.target_boxes[index] = upload(torch.stack([s["target_box"] for s in samples]), self.device)
        if self.masks is not None:
            self.masks[index] = upload(torch.stack([s["mask"] for s in samples]), self.device)
        self.patches[index] = 0.0
        self.boxes[index] = 0
        if self.tokens is not None:
            self.tokens[index] = 0.0
        self.coverage[index] = False
        self.token_count[index] = 0
        self.crops[index] = -1
        self.clipped[index] = 0
        self.glimpses[rows] = 0
        if self.glimpse_map is not None:
            self.glimpse_map.clear(index)

    def add_glimpse(
        self,
        rows: np.ndarray,
        index: Rows,
        patches: torch.Tensor,
        geometry: GlimpseBoxes,
        tokens: torch.Tensor | None,
    ) -> None:
        """Append one glimpse to each env of ``rows`` (``index`` is ``rows`` as from :meth:`rows`).

        Args:
            rows: ``(R,)`` host row numbers.
            index: the same rows on the device.
            patches: ``(R, g*g, 3, 16, 16)`` the glimpses' patches.
            geometry: their crops ``(R, 3)`` ``(y, x, side)`` and cells ``(R, g*g, 4)``.
            tokens: ``(R, g*g, D)`` their token embeddings when the buffers keep them.
        """
        per_glimpse = self.tokens_per_glimpse
        counts = self.glimpses[rows]
        slots: tuple[Any, Any]
        crop_slots: tuple[Any, Any]
        if isinstance(index, slice) and (counts == counts[0]).all():
            # Every env at the same step (the usual case): plain slices, no index tensors.
            first = int(counts[0])
            slots = (index, slice(first * per_glimpse, (first + 1) * per_glimpse))
            crop_slots = (index, first)
        else:
            row_index = self.all_rows if isinstance(index, slice) else index
            first_slot = self.token_count[index]
            slots = (row_index[:, None], first_slot[:, None] + torch.arange(per_glimpse, device=self.device))
            crop_slots = (row_index, torch.div(first_slot, per_glimpse, rounding_mode="floor"))
        self.patches[slots] = patches
        self.boxes[slots] = geometry.cells
        if self.tokens is not None and tokens is not None:
            self.tokens[slots] = tokens
        if self.glimpse_map is not None:
            self.glimpse_map.paint(index, patches, geometry.cells)

        y, x, side = geometry.crop.unbind(dim=1)
        ys = torch.arange(self.image_size[0], device=self.device)
        xs = torch.arange(self.image_size[1], device=self.device)
        inside_rows = (ys[None] >= y[:, None]) & (ys[None] < (y + side)[:, None])
        inside_cols = (xs[None] >= x[:, None]) & (xs[None] < (x + side)[:, None])
        self.coverage[index] |= inside_rows[:, :, None] & inside_cols[:, None, :]
        self.crops[crop_slots] = torch.stack((y, x, y + side, x + side), dim=1)
        self.token_count[index] += per_glimpse
        self.glimpses[rows] += 1

    def empty_slots(self, budget: int) -> torch.Tensor:
        """``(B, P, 1)`` float32, 1 for a token slot not filled yet."""
        return (torch.arange(budget, device=self.device)[None] >= self.token_count[:, None]).float()[..., None]

    def pixel_fraction(self) -> torch.Tensor:
        """``(B,)`` float64, the fraction of the image's pixels inside some glimpse."""
        pixels = float(self.image_size[0] * self.image_size[1])
        return self.coverage.flatten(1).sum(dim=1).double() / pixels
