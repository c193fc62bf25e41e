"""Decode any image Pillow reads into the RGB tensor the model expects.

Photographs come in many modes (grayscale, palette, CMYK, with alpha, 16-bit); all are converted to 8-bit RGB
here, in one place, so everything downstream can assume ``(3, H, W)``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from adaglimpse_env.normalization import normalize


class ImageDecodeError(ValueError):
    """An image file could not be decoded into RGB."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    Transparent pixels are composited over white (not left as whatever colour hides under alpha 0); 16- and
    32-bit grayscale is scaled to 8 bits by its full range rather than clipped.

    Args:
        image: a decoded Pillow image of any mode.

    Returns:
        An ``RGB`` image of the same size.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        high = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        scaled = np.clip(array / high * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Open and fully decode an image file as RGB.

    Pillow's decompression-bomb warning (images over ``Image.MAX_IMAGE_PIXELS``) is raised as an error here, and
    truncated files fail (unless the caller set ``ImageFile.LOAD_TRUNCATED_IMAGES``).

    Raises:
        ImageDecodeError: the file is missing, empty, truncated, not an image, or a decompression bomb.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return to_rgb(image)
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as error:
        raise ImageDecodeError(f"Cannot decode image '{path}': {type(error).__name__}: {error}") from error


def resize_center_crop(image: Image.Image, size: int = 224) -> Image.Image:
    """Resize the short side to ``size`` (bilinear) and crop the centre ``size x size`` square."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_model_tensor(image: Image.Image) -> torch.Tensor:
    """RGB Pillow image -> ImageNet-normalised float32 tensor ``(3, H, W)``."""
    array = np.asarray(image, dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32) / 255.0
    return normalize(tensor)
