"""Relativistic hinge PatchGAN losses (paper eq. 10–12, SPEC §3).

r, f are score maps (N, 1, S, S); every mean is over the whole tensor (all samples and patches).
    D: mean(relu(1 − (r − mean f))) + mean(relu(1 + (f − mean r)))
    G: mean(relu(1 − (f − mean r))) + mean(relu(1 + (r − mean f)))   with r detached
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - (real_scores - fake_scores.mean())).mean() + F.relu(1 + (fake_scores - real_scores.mean())).mean()


def generator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    real_scores = real_scores.detach()
    return F.relu(1 - (fake_scores - real_scores.mean())).mean() + F.relu(1 + (real_scores - fake_scores.mean())).mean()


def feature_matching_loss(fake_features: list[torch.Tensor], real_features: list[torch.Tensor]) -> torch.Tensor:
    """Average over the discriminator blocks of mean|fake − stopgrad(real)| (paper eq. 13)."""
    terms = [(f - r.detach()).abs().mean() for f, r in zip(fake_features, real_features)]
    return sum(terms) / len(terms)
