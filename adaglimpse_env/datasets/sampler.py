"""The one sampler of ``(file index, sample seed)`` pairs, for the env's image stream and for MAE pretraining.

Order and augmentation depend only on the seed: epoch ``e`` visits the files in ``permutation(seed, e)`` (or in
file order without shuffling), and every sample gets its own transform seed. The pairs are drawn in the main
process, and a DataLoader hands samples back in sampler order, so which worker decodes a sample does not matter
(docs/determinism.md).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class SeededOrder(Sampler[tuple[int, int]]):
    """Endless ``(file index, sample seed)`` pairs, epoch after epoch.

    Args:
        size: number of files.
        seed: fixes the order of every epoch and every sample's seed.
        shuffle: a seeded random order per epoch (else file order, every epoch).
        start: skip the first ``start`` pairs, so that a resumed run continues the sequence where it stopped
            instead of repeating it.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True, start: int = 0) -> None:
        if size < 1:
            raise ValueError(f"SeededOrder requires at least one file, got size={size}")
        if start < 0:
            raise ValueError(f"SeededOrder requires start >= 0, got {start}")
        self.size, self.seed, self.shuffle, self.start = size, seed, shuffle, start

    def epoch_order(self, epoch: int) -> np.ndarray:
        """``(size,)`` file indices of epoch ``epoch``."""
        if self.shuffle:
            return np.random.default_rng([self.seed, 0, epoch]).permutation(self.size)
        return np.arange(self.size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # Sample seeds come from one generator running across epochs; skipped epochs still draw theirs, so the
        # pairs after `start` are the ones an uninterrupted sequence has there.
        sample_seeds = np.random.default_rng([self.seed, 1])
        epoch, skip = divmod(self.start, self.size)
        for _ in range(epoch):
            sample_seeds.integers(0, 2**31 - 1, size=self.size)
        while True:
            seeds = sample_seeds.integers(0, 2**31 - 1, size=self.size)
            pairs = zip(self.epoch_order(epoch).tolist(), seeds.tolist(), strict=True)
            yield from list(pairs)[skip:]
            skip = 0
            epoch += 1
