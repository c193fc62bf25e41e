"""Decoding odd images to RGB: every Pillow mode a photo collection contains, and broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adaglimpse_env.image_io import ImageDecodeError, load_rgb, resize_center_crop, to_model_tensor, to_rgb
from adaglimpse_env.normalization import to_pixels


@pytest.mark.parametrize(
    ("mode", "extension"),
    [("L", "png"), ("P", "png"), ("CMYK", "jpg"), ("RGBA", "png"), ("LA", "png"), ("1", "png"), ("RGB", "webp")],
)
def test_every_mode_decodes_to_rgb(tmp_path: Path, mode: str, extension: str) -> None:
    path = tmp_path / f"image.{extension}"
    Image.new("RGB", (40, 30), (200, 100, 50)).convert(mode).save(path)
    image = load_rgb(path)
    assert image.mode == "RGB"
    assert image.size == (40, 30)


def test_transparent_pixels_become_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    opaque = Image.new("RGBA", (4, 4), (10, 20, 30, 255))
    assert to_rgb(opaque).getpixel((0, 0)) == (10, 20, 30)


def test_16_bit_grayscale_uses_full_range(tmp_path: Path) -> None:
    array = np.array([[0, 65535], [32768, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(array).save(path)
    image = load_rgb(path)
    assert np.asarray(image)[:, :, 0].tolist() == [[0, 255], [128, 255]]


@pytest.mark.parametrize("content", [b"", b"GIF89a not really", b"\xff\xd8\xff\xe0 truncated jpeg"])
def test_broken_files_raise_decode_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=r"Cannot decode image '.*broken\.jpg'"):
        load_rgb(path)


def test_truncated_jpeg_fails_loudly(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError):
        load_rgb(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="FileNotFoundError"):
        load_rgb(tmp_path / "absent.png")


def test_decompression_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # the same guard, at a size a test can afford
    with pytest.raises(ImageDecodeError, match="DecompressionBomb"):
        load_rgb(path)


def test_resize_center_crop_and_tensor_round_trip() -> None:
    image = Image.new("RGB", (300, 150), (255, 0, 128))
    cropped = resize_center_crop(image, 64)
    assert cropped.size == (64, 64)
    tensor = to_model_tensor(cropped)
    assert tensor.shape == (3, 64, 64)
    assert tensor.dtype == torch.float32
    torch.testing.assert_close(to_pixels(tensor)[:, 0, 0], torch.tensor([255.0, 0.0, 128.0]), atol=1e-3, rtol=0)
