"""The photographs shipped with the package: every one listed with its origin and licence, split by photo."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from adaglimpse_env.datasets import embedded_photos
from adaglimpse_env.image_io import load_rgb

PHOTOS = Path(str(resources.files("adaglimpse_env") / "assets" / "photos"))


def test_manifest_lists_every_shipped_image_with_licence_and_source() -> None:
    manifest = json.loads((PHOTOS / "MANIFEST.json").read_text())
    listed = {entry["file"] for entry in manifest["images"]}
    shipped = {str(p.relative_to(PHOTOS)) for p in PHOTOS.rglob("*.jpg")}
    assert listed == shipped
    for entry in manifest["images"]:
        assert entry["licence"] and entry["source_package"] and entry["original_file"], entry
        assert entry["split"] == entry["file"].split("/")[0]
    originals = [entry["sha256_of_original"] for entry in manifest["images"]]
    assert len(originals) == len(set(originals))  # de-duplicated


def test_splits_are_disjoint_photos_and_decode() -> None:
    train, val = embedded_photos("train"), embedded_photos("val")
    assert len(train) >= 20 and len(val) >= 5
    assert not {p.name for p in train.files} & {p.name for p in val.files}
    for path in [*train.files, *val.files]:
        image = load_rgb(path)
        assert min(image.size) >= 224, path  # large enough for many distinct 224 px crops
    total = sum(p.stat().st_size for p in PHOTOS.rglob("*.jpg"))
    assert total < 8 * 2**20
