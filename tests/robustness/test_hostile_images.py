"""Hostile image folders: odd-but-valid files load as the right RGB, broken ones are refused, skipped and counted.

Every case goes through the three public paths: ``adaglimpse_env.image_io.load_rgb``, the dataset sources, and
``gym.make_vec("AdaGlimpse-ImageFolder-v0", ...)``.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hostile_inputs import (
    BROKEN_IMAGES,
    VALID_IMAGES,
    BrokenImageCase,
    ValidImageCase,
    png_bytes_of_zero_rows,
    skip_reason,
    write_broken_files,
    write_good_image,
)
from PIL import Image

from adaglimpse_env.datasets import TransformConfig, ade20k, image_folder, scan_images
from adaglimpse_env.image_io import ImageDecodeError, load_rgb
from adaglimpse_env.normalization import to_pixels

valid_cases = pytest.mark.parametrize("case", VALID_IMAGES, ids=[c.id for c in VALID_IMAGES])
broken_cases = pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c.id, marks=[pytest.mark.skipif(True, reason=r)] if (r := skip_reason(c)) else [])
        for c in BROKEN_IMAGES
    ],
)
# A FIFO that slipped through would block open() forever: fail instead of hanging the suite.
no_hang = pytest.mark.timeout(30)


def broken_file(case: BrokenImageCase, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return case.write(folder / case.name)


def assert_solid(pixels: np.ndarray, rgb: tuple[int, int, int], atol: float) -> None:
    """``pixels``: (..., 3) or (3, ...) float/uint8; every pixel equal to ``rgb`` within ``atol``."""
    expected = np.broadcast_to(np.asarray(rgb, dtype=np.float64), pixels.shape)
    np.testing.assert_allclose(pixels.astype(np.float64), expected, rtol=0, atol=atol)


# ------------------------------------------------------------------------------------------ odd but valid images
@valid_cases
def test_valid_image_loads_as_rgb(tmp_path: Path, case: ValidImageCase) -> None:
    image = load_rgb(case.write(tmp_path / case.name))
    assert image.mode == "RGB"
    assert image.size == case.size
    assert_solid(np.asarray(image), case.rgb, case.atol)


@valid_cases
def test_valid_image_through_dataset_source(tmp_path: Path, case: ValidImageCase) -> None:
    case.write(tmp_path / case.name)
    source = image_folder(tmp_path, TransformConfig(size=32))
    sample = source[(0, 0)]
    assert "error" not in sample, sample.get("error")
    assert sample["image"].shape == (3, 32, 32)
    pixels = to_pixels(sample["image"]).permute(1, 2, 0).numpy()
    assert_solid(pixels, case.rgb, case.atol + 0.01)


@valid_cases
def test_valid_image_through_vector_env(tmp_path: Path, case: ValidImageCase, make_folder_vec_env) -> None:
    case.write(tmp_path / case.name)
    envs = make_folder_vec_env(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "Skipping unreadable image"
        envs.reset(seed=0)
        observation, _, _, _, info = envs.step(np.array([[0.0, 0.0, 1.0]], dtype=np.float32))
    assert info["num_skipped_images"].tolist() == [0]
    patches = torch.from_numpy(observation["patches"][0, :4])  # the first glimpse's 2x2 cells, normalised
    pixels = to_pixels(patches).permute(0, 2, 3, 1).numpy()
    assert_solid(pixels, case.rgb, case.atol + 0.01)
    envs.close()


# ------------------------------------------------------------------------------------------ broken files
@no_hang
@broken_cases
def test_broken_file_refused_by_load_rgb(tmp_path: Path, case: BrokenImageCase) -> None:
    path = broken_file(case, tmp_path)
    with pytest.raises(ImageDecodeError, match=rf"Cannot decode image '{re.escape(str(path))}': .*{case.reason}"):
        load_rgb(path)


@no_hang
@broken_cases
def test_broken_file_is_an_error_record_in_dataset_source(tmp_path: Path, case: BrokenImageCase) -> None:
    path = broken_file(case, tmp_path)
    good = write_good_image(tmp_path)
    source = image_folder(tmp_path, TransformConfig(size=32))
    assert path in source.files and good in source.files
    record = source[(source.files.index(path), 0)]
    assert record["path"] == str(path)
    assert re.search(case.reason, record["error"])
    assert "image" in source[(source.files.index(good), 0)]


@no_hang
@broken_cases
def test_broken_file_skipped_and_counted_by_vector_env(tmp_path: Path, case: BrokenImageCase, make_folder_vec_env):
    path = broken_file(case, tmp_path)
    write_good_image(tmp_path)
    num_broken = len(scan_images(tmp_path)) - 1  # a symlink cycle is two broken files
    envs = make_folder_vec_env(tmp_path)  # construction finds the good image
    with pytest.warns(RuntimeWarning) as record:
        _, info = envs.reset(seed=0)  # file order: the broken file(s) first, then the good one
    messages = [str(w.message) for w in record]
    assert all(m.startswith("Skipping unreadable image: Cannot decode image") for m in messages), messages
    assert any(path.name in m and re.search(case.reason, m) for m in messages), messages
    assert info["num_skipped_images"].tolist() == [num_broken]
    _, _, _, _, info = envs.step(np.zeros((1, 3), dtype=np.float32))
    assert np.isfinite(info["score"]).all()
    envs.close()


@no_hang
@broken_cases
def test_folder_of_only_this_broken_file_fails_at_construction(
    tmp_path: Path, case: BrokenImageCase, make_folder_vec_env
) -> None:
    broken_file(case, tmp_path)
    with pytest.raises(ValueError, match=rf"image folder '{re.escape(str(tmp_path))}' has no readable image"):
        make_folder_vec_env(tmp_path)


def test_folder_of_every_broken_file_fails_at_construction_of_the_single_env(tmp_path: Path, make_folder_env):
    tried = write_broken_files(tmp_path)
    with pytest.raises(ValueError, match=rf"image folder '{re.escape(str(tmp_path))}' has no readable image") as info:
        make_folder_env(tmp_path)
    assert f"any of its {len(scan_images(tmp_path))} files tried" in str(info.value)
    assert len(tried) >= 10


def test_every_broken_file_in_one_folder_is_skipped_and_counted_once_each(tmp_path: Path, make_folder_env):
    write_broken_files(tmp_path)
    write_good_image(tmp_path)
    num_broken = len(scan_images(tmp_path)) - 1
    env = make_folder_env(tmp_path)
    with pytest.warns(RuntimeWarning, match="Skipping unreadable image") as record:
        _, info = env.reset(seed=0)
    assert info["num_skipped_images"] == num_broken
    assert len([w for w in record if "Skipping unreadable image" in str(w.message)]) == num_broken
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # each file is warned about once, then only counted
        _, info = env.reset()
    assert info["num_skipped_images"] == 2 * num_broken
    env.close()


# ------------------------------------------------------------------------------------------ decompression bombs
def test_bomb_recipe_is_a_valid_png() -> None:
    """The bombs are refused for their size, not for being malformed: the same recipe, small, decodes."""
    from io import BytesIO

    with Image.open(BytesIO(png_bytes_of_zero_rows(37, 5))) as image:
        image.load()
        assert (image.mode, image.size) == ("1", (37, 5))
        assert not np.asarray(image).any()
    assert len(png_bytes_of_zero_rows(20000, 20000)) < 200_000


def test_bomb_refused_even_when_pillow_guard_is_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_folder_vec_env
) -> None:
    # Some libraries set PIL.Image.MAX_IMAGE_PIXELS = None globally; our own limit still holds.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    bomb = tmp_path / "a_bomb.png"
    bomb.write_bytes(png_bytes_of_zero_rows(20000, 20000))
    with pytest.raises(ImageDecodeError, match=r"400000000 pixels, over the limit"):
        load_rgb(bomb)
    write_good_image(tmp_path)
    envs = make_folder_vec_env(tmp_path)
    with pytest.warns(RuntimeWarning, match="a_bomb.png"):
        _, info = envs.reset(seed=0)
    assert info["num_skipped_images"].tolist() == [1]
    envs.close()


# ------------------------------------------------------------------------------------------ folder structure
def test_directory_symlink_loop_is_not_followed(tmp_path: Path, make_folder_vec_env) -> None:
    write_good_image(tmp_path / "photos")
    os.symlink("..", tmp_path / "photos" / "back_up")  # photos/back_up -> the root: a cycle
    os.symlink(".", tmp_path / "photos" / "here")
    assert scan_images(tmp_path) == [tmp_path / "photos" / "z_good.png"]
    envs = make_folder_vec_env(tmp_path)
    _, info = envs.reset(seed=0)
    assert info["num_skipped_images"].tolist() == [0]
    envs.close()


# ------------------------------------------------------------------------------------------ segmentation masks
MASK_CASES = [c for c in BROKEN_IMAGES if c.id in ("bomb-20000x20000-png", "truncated-png", "zero-byte-jpg")]


def ade20k_root(root: Path, bad_masks: list[BrokenImageCase]) -> Path:
    """ADE20K validation layout: image ``i`` has annotation ``bad_masks[i]``, then one image with a good one."""
    images, annotations = root / "images" / "validation", root / "annotations" / "validation"
    annotations.mkdir(parents=True, exist_ok=True)
    for i, case in enumerate(bad_masks):
        write_good_image(images, f"a{i}.jpg")
        case.write(annotations / f"a{i}.png")
    write_good_image(images, "z_good.jpg")
    Image.fromarray(np.ones((48, 64), dtype=np.uint8)).save(annotations / "z_good.png")
    return root


@pytest.mark.parametrize("case", MASK_CASES, ids=[f"mask-{c.id}" for c in MASK_CASES])
def test_broken_segmentation_mask_is_an_error_record(tmp_path: Path, case: BrokenImageCase) -> None:
    source = ade20k(ade20k_root(tmp_path, [case]), "val", TransformConfig(size=32))
    record = source[(0, 0)]
    assert record["path"].endswith("a0.jpg")
    assert re.search(case.reason, record["error"]) and "a0.png" in record["error"]
    assert "mask" in source[(1, 0)]


def test_broken_segmentation_masks_are_skipped_and_counted_by_the_env(tmp_path: Path, checkpoints) -> None:
    envs = gym.make_vec(
        "AdaGlimpse-ADE20K-Segmentation-v0",
        num_envs=1,
        data_root=str(ade20k_root(tmp_path, MASK_CASES)),
        checkpoint=str(checkpoints["segmentation"]),
        split="val",
        shuffle=False,
        num_workers=0,
    )
    with pytest.warns(RuntimeWarning, match="Skipping unreadable image") as record:
        _, info = envs.reset(seed=0)
    assert info["num_skipped_images"].tolist() == [len(MASK_CASES)]
    for i in range(len(MASK_CASES)):
        assert any(f"a{i}.png" in str(w.message) for w in record)
    envs.close()
