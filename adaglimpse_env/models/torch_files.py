"""Reading and writing PyTorch files safely: nothing a file holds is run, nothing it declares is allocated
unchecked, and nothing is left half-written.

:func:`safe_torch_load` is ``torch.load(weights_only=True)`` behind a check that bounds what the file can make it
allocate (:func:`check_zip_records`), with errors that say what is wrong with the file instead of a traceback from
inside the unpickler; :func:`atomic_torch_save` writes through :func:`adaglimpse_env.atomic.atomic_write`. The model
checkpoints (:mod:`adaglimpse_env.models.checkpoint`), the pretraining's resume state and the original policy
loader all read through here.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from typing import Any

import torch

from adaglimpse_env.atomic import atomic_write


class CheckpointError(ValueError):
    """A checkpoint is unreadable, of another format, or does not fit the requested model."""


def safe_torch_load(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with errors that say what went wrong.

    Raises:
        CheckpointError: the file holds pickled code or objects (refused), or is truncated / not a checkpoint.
    """
    check_zip_records(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if found:
            raise CheckpointError(
                f"Checkpoint '{path}' contains pickled Python objects ({found.group(1)}) that weights-only "
                f"loading refuses, so nothing in it was run. Checkpoints must hold only tensors and plain data; "
                f"if you trust the file, re-save its state dict with torch.save(state_dict, path)."
            ) from error
        raise _corrupt(path, error) from error
    except Exception as error:
        # Weights-only unpickling of corrupt bytes fails with many exception types besides the above (KeyError
        # for a dangling memo reference, IndexError for an empty stack, TypeError or AttributeError for a
        # mangled tensor record, ...). None of them ran code, and all mean the file is not a usable checkpoint.
        raise _corrupt(path, error) from error


def check_zip_records(path: str | os.PathLike[str]) -> None:
    """Bound what ``torch.load`` will allocate, before it allocates: the file must be a zip-format checkpoint whose
    records are all stored uncompressed (``torch.save`` never compresses), so no record can declare more bytes than
    the file holds.

    A deflated record of zeros would otherwise make a 5 MB file allocate a gigabyte (about 1000:1). Files of the
    pre-1.6 (non-zip) format are refused too: their storages declare sizes that cannot be checked before reading.

    Raises:
        CheckpointError: not a zip, a compressed record, or records declaring more bytes than the file has.
    """
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise _corrupt(path, error) from error
    compressed = [info.filename for info in records if info.compress_type != zipfile.ZIP_STORED]
    declared = sum(info.file_size for info in records)
    if compressed or declared > size:
        raise CheckpointError(
            f"Checkpoint '{path}' declares {declared} bytes of records in a {size}-byte file "
            f"({len(compressed)} compressed, e.g. {compressed[:2]}): refused before reading, since torch.save writes "
            "records uncompressed and a compressed one can expand to exhaust memory; re-save it with torch.save"
        )


def _first_line(error: BaseException, limit: int) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else type(error).__name__


def _corrupt(path: str | os.PathLike[str], error: BaseException) -> CheckpointError:
    return CheckpointError(
        f"Checkpoint '{path}' could not be read: it is truncated, corrupt or not a PyTorch checkpoint "
        f"({type(error).__name__}: {_first_line(error, 200)}). Re-download or re-create it."
    )


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` through :func:`adaglimpse_env.atomic.atomic_write`: a crash never leaves half a file."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))
