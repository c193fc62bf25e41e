"""The ``map`` observation: one picture per episode of everything its glimpses have shown, at the detail they
showed it.

The paper's agent reads its tokens as a set (patches, boxes, latents). A set hides *where* things are from a
small network: to steer towards a blob seen in a coarse glance, the network has to work out the blob's position
from a box and a 16x16 patch. The map puts every token's patch back where it came from, on an ``M x M`` grid over
the image, so that a convolutional policy (SB3's ``CnnPolicy``, or any image-based agent) reads positions off
the pixel grid, as in the recurrent attention model's retina (Mnih et al., 2014) and in active-vision agents that
keep a spatial memory. Nothing here sees more than the agent's glimpses did.

Channels, ``(5, M, M)`` float32:

* 0-2: the pixels seen (ImageNet-normalised, resampled bilinearly from each token's patch), 0 where nothing was;
* 3: detail, ``1 - 0.9 * log(cell / 16) / log(image / 16)`` for the finest cell that covered the map pixel (1 at
  the native 16 px per cell, about 0.3 for a whole-image glance of a 224 px image), 0 where nothing was seen;
* 4: the share of the glimpse budget used, the same everywhere (an agent must know how many glimpses are left).

A finer cell overwrites a coarser one; a coarser one never hides detail already seen.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from adaglimpse_env.glimpse import PATCH_SIZE

#: Channels of the map: RGB, detail, budget used.
MAP_CHANNELS = 5
#: Default side of the map in cells of the grid.
DEFAULT_MAP_SIZE = 64
_MIN_DETAIL = 0.1  # a cell as large as the image still counts as seen


def cell_detail(cell_sides: torch.Tensor, image_side: int) -> torch.Tensor:
    """Detail of cells of the given sides (pixels): 1 at 16 px, falling with the log of the side; ``(N,)``."""
    span = max(math.log(max(image_side, PATCH_SIZE + 1) / PATCH_SIZE), 1e-6)
    ratio = torch.log(cell_sides.float().clamp(min=PATCH_SIZE) / PATCH_SIZE) / span
    return (1.0 - 0.9 * ratio).clamp(_MIN_DETAIL, 1.0)


class GlimpseMap:
    """The ``(B, 5, M, M)`` maps of a vector env's episodes (see the module docstring).

    Args:
        num_envs: ``B``.
        map_size: ``M``.
        image_size: ``(H, W)``; the map covers the whole image (a non-square image is stretched to the square).
        device: where the maps live (the env's device).
    """

    def __init__(self, num_envs: int, map_size: int, image_size: tuple[int, int], device: torch.device) -> None:
        if not isinstance(map_size, int) or isinstance(map_size, bool) or map_size < 8:
            raise ValueError(f"map_size must be an int >= 8 (pixels of the map's side), got {map_size!r}")
        height, width = image_size
        self.map_size = map_size
        self.image_size = image_size
        self.pixels = torch.zeros(num_envs, 3, map_size, map_size, device=device)
        self.detail = torch.zeros(num_envs, 1, map_size, map_size, device=device)
        # Image coordinates of the map pixels' centres.
        self._ys = (torch.arange(map_size, device=device, dtype=torch.float32) + 0.5) * (height / map_size)
        self._xs = (torch.arange(map_size, device=device, dtype=torch.float32) + 0.5) * (width / map_size)

    def clear(self, index: slice | torch.Tensor) -> None:
        """Nothing seen yet in the episodes of ``index``."""
        self.pixels[index] = 0.0
        self.detail[index] = 0.0

    def paint(self, index: slice | torch.Tensor, patches: torch.Tensor, cells: torch.Tensor) -> None:
        """Add one glimpse to each episode of ``index``.

        Args:
            index: the rows, as :class:`~adaglimpse_env.envs.episode_buffers.EpisodeBuffers` indexes them.
            patches: ``(R, k, 3, 16, 16)`` the glimpse's patches (``k = g * g`` cells).
            cells: ``(R, k, 4)`` int64 pixel boxes ``(y1, x1, y2, x2)`` of the cells.
        """
        rows, k = cells.shape[:2]
        m = self.map_size
        boxes = cells.reshape(rows * k, 4).float()
        y1, x1, y2, x2 = boxes.unbind(dim=1)
        # Each map pixel's position in the cell, in grid_sample's [-1, 1] (align_corners=False) coordinates.
        gy = 2.0 * (self._ys[None] - y1[:, None]) / (y2 - y1).clamp(min=1.0)[:, None] - 1.0  # (N, M)
        gx = 2.0 * (self._xs[None] - x1[:, None]) / (x2 - x1).clamp(min=1.0)[:, None] - 1.0
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (N, M, M, 2) x, y
        sampled = F.grid_sample(
            patches.reshape(rows * k, 3, PATCH_SIZE, PATCH_SIZE).float(), grid, mode="bilinear",
            padding_mode="border", align_corners=False,
        )  # fmt: skip
        inside = ((gy >= -1.0) & (gy < 1.0))[:, :, None] & ((gx >= -1.0) & (gx < 1.0))[:, None, :]  # (N, M, M)
        detail = cell_detail(torch.minimum(y2 - y1, x2 - x1), max(self.image_size))  # (N,)
        # The cells of one glimpse tile it, except that when g does not divide its side the cells of the last row
        # and column are squares wider by the remainder (side mod g px) and overlap their neighbours by that much
        # (the original's `_calculate_crops`): a map pixel centred there takes the covering cells' mean colour and
        # the finest detail among them.
        inside = inside.reshape(rows, k, 1, m, m).float()
        cover = inside.sum(dim=1).clamp(min=1.0)
        new_pixels = (sampled.reshape(rows, k, 3, m, m) * inside).sum(dim=1) / cover
        new_detail = (detail.reshape(rows, k, 1, 1, 1) * inside).amax(dim=1)
        write = new_detail >= self.detail[index]
        write &= new_detail > 0
        self.pixels[index] = torch.where(write, new_pixels, self.pixels[index])
        self.detail[index] = torch.where(write, new_detail, self.detail[index])

    def observation(self, budget_used: torch.Tensor) -> torch.Tensor:
        """``(B, 5, M, M)`` float32: a fresh tensor of the maps and the budget plane.

        Args:
            budget_used: ``(B,)`` share of the glimpse budget taken, in ``[0, 1]``.
        """
        plane = budget_used.float().to(self.pixels.device)[:, None, None, None].expand_as(self.detail)
        return torch.cat((self.pixels, self.detail, plane), dim=1)
