"""Which frames of a video one dataset item uses (reference §1.3 and the paper's test protocol).

Three modes, all returning indices into a video's sorted frame list (the first ``num_sources`` are the source
frames, the rest are the targets):

- ``random``: independent draws without replacement, from a ``torch.Generator`` seeded by
  (seed, epoch, item) — reproducible, different every epoch, and independent of how many DataLoader workers
  there are or which worker reads the item.
- ``reference``: the released code's additive low-discrepancy (Weyl) sequence: index = round(cur·(L−1)), then
  cur ← (cur + √5) mod 1, so each target sits ≈0.236 of the video after its source.
- ``test``: the paper's evaluation protocol (§4): the first frame is the source and the targets are the frames
  at 1 FPS (every ``round(fps)``-th frame after the first).
"""

from __future__ import annotations

import math

import numpy as np
import torch

SAMPLING_MODES = ("random", "reference", "test")

# The Weyl increment: √5 mod 1 ≈ 0.2360679 (reference §1.3).
WEYL_STEP = math.sqrt(5.0)


def item_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from a few integers (e.g. seed, epoch, item, stream); stable across runs."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def item_generator(*parts: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``item_seed(*parts)``."""
    return torch.Generator().manual_seed(item_seed(*parts))


def random_indices(length: int, count: int, generator: torch.Generator) -> list[int]:
    """``count`` distinct frame indices in [0, length), in random order (no replacement)."""
    if count > length:
        raise ValueError(f"cannot draw {count} distinct frames from a video with {length} frames.")
    return torch.randperm(length, generator=generator)[:count].tolist()


def weyl_indices(cur: float, length: int, count: int) -> tuple[list[int], float]:
    """Released sampler (reference §1.3): per frame, index = round(cur·(L−1)), then cur ← (cur + √5) mod 1.

    Returns the indices and the advanced ``cur``. Indices may repeat when the video is very short (as in the
    released code); ``round`` is Python's (half to even).
    """
    out = []
    for _ in range(count):
        out.append(int(round(cur * (length - 1))))
        cur = (cur + WEYL_STEP) % 1.0
    return out, cur


def evaluation_targets(length: int, fps: float, num_sources: int = 1) -> list[int]:
    """Target indices of the paper's test protocol: frames at 1 FPS after the first, i.e. round(k·fps) for
    k = 1, 2, … below ``length``; targets that fall on a source frame (index < ``num_sources``) are dropped."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}.")
    out: list[int] = []
    k = 1
    while (index := int(round(k * fps))) < length:
        if index >= num_sources and (not out or index != out[-1]):
            out.append(index)
        k += 1
    return out


def evaluation_items(length: int, fps: float, num_sources: int, num_targets: int) -> list[list[int]]:
    """Frame-index lists for the test protocol: sources are the first ``num_sources`` frames (the first frame
    for n = 1); the 1-FPS targets are grouped ``num_targets`` at a time, one item per group, in order. A last
    group with fewer than ``num_targets`` targets is dropped (none is dropped with ``num_targets = 1``)."""
    targets = evaluation_targets(length, fps, num_sources)
    sources = list(range(num_sources))
    groups = [targets[i : i + num_targets] for i in range(0, len(targets) - num_targets + 1, num_targets)]
    return [sources + g for g in groups]
