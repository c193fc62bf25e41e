"""Dataset folder layouts (original `datasets/`): any image folder, ImageNet, ADE20K, COCO 2014, SUN360, the bundled
photos."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from adaglimpse_env.datasets import (
    NO_LABEL,
    DatasetNotFoundError,
    ImageSource,
    TransformConfig,
    ade20k,
    coco2014,
    embedded_photos,
    image_folder,
    imagenet,
    sun360,
)

SMALL = TransformConfig(size=32)


def labels_of(source: ImageSource) -> list[int]:
    """The label of every sample, read through ``__getitem__``."""
    return [int(source[(i, 0)]["label"]) for i in range(len(source))]


# --------------------------------------------------------------------------------------------- image_folder


def test_flat_folder_has_no_labels(tmp_path: Path, make_image) -> None:
    for i in range(3):
        make_image(tmp_path / f"img{i}.jpg", seed=i)
    make_image(tmp_path / "extra.png", seed=7)
    source = image_folder(tmp_path, transform=SMALL)
    assert len(source) == 4
    assert source.classes == []
    assert source.labels is None
    assert labels_of(source) == [NO_LABEL] * 4
    sample = source[(0, 0)]
    assert sample["image"].shape == (3, 32, 32)
    assert sample["image"].dtype == torch.float32
    assert sample["index"] == 0
    assert "mask" not in sample


def test_class_subfolders_give_sorted_labels(tmp_path: Path, make_image) -> None:
    # Created out of order on purpose: labels follow the sorted sub-folder names, not creation order.
    make_image(tmp_path / "zebra" / "z1.jpg", seed=1)
    make_image(tmp_path / "apple" / "a1.png", seed=2)
    make_image(tmp_path / "apple" / "a2.jpg", seed=3)
    make_image(tmp_path / "mango" / "deep" / "deeper" / "m1.jpeg", seed=4)  # recursive discovery
    source = image_folder(tmp_path, transform=SMALL)
    assert source.classes == ["apple", "mango", "zebra"]
    expected = {"a1.png": 0, "a2.jpg": 0, "m1.jpeg": 1, "z1.jpg": 2}
    assert sorted(f.name for f in source.files) == sorted(expected)
    for i, path in enumerate(source.files):
        assert int(source[(i, 0)]["label"]) == expected[path.name]


def test_recursive_discovery_and_non_images_ignored(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a.jpg")
    make_image(tmp_path / "one" / "b.PNG")  # extension match is case-insensitive
    make_image(tmp_path / "one" / "two" / "three" / "c.bmp")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "one" / "labels.csv").write_text("a,b\n")
    (tmp_path / "one" / "two" / ".DS_Store").write_bytes(b"\x00\x01")
    (tmp_path / "one" / "two" / "archive.jpg.zip").write_bytes(b"PK")
    source = image_folder(tmp_path, transform=SMALL)
    assert sorted(f.name for f in source.files) == ["a.jpg", "b.PNG", "c.bmp"]
    # An image directly under the root: the sub-folders are not classes.
    assert source.classes == []
    assert labels_of(source) == [NO_LABEL] * 3
    assert source.files == sorted(source.files)


@pytest.mark.parametrize("content", ["empty", "only_non_images"])
def test_folder_without_images_raises_with_layout(tmp_path: Path, content: str) -> None:
    if content == "only_non_images":
        (tmp_path / "readme.txt").write_text("hi")
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "data.npy").write_bytes(b"\x93NUMPY")
    with pytest.raises(DatasetNotFoundError, match="holds no image files") as info:
        image_folder(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "Expected layout" in str(info.value)
    assert "<root>/**/*.{jpg,png,...}" in str(info.value)


def test_missing_folder_raises_with_layout(tmp_path: Path) -> None:
    missing = tmp_path / "does_not_exist"
    with pytest.raises(DatasetNotFoundError, match="does not exist") as info:
        image_folder(missing)
    assert str(missing) in str(info.value)
    assert "<root>/**/*.{jpg,png,...}" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_a_file_instead_of_a_folder_raises(tmp_path: Path, make_image) -> None:
    path = make_image(tmp_path / "single.jpg")
    with pytest.raises(DatasetNotFoundError):
        image_folder(path)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlink_loop_does_not_hang(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "cls" / "a.jpg")
    make_image(tmp_path / "cls" / "inner" / "b.jpg")
    os.symlink(tmp_path / "cls", tmp_path / "cls" / "inner" / "loop_to_parent", target_is_directory=True)
    os.symlink(tmp_path, tmp_path / "cls" / "loop_to_root", target_is_directory=True)

    result: dict[str, object] = {}

    def scan() -> None:
        try:
            result["source"] = image_folder(tmp_path, transform=SMALL)
        except BaseException as error:  # reported below
            result["error"] = error

    worker = threading.Thread(target=scan, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "image_folder did not return within 20 s on a folder with a symlink loop"
    assert "error" not in result, result.get("error")
    source = result["source"]
    assert isinstance(source, ImageSource)
    assert sorted(f.name for f in source.files) == ["a.jpg", "b.jpg"]  # each file once
    assert source.classes == ["cls"]


# --------------------------------------------------------------------------------------------- imagenet


def make_imagenet(root: Path, make_image) -> dict[str, dict[str, list[str]]]:
    layout = {
        "train": {"n02085620": ["t1.JPEG", "t2.JPEG"], "n01440764": ["t3.JPEG"], "n15075141": ["t4.JPEG"]},
        "val": {"n15075141": ["v1.JPEG"], "n01440764": ["v2.JPEG", "v3.JPEG"], "n02085620": ["v4.JPEG"]},
    }
    seed = 0
    for split, classes in layout.items():
        for wnid, names in classes.items():
            for name in names:
                make_image(root / split / wnid / name, seed=seed)
                seed += 1
    (root / "train" / "LOC_synset_mapping.txt").write_text("stray file, not a class\n")
    return layout


@pytest.mark.parametrize("split", ["train", "val"])
def test_imagenet_labels_are_the_standard_class_indices(tmp_path: Path, make_image, split: str) -> None:
    layout = make_imagenet(tmp_path, make_image)
    with pytest.warns(RuntimeWarning, match=r"holds 3 of the 1000 classes \(997 missing"):
        source = imagenet(tmp_path, split=split, transform=SMALL)
    assert sorted(layout[split]) == ["n01440764", "n02085620", "n15075141"]
    assert len(source.classes) == 1000 and source.classes[0] == "n01440764" and source.classes[999] == "n15075141"
    assert len(source) == sum(len(v) for v in layout[split].values())
    standard = {"n01440764": 0, "n02085620": 151, "n15075141": 999}  # a subset keeps the ImageNet-1k indices
    for i, path in enumerate(source.files):
        assert path.parent.parent == tmp_path / split
        assert int(source[(i, 0)]["label"]) == standard[path.parent.name]


def test_imagenet_wnid_list_is_the_standard_one() -> None:
    from adaglimpse_env.datasets.folders import imagenet_wnids

    wnids = imagenet_wnids()
    assert len(wnids) == len(set(wnids)) == 1000 and list(wnids) == sorted(wnids)
    assert wnids[:2] == ("n01440764", "n01443537") and wnids[-1] == "n15075141"


def test_imagenet_refuses_unknown_wnids(tmp_path: Path, make_image) -> None:
    make_imagenet(tmp_path, make_image)
    (tmp_path / "val" / "n99999999").mkdir()
    (tmp_path / "val" / "cats").mkdir()
    with pytest.raises(ValueError, match=r"requires class folders named by the 1000 ImageNet-1k wnids .* got 2 others"):
        imagenet(tmp_path, split="val", transform=SMALL)


def test_imagenet_default_split_is_val(tmp_path: Path, make_image) -> None:
    make_imagenet(tmp_path, make_image)
    assert all(p.parent.parent.name == "val" for p in imagenet(tmp_path).files)


def test_imagenet_bad_split(tmp_path: Path, make_image) -> None:
    make_imagenet(tmp_path, make_image)
    with pytest.raises(ValueError, match="split"):
        imagenet(tmp_path, split="test")


def test_imagenet_missing_folder_names_layout(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "val" / "n01440764" / "x.JPEG")
    with pytest.raises(DatasetNotFoundError) as info:
        imagenet(tmp_path, split="train")
    message = str(info.value)
    assert str(tmp_path / "train") in message
    assert "<root>/train/<wnid>/*.JPEG" in message
    assert "<root>/val/<wnid>/*.JPEG" in message


def test_imagenet_without_class_folders_or_images(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "val" / "loose.JPEG")  # no class sub-folder
    with pytest.raises(DatasetNotFoundError, match="class sub-folders"):
        imagenet(tmp_path)
    (tmp_path / "train" / "n01440764").mkdir(parents=True)  # class folder, but empty
    with pytest.raises(DatasetNotFoundError, match="holds no images"):
        imagenet(tmp_path, split="train")


# --------------------------------------------------------------------------------------------- ade20k


def ade_raw_mask(seed: int, side: int = 32) -> np.ndarray:
    """A raw ADE20K annotation: 0 (unlabelled), 1..150, plus out-of-range values (clipped to 150)."""
    values = np.array([0, 1, 2, 75, 149, 150, 151, 255], dtype=np.uint8)
    return np.random.default_rng(seed).choice(values, size=(side, side))


def expected_ade_mask(raw: np.ndarray) -> np.ndarray:
    clipped = np.minimum(raw.astype(np.int64), 150)
    return np.where(clipped == 0, 255, clipped - 1)


def make_ade(root: Path, make_image, make_mask, split_dir: str, names: list[str], side: int = 32) -> dict:
    raws = {}
    for i, name in enumerate(names):
        make_image(root / "images" / split_dir / f"{name}.jpg", size=(side, side), seed=i)
        raws[name] = ade_raw_mask(i, side)
        make_mask(root / "annotations" / split_dir / f"{name}.png", raws[name])
    return raws


@pytest.mark.parametrize(("split", "split_dir"), [("train", "training"), ("val", "validation")])
def test_ade20k_mask_mapping_end_to_end(tmp_path: Path, make_image, make_mask, split: str, split_dir: str) -> None:
    names = ["ADE_x_0001", "ADE_x_0002", "ADE_x_0003"]
    raws = make_ade(tmp_path, make_image, make_mask, split_dir, names)
    # size equal to the image and the eval transform: resizing is the identity, so values compare exactly.
    source = ade20k(tmp_path, split=split, transform=TransformConfig(size=32))
    assert source.has_masks
    assert [f.stem for f in source.files] == names
    for i, name in enumerate(names):
        sample = source[(i, 0)]
        mask = sample["mask"]
        assert mask.dtype == torch.int64
        assert mask.shape == (32, 32)
        np.testing.assert_array_equal(mask.numpy(), expected_ade_mask(raws[name]))
        assert int(sample["label"]) == NO_LABEL


def test_ade20k_mapping_values_at_model_size(tmp_path: Path, make_image, make_mask) -> None:
    raw = np.zeros((30, 40), dtype=np.uint8)
    raw[:, 10:20] = 1
    raw[:, 20:30] = 150
    raw[:, 30:] = 42
    make_image(tmp_path / "images" / "validation" / "a.jpg", size=(40, 30))
    make_mask(tmp_path / "annotations" / "validation" / "a.png", raw)
    for config in (TransformConfig(), TransformConfig(eval_resize="squash"), TransformConfig(train=True)):
        mask = ade20k(tmp_path, transform=config)[(0, 3)]["mask"]
        assert mask.shape == (224, 224)
        assert set(np.unique(mask.numpy()).tolist()) <= {255, 0, 149, 41}
    squashed = ade20k(tmp_path, transform=TransformConfig(eval_resize="squash"))[(0, 0)]["mask"].numpy()
    assert set(np.unique(squashed).tolist()) == {255, 0, 149, 41}
    assert (squashed[:, :50] == 255).all()  # raw 0 (left quarter) -> ignore index 255
    assert (squashed[:, -50:] == 41).all()  # raw 42 -> class 41


def test_ade20k_mask_of_wrong_size_is_an_error_record(tmp_path: Path, make_image, make_mask) -> None:
    make_image(tmp_path / "images" / "validation" / "a.jpg", size=(40, 30))
    make_mask(tmp_path / "annotations" / "validation" / "a.png", np.ones((20, 40), dtype=np.uint8))
    sample = ade20k(tmp_path, transform=SMALL)[(0, 0)]
    assert set(sample) == {"error", "path", "index"}
    assert "size" in sample["error"]
    assert sample["path"].endswith("a.jpg")


def test_ade20k_without_masks(tmp_path: Path, make_image) -> None:
    for i in range(2):
        make_image(tmp_path / "images" / "validation" / f"v{i}.jpg", seed=i)
    source = ade20k(tmp_path, with_masks=False, transform=SMALL)  # no annotations folder needed
    assert len(source) == 2
    assert not source.has_masks
    sample = source[(0, 0)]
    assert "mask" not in sample
    assert sample["image"].shape == (3, 32, 32)


def test_ade20k_missing_annotation_is_listed(tmp_path: Path, make_image, make_mask) -> None:
    make_ade(tmp_path, make_image, make_mask, "validation", ["has_mask"])
    make_image(tmp_path / "images" / "validation" / "lacks_mask.jpg")
    with pytest.raises(DatasetNotFoundError) as info:
        ade20k(tmp_path)
    message = str(info.value)
    assert "lacks_mask.png" in message
    assert "has_mask.png" not in message
    assert "1 missing" in message
    assert "<root>/annotations/validation/*.png" in message


def test_ade20k_missing_folders(tmp_path: Path, make_image) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        ade20k(tmp_path)
    assert str(tmp_path / "images" / "validation") in str(info.value)
    assert "<root>/images/training/*.jpg" in str(info.value)
    make_image(tmp_path / "images" / "training" / "t.jpg")
    with pytest.raises(DatasetNotFoundError) as info:
        ade20k(tmp_path, split="train")  # images present, annotations folder absent
    assert str(tmp_path / "annotations" / "training") in str(info.value)
    with pytest.raises(ValueError, match="split"):
        ade20k(tmp_path, split="validation")


# --------------------------------------------------------------------------------------------- coco2014


def test_coco2014_splits(tmp_path: Path, make_image) -> None:
    for i in range(3):
        make_image(tmp_path / "train2014" / f"COCO_train2014_{i:012d}.jpg", seed=i)
    for i in range(2):
        make_image(tmp_path / "val2014" / f"COCO_val2014_{i:012d}.jpg", seed=10 + i)
    (tmp_path / "val2014" / "captions.json").write_text("{}")
    train = coco2014(tmp_path, split="train", transform=SMALL)
    val = coco2014(tmp_path, transform=SMALL)
    assert len(train) == 3
    assert all(f.parent.name == "train2014" for f in train.files)
    assert len(val) == 2
    assert all(f.parent.name == "val2014" for f in val.files)
    assert labels_of(val) == [NO_LABEL] * 2
    with pytest.raises(ValueError, match="split"):
        coco2014(tmp_path, split="test")


def test_coco2014_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        coco2014(tmp_path, split="train")
    assert "<root>/train2014/*.jpg" in str(info.value)
    (tmp_path / "val2014").mkdir()
    with pytest.raises(DatasetNotFoundError, match="holds no images"):
        coco2014(tmp_path)


# --------------------------------------------------------------------------------------------- sun360

SUN_CATEGORIES = ["outdoor/park", "indoor/bedroom", "outdoor/beach", "indoor/church"]


def make_sun360(root: Path, make_image, num_lines: int) -> list[str]:
    lines = [f"{SUN_CATEGORIES[i % len(SUN_CATEGORIES)]}/pano_{i:03d}.jpg" for i in range(num_lines)]
    for i, line in enumerate(lines):
        make_image(root / line, size=(40, 20), seed=i)
    return lines


@pytest.mark.parametrize("num_lines", [20, 27])
def test_sun360_split_and_labels(tmp_path: Path, make_image, num_lines: int) -> None:
    lines = make_sun360(tmp_path, make_image, num_lines)
    # Blank lines and surrounding whitespace in the split file are ignored.
    (tmp_path / "sun360-dataset26-random.txt").write_text("\n".join(f"  {line} " for line in lines) + "\n\n")
    num_val = len(lines) // 10
    val = sun360(tmp_path, transform=SMALL)
    train = sun360(tmp_path, split="train", transform=SMALL)
    assert val.files == [tmp_path / line for line in lines[:num_val]]
    assert train.files == [tmp_path / line for line in lines[num_val:]]
    classes = sorted(SUN_CATEGORIES)
    assert val.classes == train.classes == classes
    for source in (val, train):
        for i, path in enumerate(source.files):
            category = "/".join(path.relative_to(tmp_path).parts[:2])
            assert int(source[(i, 0)]["label"]) == classes.index(category)


def test_sun360_explicit_split_file_and_no_labels(tmp_path: Path, make_image) -> None:
    lines = make_sun360(tmp_path, make_image, 10)
    split_file = tmp_path.parent / f"{tmp_path.name}_split.txt"
    split_file.write_text("\n".join(lines))
    val = sun360(tmp_path, split_file=split_file, with_labels=False, transform=SMALL)
    assert val.files == [tmp_path / lines[0]]
    assert labels_of(val) == [NO_LABEL]
    assert len(sun360(tmp_path, split="train", split_file=split_file)) == 9


def test_sun360_missing_split_file_or_root(tmp_path: Path, make_image) -> None:
    make_sun360(tmp_path, make_image, 10)
    with pytest.raises(DatasetNotFoundError) as info:
        sun360(tmp_path)
    assert "sun360-dataset26-random.txt" in str(info.value)
    assert "first 10% of lines are validation" in str(info.value)
    with pytest.raises(DatasetNotFoundError, match="split file"):
        sun360(tmp_path, split_file=tmp_path / "nope.txt")
    with pytest.raises(DatasetNotFoundError):
        sun360(tmp_path / "missing_root")


def test_sun360_too_few_lines_for_a_val_split(tmp_path: Path, make_image) -> None:
    lines = make_sun360(tmp_path, make_image, 5)  # 5 // 10 == 0 validation lines
    (tmp_path / "sun360-dataset26-random.txt").write_text("\n".join(lines))
    with pytest.raises(DatasetNotFoundError, match="no images"):
        sun360(tmp_path)
    assert len(sun360(tmp_path, split="train")) == 5


# --------------------------------------------------------------------------------------------- embedded photos


@pytest.mark.parametrize("split", ["train", "val", "heldout"])
def test_embedded_photos_are_readable(split: str) -> None:
    source = embedded_photos(split)
    assert len(source) >= 1
    for i in range(min(len(source), 3)):
        sample = source[(i, 0)]
        assert "error" not in sample, sample
        assert sample["image"].shape == (3, 224, 224)
        assert torch.isfinite(sample["image"]).all()
