"""Tiny models and generated dataset folders in every layout the registered ids read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_models import SEGMENTATION_IMG_SIZE, tiny_model, write_images

from adaglimpse_env.models import ElasticMAE


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
    # The segmentation env's checks took about a minute at 224 x 224 (see SEGMENTATION_IMG_SIZE).
    return {
        "reconstruction": tiny_model("reconstruction"),
        "classification": tiny_model("classification"),
        "segmentation": tiny_model("segmentation", img_size=SEGMENTATION_IMG_SIZE),
    }
