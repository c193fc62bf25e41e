"""Collect the photographs shipped with the package: the offline default image source.

Sources (reachable offline from this project's machines and from any normal one) and their allow-lists are
in :mod:`photo_sources`.

Artwork is dropped by an explicit, reviewed allow-list of photographs; identical files are de-duplicated
by content hash; each photo is downsized to ``--short-side`` px and written as JPEG into
``adaglimpse_env/assets/photos/{train,val,heldout}/`` with a ``MANIFEST.json`` giving, for every image, its source
package and version, original file, licence and author. Three splits:

* ``train`` / ``val``: split by photo (never two crops of one photo on both sides), every ``VAL_EVERY``-th photo in
  sorted order held out. The 38 photos of the first build (``FIRST_SOURCES``) come first in that order, so
  their split and bytes are those of the first build (the cluttered-digits scenes crop them);
* ``heldout``: every photo of the ``HELDOUT_SOURCES`` packages, kept out of training entirely: how the model does
  on photos of a source it has never seen.

Usage::

    python scripts/build_embedded_images.py                  # downloads into a temporary folder
    python scripts/build_embedded_images.py --work-dir /tmp/embedded --output adaglimpse_env/assets/photos
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from photo_sources import GCOMPRIS_PACKAGE, JIGZO_PACKAGE, PALAPELI_PACKAGE, collect, open_original
from PIL import Image

#: Every ``VAL_EVERY``-th photo (in sorted name order) is held out.
VAL_EVERY = 5

#: The sources of the first build (2026-11, 38 photos), and the photos of them allowed since: the first build's
#: photos keep their place in the split order, hence their split.
FIRST_SOURCES = ("scikit-image", "lomiri-wallpapers-16.04", "mate-backgrounds", "plasma-workspace-wallpapers")
ADDED_SINCE_FIRST_BUILD = frozenset({"hubble_deep_field.jpg", "free_by_Peter_Nerlich.jpg", "DarkestHour"})
#: Sources added by the third build (2026-11-30): they come last in the split order, so that no earlier photo
#: changes split.
THIRD_BUILD_SOURCES = (GCOMPRIS_PACKAGE,)

#: Packages whose photos are all in the ``heldout`` split: never trained on. The two jigsaw games joined on
#: 2026-11-30 (16 photos): held-out photos move no in-source photo's split.
HELDOUT_SOURCES = ("lomiri-wallpapers-20.04", "matplotlib", "scikit-learn", JIGZO_PACKAGE, PALAPELI_PACKAGE)


@dataclass
class Photo:
    """One shipped image and where it came from."""

    file: str
    split: str
    source_package: str
    original_file: str
    licence: str
    author: str
    sha256_of_original: str
    size: tuple[int, int]


def build_generation(package: str, original: str) -> int:
    """Which build first shipped an original: 0 the first, 1 the second, 2 the third (:data:`THIRD_BUILD_SOURCES`).
    The split order takes the generations in turn.

    Args:
        package: its source package and version, as the manifest writes it (``"mate-backgrounds 1.26.0-1 (Debian)"``).
        original: its path inside the package.
    """
    source = package.split()[0]
    if source in FIRST_SOURCES and not ADDED_SINCE_FIRST_BUILD & set(original.split("/")):
        return 0
    return 2 if source in THIRD_BUILD_SOURCES else 1


def split_of(package: str, number: int) -> str:
    """The split of the ``number``-th in-source photo (in split order) of ``package``."""
    if package.split()[0] in HELDOUT_SOURCES:
        return "heldout"
    return "val" if number % VAL_EVERY == VAL_EVERY - 1 else "train"


def photo_slug(original: str) -> str:
    """The shipped file's name stem for an original: its file name, a KDE wallpaper's folder name, or for a
    GCompris photo the activity and file name (two activities have a ``giraffe.webp``), for a jigzo puzzle its
    name without the piece count."""
    if ".rcc:" in original:
        return f"{Path(original.split(':')[0]).stem}_{Path(original).stem}"
    if original.endswith(".pzl"):  # a jigzo puzzle: its name without the piece count ("horse-4x3")
        return re.sub(r"-\d+x\d+$", "", Path(original).stem)
    return Path(original).stem if "wallpapers/" not in original else original.split("/")[3]


#: What the manifest says made it: a folder whose manifest says so is one this script wrote.
BUILD_COMMAND = "python scripts/build_embedded_images.py"


def previous_build(output: Path) -> list[Path]:
    """The files of an earlier build in ``output`` (its photos and manifest): what a new build may delete.

    A folder counts as an earlier build only when its ``MANIFEST.json`` says this script wrote it and every file
    in it is one that manifest lists.

    Raises:
        SystemExit: ``output`` holds files this script did not write (the path is probably wrong).
    """
    if not output.exists():
        return []
    manifest = output / "MANIFEST.json"
    listed: set[Path] = set()
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            data = {}
        if isinstance(data, dict) and data.get("command") == BUILD_COMMAND and isinstance(data.get("images"), list):
            entries = [entry for entry in data["images"] if isinstance(entry, dict)]
            listed = {manifest} | {output / str(entry.get("file", "")) for entry in entries}
    present = {path for path in output.rglob("*") if not path.is_dir()}
    foreign = sorted(str(path) for path in present - listed)
    if foreign:
        raise SystemExit(
            f"{output} holds {len(foreign)} file(s) an earlier build did not write (e.g. {foreign[0]}); this script "
            "deletes only its own. Give --output a new or empty folder, or the shipped photos folder."
        )
    return sorted(present)


def remove_files(files: list[Path], root: Path) -> None:
    """Delete ``files`` one by one, then the folders below ``root`` that held them and are left empty (no other
    folder is touched)."""
    for path in files:
        path.unlink()
    holders = {path.parent for path in files if path.parent != root}
    for folder in sorted(holders, key=lambda folder: len(folder.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def build(work: Path, output: Path, short_side: int, quality: int) -> list[Photo]:
    earlier = previous_build(output)  # before any download: a wrong --output fails at once
    originals = collect(work)
    seen: set[str] = set()
    unique = []
    # Split order: the first build's photos, then those of each later build, each by original file name.
    for entry in sorted(originals, key=lambda e: (build_generation(e[1], e[2]), e[2])):
        digest = hashlib.sha256(entry[0].read_bytes()).hexdigest()
        if digest in seen:
            print(f"duplicate skipped: {entry[2]}")
            continue
        seen.add(digest)
        unique.append((*entry, digest))
    planned = []
    number = 0  # counts the in-source photos only, so that adding a held-out source moves no other photo
    for unique_entry in unique:
        split = split_of(unique_entry[1], number)
        number += split != "heldout"
        slug = re.sub(r"[^A-Za-z0-9]+", "_", photo_slug(unique_entry[2])).strip("_").lower()
        planned.append((f"{split}/{slug}.jpg", unique_entry))
    files = [file for file, _ in planned]
    repeated = sorted({file for file in files if files.count(file) > 1})
    if repeated:
        raise SystemExit(f"two photos would be written as {repeated[0]}: make photo_slug tell them apart")
    remove_files(earlier, output)
    # A manifest of every file about to be written comes first: a build stopped half-way leaves a folder whose
    # files the next build knows as its own.
    write_manifest(output, [{"file": file} for file in files], short_side, quality, complete=False)
    photos = []
    for file, (path, package, original, licence, author, digest) in planned:
        image = open_original(path)
        scale = short_side / min(image.size)
        if scale < 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        split = file.split("/")[0]
        (output / split).mkdir(parents=True, exist_ok=True)
        image.save(output / file, quality=quality, optimize=True)
        photos.append(Photo(file, split, package, original, licence, author, digest, image.size))
    write_manifest(output, [asdict(p) for p in photos], short_side, quality, complete=True)
    return photos


def write_manifest(output: Path, images: list[dict], short_side: int, quality: int, complete: bool) -> None:
    """``output/MANIFEST.json``: the build's settings, splits and ``images`` (each with its ``file``); a manifest
    written before the photos (``complete=False``) says so."""
    output.mkdir(parents=True, exist_ok=True)
    manifest = {
        "description": "Photographs shipped as the offline default image source",
        "command": BUILD_COMMAND,
        "short_side": short_side,
        "jpeg_quality": quality,
        "splits": {
            "train": "trained on",
            "val": f"held out by photo: every {VAL_EVERY}th photo of the in-source ones, in split order",
            "heldout": "every photo of the held-out sources, never trained on",
        },
        "heldout_sources": list(HELDOUT_SOURCES),
        **({} if complete else {"incomplete": "written before the photos; a build stopped before it finished"}),
        "images": images,
    }
    (output / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).resolve().parents[1] / "adaglimpse_env/assets/photos"
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="download/unpack folder (default: a temporary one)")
    parser.add_argument("--short-side", type=int, default=512)
    parser.add_argument("--quality", type=int, default=88)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work_dir or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        photos = build(work, args.output, args.short_side, args.quality)
    total = sum(f.stat().st_size for f in args.output.rglob("*.jpg"))
    counts = {s: sum(p.split == s for p in photos) for s in ("train", "val", "heldout")}
    print(
        f"wrote {len(photos)} photos ({counts['train']} train, {counts['val']} val, {counts['heldout']} held-out "
        f"source), {total / 2**20:.1f} MiB, to {args.output}"
    )
    for package in sorted({p.source_package for p in photos}):
        print(f"  {package}: {sum(p.source_package == package for p in photos)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
