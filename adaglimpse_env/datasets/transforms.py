"""Resize/crop/flip of images (and segmentation masks) to the model's square input, seeded per sample (original
`datasets/`).

Random draws use a ``numpy.random.Generator`` created from each sample's own seed, never the global RNGs, so a
sample looks the same whichever worker process decodes it and whatever the caller's RNG state is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance

from adaglimpse_env.image_io import to_model_tensor


@dataclass(frozen=True)
class TransformConfig:
    """How a decoded image becomes a model input.

    Attributes:
        size: output side in pixels (224).
        train: random resized crop + horizontal flip (original `datasets/` ``default_aug``); otherwise deterministic.
        scale: area range of the random crop.
        ratio: aspect-ratio range of the random crop.
        eval_resize: ``"center_crop"`` (short side to ``size``, centre square) or ``"squash"`` (resize to
            ``size x size`` ignoring the aspect ratio, as the original's evaluation does, original `datasets/`).
        color_jitter: in training, brightness, contrast and saturation factors drawn from
            ``[1 - color_jitter, 1 + color_jitter]`` (0: off). Used for pretraining on few photos, where colour
            would otherwise identify the photo.
        vertical_flip: in training, also flip upside down half the time.
    """

    size: int = 224
    train: bool = False
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    eval_resize: str = "center_crop"
    color_jitter: float = 0.0
    vertical_flip: bool = False

    def __post_init__(self) -> None:
        if self.eval_resize not in ("center_crop", "squash"):
            raise ValueError(f"eval_resize must be 'center_crop' or 'squash', got {self.eval_resize!r}")


def random_resized_crop_box(
    width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """Box ``(left, top, right, bottom)`` of a random crop, the same algorithm as torchvision's RandomResizedCrop."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_w = round(math.sqrt(target_area * aspect))
        crop_h = round(math.sqrt(target_area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            return left, top, left + crop_w, top + crop_h
    # Fallback: centre crop with the ratio clamped into range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        crop_w, crop_h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        crop_h, crop_w = height, round(height * ratio[1])
    else:
        crop_w, crop_h = width, height
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return left, top, left + crop_w, top + crop_h


def _eval_box(width: int, height: int, config: TransformConfig) -> tuple[int, int, int, int]:
    if config.eval_resize == "squash":
        return 0, 0, width, height
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def transform_sample(
    image: Image.Image, mask: Image.Image | None, config: TransformConfig, seed: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Crop, resize and (in training) flip an RGB image and its optional label mask identically.

    Args:
        image: RGB image.
        mask: optional single-channel label image of the same size (resized with nearest neighbour).
        config: the transform.
        seed: this sample's seed (only used when ``config.train``).

    Returns:
        ``(image (3, size, size) float32 normalised, mask (size, size) int64 or None)``.
    """
    width, height = image.size
    flip = vertical = False
    rng = np.random.default_rng(seed)
    if config.train:
        box = random_resized_crop_box(width, height, config.scale, config.ratio, rng)
        flip = bool(rng.random() < 0.5)
        vertical = config.vertical_flip and bool(rng.random() < 0.5)
    else:
        box = _eval_box(width, height, config)
    size = (config.size, config.size)
    image = image.resize(size, Image.Resampling.BICUBIC if config.train else Image.Resampling.BILINEAR, box=box)
    image = _flip(image, flip, vertical)
    if config.train and config.color_jitter > 0:
        low, high = 1.0 - config.color_jitter, 1.0 + config.color_jitter
        for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            image = enhance(image).enhance(float(rng.uniform(low, high)))
    mask_tensor = None
    if mask is not None:
        mask = _flip(mask.resize(size, Image.Resampling.NEAREST, box=box), flip, vertical)
        mask_tensor = torch.from_numpy(np.asarray(mask, dtype=np.int64).copy())
    return to_model_tensor(image), mask_tensor


def _flip(image: Image.Image, horizontal: bool, vertical: bool) -> Image.Image:
    if horizontal:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if vertical:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return image
