"""Standing BatchNorm statistics (reference §4.6; the paper uses 500 batches).

Training runs BN with momentum 1 (running stats = the last batch's), so before every evaluation and checkpoint
the running statistics are replaced by the *average of per-batch statistics* over N training batches. PyTorch's
BatchNorm computes exactly that cumulative average when ``momentum=None`` after ``reset_running_stats()``.
Only the BN layers are in train mode meanwhile; everything else (spectral norm included) is in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager

import torch
from torch import nn


def batchnorms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def preserved_modes(*modules: nn.Module):
    """Restore every submodule's train/eval flag afterwards (the enhancer stage mixes both)."""
    modes = [(m, m.training) for root in modules for m in root.modules()]
    try:
        yield
    finally:
        for m, mode in modes:
            m.train(mode)


@torch.no_grad()
def compute_standing_stats(modules: Iterable[nn.Module], batches: Iterable, forward: Callable[[object], None]) -> int:
    """Run ``forward(batch)`` for every batch with only BN layers in train mode; returns the number of batches.

    Afterwards each BN's running mean/var is the mean of the per-batch mean/(unbiased) var it saw.
    """
    modules = list(modules)
    norms = [bn for root in modules for bn in batchnorms(root)]
    momenta = [bn.momentum for bn in norms]
    count = 0
    with preserved_modes(*modules):
        for root in modules:
            root.eval()
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average
            bn.train()
        try:
            for batch in batches:
                forward(batch)
                count += 1
        finally:
            for bn, momentum in zip(norms, momenta):
                bn.momentum = momentum
    return count
