"""Read the photograph out of a jigzo puzzle file (``.pzl``, Debian ``jigzo-data``).

jigzo is a photo jigsaw game for children; each of its puzzles is one file that packs the picture with its cut.
The format, as jigzo 0.6 writes it (``PzlF`` version ``0.1``), is lines of text and runs of bytes:

* four lines: ``PzlF``, the version, the puzzle's name, its home page;
* then files, each as a line with its name, a line with its length in bytes, and that many bytes: ``<name>.map``
  (text: the texture coordinates of every piece, and a line ``image x y width height ...`` giving where the whole
  picture sits in the texture), ``<name>-t.jpg`` (a thumbnail), ``<name>.png`` (the pieces' alpha masks) and
  ``<name>.jpg`` (the texture: the whole picture at its top left, the pieces' tiles beside it).

The picture is the texture's ``image`` rectangle inside its 1-pixel frame. Only reading is done here; nothing of
the file is executed.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from PIL import Image

MAGIC = b"PzlF"
VERSION = b"0.1"
#: Largest puzzle file read (jigzo's are under 400 kB): anything larger is refused before it is read.
MAX_FILE_BYTES = 64 * 2**20
#: Largest texture decoded, in pixels (jigzo's are 1024 x 1024).
MAX_TEXTURE_PIXELS = 8192 * 8192
_SIZE = re.compile(rb"[0-9]{1,12}")
_NUMBER = re.compile(r"[0-9]{1,6}")


class PuzzleFileError(ValueError):
    """A file that is not a jigzo puzzle this reader understands, or a damaged one."""


def puzzle_members(path: Path) -> dict[str, bytes]:
    """The files packed in a puzzle: ``{name: bytes}`` (e.g. ``"horse-4x3.jpg"``).

    Raises:
        PuzzleFileError: a file larger than any puzzle, another format or version, a name that is a path, a length
            that is not a number or runs past the end of the file, or a name given twice.
    """
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise PuzzleFileError(f"{path}: {size} bytes, more than any puzzle ({MAX_FILE_BYTES}); not read")
    data = path.read_bytes()
    position = 0

    def line() -> bytes:
        nonlocal position
        end = data.find(b"\n", position)
        if end < 0:
            raise PuzzleFileError(f"{path}: ends inside a header line at byte {position}; the file is truncated")
        text, position = data[position:end], end + 1
        return text

    if line() != MAGIC or line() != VERSION:
        raise PuzzleFileError(f"{path}: not a jigzo puzzle of format {VERSION.decode()} (expected a {MAGIC!r} header)")
    line(), line()  # the puzzle's name and home page
    members: dict[str, bytes] = {}
    while position < len(data):
        name = line().decode("utf-8", errors="replace")
        size_text = line()
        if not _SIZE.fullmatch(size_text) or int(size_text) > len(data) - position:
            raise PuzzleFileError(
                f"{path}: member {name!r} declares {size_text[:20]!r} bytes with {len(data) - position} left in the "
                "file; the file is damaged"
            )
        if not name or "/" in name or "\\" in name or name in (".", "..") or name in members:
            raise PuzzleFileError(f"{path}: member name {name!r} is empty, a path or repeated")
        size = int(size_text)
        members[name] = data[position : position + size]
        position += size
    return members


def puzzle_photo(path: Path) -> Image.Image:
    """The whole picture of a puzzle, as RGB: the texture's ``image`` rectangle without its 1-pixel frame.

    Raises:
        PuzzleFileError: a puzzle without its map or texture, a map without an ``image`` line, a rectangle that
            does not fit inside the texture, or a texture that is too large or cannot be decoded.
    """
    members = puzzle_members(path)
    maps = [name for name in members if name.endswith(".map")]
    if len(maps) != 1:
        raise PuzzleFileError(f"{path}: expected one .map member, found {maps}")
    stem = maps[0][: -len(".map")]
    if f"{stem}.jpg" not in members:
        raise PuzzleFileError(f"{path}: no texture {stem}.jpg beside {maps[0]} (members: {sorted(members)})")
    rows = [row.split() for row in members[maps[0]].decode("utf-8", errors="replace").splitlines()]
    image_rows = [row for row in rows if row and row[0] == "image"]
    if len(image_rows) != 1 or len(image_rows[0]) < 5 or not all(_NUMBER.fullmatch(v) for v in image_rows[0][1:5]):
        raise PuzzleFileError(f"{path}: the map needs one line 'image x y width height ...', found {image_rows[:2]}")
    x, y, width, height = (int(value) for value in image_rows[0][1:5])
    try:
        with Image.open(io.BytesIO(members[f"{stem}.jpg"])) as texture:
            if texture.width * texture.height > MAX_TEXTURE_PIXELS:
                raise PuzzleFileError(
                    f"{path}: a {texture.width} x {texture.height} texture is larger than any puzzle's"
                )
            if width < 3 or height < 3 or x + width > texture.width or y + height > texture.height:
                raise PuzzleFileError(
                    f"{path}: the picture's rectangle ({x}, {y}, {width} x {height}) does not fit in the "
                    f"{texture.width} x {texture.height} texture"
                )
            # Crop first: only the picture is decoded into RGB.
            return texture.crop((x + 1, y + 1, x + width - 1, y + height - 1)).convert("RGB")
    except (OSError, Image.DecompressionBombError, SyntaxError) as error:  # PIL's errors for a damaged image
        raise PuzzleFileError(f"{path}: its texture {stem}.jpg cannot be decoded ({error})") from error
