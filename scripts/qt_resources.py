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
    """A file that is not a Qt resource bundle this reader understands, or a damaged one."""


#: Largest size a file of a bundle may decompress to: far above any image GCompris ships, far below a machine's RAM.
MAX_FILE_BYTES = 256 * 2**20


def resource_files(path: Path, max_file_bytes: int = MAX_FILE_BYTES) -> Iterator[tuple[str, bytes]]:
    """Every file of a bundle: ``(path inside the bundle, e.g. "/gcompris/src/.../alpaca.webp", its bytes)``.

    Args:
        path: the ``.rcc`` file.
        max_file_bytes: refuse a file that is, or decompresses to, more than this.

    Raises:
        ResourceBundleError: not a bundle (no ``qres`` header), an unknown version, zstd without the
            ``zstandard`` package, offsets or lengths that leave the file, a tree that is not a tree (an entry
            reached twice), a file over ``max_file_bytes``, or data that does not decompress.
    """
    blob = Path(path).read_bytes()
    if blob[:4] != b"qres" or len(blob) < 20:
        raise ResourceBundleError(f"{path} is not a compiled Qt resource bundle (expected a b'qres' header)")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    if version not in (1, 2, 3):
        raise ResourceBundleError(f"{path}: Qt resource format version {version}; this reader knows 1 to 3")
    entry_size = 14 if version == 1 else 22

    def span(offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > len(blob):
            raise ResourceBundleError(f"{path}: an offset ({offset}) points outside the file ({len(blob)} bytes)")
        return blob[offset : offset + length]

    def unpack(fmt: str, offset: int) -> tuple[int, ...]:
        return struct.unpack(fmt, span(offset, struct.calcsize(fmt)))

    def name_at(offset: int) -> str:
        (length,) = unpack(">H", names + offset)
        try:  # after the length and the hash
            return span(names + offset + 6, 2 * length).decode("utf-16-be")
        except UnicodeDecodeError as error:
            raise ResourceBundleError(f"{path}: a file name is not UTF-16 ({error})") from error

    def file_bytes(offset: int, flags: int) -> bytes:
        (length,) = unpack(">I", data + offset)
        raw = span(data + offset + 4, length)
        try:
            if flags & _COMPRESSED:  # qCompress: the uncompressed length, then a zlib stream
                inflater = zlib.decompressobj()
                content = inflater.decompress(raw[4:], max_file_bytes + 1)
            elif flags & _ZSTD:
                try:
                    import zstandard
                except ImportError as error:
                    raise ResourceBundleError(f"{path} holds zstd-compressed files: pip install zstandard") from error
                content = zstandard.ZstdDecompressor().decompress(raw, max_output_size=max_file_bytes + 1)
            else:
                content = raw
        except (zlib.error, ValueError) as error:
            if isinstance(error, ResourceBundleError):
                raise
            raise ResourceBundleError(f"{path}: a file's data does not decompress ({error})") from error
        if len(content) > max_file_bytes:
            raise ResourceBundleError(f"{path}: a file is over {max_file_bytes} bytes; refused")
        return bytes(content)

    visited: set[int] = set()

    def walk(index: int, prefix: str) -> Iterator[tuple[str, bytes]]:
        if index in visited:  # a loop or a shared child would walk for ever, or exponentially long
            raise ResourceBundleError(f"{path}: tree entry {index} is reached twice; the bundle is damaged")
        visited.add(index)
        offset = tree + index * entry_size
        name_offset, flags = unpack(">IH", offset)
        name = name_at(name_offset) if index else ""
        if flags & _DIRECTORY:
            count, first = unpack(">II", offset + 6)
            unpack(f">{entry_size * count}x", tree + first * entry_size)  # every child inside the file
            for child in range(first, first + count):
                yield from walk(child, f"{prefix}{name}/")
        else:
            (data_offset,) = unpack(">I", offset + 10)
            yield f"{prefix}{name}", file_bytes(data_offset, flags)

    yield from walk(0, "")
