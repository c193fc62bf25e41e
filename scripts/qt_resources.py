"""Read the files packed in a compiled Qt resource bundle (``.rcc``, the output of Qt's ``rcc --binary``).

GCompris (Debian ``gcompris-qt-data``) ships each activity's images in one such bundle;
``scripts/build_embedded_images.py`` takes photographs from them. The format, as Qt's ``rcc`` writes it
(``qtbase/src/tools/rcc/rcc.cpp``; all integers big-endian):

* a header: ``b"qres"``, the format version (1-3), then the offsets of the tree, the data and the names (and, from
  version 3, one word of flags);
* the tree: fixed-size entries (14 bytes in version 1, 22 later), the root first: a name offset (4), flags (2),
  then for a directory its child count (4) and first child's index (4), for a file its locale (4) and data
  offset (4); from version 2 every entry ends with a modification time (8);
* the names: a length (2), a hash (4), the name in UTF-16;
* the data: a length (4), then the bytes, which flag 1 marks as zlib (after a 4-byte length, as ``qCompress``) and
  flag 4 as zstd.

Only reading is done here; nothing of the bundle is executed.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

_COMPRESSED, _DIRECTORY, _ZSTD = 1, 2, 4


class ResourceBundleError(ValueError):
    """A file that is not a Qt resource bundle this reader understands."""


def resource_files(path: Path) -> Iterator[tuple[str, bytes]]:
    """Every file of a bundle: ``(path inside the bundle, e.g. "/gcompris/src/.../alpaca.webp", its bytes)``.

    Raises:
        ResourceBundleError: not a bundle (no ``qres`` header), an unknown version, zstd without the
            ``zstandard`` package, or offsets that leave the file.
    """
    blob = Path(path).read_bytes()
    if blob[:4] != b"qres" or len(blob) < 20:
        raise ResourceBundleError(f"{path} is not a compiled Qt resource bundle (expected a b'qres' header)")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    if version not in (1, 2, 3):
        raise ResourceBundleError(f"{path}: Qt resource format version {version}; this reader knows 1 to 3")
    entry_size = 14 if version == 1 else 22

    def unpack(fmt: str, offset: int) -> tuple[int, ...]:
        end = offset + struct.calcsize(fmt)
        if offset < 0 or end > len(blob):
            raise ResourceBundleError(f"{path}: an offset ({offset}) points outside the file ({len(blob)} bytes)")
        return struct.unpack(fmt, blob[offset:end])

    def name_at(offset: int) -> str:
        (length,) = unpack(">H", names + offset)
        start = names + offset + 6  # after the length and the hash
        return blob[start : start + 2 * length].decode("utf-16-be")

    def file_bytes(offset: int, flags: int) -> bytes:
        (length,) = unpack(">I", data + offset)
        raw = blob[data + offset + 4 : data + offset + 4 + length]
        if flags & _COMPRESSED:
            return zlib.decompress(raw[4:])  # qCompress: the uncompressed length, then a zlib stream
        if flags & _ZSTD:
            try:
                import zstandard
            except ImportError as error:
                raise ResourceBundleError(f"{path} holds zstd-compressed files: pip install zstandard") from error
            return bytes(zstandard.ZstdDecompressor().decompress(raw, max_output_size=1 << 30))
        return raw

    def walk(index: int, prefix: str) -> Iterator[tuple[str, bytes]]:
        offset = tree + index * entry_size
        name_offset, flags = unpack(">IH", offset)
        name = name_at(name_offset) if index else ""
        if flags & _DIRECTORY:
            count, first = unpack(">II", offset + 6)
            for child in range(first, first + count):
                yield from walk(child, f"{prefix}{name}/")
        else:
            (data_offset,) = unpack(">I", offset + 10)
            yield f"{prefix}{name}", file_bytes(data_offset, flags)

    yield from walk(0, "")
