"""Collect the photographs shipped with the package: the offline default image source.

Sources, reachable offline from this project's machines and from any normal one:

* the RGB photos bundled in the scikit-image, scikit-learn and matplotlib wheels (``pip download --no-deps``);
* the photographic wallpapers of the Debian packages ``lomiri-wallpapers-16.04``, ``lomiri-wallpapers-20.04``,
  ``mate-backgrounds`` (nature folder) and ``plasma-workspace-wallpapers`` (``apt-get download``, unpacked with
  ``dpkg-deb -x``; nothing is installed).

Reviewed and left out whole, because they hold no photograph (renders, illustrations, gradients, logos):
``gnome-backgrounds`` 43.1, ``ukui-wallpapers``, ``sway-backgrounds``, ``lomiri-wallpapers`` (the Lomiri default
backgrounds), ``xfdesktop4-data``, ``desktop-base`` and ``fluxbox``; the other files of the packages above
(``Infinite-Sea`` of lomiri-wallpapers-20.04 is a composite: rendered sea under an overlay).

Artwork is dropped by an explicit, reviewed allow-list of the photographs below; identical files are de-duplicated
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
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

#: scikit-image data file -> (licence, author / attribution), from the docstrings of skimage.data.
SKIMAGE_PHOTOS = {
    "astronaut.png": ("public domain", "NASA (Eileen Collins portrait, NASA Great Images)"),
    "chelsea.png": ("CC0", "Stefan van der Walt"),
    "coffee.png": ("CC0", "Rachel Michetti (courtesy of Pikolo Espresso Bar)"),
    "rocket.jpg": ("public domain", "SpaceX"),
    "motorcycle_left.png": ("no known copyright restrictions (Middlebury stereo data set)", "D. Scharstein et al."),
    "hubble_deep_field.jpg": ("public domain", "NASA, ESA, S. Beckwith and the HUDF team (Hubble Ultra Deep Field)"),
}

#: Photos of other Python wheels: wheel -> (file inside it -> (licence, author / attribution)).
WHEEL_PHOTOS = {
    "scikit-learn": {
        "sklearn/datasets/images/china.jpg": ("CC-BY-2.0", "danielbuechele (Flickr), retrieved by Robert Layton"),
        "sklearn/datasets/images/flower.jpg": ("CC-BY-2.0", "vultilion (Flickr), retrieved by Robert Layton"),
    },
    "matplotlib": {
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg": ("public domain", "U.S. Navy (Grace Hopper portrait)"),
    },
}

#: Debian package -> folder inside it -> photographs kept (artwork left out on purpose).
DEBIAN_PHOTOS = {
    "lomiri-wallpapers-16.04": (
        "usr/share/backgrounds",
        [
            "Bridge_by_Sander_Klootwijk.jpg",
            "Dragonfly_by_Bolly.jpg",
            "Picture_0B_by_freespace.jpg",
            "Picture_1A_by_freespace.jpg",
            "Wine_by_Jakkub_Mede.jpg",
            "aitzgorri_by_Aitzol_Berasategi.jpg",
            "free_by_Peter_Nerlich.jpg",
            "friends_by_Aitzol_Berasategi.jpg",
            "life_by_Aitzol_Berasategi.jpg",
            "picosdeeuropa_by_Aitzol_Berasategi.jpg",
            "seeding_by_Clements_Engelhardt.jpg",
            "sunset_by_Aitzol_Berasategi.jpg",
        ],
    ),
    "lomiri-wallpapers-20.04": ("usr/share/backgrounds", ["Kleiber_by_Lukas_Baubkus.jpg"]),
    "mate-backgrounds": (
        "usr/share/backgrounds/mate/nature",
        [
            "Aqua.jpg",
            "Blinds.jpg",
            "Dune.jpg",
            "FreshFlower.jpg",
            "Garden.jpg",
            "GreenMeadow.jpg",
            "LadyBird.jpg",
            "RainDrops.jpg",
            "Storm.jpg",
            "TwoWings.jpg",
            "Wood.jpg",
            "YellowFlower.jpg",
        ],
    ),
    "plasma-workspace-wallpapers": (
        "usr/share/wallpapers",
        [
            "BytheWater",
            "ColdRipple",
            "ColorfulCups",
            "DarkestHour",
            "EveningGlow",
            "FallenLeaf",
            "Grey",
            "Kite",
            "OneStandsOut",
            "Path",
            "summer_1am",
        ],
    ),
}

#: Every ``VAL_EVERY``-th photo (in sorted name order) is held out.
VAL_EVERY = 5

#: The sources of the first build (2026-11, 38 photos), and the photos of them allowed since: the first build's
#: photos keep their place in the split order, hence their split.
FIRST_SOURCES = ("scikit-image", "lomiri-wallpapers-16.04", "mate-backgrounds", "plasma-workspace-wallpapers")
ADDED_SINCE_FIRST_BUILD = frozenset({"hubble_deep_field.jpg", "free_by_Peter_Nerlich.jpg", "DarkestHour"})

#: Packages whose photos are all in the ``heldout`` split: never trained on.
HELDOUT_SOURCES = ("lomiri-wallpapers-20.04", "matplotlib", "scikit-learn")


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


def run(command: list[str], cwd: Path) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, cwd=cwd, check=True)


def fetch_wheel(work: Path, distribution: str, members: list[str]) -> tuple[str, Path]:
    """Download one PyPI wheel and unzip ``members`` of it; returns ``(package version, unzipped root)``."""
    wheels = work / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    prefix = distribution.replace("-", "_")
    if not list(wheels.glob(f"{prefix}-*.whl")):
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels),
             distribution], work)  # fmt: skip
    wheel = sorted(wheels.glob(f"{prefix}-*.whl"))[-1]
    version = wheel.name.split("-")[1]
    target = work / prefix
    with zipfile.ZipFile(wheel) as archive:
        for name in members:
            archive.extract(name, target)
    return f"{distribution} {version} (PyPI wheel)", target


def fetch_debian(work: Path, package: str) -> tuple[str, Path]:
    """``apt-get download`` one package and unpack it; returns ``(package and version, unpacked root)``."""
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not list(debs.glob(f"{package}_*.deb")):
        run(["apt-get", "download", package], debs)
    deb = sorted(debs.glob(f"{package}_*.deb"))[-1]
    version = deb.name.split("_")[1].replace("%3a", ":")
    root = work / "unpacked" / package
    if not root.exists():
        root.mkdir(parents=True)
        run(["dpkg-deb", "-x", str(deb), str(root)], work)
    return f"{package} {version} (Debian)", root


def debian_licences(root: Path, package: str) -> dict[str, tuple[str, str]]:
    """File name -> (licence, copyright holder) from the package's DEP-5 copyright file."""
    text = (root / "usr/share/doc" / package / "copyright").read_text(errors="replace")
    licences: dict[str, tuple[str, str]] = {}
    for paragraph in text.split("\n\n"):
        files = re.search(r"^Files:(.*?)(?=^\S)", paragraph + "\nX", re.S | re.M)
        licence = re.search(r"^License:\s*(.+)$", paragraph, re.M)
        holder = re.search(r"^Copyright:\s*(.+?)(?=^\S)", paragraph + "\nX", re.S | re.M)
        if files and licence:
            who = " ".join(holder.group(1).split()) if holder else ""
            for pattern in files.group(1).split():
                licences[pattern.split("/")[-1]] = (licence.group(1).strip(), who)
    return licences


def plasma_metadata(folder: Path) -> tuple[str, str]:
    """(licence, author) of a KDE wallpaper from its metadata.json."""
    data = json.loads((folder / "metadata.json").read_text())["KPlugin"]
    authors = ", ".join(a.get("Name", "") for a in data.get("Authors", []))
    return data.get("License", ""), authors


def collect(work: Path) -> list[tuple[Path, str, str, str, str]]:
    """Every selected original: ``(path, source package, original file, licence, author)``."""
    found = []
    members = [f"skimage/data/{name}" for name in SKIMAGE_PHOTOS]
    package, root = fetch_wheel(work, "scikit-image", members)
    for member, (licence, author) in zip(members, SKIMAGE_PHOTOS.values(), strict=True):
        found.append((root / member, package, member, licence, author))
    for distribution, photos in WHEEL_PHOTOS.items():
        package, root = fetch_wheel(work, distribution, list(photos))
        for member, (licence, author) in photos.items():
            found.append((root / member, package, member, licence, author))
    for debian, (folder, names) in DEBIAN_PHOTOS.items():
        package, root = fetch_debian(work, debian)
        base = root / folder
        if debian == "plasma-workspace-wallpapers":
            for name in names:
                images = sorted((base / name / "contents" / "images").glob("*"), key=lambda p: p.stat().st_size)
                licence, author = plasma_metadata(base / name)
                debian_licence = debian_licences(root, debian).get("*", ("", ""))[0]
                original = images[-1]  # the largest rendition of the photo
                found.append((original, package, str(original.relative_to(root)),
                              f"{licence} (Debian copyright file: {debian_licence})", author))  # fmt: skip
        else:
            licences = debian_licences(root, debian)
            for name in names:
                licence, holder = licences.get(name, ("see the package's copyright file", ""))
                found.append((base / name, package, f"{folder}/{name}", licence, holder))
    return found


def in_first_build(package: str, original: str) -> bool:
    """Whether an original (its package and version, its path inside the package) was in the first build."""
    return package.split()[0] in FIRST_SOURCES and not ADDED_SINCE_FIRST_BUILD & set(original.split("/"))


def split_of(package: str, number: int) -> str:
    """The split of the ``number``-th in-source photo (in split order) of ``package``."""
    if package.split()[0] in HELDOUT_SOURCES:
        return "heldout"
    return "val" if number % VAL_EVERY == VAL_EVERY - 1 else "train"


def build(work: Path, output: Path, short_side: int, quality: int) -> list[Photo]:
    originals = collect(work)
    seen: set[str] = set()
    unique = []
    # Split order: the first build's photos, then the others, each by original file name.
    for entry in sorted(originals, key=lambda e: (not in_first_build(e[1], e[2]), e[2])):
        digest = hashlib.sha256(entry[0].read_bytes()).hexdigest()
        if digest in seen:
            print(f"duplicate skipped: {entry[2]}")
            continue
        seen.add(digest)
        unique.append((*entry, digest))
    if output.exists():
        shutil.rmtree(output)
    photos = []
    number = 0  # counts the in-source photos only, so that adding a held-out source moves no other photo
    for path, package, original, licence, author, digest in unique:
        split = split_of(package, number)
        number += split != "heldout"
        with Image.open(path) as raw:
            image = raw.convert("RGB")
        scale = short_side / min(image.size)
        if scale < 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        slug = re.sub(
            r"[^A-Za-z0-9]+", "_", Path(original).stem if "wallpapers/" not in original else original.split("/")[3]
        )
        name = f"{slug.strip('_').lower()}.jpg"
        (output / split).mkdir(parents=True, exist_ok=True)
        image.save(output / split / name, quality=quality, optimize=True)
        photos.append(Photo(f"{split}/{name}", split, package, original, licence, author, digest, image.size))
    manifest = {
        "description": "Photographs shipped as the offline default image source",
        "command": "python scripts/build_embedded_images.py",
        "short_side": short_side,
        "jpeg_quality": quality,
        "splits": {
            "train": "trained on",
            "val": f"held out by photo: every {VAL_EVERY}th photo of the in-source ones, in split order",
            "heldout": "every photo of the held-out sources, never trained on",
        },
        "heldout_sources": list(HELDOUT_SOURCES),
        "images": [asdict(p) for p in photos],
    }
    (output / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return photos


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
