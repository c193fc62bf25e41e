"""Seeded resize/crop/flip of images and masks (original `datasets/` default transforms)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from adaglimpse_env.datasets import TransformConfig, transform_sample
from adaglimpse_env.datasets.transforms import random_resized_crop_box
from adaglimpse_env.normalization import IMAGENET_MEAN, IMAGENET_STD, normalize


def noise_image(width: int = 40, height: int = 30, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def unnormalize(tensor: torch.Tensor) -> torch.Tensor:
    """Normalised (3, H, W) -> pixels in [0, 255]."""
    mean = torch.tensor(IMAGENET_MEAN).reshape(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).reshape(3, 1, 1)
    return (tensor * std + mean) * 255.0


def framed_image(width: int = 40, height: int = 30) -> Image.Image:
    """White, with black 5-px bands at the left and right edges (outside a centre square crop)."""
    pixels = np.full((height, width, 3), 255, dtype=np.uint8)
    pixels[:, :5] = 0
    pixels[:, -5:] = 0
    return Image.fromarray(pixels, mode="RGB")


def test_eval_center_crop_shape_dtype_and_normalisation() -> None:
    color = (200, 100, 50)
    tensor, mask = transform_sample(Image.new("RGB", (40, 30), color), None, TransformConfig(), seed=0)
    assert mask is None
    assert tensor.shape == (3, 224, 224)
    assert tensor.dtype == torch.float32
    expected = normalize(torch.tensor(color, dtype=torch.float32).reshape(3, 1, 1) / 255.0)
    torch.testing.assert_close(tensor, expected.expand(3, 224, 224), atol=1e-5, rtol=0)


def test_eval_center_crop_drops_the_sides() -> None:
    # 40x30: the centre 30x30 square spans columns 5..34, all white. Like resize-then-crop, Pillow's box resize
    # lets the bilinear filter see the pixels just outside the box, so only the outermost output columns blend in
    # a little black; squashing would put ~28 black columns on each side.
    tensor, _ = transform_sample(framed_image(), None, TransformConfig(), seed=0)
    pixels = unnormalize(tensor)
    assert pixels[:, :, 8:-8].min() > 250
    assert pixels.min() > 100


def test_eval_squash_keeps_the_whole_image() -> None:
    tensor, _ = transform_sample(framed_image(), None, TransformConfig(eval_resize="squash"), seed=0)
    assert tensor.shape == (3, 224, 224)
    pixels = unnormalize(tensor)
    # Black bands are 5/40 of the width: ~28 output columns each side.
    assert pixels[:, :, :20].max() < 5
    assert pixels[:, :, -20:].max() < 5
    assert pixels[:, :, 40:-40].min() > 250


def test_eval_is_deterministic_and_ignores_the_seed() -> None:
    image = noise_image()
    a, _ = transform_sample(image, None, TransformConfig(), seed=1)
    b, _ = transform_sample(image, None, TransformConfig(), seed=2)
    assert torch.equal(a, b)


def test_train_is_deterministic_per_seed_and_differs_across_seeds() -> None:
    image = noise_image(64, 48)
    config = TransformConfig(train=True, size=64)
    first, _ = transform_sample(image, None, config, seed=123)
    # Global RNG state must not matter.
    torch.manual_seed(999)
    np.random.seed(999)
    second, _ = transform_sample(image, None, config, seed=123)
    assert first.shape == (3, 64, 64)
    assert first.dtype == torch.float32
    assert torch.equal(first, second)
    outputs = [transform_sample(image, None, config, seed=s)[0] for s in range(8)]
    distinct = {tuple(o.flatten()[:64].tolist()) for o in outputs}
    assert len(distinct) == 8


def test_train_flips_about_half_the_time() -> None:
    # A left-black / right-white image with crops covering almost all of it: the dark side tells the flip.
    pixels = np.zeros((30, 40, 3), dtype=np.uint8)
    pixels[:, 20:] = 255
    image = Image.fromarray(pixels, mode="RGB")
    config = TransformConfig(train=True, size=32, scale=(0.95, 1.0))
    flips = 0
    for seed in range(200):
        tensor, _ = transform_sample(image, None, config, seed=seed)
        column_means = unnormalize(tensor).mean(dim=(0, 1))
        flips += int(column_means[:8].mean() > column_means[-8:].mean())
    assert 60 < flips < 140


def half_red_image_and_mask(width: int = 64, height: int = 48) -> tuple[Image.Image, Image.Image]:
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)
    pixels[:, width // 2 :] = (0, 0, 255)
    labels = np.zeros((height, width), dtype=np.uint8)
    labels[:, : width // 2] = 1
    return Image.fromarray(pixels, mode="RGB"), Image.fromarray(labels, mode="L")


@pytest.mark.parametrize("train", [True, False])
def test_mask_is_transformed_like_the_image(train: bool) -> None:
    image, mask = half_red_image_and_mask()
    config = TransformConfig(train=train, scale=(0.6, 1.0))
    flipped_seen = unflipped_seen = False
    for seed in range(12):
        tensor, mask_tensor = transform_sample(image, mask, config, seed=seed)
        assert mask_tensor is not None
        assert mask_tensor.shape == (224, 224)
        assert mask_tensor.dtype == torch.int64
        assert set(np.unique(mask_tensor.numpy()).tolist()) <= {0, 1}
        pixels = unnormalize(tensor)
        red = pixels[0] > pixels[2]
        is_one = mask_tensor == 1
        # Bicubic blends across the colour edge; red/blue and the nearest-neighbour mask may disagree by at most
        # one column at the boundary in each row.
        mismatches_per_row = (red != is_one).sum(dim=1)
        assert int(mismatches_per_row.max()) <= 1, f"seed {seed}: image and mask misaligned"
        left, right = is_one[:, :112].float().mean(), is_one[:, 112:].float().mean()
        flipped_seen |= bool(right > left)
        unflipped_seen |= bool(left > right)
    assert unflipped_seen
    assert flipped_seen == train  # eval never flips; 12 train seeds include a flip


def test_random_resized_crop_box_inside_and_in_range() -> None:
    width, height = 400, 300
    scale, ratio = (0.2, 1.0), (3 / 4, 4 / 3)
    rng = np.random.default_rng(0)
    fractions = []
    for _ in range(500):
        left, top, right, bottom = random_resized_crop_box(width, height, scale, ratio, rng)
        assert 0 <= left < right <= width
        assert 0 <= top < bottom <= height
        crop_w, crop_h = right - left, bottom - top
        fraction = crop_w * crop_h / (width * height)
        fractions.append(fraction)
        assert scale[0] * 0.97 <= fraction <= scale[1] * 1.0001
        if fraction < 0.999:  # not the full-image fallback
            assert ratio[0] * 0.97 <= crop_w / crop_h <= ratio[1] * 1.03
    fractions_array = np.array(fractions)
    assert fractions_array.min() < 0.3  # the range is actually explored
    assert fractions_array.max() > 0.85
    assert 0.45 < np.median(fractions_array) < 0.75  # roughly uniform area in [0.2, 1]


def test_random_resized_crop_box_is_seeded() -> None:
    boxes_a = [random_resized_crop_box(64, 48, (0.2, 1.0), (0.75, 4 / 3), np.random.default_rng(s)) for s in range(5)]
    boxes_b = [random_resized_crop_box(64, 48, (0.2, 1.0), (0.75, 4 / 3), np.random.default_rng(s)) for s in range(5)]
    assert boxes_a == boxes_b
    assert len(set(boxes_a)) > 1


@pytest.mark.parametrize(("width", "height"), [(1000, 10), (10, 1000), (1, 1), (3, 200)])
def test_random_resized_crop_box_fallback_stays_inside(width: int, height: int) -> None:
    ratio = (3 / 4, 4 / 3)
    rng = np.random.default_rng(1)
    for _ in range(20):
        left, top, right, bottom = random_resized_crop_box(width, height, (0.08, 1.0), ratio, rng)
        assert 0 <= left < right <= width
        assert 0 <= top < bottom <= height
    if width * height > 1:
        # Extreme aspect ratios fall back to a centred crop with the ratio clamped into range.
        left, top, right, bottom = random_resized_crop_box(width, height, (0.99, 1.0), ratio, rng)
        aspect = (right - left) / (bottom - top)
        assert ratio[0] * 0.9 <= aspect <= ratio[1] * 1.1 or min(width, height) < 4
        assert math.isclose(left + right, width, abs_tol=1)  # centred
        assert math.isclose(top + bottom, height, abs_tol=1)


def test_train_output_for_tiny_and_extreme_images() -> None:
    for size in [(1, 1), (500, 3), (3, 500)]:
        tensor, _ = transform_sample(noise_image(*size), None, TransformConfig(train=True, size=16), seed=5)
        assert tensor.shape == (3, 16, 16)
        assert torch.isfinite(tensor).all()


@pytest.mark.parametrize("bad", ["center", "resize", "", "CENTER_CROP"])
def test_invalid_eval_resize(bad: str) -> None:
    with pytest.raises(ValueError, match="eval_resize"):
        TransformConfig(eval_resize=bad)
