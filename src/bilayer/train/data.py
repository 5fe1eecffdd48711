"""Batches for training: a resumable, sharded epoch sampler over ``VideoDataset`` items.

Resuming in the middle of an epoch must give exactly the batches the uninterrupted run would have seen, so the
order depends only on (seed, epoch) and the sampler can start at any batch of an epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from ..data.dataset import VideoDataset, collate


class EpochSampler(Sampler[int]):
    """Shuffled indices for one process of ``world_size``: a (seed, epoch) permutation, ``rank::world_size``,
    whole batches only, starting after ``start_batch`` batches."""

    def __init__(self, size: int, batch: int, rank: int, world_size: int, seed: int) -> None:
        self.size, self.batch, self.rank, self.world, self.seed = size, batch, rank, world_size, seed
        self.epoch, self.start_batch = 0, 0
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"the dataset has {size} items, fewer than one batch of {batch} per process × {world_size} processes."
            )

    @property
    def batches_per_epoch(self) -> int:
        return (self.size // self.world) // self.batch

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=g)[self.rank :: self.world].tolist()
        order = order[: self.batches_per_epoch * self.batch]
        return iter(order[self.start_batch * self.batch :])

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch


class BatchStream:
    """An endless iterator of batches that knows its position (epoch, batch) for checkpoints."""

    def __init__(self, dataset: VideoDataset, batch: int, rank: int, world_size: int, seed: int, workers: int) -> None:
        self.dataset = dataset
        self.sampler = EpochSampler(len(dataset), batch, rank, world_size, seed)
        self.batch, self.workers = batch, workers
        self.epoch, self.index = 0, 0
        self._it = None

    def seek(self, consumed_batches: int) -> None:
        per = self.sampler.batches_per_epoch
        self.epoch, self.index = divmod(consumed_batches, per)
        self._it = None

    def _start(self) -> None:
        self.sampler.set_position(self.epoch, self.index)
        self.dataset.set_epoch(self.epoch)
        loader = DataLoader(
            self.dataset, batch_size=self.batch, sampler=self.sampler, num_workers=self.workers,
            collate_fn=collate, drop_last=True, persistent_workers=False,
        )
        self._it = iter(loader)

    def __next__(self):
        if self._it is None:
            self._start()
        try:
            batch = next(self._it)
        except StopIteration:
            self.epoch, self.index = self.epoch + 1, 0
            self._start()
            batch = next(self._it)
        self.index += 1
        return batch

    def __iter__(self):
        return self
