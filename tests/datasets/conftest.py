"""Tiny generated image folders for the dataset tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

Writer = Callable[..., Path]


def write_image(
    path: Path, size: tuple[int, int] = (40, 30), color: tuple[int, int, int] | None = None, seed: int = 0
) -> Path:
    """Save a small RGB image (solid ``color`` or seeded noise) at ``path``, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    if color is None:
        pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        image = Image.fromarray(pixels, mode="RGB")
    else:
        image = Image.new("RGB", size, color)
    image.save(path)
    return path


def write_mask(path: Path, values: np.ndarray) -> Path:
    """Save a uint8 label array as a single-channel PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8), mode="L").save(path)
    return path


def write_corrupt_files(folder: Path) -> list[Path]:
    """A zero-byte JPEG, a truncated JPEG and a text file with a .jpg extension."""
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    whole = write_image(folder / "whole_tmp.jpg", size=(64, 48), seed=99)
    data = whole.read_bytes()
    whole.unlink()
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    text = folder / "text.jpg"
    text.write_text("this is not a JPEG\n")
    return [empty, truncated, text]


@pytest.fixture
def make_image() -> Writer:
    """:func:`write_image` as a fixture (test modules cannot import this conftest without a package)."""
    return write_image


@pytest.fixture
def make_mask() -> Writer:
    """:func:`write_mask` as a fixture."""
    return write_mask


@pytest.fixture
def make_corrupt_files() -> Callable[[Path], list[Path]]:
    """:func:`write_corrupt_files` as a fixture."""
    return write_corrupt_files
