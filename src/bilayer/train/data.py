"""Batches for training: a resumable, sharded epoch sampler over ``VideoDataset`` items.

Resuming in the middle of an epoch must give exactly the batches the uninterrupted run would have seen, so the
order depends only on (seed, epoch) and the sampler can start at any batch of an epoch. The loader itself is
a ``DataLoader`` (``VideoLoader``) whose ``set_epoch`` reaches the dataset too; the sampler is this module's own,
since PyTorch's ``DistributedSampler`` can neither interleave accumulation steps with processes nor start
mid-epoch. This is the one path from a dataset to training batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from ..data.dataset import DatasetError, VideoDataset
from ..structures import collate


SMALL_DATASET_STEPS = 100  # global batches per epoch for a dataset of fewer videos than one batch


def video_repeats(videos: int, global_batch: int) -> int:
    """Items per video per epoch: 1 when the videos fill a global batch; otherwise enough repeats (each drawing
    its own frames) for SMALL_DATASET_STEPS batches an epoch, so a person-specific dataset of one long video trains
    without restarting the loader every step."""
    if videos >= global_batch:
        return 1
    return -(-SMALL_DATASET_STEPS * global_batch // videos)


class EpochSampler(Sampler[int]):
    """Indices for one process: a (seed, epoch) permutation cut into global batches of
    G = micro · world_size · accumulate consecutive items; micro-batch a of rank r in a step takes
    items [(a · world_size + r) · micro, … + micro) of that step's global batch.

    So one process accumulating over k micro-batches sees exactly the micro-batches that k processes see in one
    step, which makes single-process and multi-process runs comparable batch for batch. ``set_epoch(epoch, start)``
    selects the epoch and skips its first ``start`` micro-batches (resume)."""

    def __init__(self, size: int, micro: int, accumulate: int, rank: int, world_size: int, seed: int) -> None:
        self.size, self.micro, self.accumulate, self.rank, self.world, self.seed = size, micro, accumulate, rank, world_size, seed
        self.epoch, self.start = 0, 0
        if self.steps_per_epoch < 1:
            raise DatasetError(
                f"the dataset has {size} items, fewer than one global batch of {self.global_batch} "
                f"({micro} per micro-batch × {world_size} processes × {accumulate} accumulation steps)."
            )

    @property
    def global_batch(self) -> int:
        return self.micro * self.world * self.accumulate

    @property
    def steps_per_epoch(self) -> int:
        return self.size // self.global_batch

    @property
    def batches_per_epoch(self) -> int:
        """Micro-batches per epoch for this process."""
        return self.steps_per_epoch * self.accumulate

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        mine = []
        for step in range(self.steps_per_epoch):
            base = step * self.global_batch
            for a in range(self.accumulate):
                first = base + (a * self.world + self.rank) * self.micro
                mine.extend(order[first : first + self.micro])
        return iter(mine[self.start * self.micro :])

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start) * self.micro


class VideoLoader(DataLoader):
    """A DataLoader whose ``set_epoch`` reaches both the sampler (shuffling) and the dataset (frame choice)."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)


class BatchStream:
    """An endless iterator of batches that knows its position (epoch, batch) for checkpoints."""

    def __init__(
        self, dataset: VideoDataset, batch: int, rank: int, world_size: int, seed: int, workers: int, accumulate: int = 1
    ) -> None:
        self.sampler = EpochSampler(len(dataset), batch, accumulate, rank, world_size, seed)
        self.loader = VideoLoader(dataset, batch_size=batch, sampler=self.sampler, num_workers=workers,
                                  collate_fn=collate, drop_last=True, persistent_workers=workers > 0)
        self.epoch, self.index = 0, 0
        self._it = None

    def seek(self, consumed_batches: int) -> None:
        per = self.sampler.batches_per_epoch
        self.epoch, self.index = divmod(consumed_batches, per)
        self._it = None

    def _start(self) -> None:
        self.loader.set_epoch(self.epoch)  # the sampler's order and the dataset's frame choice
        self.sampler.start = self.index  # resume mid-epoch
        self._it = iter(self.loader)

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
