"""Pixel-wise terms: L1 on the low-frequency layer, BCE on the mask logits, the warping regulariser
(paper eq. 5, 7, 6/9; reference §3.2–3.3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def lf_l1_loss(lf: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean|LF − x| (both masked by the caller, reference §2.8)."""
    return F.l1_loss(lf, target)


def mask_bce_loss(mask_logits: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits against the soft ground-truth mask (unmasked logits)."""
    return F.binary_cross_entropy_with_logits(mask_logits, target_mask)


def warp_regulariser(delta_uv: torch.Tensor) -> torch.Tensor:
    """mean|Δuv| = ||Δω||₁ / HW per channel (paper eq. 6)."""
    return delta_uv.abs().mean()


@dataclass
class WarpSchedule:
    """The regulariser's weight: ``initial`` × ``decay`` every ``every`` iterations, off below ``floor``.

    Paper: 10, ×0.9 every 50 iterations. The released script: weight 0 (``WarpSchedule(0.0)``). The released
    code's per-process counter makes later decays every 49 calls; we decay every ``every`` iterations exactly.
    """

    initial: float = 10.0
    decay: float = 0.9
    every: int = 50
    floor: float = 1e-7

    def weight(self, iteration: int) -> float:
        w = self.initial * self.decay ** (iteration // self.every) if self.every > 0 else self.initial
        return w if w >= self.floor else 0.0
