"""Decode any image Pillow reads into the RGB tensor the model expects.

Photographs come in many modes (grayscale, palette, CMYK, with alpha, 16-bit); all are converted to 8-bit RGB
here, in one place, so everything downstream can assume ``(3, H, W)``.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from adaglimpse_env.normalization import normalize

#: Largest image (``width * height``) :func:`load_image` decodes: Pillow's default ``MAX_IMAGE_PIXELS`` (about
#: 9459 x 9459 pixels, a 256 MiB RGB array). Raise it to decode larger images on purpose.
MAX_PIXELS = 89_478_485


class ImageDecodeError(ValueError):
    """An image file could not be decoded into RGB."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    Transparent pixels are composited over white (not left as whatever colour hides under alpha 0). Integer
    grayscale is scaled to 8 bits by its dtype's full range, never by the image's own maximum (a constant 100 stays
    dark at any depth): 16-bit by 65535 (also when Pillow reads a 16-bit PNG as mode ``I``), other 32-bit integers
    by 2**31 - 1 (negative values clip to black). Float images (mode ``F``) are scaled by their maximum (at least
    1, so [0, 1] data keeps its meaning); NaN or infinite pixels are refused.

    Args:
        image: a decoded Pillow image of any mode.

    Returns:
        An ``RGB`` image of the same size.

    Raises:
        ValueError: a float image with NaN or infinite pixels, or a mode Pillow cannot convert.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            if not np.isfinite(array).all():
                raise ValueError(f"{int((~np.isfinite(array)).sum())} NaN or infinite pixels in a float image")
            high = max(float(array.max()), 1.0)
        elif image.mode.startswith("I;16") or image.format == "PNG":  # PNG has no 32-bit samples
            high = 65535.0
        else:
            high = float(2**31 - 1)
        scaled = np.clip(array / high * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode an image file, keeping its Pillow mode (``L``, ``P``, ``I;16``, ...).

    Hostile files are refused before any pixel is decoded:

    * anything but a regular file (a FIFO or a device named ``*.jpg`` would block or never end, a symlink loop
      cannot be opened) is refused after one ``stat``;
    * an image whose header declares more than ``max_pixels`` pixels is refused from the header alone. This is
      our own check, not only Pillow's, because other libraries sometimes disable Pillow's guard globally
      (``PIL.Image.MAX_IMAGE_PIXELS = None``); Pillow's own decompression-bomb warning is raised as an error too.

    Truncated files fail (unless the caller set ``ImageFile.LOAD_TRUNCATED_IMAGES``).

    Args:
        path: the file.
        max_pixels: largest ``width * height`` decoded; default :data:`MAX_PIXELS` (read at call time).

    Raises:
        ImageDecodeError: the file is missing, not a regular file, empty, truncated, not an image, or a
            decompression bomb. The message names the file and the reason.
    """
    path = Path(path)
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    try:
        mode = os.stat(path).st_mode  # follows symlinks: a loop raises OSError (ELOOP) here
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
            raise ImageDecodeError(f"Cannot decode image '{path}': it is {kind}, not a regular file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > limit:
                    raise ImageDecodeError(
                        f"Cannot decode image '{path}': DecompressionBombError: its header declares "
                        f"{width}x{height} = {width * height} pixels, over the limit of {limit} "
                        f"(adaglimpse_env.image_io.MAX_PIXELS); refusing a possible decompression bomb"
                    )
                image.load()
                return image
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as error:
        if isinstance(error, ImageDecodeError):
            raise
        raise ImageDecodeError(f"Cannot decode image '{path}': {type(error).__name__}: {error}") from error


def load_rgb(path: str | os.PathLike[str], max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode an image file as 8-bit RGB, upright per its EXIF orientation (see :func:`load_image`
    for what is refused and :func:`to_rgb` for the conversion).

    Raises:
        ImageDecodeError: the file is missing, not a regular file, empty, truncated, not an image, a
            decompression bomb, or a float image with NaN or infinite pixels.
    """
    image = load_image(path, max_pixels)
    try:
        # Cameras store portrait photos rotated plus an EXIF Orientation tag; viewers honour it, so do we.
        return to_rgb(ImageOps.exif_transpose(image))
    except ValueError as error:  # a mode Pillow cannot convert, e.g. LAB
        raise ImageDecodeError(f"Cannot decode image '{Path(path)}': {type(error).__name__}: {error}") from error


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
