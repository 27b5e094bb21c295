"""The order in which cells are batched: one global batch split across data-parallel ranks (docs/distributed.md).

``data.batch_size`` is the *global* batch. Every rank draws the same permutation (seeded by the run's seed and the
epoch, so a resumed run and every rank see the same order) and takes its contiguous share of each global batch.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch


class GlobalBatchSampler:
    """Yields this rank's rows of every global batch (a list of row indices per batch).

    The order depends only on (seed, epoch): Lightning calls :meth:`set_epoch` before each epoch. A trailing
    global batch with fewer than ``2 * world`` cells is dropped in training (one cell per rank would leave a
    BatchNorm without a variance); on one process that is the old rule "drop a last batch of one cell".
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world size {world}")
        self.n, self.batch_size, self.shuffle = int(n), int(batch_size), bool(shuffle)
        self.seed, self.rank, self.world = int(seed), int(rank), int(world)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def global_batches(self) -> list[np.ndarray]:
        """Every global batch of this epoch, in order (the same on every rank)."""
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=gen).numpy()
        else:
            order = np.arange(self.n)
        batches = [order[i:i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        if self.shuffle and len(batches) > 1 and len(batches[-1]) < 2 * self.world:
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            yield np.array_split(batch, self.world)[self.rank].tolist()

    def __len__(self) -> int:
        return len(self.global_batches())
