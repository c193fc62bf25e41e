"""Sin-cos positional embeddings for arbitrary pixel boxes ("2D+") and for the decoder's fixed grid.

The original's `mae_utils.py`. All encoder embeddings are computed in float32 with torch, like the original, so that a
box on the 16-px grid gets exactly the row of the grid embedding.
"""

from __future__ import annotations

import torch


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """1-D sin-cos embedding: ``[sin(pos * w), cos(pos * w)]`` with ``w_k = 10000^(-k / (dim / 2))``.

    Args:
        dim: output size, even.
        positions: ``(...,)`` float positions.

    Returns:
        ``(..., dim)`` float32.
    """
    if dim % 2:
        raise ValueError(f"sincos_1d requires an even dim, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float32, device=positions.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # (dim/2,)
    angles = positions.to(torch.float32)[..., None] * omega  # (..., dim/2)
    return torch.cat((torch.sin(angles), torch.cos(angles)), dim=-1)


def box_sincos_embed(dim: int, boxes: torch.Tensor, patch_size: int = 16) -> torch.Tensor:
    """The encoder's "2D+" embedding of pixel boxes (original `mae_utils.py`).

    Each corner coordinate, divided by ``patch_size``, gets a ``dim / 4`` sin-cos embedding; the four are
    concatenated in the order ``y1, x1, y2, x2``.

    Args:
        dim: embedding size, divisible by 8.
        boxes: ``(..., 4)`` pixel boxes ``(y1, x1, y2, x2)``, any numeric dtype.
        patch_size: pixels per native patch.

    Returns:
        ``(..., dim)`` float32, detached.
    """
    if dim % 8:
        raise ValueError(f"box_sincos_embed requires dim divisible by 8, got {dim}")
    corners = boxes.to(torch.float32) / patch_size  # (..., 4) in patch units
    parts = [sincos_1d(dim // 4, corners[..., i]) for i in range(4)]
    return torch.cat(parts, dim=-1).detach()


def grid_boxes(grid_size: tuple[int, int], patch_size: int = 16) -> torch.Tensor:
    """Pixel boxes of the regular patch grid, row-major.

    Args:
        grid_size: ``(rows, cols)``.
        patch_size: pixels per patch.

    Returns:
        ``(rows * cols, 4)`` int64 ``(y1, x1, y2, x2)``.
    """
    rows, cols = grid_size
    ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    ys, xs = ys.reshape(-1) * patch_size, xs.reshape(-1) * patch_size
    return torch.stack((ys, xs, ys + patch_size, xs + patch_size), dim=-1)


def grid_sincos_embed(dim: int, grid_size: tuple[int, int]) -> torch.Tensor:
    """The encoder's fixed grid embedding: "2D+" of each grid cell ``(y, x, y + 1, x + 1)`` in patch units.

    Row ``r * cols + c`` equals :func:`box_sincos_embed` of the pixel box ``(16r, 16c, 16r + 16, 16c + 16)``.

    Args:
        dim: embedding size.
        grid_size: ``(rows, cols)``.

    Returns:
        ``(1, rows * cols, dim)`` float32.
    """
    return box_sincos_embed(dim, grid_boxes(grid_size, 1), patch_size=1)[None]


def decoder_sincos_embed(dim: int, grid_size: tuple[int, int], cls_token: bool = True) -> torch.Tensor:
    """The decoder's standard MAE 2-D sin-cos grid embedding (original `mae_utils.py`).

    The first ``dim / 2`` channels encode the column (x) and the second ``dim / 2`` the row (y), as in MAE.
    Computed in float64 (MAE uses numpy) and returned as float32.

    Args:
        dim: embedding size, divisible by 4.
        grid_size: ``(rows, cols)``.
        cls_token: prepend a zero row for the cls token.

    Returns:
        ``(1, [1 +] rows * cols, dim)`` float32.
    """
    if dim % 4:
        raise ValueError(f"decoder_sincos_embed requires dim divisible by 4, got {dim}")
    rows, cols = grid_size
    ys, xs = torch.meshgrid(
        torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64), indexing="ij"
    )

    def embed_1d(positions: torch.Tensor) -> torch.Tensor:
        half = dim // 4
        omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) / half)
        angles = positions.reshape(-1)[:, None] * omega[None]
        return torch.cat((torch.sin(angles), torch.cos(angles)), dim=1)

    embed = torch.cat((embed_1d(xs), embed_1d(ys)), dim=1)  # x first, then y
    if cls_token:
        embed = torch.cat((torch.zeros(1, dim, dtype=torch.float64), embed), dim=0)
    return embed.to(torch.float32)[None]
