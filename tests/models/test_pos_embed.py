"""Positional embeddings (original `mae_utils.py`): the encoder's "2D+" box embedding and the decoder's MAE grid
embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaglimpse_env.models.pos_embed import (
    box_sincos_embed,
    decoder_sincos_embed,
    grid_boxes,
    grid_sincos_embed,
    sincos_1d,
)


def reference_sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """``[sin(pos * w_k), cos(pos * w_k)]`` with ``w_k = 10000^(-k / (dim / 2))``, in float64."""
    k = np.arange(dim // 2, dtype=np.float64)
    omega = 10000.0 ** (-k / (dim / 2))
    angles = np.asarray(positions, dtype=np.float64)[:, None] * omega[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def mae_get_2d_sincos_pos_embed(embed_dim: int, grid_hw: tuple[int, int], cls_token: bool) -> np.ndarray:
    """Independent re-statement of MAE's numpy ``get_2d_sincos_pos_embed`` (generalised to h x w)."""
    grid_h = np.arange(grid_hw[0], dtype=np.float32)
    grid_w = np.arange(grid_hw[1], dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # w goes first: grid[0] holds the x (column) values
    grid = np.stack(grid, axis=0).reshape(2, 1, grid_hw[0], grid_hw[1])

    def one_d(dim: int, pos: np.ndarray) -> np.ndarray:
        omega = np.arange(dim // 2, dtype=np.float64)
        omega /= dim / 2.0
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    emb = np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)
    return emb


# ------------------------------------------------------------------------------------------------ sincos_1d
def test_sincos_1d_matches_formula() -> None:
    positions = torch.tensor([0.0, 0.0625, 1.0, 1.5, 7.0, 13.25, 14.0])
    for dim in (2, 16, 48, 192):
        got = sincos_1d(dim, positions)
        assert got.shape == (len(positions), dim)
        assert got.dtype == torch.float32
        expected = reference_sincos_1d(dim, positions.numpy())
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-6, rtol=0)


def test_sincos_1d_layout_sin_then_cos() -> None:
    got = sincos_1d(8, torch.tensor([0.0]))
    # position 0: sin part all 0, cos part all 1
    assert torch.equal(got, torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]]))
    got = sincos_1d(8, torch.tensor([2.0]))
    # k = 0 has omega = 1
    assert got[0, 0].item() == pytest.approx(np.sin(2.0), abs=1e-7)
    assert got[0, 4].item() == pytest.approx(np.cos(2.0), abs=1e-7)
    # k = 1 has omega = 10000^(-1/4) = 0.1
    assert got[0, 1].item() == pytest.approx(np.sin(0.2), abs=1e-7)


def test_sincos_1d_batched_positions() -> None:
    positions = torch.rand(3, 5) * 14
    got = sincos_1d(32, positions)
    assert got.shape == (3, 5, 32)
    assert torch.equal(got[1, 2], sincos_1d(32, positions[1, 2:3])[0])


# ------------------------------------------------------------------------------------------------ 2D+ boxes
@pytest.mark.parametrize("dim", [192, 768])
def test_box_of_grid_patch_equals_grid_embedding_exactly(dim: int) -> None:
    grid = grid_sincos_embed(dim, (14, 14))
    assert grid.shape == (1, 196, dim)
    assert grid.dtype == torch.float32
    boxes = torch.tensor(
        [[16 * r, 16 * c, 16 * r + 16, 16 * c + 16] for r in range(14) for c in range(14)], dtype=torch.int64
    )
    boxes_embed = box_sincos_embed(dim, boxes)
    assert boxes_embed.shape == (196, dim)
    assert (boxes_embed - grid[0]).abs().max().item() == 0.0
    # float pixel coords (as the shared memory stores them) give the same rows, also batched
    batched = box_sincos_embed(dim, boxes.float()[None].expand(2, -1, -1))
    assert batched.shape == (2, 196, dim)
    assert (batched - grid).abs().max().item() == 0.0
    # row r * 14 + c, spot-check a few explicitly
    for r, c in [(0, 0), (0, 13), (5, 2), (13, 0), (13, 13)]:
        box = torch.tensor([16 * r, 16 * c, 16 * r + 16, 16 * c + 16])
        assert torch.equal(box_sincos_embed(dim, box), grid[0, r * 14 + c])


def test_grid_boxes_row_major() -> None:
    boxes = grid_boxes((14, 14))
    assert boxes.shape == (196, 4)
    assert boxes[0].tolist() == [0, 0, 16, 16]
    assert boxes[1].tolist() == [0, 16, 16, 32]  # next column first
    assert boxes[14].tolist() == [16, 0, 32, 16]
    assert boxes[5 * 14 + 9].tolist() == [80, 144, 96, 160]
    assert grid_boxes((2, 3), 1).tolist() == [
        [0, 0, 1, 1],
        [0, 1, 1, 2],
        [0, 2, 1, 3],
        [1, 0, 2, 1],
        [1, 1, 2, 2],
        [1, 2, 2, 3],
    ]


def test_box_embed_part_order_y1_x1_y2_x2() -> None:
    dim = 64
    quarter = dim // 4
    box = torch.tensor([40.0, 8.0, 95.0, 200.0])  # y1, x1, y2, x2 in pixels
    got = box_sincos_embed(dim, box)
    assert got.shape == (dim,)
    for i, value in enumerate(box.tolist()):
        expected = reference_sincos_1d(quarter, np.array([value / 16]))[0]
        np.testing.assert_allclose(got[i * quarter : (i + 1) * quarter].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("corner", [0, 1, 2, 3])
def test_box_embed_changing_one_corner_changes_one_quarter(corner: int) -> None:
    dim = 192
    quarter = dim // 4
    box = torch.tensor([32, 48, 80, 96])
    other = box.clone()
    other[corner] += 7
    a, b = box_sincos_embed(dim, box), box_sincos_embed(dim, other)
    changed = [
        not torch.equal(a[i * quarter : (i + 1) * quarter], b[i * quarter : (i + 1) * quarter]) for i in range(4)
    ]
    assert changed == [i == corner for i in range(4)]


def test_box_embed_divides_by_patch_size_and_detaches() -> None:
    box = torch.tensor([3.0, 5.0, 11.0, 13.0], requires_grad=True)
    got = box_sincos_embed(32, box, patch_size=4)
    assert not got.requires_grad
    expected = np.concatenate([reference_sincos_1d(8, np.array([v / 4]))[0] for v in (3.0, 5.0, 11.0, 13.0)])
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)


# ------------------------------------------------------------------------------------------------ decoder
def test_decoder_embed_matches_mae_numpy() -> None:
    for dim in (128, 512):
        got = decoder_sincos_embed(dim, (14, 14))
        assert got.shape == (1, 197, dim)
        assert got.dtype == torch.float32
        expected = mae_get_2d_sincos_pos_embed(dim, (14, 14), cls_token=True)
        np.testing.assert_allclose(got[0].numpy(), expected, atol=1e-6, rtol=0)
    no_cls = decoder_sincos_embed(512, (14, 14), cls_token=False)
    assert no_cls.shape == (1, 196, 512)
    np.testing.assert_allclose(
        no_cls[0].numpy(), mae_get_2d_sincos_pos_embed(512, (14, 14), cls_token=False), atol=1e-6
    )


def test_decoder_embed_non_square_grid() -> None:
    got = decoder_sincos_embed(64, (3, 5))
    assert got.shape == (1, 16, 64)
    np.testing.assert_allclose(got[0].numpy(), mae_get_2d_sincos_pos_embed(64, (3, 5), True), atol=1e-6)


def test_decoder_embed_cls_row_zero_and_x_first() -> None:
    dim = 512
    half = dim // 2
    emb = decoder_sincos_embed(dim, (14, 14))[0]
    assert torch.count_nonzero(emb[0]) == 0
    grid = emb[1:].reshape(14, 14, dim)  # (row y, col x, dim), token index = y * 14 + x
    # tokens in the same column (x) share the first half, tokens in the same row (y) share the second half
    for x in (0, 6, 13):
        column = grid[:, x, :half]
        assert torch.equal(column, column[:1].expand_as(column))
        assert not torch.equal(grid[0, x, half:], grid[1, x, half:])
    for y in (0, 9, 13):
        row = grid[y, :, half:]
        assert torch.equal(row, row[:1].expand_as(row))
        assert not torch.equal(grid[y, 0, :half], grid[y, 1, :half])
    # first half is the 1-D embedding of x, second of y
    y, x = 3, 11
    np.testing.assert_allclose(grid[y, x, :half].numpy(), reference_sincos_1d(half, np.array([x]))[0], atol=1e-6)
    np.testing.assert_allclose(grid[y, x, half:].numpy(), reference_sincos_1d(half, np.array([y]))[0], atol=1e-6)


# ------------------------------------------------------------------------------------------------ errors
def test_bad_dims_raise_value_error() -> None:
    with pytest.raises(ValueError, match="even dim"):
        sincos_1d(7, torch.zeros(2))
    with pytest.raises(ValueError, match="divisible by 8"):
        box_sincos_embed(12, torch.zeros(4))
    with pytest.raises(ValueError, match="divisible by 8"):
        grid_sincos_embed(100, (14, 14))
    with pytest.raises(ValueError, match="divisible by 4"):
        decoder_sincos_embed(30, (14, 14))
