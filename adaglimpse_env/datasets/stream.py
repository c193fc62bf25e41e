"""An endless, seeded stream of decoded samples, decoded ahead of time by DataLoader worker processes.

The env pulls a few samples at every reset; decoding (JPEG, resize, crop) runs in ``num_workers`` background
processes so the model never waits on it. Order and augmentation depend only on the seed
(:class:`~adaglimpse_env.datasets.sampler.SeededOrder`): sample ``k`` of the stream is transformed with its own seed,
whichever worker decodes it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from adaglimpse_env.datasets.base import ImageSource
from adaglimpse_env.datasets.sampler import SeededOrder


def _identity(sample: dict[str, Any]) -> dict[str, Any]:
    return sample


class UnreadableFiles:
    """Bookkeeping of the error records an :class:`ImageSource` returns: one warning per file, a count of every
    skip, and whether every file has failed since the last readable sample (the reader then gives up instead of
    looping forever). Shared by :class:`ImageStream` and ``scripts/pretrain_mae.py``.

    Args:
        num_files: how many files the source has.
    """

    def __init__(self, num_files: int) -> None:
        self.num_files = num_files
        self.count = 0
        self.files: set[str] = set()
        self._failed_since_readable: set[int] = set()

    def record_error(self, record: dict[str, Any]) -> None:
        """Count an error record (``{"error", "path", "index"}``), warning the first time its file fails."""
        self.count += 1
        self._failed_since_readable.add(record["index"])
        if record["path"] not in self.files:
            self.files.add(record["path"])
            # stacklevel 3: the warning points at the code that asked the reader for samples.
            warnings.warn(f"Skipping unreadable image: {record['error']}", RuntimeWarning, stacklevel=3)

    def record_readable(self) -> None:
        """A readable sample arrived: the files that failed since may be a passing problem of the reader."""
        self._failed_since_readable.clear()

    @property
    def all_failed(self) -> bool:
        """Every distinct file has failed since the last readable sample."""
        return len(self._failed_since_readable) >= self.num_files


class ImageStream:
    """Endless decoded samples from an :class:`ImageSource`, skipping unreadable files.

    Args:
        source: the dataset.
        shuffle: visit files in a seeded random order (else file order).
        num_workers: decoding processes (0 decodes in the calling process).
        prefetch_factor: samples each worker decodes ahead.
        seed: initial seed; :meth:`reseed` restarts the stream.
    """

    def __init__(
        self,
        source: ImageSource,
        shuffle: bool = True,
        num_workers: int = 0,
        prefetch_factor: int = 4,
        seed: int = 0,
    ) -> None:
        if len(source) == 0:
            raise ValueError("ImageStream requires a non-empty image source, got 0 files")
        self.source = source
        self.shuffle = shuffle
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.unreadable = UnreadableFiles(len(source))
        self._iterator: Iterator[dict[str, Any]] | None = None
        self._seed = seed

    def check_readable(self, max_seconds: float = 20.0) -> None:
        """Decode files until one works, so an unusable folder fails at construction, not mid-run.

        The first few files go first, then every other file in an order spread evenly over the folder (a
        golden-ratio sequence), so a readable image among many unreadable ones is found wherever it sorts. It stops
        at the first readable file, after every file, or after about ``max_seconds``.

        Raises:
            ValueError: every file tried is unreadable.
        """
        total = len(self.source)
        head = list(range(min(8, total)))
        errors = []
        deadline = time.monotonic() + max_seconds
        for count, index in enumerate(self._readability_order(head)):
            sample = self.source[(int(index), 0)]
            if "error" not in sample:
                return
            errors.append(sample["error"])
            if count >= len(head) and time.monotonic() > deadline:
                break
        scope = (
            "any of its" if len(errors) == total else f"{len(errors)} (spread over the folder, {max_seconds:g} s) of"
        )
        description = self.source.description
        raise ValueError(
            f"{description[0].upper()}{description[1:]} has no readable image: {scope} {total} files "
            f"tried, none could be decoded. First error: {errors[0]}. Check the data folder (formats Pillow "
            f"reads: jpg, png, webp, ...)."
        )

    def _readability_order(self, head: list[int]) -> Iterator[int]:
        yield from head
        rest = np.arange(len(head), len(self.source))
        yield from rest[np.argsort((rest * 0.6180339887498949) % 1.0, kind="stable")].tolist()

    @property
    def num_skipped(self) -> int:
        """Unreadable samples skipped so far (a file counts at every visit)."""
        return self.unreadable.count

    @property
    def skipped_files(self) -> set[str]:
        """Paths of the files skipped so far."""
        return self.unreadable.files

    def reseed(self, seed: int) -> None:
        """Restart the stream from the beginning of the order given by ``seed``."""
        self.close()
        self._seed = seed

    def close(self) -> None:
        """Stop the decoding workers now (the next :meth:`next_samples` starts new ones, where the order left off
        is lost: it restarts at the beginning of the current seed's order)."""
        iterator, self._iterator = self._iterator, None
        # DataLoader's multi-process iterator only stops its workers when garbage-collected; ask it directly.
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    def _make_iterator(self) -> Iterator[dict[str, Any]]:
        loader = DataLoader(
            self.source,
            sampler=SeededOrder(len(self.source), self._seed, self.shuffle),
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=_identity,  # type: ignore[arg-type]  # batch_size=None: one sample at a time
            prefetch_factor=self.prefetch_factor if self.num_workers else None,
            persistent_workers=False,
        )
        return iter(loader)

    def next_samples(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` readable samples.

        Raises:
            RuntimeError: a whole pass over the files found nothing readable.
        """
        if self._iterator is None:
            self._iterator = self._make_iterator()
        samples: list[dict[str, Any]] = []
        while len(samples) < count:
            sample = next(self._iterator)
            if "error" in sample:
                self.unreadable.record_error(sample)
                if self.unreadable.all_failed:
                    raise RuntimeError(
                        f"None of the {len(self.source)} files of {self.source.description} could be decoded "
                        f"(e.g. {sample['path']}); check the data folder"
                    )
                continue
            self.unreadable.record_readable()
            samples.append(sample)
        return samples
