"""Glimpse geometry: actions to crop boxes, grid-cell boxes and native 16x16 patches.

Everything here is a pure, batched function of tensors: no Python loop over images or grid cells, so the same
code runs on CPU and CUDA and its cost does not grow with the batch in Python.

Conventions (original `_calculate_crops`; original token coords):

* Our action is ``(x, y, scale)`` in ``[-1, 1]``; the original agent's is ``(y, x, scale)`` in ``[0, 1]``.
  :func:`action_to_unit` converts ours to the original's, and every other function takes the original's order.
* Pixel boxes are ``(y1, x1, y2, x2)`` with ``y2``/``x2`` exclusive, in pixels of the (normalised) image.
* A glimpse of side ``s`` is cut into a ``g x g`` grid of cells of side ``p = s // g``; cells in the last row or
  last column are ``last x last`` squares with ``last = s - p * (g - 1)``, so they can overlap a neighbour by a
  pixel, exactly as the original does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PATCH_SIZE = 16
"""Side of the native ViT patch every grid cell is resized to."""


@dataclass(frozen=True)
class GlimpseBoxes:
    """Integer geometry of one glimpse per image.

    Attributes:
        crop: ``(B, 3)`` int64, ``(y, x, side)`` of the square crop in pixels.
        cells: ``(B, g*g, 4)`` int64, ``(y1, x1, y2, x2)`` of each grid cell, row-major (row outer), which is also
            the token order inside one glimpse.
    """

    crop: torch.Tensor
    cells: torch.Tensor


def action_to_unit(action: torch.Tensor) -> torch.Tensor:
    """Map our ``(x, y, scale)`` actions in ``[-1, 1]`` to the original's ``(y, x, scale)`` in ``[0, 1]``.

    Args:
        action: ``(B, 3)`` float, ordered ``(x, y, scale)``, each in ``[-1, 1]``.

    Returns:
        ``(B, 3)`` float32, ordered ``(y, x, scale)``, each in ``[0, 1]`` (``u = (a + 1) / 2``).
    """
    unit = (action.to(torch.float32) + 1.0) / 2.0
    return torch.stack((unit[:, 1], unit[:, 0], unit[:, 2]), dim=1)


def unit_to_action(unit: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`action_to_unit`: original ``(y, x, scale)`` in ``[0, 1]`` to ours in ``[-1, 1]``.

    Args:
        unit: ``(B, 3)`` float, ordered ``(y, x, scale)``.

    Returns:
        ``(B, 3)`` float32, ordered ``(x, y, scale)``.
    """
    action = unit.to(torch.float32) * 2.0 - 1.0
    return torch.stack((action[:, 1], action[:, 0], action[:, 2]), dim=1)


def glimpse_size_range(
    image_size: tuple[int, int], grid_size: int = 2, max_size_ratio: float = 1.0
) -> tuple[int, float]:
    """Smallest and largest glimpse side in pixels (original `_calculate_crops`).

    Args:
        image_size: ``(H, W)`` of the image.
        grid_size: ``g``, cells per glimpse side.
        max_size_ratio: largest glimpse side as a fraction of ``min(H, W)``.

    Returns:
        ``(min_crop, max_crop)``: ``16 * g`` and ``min(H, W) * max_size_ratio``.

    Raises:
        ValueError: if the image cannot hold the smallest glimpse.
    """
    if not isinstance(grid_size, int) or grid_size < 1:
        raise ValueError(f"grid_size requires a positive int, got {grid_size!r}")
    height, width = image_size
    min_crop = PATCH_SIZE * grid_size
    max_crop = min(height, width) * max_size_ratio
    if max_crop < min_crop:
        raise ValueError(
            f"A glimpse grid of {grid_size}x{grid_size} requires an image side of at least {min_crop} px "
            f"after max_size_ratio={max_size_ratio}, got image size {height}x{width} "
            f"(largest glimpse {max_crop:g} px). Use larger images, a smaller grid_size or a larger ratio."
        )
    return min_crop, max_crop


def centred_unit_action(
    centre: torch.Tensor,
    side: torch.Tensor,
    image_size: tuple[int, int],
    grid_size: int = 2,
    max_size_ratio: float = 1.0,
) -> torch.Tensor:
    """The original-order action whose glimpse is the ``side``-px square centred at ``centre``, as near as the
    image allows (the square is shifted inside the image and its side clamped to the glimpse range).

    Args:
        centre: ``(B, 2)`` float pixel centres ``(y, x)``.
        side: ``(B,)`` float glimpse sides in pixels.
        image_size: ``(H, W)``.
        grid_size: ``g``.
        max_size_ratio: largest crop side as a fraction of ``min(H, W)``.

    Returns:
        ``(B, 3)`` float32 ``(y, x, scale)`` in ``[0, 1]``, for :func:`extract_glimpses`.
    """
    height, width = image_size
    min_crop, max_crop = glimpse_size_range(image_size, grid_size, max_size_ratio)
    side = side.to(torch.float32).clamp(min_crop, max_crop)
    scale = (side - min_crop) / max(max_crop - min_crop, 1e-6)
    free = torch.stack((height - side, width - side), dim=1)  # (B, 2) room left for the square's corner
    corner = centre.to(torch.float32) - side[:, None] / 2
    # Aim half a pixel inside the corner so float rounding cannot floor it to the pixel before.
    position = torch.where(free > 0, (corner + 0.5) / free.clamp_min(1e-6), torch.zeros_like(free))
    return torch.cat((position.clamp(0.0, 1.0), scale.clamp(0.0, 1.0)[:, None]), dim=1)


def compute_glimpse_boxes(
    unit_action: torch.Tensor,
    image_size: tuple[int, int],
    grid_size: int = 2,
    max_size_ratio: float = 1.0,
) -> GlimpseBoxes:
    """Turn original-order actions into the crop box and the boxes of its grid cells (original `_calculate_crops`).

    The arithmetic follows the original bit for bit: the crop side is computed in float, the position uses the
    *unfloored* side, and all three are floored afterwards.

    Args:
        unit_action: ``(B, 3)`` float, ordered ``(y, x, scale)`` in ``[0, 1]``.
        image_size: ``(H, W)`` in pixels.
        grid_size: ``g``; each glimpse yields ``g * g`` cells.
        max_size_ratio: largest crop side as a fraction of ``min(H, W)``.

    Returns:
        The :class:`GlimpseBoxes` of every image.
    """
    height, width = image_size
    min_crop, max_crop = glimpse_size_range(image_size, grid_size, max_size_ratio)
    unit_action = unit_action.to(torch.float32)
    side_f = unit_action[:, 2] * (max_crop - min_crop) + min_crop
    # original `_calculate_crops`: y and x use the float side; floor is applied to all three afterwards.
    y = torch.floor(unit_action[:, 0] * (height - side_f)).long()
    x = torch.floor(unit_action[:, 1] * (width - side_f)).long()
    side = torch.floor(side_f).long()

    cell = torch.div(side, grid_size, rounding_mode="floor")  # (B,)
    last = side - cell * (grid_size - 1)  # (B,)
    steps = torch.arange(grid_size, device=unit_action.device)
    iy, ix = torch.meshgrid(steps, steps, indexing="ij")
    iy, ix = iy.reshape(-1), ix.reshape(-1)  # (g*g,), row-major
    y1 = y[:, None] + iy[None] * cell[:, None]  # (B, g*g)
    x1 = x[:, None] + ix[None] * cell[:, None]
    # original `_calculate_crops`: a cell in the last row OR last column is a `last x last` square.
    on_edge = (iy == grid_size - 1) | (ix == grid_size - 1)
    cell_side = torch.where(on_edge[None], last[:, None], cell[:, None])
    cells = torch.stack((y1, x1, y1 + cell_side, x1 + cell_side), dim=-1)
    return GlimpseBoxes(crop=torch.stack((y, x, side), dim=1), cells=cells)


def _bilinear_source_index(
    start: torch.Tensor, length: torch.Tensor, out_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weights of ``F.interpolate(mode='bilinear', align_corners=False)`` along one axis.

    Args:
        start: ``(N,)`` int64 first pixel of each box along the axis.
        length: ``(N,)`` int64 box length along the axis.
        out_size: output samples along the axis.

    Returns:
        ``(lo, hi, w_hi)``, each ``(N, out_size)``: absolute pixel indices of the two neighbours and the weight of
        ``hi`` (the weight of ``lo`` is ``1 - w_hi``).
    """
    scale = length.to(torch.float32)[:, None] / out_size  # (N, 1)
    dst = torch.arange(out_size, device=start.device, dtype=torch.float32)[None]
    src = (scale * (dst + 0.5) - 0.5).clamp_min(0.0)  # PyTorch's area_pixel_compute_source_index
    lo = src.long()
    w_hi = src - lo
    hi = torch.minimum(lo + 1, length[:, None] - 1)
    return start[:, None] + lo, start[:, None] + hi, w_hi


def extract_patches(images: torch.Tensor, boxes: torch.Tensor, patch_size: int = PATCH_SIZE) -> torch.Tensor:
    """Crop every box and resize it to ``patch_size x patch_size``, all at once.

    Equal to cropping ``images[b, :, y1:y2, x1:x2]`` and calling
    ``F.interpolate(crop, (patch_size, patch_size), mode='bilinear', align_corners=False, antialias=False)``
    per box (original `_crop_and_resize`, no antialiasing on purpose), but done with four gathers for the whole batch.
    A box that is already ``patch_size`` wide is copied exactly.

    Args:
        images: ``(B, C, H, W)`` floating-point images (normalised, as the model sees them).
        boxes: ``(B, K, 4)`` int64 ``(y1, x1, y2, x2)``, each inside the image and non-empty.
        patch_size: output side.

    Returns:
        ``(B, K, C, patch_size, patch_size)`` patches, same dtype and device as ``images``.
    """
    if not images.is_floating_point():
        raise ValueError(f"extract_patches requires floating-point images, got dtype {images.dtype}; convert first")
    batch, channels, height, width = images.shape
    num_boxes = boxes.shape[1]
    flat_boxes = boxes.reshape(-1, 4)
    y_lo, y_hi, wy = _bilinear_source_index(flat_boxes[:, 0], flat_boxes[:, 2] - flat_boxes[:, 0], patch_size)
    x_lo, x_hi, wx = _bilinear_source_index(flat_boxes[:, 1], flat_boxes[:, 3] - flat_boxes[:, 1], patch_size)
    pixels = images.reshape(batch, channels, height * width)

    def gather(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        # rows, cols: (B*K, S) -> pixel index (B, 1, K*S*S), expanded (not copied) over channels
        index = (rows[:, :, None] * width + cols[:, None, :]).reshape(batch, 1, -1)
        return pixels.gather(2, index.expand(batch, channels, index.shape[-1]))

    shape = (batch, channels, num_boxes, patch_size, patch_size)
    wy = wy.to(images.dtype).reshape(batch, 1, num_boxes, patch_size, 1)
    wx = wx.to(images.dtype).reshape(batch, 1, num_boxes, 1, patch_size)
    # In-place lerps keep the temporaries to the four gathers (fresh memory costs more than the arithmetic).
    top = gather(y_lo, x_lo).reshape(shape).lerp_(gather(y_lo, x_hi).reshape(shape), wx)
    bottom = gather(y_hi, x_lo).reshape(shape).lerp_(gather(y_hi, x_hi).reshape(shape), wx)
    patches = top.lerp_(bottom, wy)  # (B, C, K, S, S)
    return patches.permute(0, 2, 1, 3, 4).contiguous()


def extract_glimpses(
    images: torch.Tensor,
    unit_action: torch.Tensor,
    grid_size: int = 2,
    max_size_ratio: float = 1.0,
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One glimpse per image: its ``g * g`` native patches and their pixel boxes.

    Args:
        images: ``(B, C, H, W)`` float, normalised.
        unit_action: ``(B, 3)`` float, original order ``(y, x, scale)`` in ``[0, 1]``.
        grid_size: ``g``.
        max_size_ratio: largest crop side as a fraction of ``min(H, W)``.
        validate: check that every action is finite and in ``[0, 1]`` (on CUDA this waits for the device;
            callers that validated already, like the env, pass False).

    Returns:
        ``(patches, boxes)``: ``(B, g*g, C, 16, 16)`` and ``(B, g*g, 4)`` int64 ``(y1, x1, y2, x2)``.

    Raises:
        ValueError: wrong shapes, or (with ``validate``) actions that are NaN, infinite or outside ``[0, 1]``.
    """
    if images.ndim != 4:
        raise ValueError(f"extract_glimpses requires images of shape (B, C, H, W), got {tuple(images.shape)}")
    if unit_action.shape != (images.shape[0], 3):
        raise ValueError(
            f"extract_glimpses requires one (y, x, scale) action per image, shape ({images.shape[0]}, 3), "
            f"got {tuple(unit_action.shape)}"
        )
    if validate and not bool(((unit_action >= 0) & (unit_action <= 1)).all()):
        raise ValueError(
            "extract_glimpses requires finite (y, x, scale) actions in [0, 1], got "
            f"{unit_action[~((unit_action >= 0) & (unit_action <= 1)).all(dim=1)][:3].tolist()}; "
            "convert env actions in [-1, 1] with action_to_unit()"
        )
    geometry = compute_glimpse_boxes(
        unit_action.to(images.device), (images.shape[2], images.shape[3]), grid_size, max_size_ratio
    )
    return extract_patches(images, geometry.cells), geometry.cells


def extract_patches_loop(images: torch.Tensor, boxes: torch.Tensor, patch_size: int = PATCH_SIZE) -> torch.Tensor:
    """Reference implementation of :func:`extract_patches`, cell by cell, the way the original crops.

    Like the original's ``_crop_and_resize``: for each image and grid cell, slice the crop, resize it
    with torchvision's ``resize`` (bilinear, no antialias) unless it is already ``patch_size`` wide, and write it
    into the output. Kept for tests and ``scripts/benchmark_glimpse.py``; do not use it in hot paths.

    Args:
        images: ``(B, C, H, W)`` float.
        boxes: ``(B, K, 4)`` int64 ``(y1, x1, y2, x2)``.
        patch_size: output side.

    Returns:
        ``(B, K, C, patch_size, patch_size)``.
    """
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2.functional import resize

    batch, num_boxes = boxes.shape[:2]
    out = images.new_empty(batch, num_boxes, images.shape[1], patch_size, patch_size)
    for b in range(batch):
        for k in range(num_boxes):
            y1, x1, y2, x2 = (int(v) for v in boxes[b, k])
            crop = images[b, :, y1:y2, x1:x2]
            if crop.shape[-2:] != (patch_size, patch_size):
                crop = resize(crop, [patch_size, patch_size], interpolation=InterpolationMode.BILINEAR, antialias=False)
            out[b, k] = crop
    return out
