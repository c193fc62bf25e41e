"""ImageNet normalisation round trip, dtype handling, and gradients through the cached channel statistics."""

from __future__ import annotations

import torch

from adaglimpse_env import normalization
from adaglimpse_env.normalization import IMAGENET_MEAN, IMAGENET_STD, normalize, to_pixels


def test_round_trip_on_the_pixel_scale() -> None:
    pixels = torch.arange(256, dtype=torch.float32).reshape(1, 1, 16, 16).expand(2, 3, 16, 16)
    restored = to_pixels(normalize(pixels / 255.0))
    torch.testing.assert_close(restored, pixels, atol=1e-3, rtol=0)


def test_hand_computed_values_and_clipping() -> None:
    # Red channel: mean 0.485, std 0.229. Pixel 255 -> (1 - 0.485) / 0.229 = 2.2489...
    white = torch.ones(3, 1, 1)
    expected = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]).reshape(3, 1, 1)
    torch.testing.assert_close(normalize(white), expected)
    # Values past the 0-1 range map outside 0-255 before the clip.
    assert to_pixels(torch.full((3, 2, 2), 10.0)).eq(255.0).all()
    assert to_pixels(torch.full((3, 2, 2), -10.0)).eq(0.0).all()


def test_keeps_dtype() -> None:
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        images = torch.rand(2, 3, 4, 4, dtype=dtype)
        assert normalize(images).dtype == dtype
        assert to_pixels(images).dtype == dtype


def test_gradients_flow_after_first_use_in_inference_mode() -> None:
    # The statistics are cached per dtype and device; the first call here builds them inside inference mode,
    # and a later training-mode call must still be able to save them for backward.
    normalization._cached_channel_stats.cache_clear()
    with torch.inference_mode():
        to_pixels(torch.rand(3, 2, 2, dtype=torch.float64))
    images = torch.rand(3, 2, 2, dtype=torch.float64, requires_grad=True)
    to_pixels(images * 0.1).sum().backward()
    assert images.grad is not None
    torch.testing.assert_close(images.grad[0], torch.full((2, 2), 0.1 * 0.229 * 255.0, dtype=torch.float64))
