"""Hostile data set-ups that used to give silently wrong numbers or late crashes: odd pixel depths, EXIF
orientation, labelled folders with a stray image, more classes than the model, macOS ``._`` twins, and a readable
image hidden among many unreadable ones."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hostile_inputs import FOLDER_ID
from PIL import Image
from tiny_models import tiny_model

from adaglimpse_env.image_io import ImageDecodeError, load_rgb
from adaglimpse_env.models import save_model


def write(path: Path, colour: tuple[int, int, int] = (10, 120, 200), size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


# ------------------------------------------------------------------------------------------------------ pixels
@pytest.mark.parametrize(
    ("value", "expected"), [(100, 0), (2**31 - 1, 255), (2**30, 128), (-5, 0)], ids=["100", "max", "half", "negative"]
)
def test_32_bit_integer_images_scale_by_the_dtype_range(tmp_path: Path, value: int, expected: int) -> None:
    path = tmp_path / "i32.tif"
    Image.fromarray(np.full((8, 8), value, dtype=np.int32), mode="I").save(path)
    assert np.asarray(load_rgb(path))[0, 0].tolist() == [expected] * 3  # a constant 100 is dark, not white


def test_16_bit_png_read_as_mode_i_scales_by_65535(tmp_path: Path) -> None:
    path = tmp_path / "i16.png"
    Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16)).save(path)
    assert np.asarray(load_rgb(path))[0, 0].tolist() == [128] * 3


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_float_images_with_non_finite_pixels_are_refused(tmp_path: Path, bad: float) -> None:
    array = np.full((8, 8), 0.5, dtype=np.float32)
    array[2, 3] = bad
    path = tmp_path / "f32.tif"
    Image.fromarray(array, mode="F").save(path)
    with pytest.raises(ImageDecodeError, match=r"f32.tif.*1 NaN or infinite pixels in a float image"):
        load_rgb(path)


def test_float_image_in_unit_range_keeps_its_meaning(tmp_path: Path) -> None:
    path = tmp_path / "f32.tif"
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32), mode="F").save(path)
    assert np.asarray(load_rgb(path))[0, 0].tolist() == [128] * 3


@pytest.mark.parametrize(("orientation", "size"), [(1, (40, 20)), (6, (20, 40)), (8, (20, 40)), (3, (40, 20))])
def test_exif_orientation_is_honoured(tmp_path: Path, orientation: int, size: tuple[int, int]) -> None:
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :20] = (250, 0, 0)  # left half red, right half black
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    Image.fromarray(array).save(path, exif=exif, quality=95)
    image = load_rgb(path)
    assert image.size == size
    pixels = np.asarray(image).astype(int)
    if orientation == 6:  # rotated 90 degrees clockwise for display: the red half is on top
        assert pixels[2, 10, 0] > 200 and pixels[-3, 10, 0] < 50
    if orientation == 3:  # upside down: red on the right
        assert pixels[10, -3, 0] > 200 and pixels[10, 2, 0] < 50


# ------------------------------------------------------------------------------------- labels and classes
@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("classifier") / "tiny_classification.pt"
    save_model(path, tiny_model("classification"), "classification")
    return path


def test_stray_root_image_in_a_labelled_folder_fails_at_make(tmp_path: Path, classifier: Path) -> None:
    for name in ("cat", "dog"):
        write(tmp_path / name / "a.png")
    write(tmp_path / "stray.png")
    with pytest.raises(ValueError, match=r"every image .* in a class sub-folder .* got 1 of 3 images at its root"):
        gym.make(FOLDER_ID, data_root=str(tmp_path), checkpoint=str(classifier), task="classification")


def test_more_class_folders_than_model_classes_fails_at_make(tmp_path: Path, classifier: Path) -> None:
    from adaglimpse_env.models import load_model

    classes = load_model(classifier).model.config.num_classes
    for index in range(classes + 1):
        write(tmp_path / f"class_{index:03d}" / "a.png")
    with pytest.raises(
        ValueError, match=rf"at least {classes + 1} classes .* got a checkpoint with num_classes={classes}"
    ):
        gym.make_vec(FOLDER_ID, num_envs=1, data_root=str(tmp_path), checkpoint=str(classifier), task="classification")


def test_segmentation_model_with_fewer_classes_than_ade20k_fails_at_make(tmp_path: Path) -> None:
    from adaglimpse_env.models import create_model

    checkpoint = tmp_path / "seg.pt"
    save_model(checkpoint, create_model("tiny", "segmentation", 10, depth=1, decoder_depth=1), "segmentation")
    for split in ("training", "validation"):
        write(tmp_path / "ade" / "images" / split / "ADE_1.jpg")
        (tmp_path / "ade" / "annotations" / split).mkdir(parents=True)
        Image.fromarray(np.full((30, 40), 120, dtype=np.uint8)).save(
            tmp_path / "ade" / "annotations" / split / "ADE_1.png"
        )
    with pytest.raises(
        ValueError, match=r"at least 150 classes \(ADE20K's mask classes\), got a checkpoint with 10 \(out_chans\)"
    ):
        gym.make("AdaGlimpse-ADE20K-Segmentation-v0", data_root=str(tmp_path / "ade"), checkpoint=str(checkpoint))


# ------------------------------------------------------------------------------------------- readability
def test_mac_copy_with_appledouble_twins_is_usable(tmp_path: Path, make_folder_vec_env) -> None:
    for index in range(40):
        write(tmp_path / f"photo_{index:02d}.jpg")
        (tmp_path / f"._photo_{index:02d}.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata")
    env = make_folder_vec_env(tmp_path)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros((1, 3), dtype=np.float32))
    assert int(np.sum(info["num_skipped_images"])) == 0
    env.close()


def test_readable_image_among_many_unreadable_ones_is_found(tmp_path: Path, make_folder_vec_env) -> None:
    for index in range(300):
        (tmp_path / f"a_{index:03d}.jpg").write_bytes(b"not an image")
    write(tmp_path / "z_last.jpg")  # sorts after every broken file
    with pytest.warns(RuntimeWarning, match="Skipping unreadable image"):
        env = make_folder_vec_env(tmp_path)
        env.reset(seed=0)
    env.close()
