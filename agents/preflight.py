"""Start-up checks of a training run's output directory: fail in the first second, not at the first checkpoint.

Both checks raise :class:`OutputDirectoryError`, an ``OSError`` whose message says what the script needs, what
it got and which flag to change, e.g. ``train_sac.py requires a writable output directory, got runs/x (it is an
existing file); pass --output <dir> ...``. The scripts' ``__main__`` turns it into a one-line exit message.

Generic as they are, these checks live here rather than in ``adaglimpse_env``: the env library writes no run
folders, and the training scripts that do already import ``agents``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

#: Free space required beyond the estimate of what the run writes: relative margin, then fixed bytes for logs.
SPACE_MARGIN = 1.1
LOG_BYTES = 64 * 2**20


class OutputDirectoryError(OSError):
    """The output directory cannot hold the run: it cannot be written, or its disk has too little free space."""


def format_bytes(count: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    index = 0
    while count >= 1024 and index < len(units) - 1:
        count /= 1024
        index += 1
    return f"{count:.1f} {units[index]}" if index else f"{int(count)} B"


def check_writable(output: Path, script: str) -> None:
    """Create ``output`` (with its parents) if needed, then create and remove a file in it.

    Args:
        output: the run's output directory.
        script: the script's file name, for the message (``"train_sac.py"``).

    Raises:
        OutputDirectoryError: if ``output`` is a file, cannot be created, or cannot be written.
    """
    output = Path(output)
    reason = None
    if output.exists() and not output.is_dir():
        reason = "it is an existing file"
    else:
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            reason = f"cannot create it: {error.strerror or error}"
        else:
            try:
                with tempfile.TemporaryFile(dir=output, prefix=".write_test.") as probe:
                    probe.write(b"ok")
                    probe.flush()
            except OSError as error:
                reason = f"cannot create a file in it: {error.strerror or error}"
    if reason is not None:
        raise OutputDirectoryError(
            f"{script} requires a writable output directory, got {output} ({reason}); pass --output <dir> with a "
            "directory you can write to"
        )


def required_free_bytes(checkpoint_bytes: int, resuming: bool) -> int:
    """Free bytes a run needs for checkpoints of ``checkpoint_bytes`` each, with :data:`SPACE_MARGIN` and
    :data:`LOG_BYTES`.

    Checkpoints are written atomically, so the new one is complete on disk before the previous one is removed: two
    must fit. A resumed run already holds one.
    """
    copies = 1 if resuming else 2
    return int(SPACE_MARGIN * copies * checkpoint_bytes) + LOG_BYTES


def check_free_space(output: Path, script: str, required_bytes: int, what: str, hint: str = "") -> None:
    """Check that the disk holding ``output`` (an existing directory) has ``required_bytes`` free.

    Args:
        output: the run's output directory.
        script: the script's file name, for the message.
        required_bytes: what the run will write (e.g. from :func:`required_free_bytes`).
        what: what the estimate is made of, for the message (``"a checkpoint takes 1.7 GiB ..."``).
        hint: other flags that shrink the need, appended to the message (``", or --no-save-replay-buffer"``).

    Raises:
        OutputDirectoryError: if less is free.
    """
    free = shutil.disk_usage(output).free
    if free < required_bytes:
        raise OutputDirectoryError(
            f"{script} requires an output directory with {format_bytes(required_bytes)} free, got {output} "
            f"({format_bytes(free)} free; {what}); pass --output <dir> on a disk with more room{hint}"
        )
