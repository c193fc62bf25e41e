"""Build the digit fonts shipped for the cluttered-digits scenes: the digits 0-9 of open-licence TTFs.

Each font is cut down to the ten digit glyphs (a few KB instead of hundreds), so the package can carry many
styles. Sources are Debian font packages, installed first::

    apt-get install fonts-dejavu-core fonts-dejavu-extra fonts-liberation2
    pip install fonttools        # only for this script; the package reads the result with Pillow
    python scripts/build_digit_fonts.py

Licences: DejaVu (Bitstream Vera licence plus public-domain changes) allows modified fonts under names without
"Bitstream" or "Vera"; the DejaVu names are kept. Liberation (SIL OFL 1.1) reserves the name "Liberation" for
unmodified fonts, so the cut-down Liberation fonts are renamed ``AGDigits <style>``, as the OFL asks of a
modified version. Every licence text and the source of each file are written to
``adaglimpse_env/assets/fonts/`` with a ``MANIFEST.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

DIGITS = "0123456789"
DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
LIBERATION = Path("/usr/share/fonts/truetype/liberation2")

#: (output name, source file, Debian package, licence, renamed family or None to keep the name)
FONTS: list[tuple[str, Path, str, str, str | None]] = [
    ("dejavu-sans", DEJAVU / "DejaVuSans.ttf", "fonts-dejavu-core", "Bitstream-Vera", None),
    ("dejavu-sans-bold", DEJAVU / "DejaVuSans-Bold.ttf", "fonts-dejavu-core", "Bitstream-Vera", None),
    ("dejavu-sans-oblique", DEJAVU / "DejaVuSans-Oblique.ttf", "fonts-dejavu-extra", "Bitstream-Vera", None),
    ("dejavu-sans-extralight", DEJAVU / "DejaVuSans-ExtraLight.ttf", "fonts-dejavu-extra", "Bitstream-Vera", None),
    ("dejavu-sans-condensed-bold", DEJAVU / "DejaVuSansCondensed-Bold.ttf", "fonts-dejavu-extra", "Bitstream-Vera",
     None),
    ("dejavu-serif", DEJAVU / "DejaVuSerif.ttf", "fonts-dejavu-core", "Bitstream-Vera", None),
    ("dejavu-serif-bold-italic", DEJAVU / "DejaVuSerif-BoldItalic.ttf", "fonts-dejavu-extra", "Bitstream-Vera", None),
    ("dejavu-sans-mono", DEJAVU / "DejaVuSansMono.ttf", "fonts-dejavu-core", "Bitstream-Vera", None),
    ("dejavu-sans-mono-bold", DEJAVU / "DejaVuSansMono-Bold.ttf", "fonts-dejavu-core", "Bitstream-Vera", None),
    ("agdigits-sans", LIBERATION / "LiberationSans-Regular.ttf", "fonts-liberation2", "OFL-1.1", "AGDigits Sans"),
    ("agdigits-sans-bold-italic", LIBERATION / "LiberationSans-BoldItalic.ttf", "fonts-liberation2", "OFL-1.1",
     "AGDigits Sans Bold Italic"),
    ("agdigits-serif", LIBERATION / "LiberationSerif-Regular.ttf", "fonts-liberation2", "OFL-1.1", "AGDigits Serif"),
    ("agdigits-serif-bold", LIBERATION / "LiberationSerif-Bold.ttf", "fonts-liberation2", "OFL-1.1",
     "AGDigits Serif Bold"),
    ("agdigits-mono", LIBERATION / "LiberationMono-Regular.ttf", "fonts-liberation2", "OFL-1.1", "AGDigits Mono"),
]  # fmt: skip

LICENCE_FILES = {
    "Bitstream-Vera": Path("/usr/share/doc/fonts-dejavu-core/copyright"),
    "OFL-1.1": Path("/usr/share/doc/fonts-liberation2/copyright"),
}


def package_version(package: str) -> str:
    """The installed Debian version of ``package``."""
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def subset_font(source: Path, target: Path, family: str | None) -> None:
    """Keep only the digit glyphs of ``source`` (and rename the family if asked), written to ``target``."""
    from fontTools import subset
    from fontTools.ttLib import TTFont

    font = TTFont(str(source))
    options = subset.Options()
    options.name_IDs = ["*"]
    options.notdef_outline = True
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=DIGITS)
    subsetter.subset(font)
    if family is not None:
        # OFL 1.1 section 3: a modified version must not use the Reserved Font Name.
        postscript = family.replace(" ", "")
        for record in font["name"].names:
            if record.nameID in (1, 4, 16, 18, 21):
                record.string = family
            elif record.nameID == 6:
                record.string = postscript
            elif record.nameID == 3:
                record.string = f"{postscript};digits-subset"
    font.save(str(target))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "adaglimpse_env" / "assets" / "fonts",
        help="folder to write the fonts, licences and MANIFEST.json to",
    )
    args = parser.parse_args(argv)
    missing = [str(source) for _, source, *_ in FONTS if not source.exists()]
    if missing:
        sys.exit(
            f"missing source fonts {missing}: apt-get install fonts-dejavu-core fonts-dejavu-extra fonts-liberation2"
        )
    args.output.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, source, package, licence, family in FONTS:
        target = args.output / f"{name}.ttf"
        subset_font(source, target, family)
        entries.append(
            {
                "file": target.name,
                "source_file": source.name,
                "debian_package": f"{package} {package_version(package)}",
                "licence": licence,
                "licence_file": f"LICENSE-{licence}.txt",
                "modification": "subset to the glyphs 0-9"
                + (f"; family renamed '{family}' (OFL RFN)" if family else ""),
                "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
            }
        )
    for licence, path in LICENCE_FILES.items():
        (args.output / f"LICENSE-{licence}.txt").write_text(path.read_text())
    manifest = {"command": "python scripts/build_digit_fonts.py", "glyphs": DIGITS, "fonts": entries}
    (args.output / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum((args.output / e["file"]).stat().st_size for e in entries)
    print(f"wrote {len(entries)} fonts ({total / 1024:.0f} KiB) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
