"""Tiny models and generated dataset folders in every layout the registered ids read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adaglimpse_env.models import ElasticMAE, create_model


def tiny_model(task: str = "reconstruction", seed: int = 0, num_segmentation_classes: int = 4) -> ElasticMAE:
    """A 1-block tiny model whose LayerScale is large enough that glimpses change its predictions."""
    torch.manual_seed(seed)
    model = create_model(
        "tiny", task, depth=1, decoder_depth=1, num_segmentation_classes=num_segmentation_classes
    ).eval()
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


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One root holding every dataset layout, with a few tiny images each."""
    root = tmp_path_factory.mktemp("data")
    for split in ("train", "val"):
        for c, wnid in enumerate(("n01440764", "n01443537")):
            write_images(root / "imagenet" / split / wnid, 2, seed=10 + c, extension="JPEG")
    for split in ("training", "validation"):
        images = write_images(root / "ade20k" / "images" / split, 3, seed=20)
        masks = root / "ade20k" / "annotations" / split
        masks.mkdir(parents=True)
        for i, image in enumerate(images):
            mask = np.zeros((48, 64), dtype=np.uint8)
            mask[:, 32:] = 1 + i % 3
            Image.fromarray(mask).save(masks / f"{image.stem}.png")
    for split in ("train2014", "val2014"):
        write_images(root / "coco" / split, 3, seed=30)
    lines = []
    for category in ("indoor/bedroom", "outdoor/beach"):
        for path in write_images(root / "sun360" / category, 5, seed=40):
            lines.append(str(path.relative_to(root / "sun360")))
    (root / "sun360" / "sun360-dataset26-random.txt").write_text("\n".join(lines) + "\n")
    write_images(root / "folder" / "cats", 2, seed=50)
    write_images(root / "folder" / "dogs", 2, seed=51)
    return root


@pytest.fixture(scope="session")
def models() -> dict[str, ElasticMAE]:
    return {task: tiny_model(task) for task in ("reconstruction", "classification", "segmentation")}
