"""Builders of hostile inputs for the robustness suite: odd and broken image files, bad actions, bad checkpoints.

Each case is data (an id, how to write it, what must happen), so the tests in this folder are parametrised over
lists of cases and ``docs/robustness.md`` can list the same cases. Everything is crafted cheaply: the
decompression bombs are 1-bit PNGs of zero rows compressed on the fly (~50 KB for 20000 x 20000), never an
allocated pixel array.
"""

from __future__ import annotations

import functools
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: The registered id every folder test goes through.
FOLDER_ID = "AdaGlimpse-ImageFolder-v0"

# ------------------------------------------------------------------------------------------------------ images


def png_bytes_of_zero_rows(width: int, height: int) -> bytes:
    """A valid all-black 1-bit grayscale PNG of ``width x height``, built without any pixel array.

    Every row is a filter byte and ``ceil(width / 8)`` zero bytes; rows are compressed in blocks, so memory stays
    at a few MB whatever the declared size.
    """
    return _png_bytes_of_zero_rows(width, height)


@functools.lru_cache(maxsize=4)
def _png_bytes_of_zero_rows(width: int, height: int) -> bytes:
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    rows_per_block = max(1, (1 << 21) // len(row))
    parts = [
        compressor.compress(row * min(rows_per_block, height - start)) for start in range(0, height, rows_per_block)
    ]
    parts.append(compressor.flush())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def _save(image: Image.Image, path: Path, **params: object) -> Path:
    image.save(path, **params)
    return path


def _palette(path: Path) -> Path:
    image = Image.new("P", (40, 30), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * (256 * 3 - 6))
    return _save(image, path)


def _palette_transparent(path: Path) -> Path:
    image = Image.new("P", (40, 30), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * (256 * 3 - 6))
    return _save(image, path, transparency=1)


def _gray16(value: int) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        image = Image.fromarray(np.full((30, 40), value, dtype=np.uint16))
        assert image.mode == "I;16"
        return _save(image, path)

    return write


def _animated_gif(path: Path) -> Path:
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    return _save(frames[0], path, save_all=True, append_images=frames[1:], duration=100, loop=0)


@dataclass(frozen=True)
class ValidImageCase:
    """An odd but valid image file: it must load as ``rgb`` everywhere (solid colour, so any crop agrees).

    Attributes:
        id: test id.
        name: file name.
        write: writes the file at the given path.
        size: its ``(width, height)``.
        rgb: the colour every pixel must have after loading.
        atol: tolerance per channel (lossy formats).
        why: the rule the expectation comes from, for the docs.
    """

    id: str
    name: str
    write: Callable[[Path], Path]
    size: tuple[int, int]
    rgb: tuple[int, int, int]
    atol: float = 0.0
    why: str = ""


VALID_IMAGES = [
    ValidImageCase(
        "grayscale-L",
        "gray.png",
        lambda p: _save(Image.new("L", (40, 30), 77), p),
        (40, 30),
        (77, 77, 77),
        why="gray value replicated to R, G, B",
    ),
    ValidImageCase("palette-P", "palette.png", _palette, (40, 30), (10, 200, 30), why="palette entry looked up"),
    ValidImageCase(
        "palette-P-transparent",
        "palette_transparent.png",
        _palette_transparent,
        (40, 30),
        (255, 255, 255),
        why="transparent palette entry composited over white",
    ),
    ValidImageCase(
        "cmyk-jpeg",
        "cmyk.jpg",
        lambda p: _save(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), p, quality=95),
        (40, 30),
        (255, 0, 0),
        atol=2,
        why="CMYK (0, 100%, 100%, 0) is red",
    ),
    ValidImageCase(
        "rgba-png-half-transparent",
        "rgba.png",
        lambda p: _save(Image.new("RGBA", (40, 30), (0, 0, 0, 128)), p),
        (40, 30),
        (127, 127, 127),
        why="alpha composited over white: 255 * (1 - 128/255) = 127 (not dropped: 0)",
    ),
    ValidImageCase(
        "gray16-I;16-white",
        "gray16_white.png",
        _gray16(65535),
        (40, 30),
        (255, 255, 255),
        why="16-bit 65535 scaled by the full range to 255",
    ),
    ValidImageCase(
        "gray16-I;16-mid",
        "gray16_mid.png",
        _gray16(32896),
        (40, 30),
        (128, 128, 128),
        why="16-bit 32896 scaled to 128 (Pillow's plain convert would clip it to 255)",
    ),
    ValidImageCase(
        "1x1-png",
        "one_pixel.png",
        lambda p: _save(Image.new("RGB", (1, 1), (12, 34, 56)), p),
        (1, 1),
        (12, 34, 56),
        why="upsampled to the model's input",
    ),
    ValidImageCase(
        "extreme-aspect-2000x1",
        "strip.png",
        lambda p: _save(Image.new("RGB", (2000, 1), (90, 60, 30)), p),
        (2000, 1),
        (90, 60, 30),
        why="centre crop of a 1-pixel-high strip",
    ),
    ValidImageCase(
        "animated-gif",
        "animated.gif",
        _animated_gif,
        (40, 30),
        (255, 0, 0),
        why="first frame used",
    ),
]


def _truncated(kind: str) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, format=kind)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path

    return write


def _bomb(width: int, height: int) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        path.write_bytes(png_bytes_of_zero_rows(width, height))
        return path

    return write


def _self_symlink(path: Path) -> Path:
    os.symlink(path.name, path)  # loop.jpg -> loop.jpg
    return path


def _symlink_cycle(path: Path) -> Path:
    other = path.with_name("cycle_b.jpg")
    os.symlink(other.name, path)
    os.symlink(path.name, other)
    return path


def _dangling_symlink(path: Path) -> Path:
    os.symlink("does_not_exist.jpg", path)
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)  # opening it for reading would block until a writer appears
    return path


def _device(path: Path) -> Path:
    os.symlink("/dev/zero", path)  # reading it never ends
    return path


def _unreadable(path: Path) -> Path:
    Image.new("RGB", (40, 30), (1, 2, 3)).save(path)
    path.chmod(0)
    return path


@dataclass(frozen=True)
class BrokenImageCase:
    """A file with an image extension that must be refused (and, in a folder, skipped and counted).

    Attributes:
        id: test id.
        name: file name (sorts before the good image ``z_good.png`` of the mixed folders).
        write: writes it.
        reason: regex the error message must match after ``Cannot decode image '<path>': ``.
        needs: ``"non-root"`` when root could read the file anyway, ``"posix"`` for FIFOs and devices.
    """

    id: str
    name: str
    write: Callable[[Path], Path]
    reason: str
    needs: str = ""


BROKEN_IMAGES = [
    BrokenImageCase("bomb-20000x20000-png", "a_bomb.png", _bomb(20000, 20000), r"DecompressionBomb.*400000000 pixels"),
    BrokenImageCase(
        "bomb-10000x10000-png", "a_bomb_100mp.png", _bomb(10000, 10000), r"DecompressionBomb.*100000000 pixels"
    ),
    BrokenImageCase("truncated-jpeg", "a_truncated.jpg", _truncated("JPEG"), r"OSError: .*truncated"),
    BrokenImageCase("truncated-png", "a_truncated.png", _truncated("PNG"), r"(OSError|SyntaxError): "),
    BrokenImageCase("zero-byte-jpg", "a_empty.jpg", lambda p: (p.write_bytes(b""), p)[1], r"cannot identify image"),
    BrokenImageCase(
        "text-as-jpg", "a_notes.jpg", lambda p: (p.write_text("not an image\n"), p)[1], r"cannot identify image"
    ),
    BrokenImageCase("symlink-self-loop", "a_loop.jpg", _self_symlink, r"OSError: .*(symbolic links|ELOOP)"),
    BrokenImageCase("symlink-cycle", "a_cycle.jpg", _symlink_cycle, r"OSError: .*(symbolic links|ELOOP)"),
    BrokenImageCase("dangling-symlink", "a_dangling.jpg", _dangling_symlink, r"FileNotFoundError"),
    BrokenImageCase("fifo-as-jpg", "a_fifo.jpg", _fifo, r"a FIFO, not a regular file", needs="posix"),
    BrokenImageCase("device-as-jpg", "a_zero.jpg", _device, r"a device or socket, not a regular file", needs="posix"),
    BrokenImageCase("no-read-permission", "a_secret.png", _unreadable, r"PermissionError", needs="non-root"),
]


def skip_reason(case: BrokenImageCase) -> str | None:
    """Why ``case`` cannot be tried on this machine, or None."""
    if case.needs == "non-root" and hasattr(os, "geteuid") and os.geteuid() == 0:
        return "root reads any file, so a file without read permission cannot be made here"
    if case.needs == "posix" and (os.name != "posix" or not Path("/dev/zero").exists()):
        return "needs POSIX FIFOs and /dev/zero"
    return None


def write_broken_files(folder: Path) -> list[Path]:
    """Every broken file this machine can make (see :func:`skip_reason`), written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [case.write(folder / case.name) for case in BROKEN_IMAGES if skip_reason(case) is None]


def write_good_image(folder: Path, name: str = "z_good.png") -> Path:
    """A readable RGB photo-like image, sorting after every broken file name."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    path = folder / name
    Image.fromarray(pixels).save(path)
    return path
