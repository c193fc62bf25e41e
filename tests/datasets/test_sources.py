"""build_image_source: any dataset by name, with the caller's transform."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import write_images

from adaglimpse_env.datasets import DATASETS, DatasetNotFoundError, TransformConfig, build_image_source


def test_a_folder_source_keeps_the_given_transform(tmp_path: Path) -> None:
    write_images(tmp_path / "cats", 2)
    write_images(tmp_path / "dogs", 2, seed=1)
    transform = TransformConfig(size=32, train=True, scale=(0.5, 1.0), color_jitter=0.3, vertical_flip=True)
    source = build_image_source("folder", "train", transform=transform, data_root=tmp_path, with_labels=True)
    assert source.transform is transform and source.classes == ["cats", "dogs"]
    assert source[(0, 7)]["image"].shape == (3, 32, 32)


def test_the_digits_scenes_are_drawn_at_the_transforms_size() -> None:
    source = build_image_source("digits", "val", transform=TransformConfig(size=64), scene={"num_val_scenes": 3})
    assert len(source) == 3 and source[(0, 0)]["image"].shape == (3, 64, 64)


def test_errors_name_the_dataset_and_the_layout(tmp_path: Path) -> None:
    transform = TransformConfig(size=32)
    with pytest.raises(ValueError, match=r"dataset must be one of \['imagenet', 'sun360', 'ade20k', 'coco'"):
        build_image_source("mnist", "train", transform=transform)
    with pytest.raises(DatasetNotFoundError, match=r"(?s)dataset='coco' requires a data folder .*train2014"):
        build_image_source("coco", "train", transform=transform)
    with pytest.raises(ValueError, match=r"scene keywords \['clutter'\] need dataset='digits'"):
        build_image_source("photos", "train", transform=transform, scene={"clutter": 1})
    assert {"photos", "digits", "folder"} <= set(DATASETS)
