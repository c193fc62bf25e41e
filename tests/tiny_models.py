"""Tiny models and images shared by the test folders (tests/conftest.py puts this folder on sys.path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from adaglimpse_env.models import ElasticMAE, create_model

#: Input side of the segmentation test models: the paper's convolutional segmentation head upsamples to the input
#: with 256 channels, about 10 s a forward-heavy test at 224 x 224; the code under test is the same at any size.
SEGMENTATION_IMG_SIZE = (96, 96)


def tiny_model(
    task: str = "reconstruction", seed: int = 0, num_segmentation_classes: int = 150, **overrides: Any
) -> ElasticMAE:
    """A 1-block tiny model whose LayerScale is large enough that glimpses change its predictions; ``overrides``
    of its config (e.g. ``img_size``) go to :func:`create_model`."""
    torch.manual_seed(seed)
    options = {"depth": 1, "decoder_depth": 1, **overrides}
    model = create_model("tiny", task, num_segmentation_classes=num_segmentation_classes, **options).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "gamma" in name:
                parameter.fill_(0.5)
    return model


def photo(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A smooth random colour image (a gradient plus noise), size (W, H)."""
    rng = np.random.default_rng(seed)
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    base = rng.integers(0, 255, 3)
    array = (base + 80 * np.sin(xs[..., None] / (5 + seed) + ys[..., None] / 7 + rng.random(3))) % 255
    return Image.fromarray(array.astype(np.uint8))


def write_images(folder: Path, count: int, seed: int = 0, extension: str = "jpg") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img_{seed}_{i:03d}.{extension}"
        photo(seed * 100 + i).save(path)
        paths.append(path)
    return paths
