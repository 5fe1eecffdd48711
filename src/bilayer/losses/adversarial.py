"""Relativistic hinge PatchGAN losses (paper eq. 10–12, reference §3).

r, f are score maps (N, 1, S, S); every mean is over the whole tensor (all samples and patches). The losses are
computed in float32 or wider whatever the scores' precision (under bf16 autocast a mean of bfloat16 hinges keeps three
significant digits).
    D: mean(relu(1 − (r − mean f))) + mean(relu(1 + (f − mean r)))
    G: mean(relu(1 − (f − mean r))) + mean(relu(1 + (r − mean f)))   with r detached
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _wide(x: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision tensors; float32 and float64 as they are."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    real_scores, fake_scores = _wide(real_scores), _wide(fake_scores)
    return F.relu(1 - (real_scores - fake_scores.mean())).mean() + F.relu(1 + (fake_scores - real_scores.mean())).mean()


def generator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    real_scores, fake_scores = _wide(real_scores.detach()), _wide(fake_scores)
    return F.relu(1 - (fake_scores - real_scores.mean())).mean() + F.relu(1 + (real_scores - fake_scores.mean())).mean()


def feature_matching_loss(fake_features: list[torch.Tensor], real_features: list[torch.Tensor]) -> torch.Tensor:
    """Average over the discriminator blocks of mean|fake − stopgrad(real)| (paper eq. 13)."""
    terms = [(_wide(f) - _wide(r.detach())).abs().mean() for f, r in zip(fake_features, real_features)]
    return sum(terms) / len(terms)
