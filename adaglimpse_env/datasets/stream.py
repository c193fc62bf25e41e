"""An endless, seeded stream of decoded samples, decoded ahead of time by DataLoader worker processes.

The env pulls a few samples at every reset; decoding (JPEG, resize, crop) runs in ``num_workers`` background
processes so the model never waits on it. Order and augmentation depend only on the seed: epoch ``e`` visits
the files in ``permutation(seed, e)`` (or in file order without shuffling), and sample ``k`` of the stream is
transformed with its own seed, whichever worker decodes it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Sampler

from adaglimpse_env.datasets.base import ImageSource


class _SeededOrder(Sampler[tuple[int, int]]):
    """Endless ``(file index, sample seed)`` pairs."""

    def __init__(self, size: int, seed: int, shuffle: bool) -> None:
        self.size, self.seed, self.shuffle = size, seed, shuffle

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = 0
        sample_seeds = np.random.default_rng([self.seed, 1])
        while True:
            if self.shuffle:
                order = np.random.default_rng([self.seed, 0, epoch]).permutation(self.size)
            else:
                order = np.arange(self.size)
            seeds = sample_seeds.integers(0, 2**31 - 1, size=self.size)
            yield from zip(order.tolist(), seeds.tolist(), strict=True)
            epoch += 1


def _identity(sample: dict[str, Any]) -> dict[str, Any]:
    return sample


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
        self.num_skipped = 0
        self.skipped_files: set[str] = set()
        self._iterator: Iterator[dict[str, Any]] | None = None
        self._seed = seed

    def check_readable(self, max_tries: int = 32) -> None:
        """Decode files in order until one works, so an unusable folder fails at construction, not mid-run.

        Raises:
            ValueError: the first ``max_tries`` files (or all, if fewer) are unreadable.
        """
        tried = min(max_tries, len(self.source))
        errors = []
        for index in range(tried):
            sample = self.source[(index, 0)]
            if "error" not in sample:
                return
            errors.append(sample["error"])
        scope = "any of its" if tried == len(self.source) else f"the first {tried} of its"
        description = self.source.description
        raise ValueError(
            f"{description[0].upper()}{description[1:]} has no readable image: {scope} {len(self.source)} files "
            f"tried, none could be decoded. First error: {errors[0]}. Check the data folder (formats Pillow "
            f"reads: jpg, png, webp, ...)."
        )

    def reseed(self, seed: int) -> None:
        """Restart the stream from the beginning of the order given by ``seed``."""
        self._seed = seed
        self._iterator = None

    def _make_iterator(self) -> Iterator[dict[str, Any]]:
        loader = DataLoader(
            self.source,
            sampler=_SeededOrder(len(self.source), self._seed, self.shuffle),
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
        failed_since_success: set[int] = set()
        while len(samples) < count:
            sample = next(self._iterator)
            if "error" in sample:
                self.num_skipped += 1
                failed_since_success.add(sample["index"])
                if sample["path"] not in self.skipped_files:
                    self.skipped_files.add(sample["path"])
                    warnings.warn(f"Skipping unreadable image: {sample['error']}", RuntimeWarning, stacklevel=2)
                # Give up only when every distinct file has failed since the last readable one.
                if len(failed_since_success) >= len(self.source):
                    raise RuntimeError(
                        f"None of the {len(self.source)} files of {self.source.description} could be decoded "
                        f"(e.g. {sample['path']}); check the data folder"
                    )
                continue
            failed_since_success.clear()
            samples.append(sample)
        return samples
