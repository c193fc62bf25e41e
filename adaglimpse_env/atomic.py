"""The one atomic file writer of the project: a crash, a SIGKILL or a power cut never leaves half a file.

Both the model checkpoints of :mod:`adaglimpse_env.models.checkpoint` and the run folders of
:mod:`agents.run_folder` write through :func:`atomic_write`, so there is a single place where durability is decided.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

#: Suffix of the temporary files :func:`atomic_write` creates (``.<name>.<random>.tmp`` next to the target).
TEMPORARY_SUFFIX = ".tmp"


def temporary_prefix(path: Path) -> str:
    """The name prefix of every temporary file :func:`atomic_write` creates for ``path``."""
    return f".{path.name}."


def fsync_directory(directory: Path) -> None:
    """Make renames and unlinks inside ``directory`` durable (POSIX; a no-op where directories cannot be opened)."""
    if os.name != "posix":
        return
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)``, then sync the file, rename it onto ``path`` and sync the folder.

    The temporary file (``.<name>.<random>.tmp``) lives next to ``path`` so that the rename is atomic, and gets the
    permissions of a plain new file (``mkstemp`` creates ``0600``). ``write`` may replace the file or write
    ``tmp_path + path.suffix`` instead (SB3's ``save`` appends ``.zip`` to a name without it). A process killed
    mid-write leaves the temporary behind; nothing else is ever half-written.

    Args:
        path: the destination.
        write: writes the content to the path it is given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=TEMPORARY_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        written = tmp if Path(tmp).exists() else tmp + path.suffix
        with open(written, "rb") as handle:
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(written, 0o666 & ~umask)
        os.replace(written, path)
        fsync_directory(path.parent)  # the rename itself survives a power cut, not only a killed process
    finally:
        for leftover in (tmp, tmp + path.suffix):
            Path(leftover).unlink(missing_ok=True)
