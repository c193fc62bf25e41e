"""Where the shipped photographs come from: the reviewed allow-lists, and the code that fetches each source.

Sources, reachable offline from this project's machines and from any normal one:

* the RGB photos bundled in the scikit-image, scikit-learn and matplotlib wheels (``pip download --no-deps``);
* the photographic wallpapers of the Debian packages ``lomiri-wallpapers-16.04``, ``lomiri-wallpapers-20.04``,
  ``mate-backgrounds`` (nature folder) and ``plasma-workspace-wallpapers`` (``apt-get download``, unpacked with
  ``dpkg-deb -x``; nothing is installed);
* the photographs of four activities of the educational suite GCompris (Debian ``gcompris-qt-data``): animals
  (``erase``, ``explore_world_animals``, ``explore_farm_animals``) and monuments (``explore_monuments``), read
  out of its Qt resource bundles (:mod:`qt_resources`), each with its author, licence and Wikimedia Commons
  source from the activity's README.

Left out: jigzo's ``penguin-3x2`` (CC-BY-NC-SA: not for any use), Palapeli's ``backgrounds`` (wood and cloth
textures). Reviewed and left out whole, because they hold no photograph (renders, illustrations, gradients, logos):
``gnome-backgrounds`` 43.1, ``ukui-wallpapers``, ``sway-backgrounds``, ``lomiri-wallpapers`` (the Lomiri default
backgrounds), ``xfdesktop4-data``, ``desktop-base`` and ``fluxbox``; the other files of the packages above
(``Infinite-Sea`` of lomiri-wallpapers-20.04 is a composite: rendered sea under an overlay). Of GCompris, the
other activities hold drawings (``lang``), paintings beside photos of the monuments above (``details``) or photos
under 224 px (``categorization``).

:func:`collect` returns every selected original with its source, licence and author;
``scripts/build_embedded_images.py`` splits, downsizes and writes them.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from jigzo_puzzles import puzzle_photo
from PIL import Image
from qt_resources import resource_files

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

#: GCompris activity -> (its folder of photos and README inside the bundle, how many ``.webp`` photos it holds).
#: Every ``.webp`` of these folders was looked at and is a photograph; the count catches a package version whose
#: files changed (review them, then update it).
GCOMPRIS_PHOTOS = {
    "erase": ("resource", 33),
    "explore_farm_animals": ("resource/animals", 9),
    "explore_monuments": ("resource", 49),
    "explore_world_animals": ("resource/animals", 15),
}
GCOMPRIS_PACKAGE = "gcompris-qt-data"
#: (activity, photo) -> the name its README gives it, where the README misspells it.
GCOMPRIS_README_TYPOS = {("explore_monuments", "germany/aulaPalatina.webp"): "germany/audaPalatina.webp"}


#: jigzo puzzles kept (every other one is a photograph too, but under a non-commercial licence), in
#: ``usr/share/games/jigzo/puzzles/00_default`` of ``jigzo-data``.
JIGZO_PACKAGE = "jigzo-data"
JIGZO_FOLDER = "usr/share/games/jigzo/puzzles/00_default"
JIGZO_PHOTOS = (
    "bike-3x4.pzl", "bird-2x3.pzl", "blackberry-3x3.pzl", "castle-6x3.pzl", "clouds-4x4.pzl", "gorilla2-3x3.pzl",
    "heli-4x3.pzl", "horse-4x3.pzl", "tobogan-4x3.pzl", "train-2x2.pzl", "windmill-4x4.pzl",
)  # fmt: skip
#: Palapeli's collection: every picture of it, each a photograph from Wikimedia Commons.
PALAPELI_PACKAGE = "palapeli-data"
PALAPELI_FOLDER = "usr/share/palapeli/collection"
PALAPELI_PHOTOS = (
    "castle-maintenon", "cincinnati-bridge", "citrus-fruits", "european-honey-bee", "panther-chameleon-female",
)  # fmt: skip


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
    """File name, wildcard pattern (``puzzles/*.pzl``) or ``*`` (every other file) -> (licence, copyright holder)
    from the package's DEP-5 copyright file (:func:`licence_for` looks a file up); the ``debian/*`` paragraphs,
    about the packaging, are left out."""
    text = (root / "usr/share/doc" / package / "copyright").read_text(errors="replace")
    licences: dict[str, tuple[str, str]] = {}
    for paragraph in text.split("\n\n"):
        files = re.search(r"^Files:(.*?)(?=^\S)", paragraph + "\nX", re.S | re.M)
        licence = re.search(r"^License:\s*(.+)$", paragraph, re.M)
        holder = re.search(r"^Copyright:\s*(.+?)(?=^\S)", paragraph + "\nX", re.S | re.M)
        if files and licence:
            who = " ".join(holder.group(1).split()) if holder else ""
            for pattern in files.group(1).split():
                if pattern.startswith("debian/"):  # the packaging's own files, never a shipped photo
                    continue
                # A plain file is known by its name (its folder in the source tree is not the installed one).
                key = pattern if "*" in pattern or "?" in pattern else pattern.split("/")[-1]
                licences[key] = (licence.group(1).strip(), who)
    return licences


def licence_for(licences: dict[str, tuple[str, str]], name: str, package: str) -> tuple[str, str]:
    """The (licence, holder) of file ``name`` in :func:`debian_licences`: its own paragraph, else the last wildcard
    pattern whose file part matches it, else ``Files: *``.

    Raises:
        SystemExit: no paragraph covers it.
    """
    if name in licences:
        return licences[name]
    patterns = [key for key in licences if key != "*" and fnmatch.fnmatch(name, key.split("/")[-1])]
    if patterns:
        return licences[patterns[-1]]
    if "*" in licences:
        return licences["*"]
    raise SystemExit(f"{package}: its copyright file gives no licence for {name} (and has no 'Files: *')")


def plasma_metadata(folder: Path) -> tuple[str, str]:
    """(licence, author) of a KDE wallpaper from its metadata.json."""
    data = json.loads((folder / "metadata.json").read_text())["KPlugin"]
    authors = ", ".join(a.get("Name", "") for a in data.get("Authors", []))
    return data.get("License", ""), authors


def readme_licences(text: str) -> dict[str, tuple[str, str]]:
    """File (as the README names it, e.g. ``wonders/petra.webp``) -> (licence, author and source) from a GCompris
    activity README: paragraphs of ``Copyright:``, ``License:``, ``Source:`` and ``Files:`` fields, the files on
    the ``Files:`` line or the lines after it."""
    licences: dict[str, tuple[str, str]] = {}
    for paragraph in re.split(r"\n\s*\n", text):
        fields: dict[str, list[str]] = {}
        current = None
        for line in paragraph.splitlines():
            # Only the README's own keys start a field: a wrapped URL ("https://...") continues the one before.
            field = re.match(r"^(Copyright|License|Source|Files|Comments):\s*(.*)$", line)
            if field:
                current = field.group(1)
                fields[current] = [field.group(2).strip()] if field.group(2).strip() else []
            elif current is not None and line.strip():
                fields[current].append(line.strip())
        author = " ".join(fields.get("Copyright", []))
        source = " ".join(fields.get("Source", []))
        for name in fields.get("Files", []):
            licences[name] = (" ".join(fields.get("License", [])), f"{author} ({source})" if source else author)
    return licences


def collect_gcompris(work: Path) -> list[tuple[Path, str, str, str, str]]:
    """The photographs of :data:`GCOMPRIS_PHOTOS`, written out of their bundles into ``work``.

    Raises:
        SystemExit: an activity whose photo count or licences differ from the reviewed ones.
    """
    package, root = fetch_debian(work, GCOMPRIS_PACKAGE)
    found = []
    for activity, (folder, expected) in GCOMPRIS_PHOTOS.items():
        bundle = f"usr/share/gcompris-qt/rcc/{activity}.rcc"
        prefix = f"/gcompris/src/activities/{activity}/{folder}/"
        files = {path[len(prefix) :]: blob for path, blob in resource_files(root / bundle) if path.startswith(prefix)}
        if "README" not in files:
            raise SystemExit(f"{package} {activity}: no README beside the photos in {bundle}, so no licences")
        unsafe = [name for name in files if name.startswith("/") or ".." in Path(name).parts]
        if unsafe:
            raise SystemExit(f"{package} {activity}: a file name in {bundle} leaves its folder: {unsafe[0]!r}")
        readme = readme_licences(files["README"].decode("utf-8"))
        photos = sorted(name for name in files if name.endswith(".webp"))
        licences = {name: readme.get(GCOMPRIS_README_TYPOS.get((activity, name), name)) for name in photos}
        unlicensed = [name for name, licence in licences.items() if licence is None]
        if len(photos) != expected or unlicensed:
            raise SystemExit(
                f"{package} {activity}: expected {expected} reviewed photos, each with a README licence; found "
                f"{len(photos)}, without one: {unlicensed}. Look at the new files, then update GCOMPRIS_PHOTOS."
            )
        for name in photos:
            target = work / "gcompris" / activity / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(files[name])
            licence, author = licences[name] or ("", "")
            found.append((target, package, f"{bundle}:{prefix}{name}", licence, author))
    return found


def desktop_entry(path: Path) -> dict[str, str]:
    """The ``key=value`` lines of a freedesktop ``.desktop`` file (untranslated keys only)."""
    entry: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        key, equals, value = line.partition("=")
        if equals and "[" not in key:
            entry.setdefault(key.strip(), value.strip())
    return entry


def open_original(path: Path) -> Image.Image:
    """An original as RGB: a jigzo puzzle's picture (:func:`jigzo_puzzles.puzzle_photo`), any other file as the
    image it is."""
    if path.suffix == ".pzl":
        return puzzle_photo(path)
    with Image.open(path) as raw:
        return raw.convert("RGB")


def collect_puzzles(work: Path) -> list[tuple[Path, str, str, str, str]]:
    """The photographs of :data:`JIGZO_PHOTOS` (the puzzle files themselves: :func:`open_original` reads their
    picture, so the manifest's hash is the packaged file's) and of :data:`PALAPELI_PHOTOS`.

    Raises:
        SystemExit: a reviewed puzzle that is missing, or one without an author and licence.
    """
    found = []
    package, root = fetch_debian(work, JIGZO_PACKAGE)
    licences = debian_licences(root, JIGZO_PACKAGE)
    for name in JIGZO_PHOTOS:
        source = root / JIGZO_FOLDER / name
        if not source.is_file():
            raise SystemExit(f"{package}: the reviewed puzzle {name} is missing from {JIGZO_FOLDER}")
        licence, holder = licence_for(licences, name, package)
        found.append((source, package, f"{JIGZO_FOLDER}/{name}", licence, holder))
    package, root = fetch_debian(work, PALAPELI_PACKAGE)
    for name in PALAPELI_PHOTOS:
        entry = desktop_entry(root / PALAPELI_FOLDER / f"{name}.desktop")
        licence, author = entry.get("X-KDE-PluginInfo-License", ""), entry.get("X-KDE-PluginInfo-Author", "")
        image_name = entry.get("Image", "")
        image = root / PALAPELI_FOLDER / image_name
        if Path(image_name).name != image_name or image_name in ("", ".", ".."):
            raise SystemExit(f"{package}: {name}.desktop names an image outside its folder: {image_name!r}")
        if not licence or not author or not image.is_file():
            raise SystemExit(f"{package}: {name}.desktop gives no licence, author or image file: {entry}")
        page = entry.get("X-KDE-PluginInfo-Website", "")
        found.append((image, package, f"{PALAPELI_FOLDER}/{image.name}", licence, f"{author} ({page})"))
    return found


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
                licence, holder = licence_for(licences, name, package)
                found.append((base / name, package, f"{folder}/{name}", licence, holder))
    return found + collect_gcompris(work) + collect_puzzles(work)
