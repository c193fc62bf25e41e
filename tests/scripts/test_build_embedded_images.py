"""Building the shipped photos: reading Qt resource bundles and jigzo puzzles, GCompris, Palapeli and Debian
licences, split order, and an output folder that only ever loses files an earlier build wrote."""

from __future__ import annotations

import io
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import build_embedded_images
import jigzo_puzzles
import photo_sources
from jigzo_puzzles import PuzzleFileError, puzzle_members, puzzle_photo
from qt_resources import ResourceBundleError, resource_files


def write_bundle(path: Path, folder: str, files: dict[str, bytes], compressed: set[str]) -> None:
    """A version-3 Qt resource bundle: the root, one folder, ``files`` in it (zlib for those in ``compressed``)."""
    names, data = bytearray(), bytearray()

    def name(text: str) -> int:
        offset = len(names)
        names.extend(struct.pack(">HI", len(text), 0) + text.encode("utf-16-be"))
        return offset

    entries = [struct.pack(">IHII", 0, 2, 1, 1) + bytes(8), struct.pack(">IHII", name(folder), 2, len(files), 2)]
    entries[1] += bytes(8)
    for file_name, blob in files.items():
        stored = struct.pack(">I", len(blob)) + zlib.compress(blob) if file_name in compressed else blob
        entries.append(struct.pack(">IHHHI", name(file_name), int(file_name in compressed), 0, 0, len(data)) + bytes(8))
        data.extend(struct.pack(">I", len(stored)) + stored)
    tree = b"".join(entries)
    header = 24
    path.write_bytes(
        b"qres" + struct.pack(">IIIII", 3, header, header + len(tree), header + len(tree) + len(data), 0)
        + tree + bytes(data) + bytes(names)
    )  # fmt: skip


def test_resource_bundle_files_read_back(tmp_path: Path) -> None:
    bundle = tmp_path / "activity.rcc"
    files = {"README": b"Copyright: someone\n", "photo.webp": bytes(range(256)) * 40}
    write_bundle(bundle, "resource", files, compressed={"photo.webp"})
    assert dict(resource_files(bundle)) == {f"/resource/{name}": blob for name, blob in files.items()}
    (tmp_path / "other.rcc").write_bytes(b"PK\x03\x04 not a bundle at all")
    with pytest.raises(ResourceBundleError, match="not a compiled Qt resource bundle"):
        list(resource_files(tmp_path / "other.rcc"))
    truncated = tmp_path / "truncated.rcc"
    truncated.write_bytes(bundle.read_bytes()[:40])
    with pytest.raises(ResourceBundleError, match="outside the file"):
        list(resource_files(truncated))
    # A file larger than the limit, stored compressed (a small bundle that inflates far) or not, is refused.
    with pytest.raises(ResourceBundleError, match="over 1000 bytes"):
        list(resource_files(bundle, max_file_bytes=1000))
    plain = tmp_path / "plain.rcc"
    write_bundle(plain, "resource", files, compressed=set())
    with pytest.raises(ResourceBundleError, match="over 1000 bytes"):
        list(resource_files(plain, max_file_bytes=1000))


def test_a_damaged_bundle_fails_with_a_clear_error(tmp_path: Path) -> None:
    bundle = tmp_path / "loop.rcc"
    write_bundle(bundle, "resource", {"a.txt": b"a"}, compressed=set())
    blob = bytearray(bundle.read_bytes())
    # The folder (tree entry 1) lists itself as its first child: a loop.
    folder_entry = 24 + 22
    blob[folder_entry + 10 : folder_entry + 14] = (1).to_bytes(4, "big")
    bundle.write_bytes(bytes(blob))
    with pytest.raises(ResourceBundleError, match="reached twice"):
        list(resource_files(bundle))
    # A file whose stored length runs past the end of the bundle.
    write_bundle(bundle, "resource", {"a.txt": b"abc"}, compressed=set())
    blob = bytearray(bundle.read_bytes())
    tree_size = 3 * 22
    data_start = 24 + tree_size
    blob[data_start : data_start + 4] = (10**6).to_bytes(4, "big")
    bundle.write_bytes(bytes(blob))
    with pytest.raises(ResourceBundleError, match="outside the file"):
        list(resource_files(bundle))
    # Compressed data that is not zlib.
    write_bundle(bundle, "resource", {"a.txt": b"abc"}, compressed={"a.txt"})
    blob = bytearray(bundle.read_bytes())
    blob[data_start + 8 : data_start + 12] = b"junk"
    bundle.write_bytes(bytes(blob))
    with pytest.raises(ResourceBundleError, match="does not decompress"):
        list(resource_files(bundle))


def test_gcompris_readme_gives_each_file_its_licence_author_and_source() -> None:
    readme = """Copyright: Timothee Giet, 2018
License: CC-BY-SA 4.0
Files:
question.svg

Copyright: Kurt Kaiser
License: CC0-1.0
Source: https://commons.wikimedia.org/wiki/File:American_Bison_9.jpg
Files:
bison.webp

Files: heron.webp
Source:
https://commons.wikimedia.org/wiki/File:Heron.jpg
License: CC-BY-SA-4.0
Copyright: Stephan Sprinz
Comments: cropping
"""
    licences = photo_sources.readme_licences(readme)
    assert licences["bison.webp"] == (
        "CC0-1.0",
        "Kurt Kaiser (https://commons.wikimedia.org/wiki/File:American_Bison_9.jpg)",
    )
    assert licences["heron.webp"] == (
        "CC-BY-SA-4.0",
        "Stephan Sprinz (https://commons.wikimedia.org/wiki/File:Heron.jpg)",
    )
    assert licences["question.svg"] == ("CC-BY-SA 4.0", "Timothee Giet, 2018")


def test_later_sources_come_last_in_the_split_order_and_names_stay_distinct() -> None:
    generation = build_embedded_images.build_generation
    assert generation("mate-backgrounds 1.26.0-1 (Debian)", "usr/share/backgrounds/mate/nature/Aqua.jpg") == 0
    assert generation("scikit-image 0.26.0 (PyPI wheel)", "skimage/data/hubble_deep_field.jpg") == 1
    assert generation("scikit-learn 1.9.1 (PyPI wheel)", "sklearn/datasets/images/china.jpg") == 1
    rcc = "usr/share/gcompris-qt/rcc/{}.rcc:/gcompris/src/activities/{}/resource/animals/giraffe.webp"
    assert generation("gcompris-qt-data 3.1-2 (Debian)", rcc.format("erase", "erase")) == 2
    slugs = {build_embedded_images.photo_slug(rcc.format(a, a)) for a in ("erase", "explore_world_animals")}
    assert slugs == {"erase_giraffe", "explore_world_animals_giraffe"}  # two activities ship a giraffe.webp
    assert build_embedded_images.photo_slug("usr/share/wallpapers/Kite/contents/images/5120x2880.jpg") == "Kite"


def test_a_build_removes_only_files_an_earlier_build_wrote(tmp_path: Path) -> None:
    previous_build = build_embedded_images.previous_build
    assert previous_build(tmp_path / "new") == []
    ours = tmp_path / "photos"
    (ours / "train").mkdir(parents=True)
    (ours / "train" / "a.jpg").write_bytes(b"jpeg")
    manifest = {"command": build_embedded_images.BUILD_COMMAND, "images": [{"file": "train/a.jpg"}]}
    (ours / "MANIFEST.json").write_text(json.dumps(manifest))
    earlier = previous_build(ours)
    assert earlier == [ours / "MANIFEST.json", ours / "train" / "a.jpg"]
    (ours / "empty").mkdir()  # an empty folder of someone's stays
    build_embedded_images.remove_files(earlier, ours)
    assert [p.name for p in ours.iterdir()] == ["empty"]

    # A folder of someone's own files, with or without a manifest of ours, loses nothing.
    mine = tmp_path / "pictures"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(SystemExit, match="did not write"):
        previous_build(mine)
    (mine / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match=r"holiday\.jpg"):
        previous_build(mine)
    (mine / "MANIFEST.json").write_text(json.dumps({"command": "something else", "images": []}))
    with pytest.raises(SystemExit, match="did not write"):
        previous_build(mine)
    assert sorted(p.name for p in mine.iterdir()) == ["MANIFEST.json", "holiday.jpg"]

    # A build stopped half-way leaves the manifest it wrote before its photos: the next build may clear it.
    stopped = tmp_path / "stopped"
    build_embedded_images.write_manifest(stopped, [{"file": "train/a.jpg"}, {"file": "val/b.jpg"}], 512, 88, False)
    (stopped / "train").mkdir()
    (stopped / "train" / "a.jpg").write_bytes(b"jpeg")  # val/b.jpg was never written
    assert json.loads((stopped / "MANIFEST.json").read_text())["incomplete"]
    assert previous_build(stopped) == [stopped / "MANIFEST.json", stopped / "train" / "a.jpg"]


def test_gcompris_allow_list_counts_every_reviewed_photo() -> None:
    # 106 photographs, each looked at; a package version whose bundles hold other files fails the build.
    assert sum(count for _, count in photo_sources.GCOMPRIS_PHOTOS.values()) == 106
    assert photo_sources.GCOMPRIS_PACKAGE in build_embedded_images.THIRD_BUILD_SOURCES


def write_puzzle(path: Path, texture: Image.Image, rectangle: str, extra: list[tuple[str, bytes]] = ()) -> None:
    """A jigzo ``PzlF`` 0.1 puzzle: its map (``image`` line ``rectangle``), a thumbnail and its texture."""
    buffer = io.BytesIO()
    texture.save(buffer, format="JPEG", quality=100, subsampling=0)
    members = [("p.map", f"#texture map data\ncrop000 0 0 8 8 0 0 0 0 0 0\nimage {rectangle} 1 1\n".encode()),
               ("p-t.jpg", b"thumbnail"), ("p.jpg", buffer.getvalue()), *extra]  # fmt: skip
    body = b"".join(name.encode() + b"\n" + str(len(blob)).encode() + b"\n" + blob for name, blob in members)
    path.write_bytes(b"PzlF\n0.1\np\nhttp://www.resorama.com/glpuzzle/\n" + body)


def test_jigzo_puzzle_photo_is_the_framed_picture_of_its_texture(tmp_path: Path) -> None:
    # A 64 x 48 texture whose picture (the map's 34 x 22 rectangle at the top left, a 1-pixel frame around it)
    # is red, the rest blue: the photo is the red 32 x 20 inside the frame.
    texture = Image.new("RGB", (64, 48), (0, 0, 255))
    texture.paste((255, 0, 0), (1, 1, 33, 21))
    write_puzzle(tmp_path / "p.pzl", texture, "0 0 34 22")
    assert sorted(puzzle_members(tmp_path / "p.pzl")) == ["p-t.jpg", "p.jpg", "p.map"]
    photo = puzzle_photo(tmp_path / "p.pzl")
    pixels = np.asarray(photo).astype(int)
    assert photo.size == (32, 20) and photo.mode == "RGB"
    assert np.abs(pixels[1:-1, 1:-1] - [255, 0, 0]).max() < 24  # JPEG's error only (its edges blur a pixel)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: b"PK\x03\x04" + data[4:], "not a jigzo puzzle"),
        (lambda data: data.replace(b"PzlF\n0.1", b"PzlF\n0.2", 1), "not a jigzo puzzle"),
        (lambda data: data[:10], "truncated"),
        (lambda data: data.replace(b"p.map\n", b"p.map\n9", 1), "damaged"),
        (lambda data: data.replace(b"p-t.jpg", b"../t.jp", 1), "a path"),
        (lambda data: data.replace(b"p-t.jpg\n9\nthumbnail", b"p.map\n9\nthumbnail", 1), "repeated"),
        (lambda data: data.replace(b"p.map\n", b"p.map\n" + b"1" * 5000, 1), "damaged"),  # no 5000-digit int
        (lambda data: data.replace(b"\xff\xd8\xff", b"\x00\x00\x00", 1), "cannot be decoded"),
    ],
)
def test_a_damaged_puzzle_fails_with_a_clear_error(tmp_path: Path, damage, message: str) -> None:
    write_puzzle(tmp_path / "p.pzl", Image.new("RGB", (16, 16)), "0 0 10 10")
    (tmp_path / "p.pzl").write_bytes(damage((tmp_path / "p.pzl").read_bytes()))
    with pytest.raises(PuzzleFileError, match=message):
        puzzle_photo(tmp_path / "p.pzl")


def test_a_puzzle_whose_picture_does_not_fit_its_texture_is_refused(tmp_path: Path) -> None:
    write_puzzle(tmp_path / "p.pzl", Image.new("RGB", (16, 16)), "8 8 10 10")
    with pytest.raises(PuzzleFileError, match="does not fit in the 16 x 16 texture"):
        puzzle_photo(tmp_path / "p.pzl")
    for rectangle in ("0 0 ten 10", "\u00b2 0 10 10"):  # a superscript two passes str.isdigit, not int()
        write_puzzle(tmp_path / "q.pzl", Image.new("RGB", (16, 16)), rectangle)
        with pytest.raises(PuzzleFileError, match="image x y width height"):
            puzzle_photo(tmp_path / "q.pzl")


def test_a_puzzle_file_larger_than_any_puzzle_is_not_read(tmp_path: Path, monkeypatch) -> None:
    write_puzzle(tmp_path / "p.pzl", Image.new("RGB", (16, 16)), "0 0 10 10")
    monkeypatch.setattr(jigzo_puzzles, "MAX_FILE_BYTES", 100)
    with pytest.raises(PuzzleFileError, match="more than any puzzle"):
        puzzle_photo(tmp_path / "p.pzl")


def test_palapeli_desktop_entry_and_debian_licences_skip_what_is_not_the_photo(tmp_path: Path) -> None:
    # Translated keys are left out; the DEP-5 paragraph about debian/* does not replace the upstream "Files: *".
    desktop = tmp_path / "bee.desktop"
    desktop.write_text("[Desktop Entry]\nName=Bee\nName[de]=Biene\nX-KDE-PluginInfo-Author=John Severns\n"
                       "X-KDE-PluginInfo-License=Public Domain\nImage=bee.jpg\n")  # fmt: skip
    entry = photo_sources.desktop_entry(desktop)
    assert entry["Name"] == "Bee" and "Name[de]" not in entry and entry["Image"] == "bee.jpg"
    copyright_file = tmp_path / "usr/share/doc/jigzo-data/copyright"
    copyright_file.parent.mkdir(parents=True)
    copyright_file.write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: 2005-2008 Maarten de Boer\nLicense: GPL-2+\n\n"
        "Files: puzzles/00_default/heli-4x3.pzl\nCopyright: Joana Clotet\nLicense: GPL-2\n\n"
        "Files: debian/*\nCopyright: 2007-2009 Bart Martens\nLicense: GPL-2+\n"
    )
    licences = photo_sources.debian_licences(tmp_path, "jigzo-data")
    licence_for = photo_sources.licence_for
    assert licence_for(licences, "bike-3x4.pzl", "jigzo-data") == ("GPL-2+", "2005-2008 Maarten de Boer")
    assert licence_for(licences, "heli-4x3.pzl", "jigzo-data") == ("GPL-2", "Joana Clotet")
    # A wildcard paragraph covers its files without replacing "Files: *"; nothing covers a file: a clear error.
    wildcard = {**licences, "extra/*.pzl": ("CC0", "Someone")}
    assert licence_for(wildcard, "kite-2x2.pzl", "p") == ("CC0", "Someone")
    assert licence_for(wildcard, "readme.txt", "p") == ("GPL-2+", "2005-2008 Maarten de Boer")
    with pytest.raises(SystemExit, match=r"no licence for kite\.jpg"):
        licence_for({"heli-4x3.pzl": ("GPL-2", "Joana Clotet")}, "kite.jpg", "p")


def test_jigsaw_sources_are_held_out_whole_and_named_by_picture() -> None:
    assert {"jigzo-data", "palapeli-data"} <= set(build_embedded_images.HELDOUT_SOURCES)
    assert build_embedded_images.split_of("jigzo-data 0.6.1-7.1 (Debian)", 4) == "heldout"
    slug = build_embedded_images.photo_slug("usr/share/games/jigzo/puzzles/00_default/gorilla2-3x3.pzl")
    assert slug == "gorilla2"
    assert len(photo_sources.JIGZO_PHOTOS) == 11 and "penguin-3x2.pzl" not in photo_sources.JIGZO_PHOTOS
