"""The photographs shipped with the package: every one listed with its origin and licence, split by photo, and a
held-out split of whole sources never trained on."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from adaglimpse_env.datasets import embedded_photos
from adaglimpse_env.datasets.folders import EMBEDDED_PHOTO_SPLITS
from adaglimpse_env.image_io import load_rgb

PHOTOS = Path(str(resources.files("adaglimpse_env") / "assets" / "photos"))


def manifest() -> dict:
    return json.loads((PHOTOS / "MANIFEST.json").read_text())


def test_manifest_lists_every_shipped_image_with_licence_author_and_source() -> None:
    images = manifest()["images"]
    listed = {entry["file"] for entry in images}
    shipped = {str(p.relative_to(PHOTOS)) for p in PHOTOS.rglob("*.jpg")}
    assert listed == shipped
    for entry in images:
        assert entry["licence"] and entry["author"] and entry["source_package"] and entry["original_file"], entry
        assert entry["split"] == entry["file"].split("/")[0] and entry["split"] in EMBEDDED_PHOTO_SPLITS
        assert min(entry["size"]) <= 512, entry  # downsized
    originals = [entry["sha256_of_original"] for entry in images]
    assert len(originals) == len(set(originals))  # de-duplicated


def test_heldout_split_is_every_photo_of_the_heldout_sources_and_nothing_else() -> None:
    data = manifest()
    heldout_sources = set(data["heldout_sources"])
    assert heldout_sources
    for entry in data["images"]:
        package = entry["source_package"].split()[0]
        assert (entry["split"] == "heldout") == (package in heldout_sources), entry
    in_source = {entry["source_package"].split()[0] for entry in data["images"] if entry["split"] != "heldout"}
    assert not in_source & heldout_sources


def test_splits_are_disjoint_photos_and_decode() -> None:
    sources = {split: embedded_photos(split) for split in EMBEDDED_PHOTO_SPLITS}
    assert len(sources["train"]) >= 30 and len(sources["val"]) >= 7 and len(sources["heldout"]) >= 3
    names = [{p.name for p in source.files} for source in sources.values()]
    assert sum(len(n) for n in names) == len(set().union(*names))
    for source in sources.values():
        for path in source.files:
            image = load_rgb(path)
            assert min(image.size) >= 224, path  # large enough for many distinct 224 px crops
    total = sum(p.stat().st_size for p in PHOTOS.rglob("*.jpg"))
    assert total < 16 * 2**20  # 13 MiB since the GCompris photos (2026-11-30)


def test_unknown_split_is_refused() -> None:
    with pytest.raises(ValueError, match="heldout"):
        embedded_photos("test")
