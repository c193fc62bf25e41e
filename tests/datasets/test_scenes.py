"""Cluttered-digits scenes: deterministic, well-formed, offline, the same in every process and worker."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import ImageFont

from adaglimpse_env.datasets import ImageStream
from adaglimpse_env.datasets.scenes import (
    DIGIT_CLASSES,
    ClutteredDigits,
    SceneConfig,
    background_photos,
    font_files,
    font_folder,
    glyph_mask,
    render_scene,
)
from adaglimpse_env.normalization import to_pixels


def scene_digest(config: SceneConfig, split: str, indices: range, seed: int = 0) -> str:
    digest = hashlib.sha256()
    for index in indices:
        scene = render_scene(config, split, index, seed)
        digest.update(scene.image.tobytes())
        digest.update(np.array([scene.label, *scene.box]).tobytes())
    return digest.hexdigest()


def test_same_seed_same_scene_bytes() -> None:
    config = SceneConfig()
    for split in ("train", "val"):
        assert scene_digest(config, split, range(5), seed=3) == scene_digest(config, split, range(5), seed=3)
    # train scenes change with the stream's sample seed (a new epoch is new scenes); val scenes do not.
    assert scene_digest(config, "train", range(3), seed=1) != scene_digest(config, "train", range(3), seed=2)
    assert scene_digest(config, "val", range(3), seed=1) == scene_digest(config, "val", range(3), seed=2)
    assert scene_digest(config, "val", range(3)) != scene_digest(config, "train", range(3))


def test_scenes_are_those_of_the_first_photo_set() -> None:
    # Computed before the shipped photos grew (commit 89dd31e: 31 train, 7 val photos, no heldout folder): the
    # digits classifier and its results depend on these exact scenes, so adding photos must not move them.
    assert [image.size for image in background_photos("val")][:2] == [(819, 512), (819, 512)]
    assert len(background_photos("train")) == 31 and len(background_photos("val")) == 7
    pixels = {}
    for split, start, seed in (("val", 0, 0), ("train", 0, 0), ("train", 3, 5)):
        digest = hashlib.sha256()
        for index in range(start, start + 8):
            digest.update(render_scene(SceneConfig(), split, index, seed).image.tobytes())
        pixels[(split, start, seed)] = digest.hexdigest()
    assert pixels == {
        ("val", 0, 0): "284e17bee89c260e3b6c5ce368900c951a59d756081f330412d97ec596591a05",
        ("train", 0, 0): "bb7301a3ee050a3d818a33871604eb9d9a83315785c6d53ff3c6faab3fc16c82",
        ("train", 3, 5): "b871ab61914b9dbc7e99909c36cc52ce92009be5e7a53d649a34678db8c57aaa",
    }


@pytest.mark.parametrize("background", ["photos", "texture", "plain"])
def test_target_box_inside_canvas_and_holds_the_ink(background: str) -> None:
    config = SceneConfig(background=background, clutter=6)
    low, high = config.digit_height
    for index in range(40):
        scene = render_scene(config, "val", index)
        y1, x1, y2, x2 = scene.box
        assert scene.image.shape == (224, 224, 3) and scene.image.dtype == np.uint8
        assert 0 <= y1 < y2 <= 224 and 0 <= x1 < x2 <= 224
        assert 0 <= scene.label <= 9
        # Rotation can make the box taller than the glyph, never much smaller; nor larger than its diagonal.
        assert 0.5 * low <= y2 - y1 <= 2 * high and x2 - x1 <= 2 * high
        # The digit is drawn last, on top: the box differs from the same scene without its digit.
        assert scene.image[y1:y2, x1:x2].std() > 5


def test_distractors_never_touch_the_target() -> None:
    # The same scene without clutter draws the same background and digit (the random draws for clutter come
    # after the target's): the pixels that differ are the distractors', and none is within 3 px of the target.
    cluttered_config, clean_config = SceneConfig(clutter=12), SceneConfig(clutter=0)
    for index in range(20):
        cluttered, clean = render_scene(cluttered_config, "val", index), render_scene(clean_config, "val", index)
        assert cluttered.box == clean.box and cluttered.label == clean.label
        distractor = (cluttered.image != clean.image).any(axis=-1)
        assert distractor.any()
        y1, x1, y2, x2 = clean.box
        assert not distractor[max(0, y1 - 3) : y2 + 3, max(0, x1 - 3) : x2 + 3].any(), f"scene {index}"


def test_source_matches_render_and_normalises() -> None:
    source = ClutteredDigits("val", SceneConfig(num_val_scenes=10))
    assert len(source) == 10 and source.classes == list(DIGIT_CLASSES)
    sample = source[(4, 99)]
    scene = render_scene(source.config, "val", 4)
    assert sample["image"].shape == (3, 224, 224) and sample["image"].dtype == torch.float32
    np.testing.assert_allclose(to_pixels(sample["image"]).permute(1, 2, 0).numpy(), scene.image, atol=1e-3)
    assert int(sample["label"]) == scene.label
    assert sample["target_box"].tolist() == list(scene.box)


def test_val_set_identical_across_processes_and_workers() -> None:
    config = SceneConfig(num_val_scenes=6)
    here = scene_digest(config, "val", range(6))
    code = (
        "from adaglimpse_env.datasets.scenes import SceneConfig; import sys; sys.path.insert(0, 'tests/datasets');"
        "from test_scenes import scene_digest; print(scene_digest(SceneConfig(num_val_scenes=6), 'val', range(6)))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == here
    in_process = ImageStream(ClutteredDigits("val", config), shuffle=False, num_workers=0).next_samples(6)
    in_workers = ImageStream(ClutteredDigits("val", config), shuffle=False, num_workers=2).next_samples(6)
    for a, b in zip(in_process, in_workers, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["target_box"], b["target_box"])


def test_fonts_load_offline_from_the_package() -> None:
    manifest = json.loads((font_folder() / "MANIFEST.json").read_text())
    assert len(font_files()) == len(manifest["fonts"]) >= 10
    for entry, path in zip(manifest["fonts"], font_files(), strict=True):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert (font_folder() / entry["licence_file"]).is_file()
        assert "Liberation" not in ImageFont.truetype(str(path), 20).getname()[0]  # OFL reserved name
    for index in range(len(font_files())):
        masks = [np.asarray(glyph_mask(index, digit, 0)) for digit in range(10)]
        assert all(mask.size and mask.max() == 255 for mask in masks)
        assert len({mask.tobytes() for mask in masks}) == 10  # ten different glyphs


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"digit_height": (2, 10)}, "digit_height"),
        ({"digit_height": (30, 10)}, "digit_height"),
        ({"canvas_size": 100}, "canvas_size"),
        ({"clutter": -1}, "clutter"),
        ({"background": "stars"}, "background"),
        ({"background_contrast": 1.5}, "background_contrast"),
        ({"max_rotation": 360}, "max_rotation"),
        ({"stroke": (3, 1)}, "stroke"),
        ({"num_val_scenes": 0}, "num_val_scenes"),
    ],
)
def test_bad_scene_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SceneConfig(**kwargs)


def test_unknown_split_is_refused() -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        ClutteredDigits("test")
