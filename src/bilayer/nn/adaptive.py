"""Adaptive layers as pure functions of ``(x, weight, bias)`` plus the normalisation modules that own statistics.

Predicted (per-avatar) parameters are always passed in, never written onto modules (DESIGN principle 2).
Batch convention: parameters carry one entry per identity (batch B); activations may carry B·t entries
(t target frames per identity, identity-major), and the parameters are broadcast over t without copying.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def _split_frames(x: torch.Tensor, batch: int) -> torch.Tensor:
    """(B·t, C, H, W) → (B, t, C, H, W)."""
    if x.shape[0] % batch:
        raise ValueError(
            f"activation batch {x.shape[0]} is not a multiple of the {batch} identities the adaptive "
            "parameters were predicted for."
        )
    return x.view(batch, x.shape[0] // batch, *x.shape[1:])


@dataclass
class AdaptiveConv:
    """A per-identity 1×1 convolution: weight (B, C_out, C_in), bias (B, C_out)."""

    weight: torch.Tensor
    bias: torch.Tensor


@dataclass
class AdaptiveAffine:
    """Per-identity AdaBN modulation: gamma (B, C) (already 1 + prediction), beta (B, C)."""

    gamma: torch.Tensor
    beta: torch.Tensor


@dataclass
class AdaptiveSpade:
    """Per-identity SPADE mixing of the layer's learned pixel features: two 1×1 convs, C → C."""

    gamma: AdaptiveConv
    beta: AdaptiveConv


def adaptive_conv1x1(x: torch.Tensor, params: AdaptiveConv) -> torch.Tensor:
    """out[b] = W[b]·x[b] + bias[b], per pixel. x (B·t, C_in, H, W) → (B·t, C_out, H, W)."""
    weight, bias = params.weight, params.bias  # (B, Co, Ci), (B, Co)
    batch = weight.shape[0]
    xs = _split_frames(x, batch)  # (B, t, Ci, H, W)
    b, t, ci, h, w = xs.shape
    out = torch.matmul(weight[:, None], xs.reshape(b, t, ci, h * w)) + bias[:, None, :, None]
    return out.view(b * t, weight.shape[1], h, w)


def modulate(x_hat: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """x̂·γ + β with γ, β of shape (B, C) or (B, C, H, W), broadcast over the t frames of each identity."""
    batch = gamma.shape[0]
    xs = _split_frames(x_hat, batch)
    if gamma.dim() == 2:
        gamma, beta = gamma[:, :, None, None], beta[:, :, None, None]
    return (xs * gamma[:, None] + beta[:, None]).view_as(x_hat)


class AdaptiveBatchNorm2d(nn.BatchNorm2d):
    """AdaBN: BatchNorm without affine parameters, then the predicted per-identity γ, β (reference §2.1)."""

    def __init__(self, num_features: int, eps: float = 1e-7, momentum: float = 1.0) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=False)

    def forward(self, x: torch.Tensor, params: AdaptiveAffine) -> torch.Tensor:  # type: ignore[override]
        return modulate(super().forward(x), params.gamma, params.beta)


class AdaptiveSpadeBatchNorm2d(nn.BatchNorm2d):
    """Adaptive SPADE BatchNorm (reference §2.1): BN without affine, then per-pixel γ, β mixed from a learned
    feature tensor P (1, C, S, S) shared by all identities through per-identity 1×1 convolutions:
    γ = 1 + W_γ·P + b_γ, β = W_β·P + b_β."""

    def __init__(self, num_features: int, spatial_size: int, eps: float = 1e-7, momentum: float = 1.0) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=False)
        self.spatial_size = spatial_size
        self.pixel_feats = nn.Parameter(torch.empty(1, num_features, spatial_size, spatial_size))
        # kaiming_uniform(a=√5) on this shape is U(±1/sqrt(C·S²)), as in the released code.
        bound = 1.0 / (num_features * spatial_size * spatial_size) ** 0.5
        nn.init.uniform_(self.pixel_feats, -bound, bound)

    def modulation(self, params: AdaptiveSpade) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-identity maps γ, β, each (B, C, S, S); they depend on the identity only, not on the frame."""
        feats = self.pixel_feats.expand(params.gamma.weight.shape[0], -1, -1, -1)
        gamma = 1.0 + adaptive_conv1x1(feats, params.gamma)
        beta = adaptive_conv1x1(feats, params.beta)
        return gamma, beta

    def forward(self, x: torch.Tensor, params: AdaptiveSpade) -> torch.Tensor:  # type: ignore[override]
        if x.shape[-1] != self.spatial_size or x.shape[-2] != self.spatial_size:
            raise ValueError(
                f"SPADE norm expects {self.spatial_size}×{self.spatial_size} inputs, got {tuple(x.shape[-2:])}."
            )
        gamma, beta = self.modulation(params)
        return modulate(super().forward(x), gamma, beta)
