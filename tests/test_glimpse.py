"""Tests for :mod:`adaglimpse_env.glimpse`: actions, crop geometry (original `_calculate_crops`) and patches (original
`_crop_and_resize`).

Every expected box below is computed by hand from the original's `_calculate_crops` formula, worked out in a comment:

    min_crop = 16 * g;  max_crop = min(H, W) * ratio
    s_f = a2 * (max_crop - min_crop) + min_crop          (float)
    y = floor(a0 * (H - s_f));  x = floor(a1 * (W - s_f));  s = floor(s_f)
    p = s // g;  last = s - p * (g - 1);  last-row / last-column cells are last x last squares.

Actions are in the original order ``(y, x, scale)`` in ``[0, 1]`` unless a test says otherwise; boxes are
``(y1, x1, y2, x2)`` with ``y2``/``x2`` exclusive.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from adaglimpse_env.glimpse import (
    PATCH_SIZE,
    action_to_unit,
    compute_glimpse_boxes,
    extract_glimpses,
    extract_patches,
    extract_patches_loop,
    glimpse_size_range,
    unit_to_action,
)


def reference_patches(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Independent reference for original `_crop_and_resize`: slice each box, resize it alone, skip the resize at 16x16.

    Args:
        images: ``(B, C, H, W)`` float.
        boxes: ``(B, K, 4)`` int64 ``(y1, x1, y2, x2)``.

    Returns:
        ``(B, K, C, 16, 16)``.
    """
    rows = []
    for b in range(boxes.shape[0]):
        cells = []
        for y1, x1, y2, x2 in boxes[b].tolist():
            crop = images[b : b + 1, :, y1:y2, x1:x2]
            if crop.shape[-2:] != (PATCH_SIZE, PATCH_SIZE):
                crop = F.interpolate(
                    crop, size=(PATCH_SIZE, PATCH_SIZE), mode="bilinear", align_corners=False, antialias=False
                )
            cells.append(crop[0])
        rows.append(torch.stack(cells))
    return torch.stack(rows)


def boxes_of(
    unit_action: list[float], image_size: tuple[int, int], grid_size: int, ratio: float = 1.0
) -> tuple[list[int], list[list[int]]]:
    """Crop ``(y, x, s)`` and cells ``(y1, x1, y2, x2)`` of a single action, as Python lists."""
    geometry = compute_glimpse_boxes(torch.tensor([unit_action]), image_size, grid_size, ratio)
    return geometry.crop[0].tolist(), geometry.cells[0].tolist()


def normalised_images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Random images in the ImageNet-normalised range (about [-2.1, 2.6]), as the model sees them."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, height, width, generator=generator) * 4.7 - 2.1


# ----------------------------------------------------------------------------------------------------
# original `_calculate_crops` examples (224x224, g=2, ratio 1: min_crop 32, max_crop 224)
# ----------------------------------------------------------------------------------------------------


def test_spec_example_uneven_split_gives_overlapping_last_cells() -> None:
    # s_f = 0.123*192 + 32 = 55.616; y = floor(0.999*168.384) = 168; x = floor(0.001*168.384) = 0; s = 55
    # p = 27, last = 28: last row / last column cells are 28x28, so (0,1) is 28 wide and overlaps nothing
    # to its right, while (1,0) is 28 wide and overlaps (1,1) by one pixel.
    crop, cells = boxes_of([0.999, 0.001, 0.123], (224, 224), 2)
    assert crop == [168, 0, 55]
    assert cells == [[168, 0, 195, 27], [168, 27, 196, 55], [195, 0, 223, 28], [195, 27, 223, 55]]


def test_spec_example_scale_one_is_whole_image() -> None:
    # s_f = 224; y = x = floor(0 * 0) = 0; p = last = 112
    crop, cells = boxes_of([0.0, 0.0, 1.0], (224, 224), 2)
    assert crop == [0, 0, 224]
    assert cells == [[0, 0, 112, 112], [0, 112, 112, 224], [112, 0, 224, 112], [112, 112, 224, 224]]


def test_spec_example_scale_zero_is_native_resolution() -> None:
    # s_f = 32; y = floor(0.3*192) = 57; x = floor(0.7*192) = floor(134.4) = 134; p = last = 16
    crop, cells = boxes_of([0.3, 0.7, 0.0], (224, 224), 2)
    assert crop == [57, 134, 32]
    assert cells == [[57, 134, 73, 150], [57, 150, 73, 166], [73, 134, 89, 150], [73, 150, 89, 166]]


def test_spec_example_bottom_right_corner() -> None:
    # s_f = 32; y = x = floor(1 * 192) = 192; the crop ends exactly at the image border
    crop, cells = boxes_of([1.0, 1.0, 0.0], (224, 224), 2)
    assert crop == [192, 192, 32]
    assert cells[-1] == [208, 208, 224, 224]


# ----------------------------------------------------------------------------------------------------
# hand-computed cases of our own
# ----------------------------------------------------------------------------------------------------


def test_grid_one_is_a_single_cell_equal_to_the_crop() -> None:
    # g=1: min_crop 16, max_crop 224; s_f = 0.5*208 + 16 = 120; y = floor(0.5*104) = 52;
    # x = floor(0.25*104) = 26; p = 120, last = 120 - 120*0 = 120
    crop, cells = boxes_of([0.5, 0.25, 0.5], (224, 224), 1)
    assert crop == [52, 26, 120]
    assert cells == [[52, 26, 172, 146]]


def test_grid_three_even_split() -> None:
    # g=3: min_crop 48, max_crop 224; s_f = 0.25*176 + 48 = 92; y = floor(0.2*132) = floor(26.4) = 26;
    # x = floor(0.6*132) = floor(79.2) = 79; s = 92; p = 30; last = 92 - 60 = 32
    # rows start at 26, 56, 86; columns at 79, 109, 139; last row / column cells are 32x32
    crop, cells = boxes_of([0.2, 0.6, 0.25], (224, 224), 3)
    assert crop == [26, 79, 92]
    assert cells == [
        [26, 79, 56, 109], [26, 109, 56, 139], [26, 139, 58, 171],
        [56, 79, 86, 109], [56, 109, 86, 139], [56, 139, 88, 171],
        [86, 79, 118, 111], [86, 109, 118, 141], [86, 139, 118, 171],
    ]  # fmt: skip


def test_grid_three_position_uses_the_unfloored_side() -> None:
    # g=3: s_f = 0.3*176 + 48 = 100.8; y = floor(0.5*(224 - 100.8)) = floor(61.6) = 61 (a floored side
    # would give floor(0.5*124) = 62); x = floor(1.0*123.2) = 123 (not 124); s = 100; p = 33;
    # last = 100 - 66 = 34
    crop, cells = boxes_of([0.5, 1.0, 0.3], (224, 224), 3)
    assert crop == [61, 123, 100]
    assert cells == [
        [61, 123, 94, 156], [61, 156, 94, 189], [61, 189, 95, 223],
        [94, 123, 127, 156], [94, 156, 127, 189], [94, 189, 128, 223],
        [127, 123, 161, 157], [127, 156, 161, 190], [127, 189, 161, 223],
    ]  # fmt: skip


def test_non_square_image_centre() -> None:
    # H=200, W=300, g=2: min_crop 32, max_crop = min(200, 300) = 200; s_f = 0.5*168 + 32 = 116
    # y = floor(0.5*(200 - 116)) = 42; x = floor(0.5*(300 - 116)) = 92; p = last = 58
    crop, cells = boxes_of([0.5, 0.5, 0.5], (200, 300), 2)
    assert crop == [42, 92, 116]
    assert cells == [[42, 92, 100, 150], [42, 150, 100, 208], [100, 92, 158, 150], [100, 150, 158, 208]]


def test_non_square_image_largest_crop_slides_along_the_long_side() -> None:
    # H=200, W=300: s = 200, y = floor(1*0) = 0, x = floor(1*100) = 100; p = last = 100
    crop, cells = boxes_of([1.0, 1.0, 1.0], (200, 300), 2)
    assert crop == [0, 100, 200]
    assert cells == [[0, 100, 100, 200], [0, 200, 100, 300], [100, 100, 200, 200], [100, 200, 200, 300]]


def test_max_size_ratio_half() -> None:
    # ratio 0.5: max_crop 112, min_crop 32; s_f = 0.4*80 + 32 = 64; y = floor(0.25*160) = 40;
    # x = floor(0.75*160) = 120; p = last = 32
    crop, cells = boxes_of([0.25, 0.75, 0.4], (224, 224), 2, ratio=0.5)
    assert crop == [40, 120, 64]
    assert cells == [[40, 120, 72, 152], [40, 152, 72, 184], [72, 120, 104, 152], [72, 152, 104, 184]]
    # scale 1 reaches max_crop exactly: s = 112
    assert boxes_of([0.0, 0.0, 1.0], (224, 224), 2, ratio=0.5)[0] == [0, 0, 112]


def test_fractional_max_crop_is_floored() -> None:
    # ratio 0.7: max_crop = 156.8; s_f = 156.8 -> s = 156; y = x = floor(1*(224 - 156.8)) = floor(67.2) = 67
    assert boxes_of([1.0, 1.0, 1.0], (224, 224), 2, ratio=0.7)[0] == [67, 67, 156]


@pytest.mark.parametrize(
    ("image_size", "grid_size", "ratio"),
    [
        ((224, 224), 1, 1.0), ((224, 224), 2, 1.0), ((224, 224), 3, 1.0), ((200, 300), 2, 1.0),
        ((300, 200), 3, 0.7), ((224, 224), 2, 0.5), ((64, 64), 4, 1.0), ((97, 131), 2, 1.0),
    ],
)  # fmt: skip
def test_geometry_invariants_over_random_actions(image_size: tuple[int, int], grid_size: int, ratio: float) -> None:
    height, width = image_size
    min_crop, max_crop = PATCH_SIZE * grid_size, int(min(height, width) * ratio)
    corners = torch.tensor([[i, j, k] for i in (0.0, 1.0) for j in (0.0, 1.0) for k in (0.0, 1.0)])
    actions = torch.cat((corners, torch.rand(4096, 3, generator=torch.Generator().manual_seed(1))))
    geometry = compute_glimpse_boxes(actions, image_size, grid_size, ratio)
    y, x, side = geometry.crop.unbind(1)
    y1, x1, y2, x2 = geometry.cells.unbind(2)

    assert geometry.crop.dtype == geometry.cells.dtype == torch.int64
    assert geometry.cells.shape == (len(actions), grid_size * grid_size, 4)
    # crop size range and crop inside the image
    assert side.min() == min_crop and side.max() == max_crop
    assert (side >= min_crop).all() and (side <= max_crop).all()
    assert (y >= 0).all() and (x >= 0).all() and (y + side <= height).all() and (x + side <= width).all()
    # cells are squares of at least 16 px, inside the crop (hence inside the image)
    assert (y2 - y1 == x2 - x1).all() and (y2 - y1 >= PATCH_SIZE).all()
    assert (y1 >= y[:, None]).all() and (x1 >= x[:, None]).all()
    assert (y2 <= (y + side)[:, None]).all() and (x2 <= (x + side)[:, None]).all()
    assert (y2 <= height).all() and (x2 <= width).all()
    # the grid starts at the crop corner and its last cell ends at the opposite corner
    assert torch.equal(geometry.cells[:, 0, :2], geometry.crop[:, :2])
    assert torch.equal(geometry.cells[:, -1, 2], y + side) and torch.equal(geometry.cells[:, -1, 3], x + side)
    # row-major order: cell k sits in row k // g and column k % g of the regular p-spaced grid
    cell = side // grid_size
    index = torch.arange(grid_size * grid_size)
    assert torch.equal(y1, y[:, None] + (index // grid_size)[None] * cell[:, None])
    assert torch.equal(x1, x[:, None] + (index % grid_size)[None] * cell[:, None])


# ----------------------------------------------------------------------------------------------------
# action conventions
# ----------------------------------------------------------------------------------------------------


def test_action_to_unit_swaps_x_and_y_and_rescales() -> None:
    # ours: (x, y, scale) in [-1, 1]  ->  original: (y, x, scale) = ((y+1)/2, (x+1)/2, (scale+1)/2)
    ours = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [1.0, -1.0, 0.0], [-0.5, 0.5, 0.2]])
    expected = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.5], [0.75, 0.25, 0.6]])
    torch.testing.assert_close(action_to_unit(ours), expected)


def test_unit_to_action_is_the_inverse() -> None:
    unit = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.5], [0.75, 0.25, 0.6]])
    expected = torch.tensor([[-1.0, -1.0, -1.0], [1.0, -1.0, 0.0], [-0.5, 0.5, 0.2]])
    torch.testing.assert_close(unit_to_action(unit), expected)

    ours = torch.rand(256, 3, generator=torch.Generator().manual_seed(2)) * 2 - 1
    torch.testing.assert_close(unit_to_action(action_to_unit(ours)), ours)
    torch.testing.assert_close(action_to_unit(unit_to_action(unit)), unit)


def test_action_conversion_returns_float32() -> None:
    assert action_to_unit(torch.zeros(2, 3, dtype=torch.float64)).dtype == torch.float32
    assert unit_to_action(torch.zeros(2, 3, dtype=torch.float64)).dtype == torch.float32


def test_our_x_moves_the_glimpse_horizontally() -> None:
    # ours (x=1, y=-1, scale=-1) -> original (0, 1, 0): top-right corner, x = 192 on a 224x224 image
    crop, _ = boxes_of(action_to_unit(torch.tensor([[1.0, -1.0, -1.0]]))[0].tolist(), (224, 224), 2)
    assert crop == [0, 192, 32]


# ----------------------------------------------------------------------------------------------------
# patches (original `_crop_and_resize`)
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid_size", [1, 2, 3])
@pytest.mark.parametrize("image_size", [(224, 224), (200, 300), (96, 64)])
def test_extract_patches_matches_per_box_interpolate(image_size: tuple[int, int], grid_size: int) -> None:
    batch = 6
    images = normalised_images(batch, *image_size, seed=grid_size)
    actions = torch.rand(batch, 3, generator=torch.Generator().manual_seed(3))
    actions[0] = torch.tensor([0.0, 0.0, 1.0])  # the whole (square part of the) image
    actions[1] = torch.tensor([1.0, 1.0, 0.0])  # native-resolution cells in the far corner
    patches, boxes = extract_glimpses(images, actions, grid_size)

    assert patches.shape == (batch, grid_size * grid_size, 3, PATCH_SIZE, PATCH_SIZE)
    assert patches.dtype == images.dtype
    assert torch.equal(boxes, compute_glimpse_boxes(actions, image_size, grid_size).cells)
    expected = reference_patches(images, boxes)
    torch.testing.assert_close(patches, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(extract_patches_loop(images, boxes), expected, atol=1e-6, rtol=0)


def test_extract_patches_handles_arbitrary_boxes() -> None:
    # boxes no glimpse produces: non-square, smaller than 16 (upsampling), one pixel, on the borders
    images = normalised_images(2, 40, 50)
    boxes = torch.tensor(
        [
            [[0, 0, 40, 50], [3, 7, 8, 16], [10, 10, 11, 11], [39, 49, 40, 50]],
            [[5, 0, 21, 16], [0, 30, 17, 50], [12, 3, 40, 45], [20, 20, 36, 37]],
        ]
    )
    torch.testing.assert_close(extract_patches(images, boxes), reference_patches(images, boxes), atol=1e-6, rtol=0)


def test_native_size_cells_are_copied_exactly() -> None:
    # (0.3, 0.7, 0) -> four 16x16 cells at rows 57/73 and columns 134/150: no interpolation at all
    images = normalised_images(1, 224, 224)
    patches, boxes = extract_glimpses(images, torch.tensor([[0.3, 0.7, 0.0]]))
    for k, (y1, x1, y2, x2) in enumerate(boxes[0].tolist()):
        assert (y2 - y1, x2 - x1) == (PATCH_SIZE, PATCH_SIZE)
        assert torch.equal(patches[0, k], images[0, :, y1:y2, x1:x2])


def test_downscaled_constant_image_stays_constant() -> None:
    # bilinear weights sum to one, so any crop of a constant image is that constant
    images = torch.full((3, 3, 100, 100), 1.25)
    patches, _ = extract_glimpses(images, torch.rand(3, 3, generator=torch.Generator().manual_seed(4)), 2)
    assert torch.equal(patches, torch.full_like(patches, 1.25))


# ----------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------


def test_extract_glimpses_rejects_images_without_batch_dimension() -> None:
    with pytest.raises(ValueError, match=r"requires images of shape \(B, C, H, W\), got \(3, 224, 224\)"):
        extract_glimpses(torch.zeros(3, 224, 224), torch.zeros(1, 3))


@pytest.mark.parametrize("action_shape", [(2, 2), (3, 3), (2,), (2, 3, 1)])
def test_extract_glimpses_rejects_wrong_action_shape(action_shape: tuple[int, ...]) -> None:
    with pytest.raises(
        ValueError, match=re.escape(f"(y, x, scale) action per image, shape (2, 3), got {action_shape}")
    ):
        extract_glimpses(torch.zeros(2, 3, 64, 64), torch.zeros(action_shape))


def test_glimpse_size_range_values() -> None:
    assert glimpse_size_range((224, 224)) == (32, 224.0)
    assert glimpse_size_range((200, 300), grid_size=3, max_size_ratio=0.5) == (48, 100.0)


@pytest.mark.parametrize(
    ("image_size", "grid_size", "ratio", "expected"),
    [
        ((20, 300), 2, 1.0, "at least 32 px"),
        ((224, 224), 2, 0.1, "at least 32 px"),
        ((40, 40), 3, 1.0, "48 px"),
    ],
)
def test_glimpse_size_range_rejects_small_images(
    image_size: tuple[int, int], grid_size: int, ratio: float, expected: str
) -> None:
    height, width = image_size
    with pytest.raises(ValueError, match=expected) as error:
        glimpse_size_range(image_size, grid_size, ratio)
    message = str(error.value)
    assert f"got image size {height}x{width}" in message
    assert f"{grid_size}x{grid_size}" in message


def test_extract_glimpses_rejects_image_too_small_for_the_grid() -> None:
    with pytest.raises(ValueError, match="at least 48 px"):
        extract_glimpses(torch.zeros(1, 3, 40, 40), torch.zeros(1, 3), grid_size=3)


# ----------------------------------------------------------------------------------------------------
# CUDA
# ----------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("grid_size", [1, 2, 3])
def test_cuda_matches_cpu(grid_size: int) -> None:
    images = normalised_images(16, 200, 300, seed=5)
    actions = torch.rand(16, 3, generator=torch.Generator().manual_seed(6))
    actions[0] = torch.tensor([0.3, 0.7, 0.0])
    cpu_patches, cpu_boxes = extract_glimpses(images, actions, grid_size)
    cuda_patches, cuda_boxes = extract_glimpses(images.cuda(), actions.cuda(), grid_size)

    assert cuda_patches.device.type == cuda_boxes.device.type == "cuda"
    assert torch.equal(cuda_boxes.cpu(), cpu_boxes)
    torch.testing.assert_close(cuda_patches.cpu(), cpu_patches, atol=1e-5, rtol=0)
    torch.testing.assert_close(extract_patches_loop(images.cuda(), cuda_boxes).cpu(), cpu_patches, atol=1e-5, rtol=0)
