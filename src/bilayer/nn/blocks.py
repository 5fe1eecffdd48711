"""The pre-activation residual block of the released code (reference §2.1), shared by every network.

Layer order (the released code's):
    h = act(norm1(x)) → [up, unless efficient] → conv1 3×3 → act(norm2(h))          = "features"
    h = [up, if efficient] → conv2 3×3 → [avgpool 2, if down]
    out = h + skip(x),   skip = [up] → 1×1 conv (plain or adaptive) → [avgpool]  (identity if shapes agree)
Convolutions never stride: resizing is nearest ×2 upsampling or 2×2 average pooling. The skip sees the raw
block input. With ``efficient`` upsampling conv1 runs at the input resolution (paper §3.2: the cost halves).
The "star" block of the paper's figures has a plain affine BatchNorm as norm1 (``plain_first_norm``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .adaptive import (
    AdaptiveAffine,
    AdaptiveBatchNorm2d,
    AdaptiveConv,
    AdaptiveSpade,
    AdaptiveSpadeBatchNorm2d,
    adaptive_conv1x1,
)

Norm = Literal["none", "bn", "ada_bn", "ada_spade_bn"]
Resample = Literal["none", "up", "down"]
NEGATIVE_SLOPE = 0.2  # LeakyReLU slope everywhere (as in the released code)


def act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, NEGATIVE_SLOPE)


def upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def downsample(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


@dataclass
class BlockParams:
    """The adaptive parameters one block consumes (None where that layer is not adaptive)."""

    norm1: AdaptiveAffine | AdaptiveSpade | None = None
    norm2: AdaptiveAffine | AdaptiveSpade | None = None
    skip: AdaptiveConv | None = None


def make_norm(kind: Norm, channels: int, spatial_size: int, eps: float, momentum: float) -> nn.Module | None:
    if kind == "none":
        return None
    if kind == "bn":
        return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)
    if kind == "ada_bn":
        return AdaptiveBatchNorm2d(channels, eps=eps, momentum=momentum)
    if kind == "ada_spade_bn":
        return AdaptiveSpadeBatchNorm2d(channels, spatial_size, eps=eps, momentum=momentum)
    raise ValueError(f"unknown normalisation {kind!r}; expected none, bn, ada_bn or ada_spade_bn.")


def apply_norm(norm: nn.Module | None, x: torch.Tensor, params) -> torch.Tensor:
    if norm is None:
        return x
    if isinstance(norm, (AdaptiveBatchNorm2d, AdaptiveSpadeBatchNorm2d)):
        if params is None:
            raise ValueError("an adaptive normalisation layer was called without its predicted parameters.")
        return norm(x, params)
    return norm(x)


class ResBlock(nn.Module):
    """Pre-activation residual block; see the module docstring for the layer order.

    ``spatial_size`` is the input resolution (only SPADE norms need it). ``features_only`` builds just the
    first half (used by the embedder's last decoder block, whose second half the released code computes and
    throws away).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        norm: Norm = "none",
        resample: Resample = "none",
        adaptive_skip: bool = False,
        efficient: bool = False,
        plain_first_norm: bool = False,
        spatial_size: int = 0,
        eps: float = 1e-7,
        momentum: float = 1.0,
        features_only: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resample, self.efficient = resample, efficient
        self.features_only = features_only
        out_size = spatial_size * 2 if resample == "up" else spatial_size
        conv1_size = out_size if (resample == "up" and not efficient) else spatial_size
        norm1_kind: Norm = "bn" if (plain_first_norm and norm != "none") else norm
        self.norm1 = make_norm(norm1_kind, in_channels, spatial_size, eps, momentum)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = make_norm(norm, out_channels, conv1_size, eps, momentum)
        self.conv2 = None if features_only else nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.has_skip = (in_channels != out_channels or resample != "none") and not features_only
        self.adaptive_skip = adaptive_skip and self.has_skip
        self.skip = (
            nn.Conv2d(in_channels, out_channels, 1) if self.has_skip and not self.adaptive_skip else None
        )

    def features(self, x: torch.Tensor, params: BlockParams | None = None) -> torch.Tensor:
        """The output of the first half, after conv1, norm2 and the activation ("block_feats")."""
        h = act(apply_norm(self.norm1, x, params.norm1 if params else None))
        if self.resample == "up" and not self.efficient:
            h = upsample(h)
        h = self.conv1(h)
        return act(apply_norm(self.norm2, h, params.norm2 if params else None))

    def finish(self, x: torch.Tensor, feats: torch.Tensor, params: BlockParams | None = None) -> torch.Tensor:
        """Second half plus skip, given the block input ``x`` and ``features(x)``."""
        assert self.conv2 is not None, "features_only block has no second half"
        h = feats
        if self.resample == "up" and self.efficient:
            h = upsample(h)
        h = self.conv2(h)
        if self.resample == "down":
            h = downsample(h)
        if not self.has_skip:
            return h + x
        s = upsample(x) if self.resample == "up" else x
        if self.adaptive_skip:
            if params is None or params.skip is None:
                raise ValueError("an adaptive skip connection was called without its predicted parameters.")
            s = adaptive_conv1x1(s, params.skip)
        else:
            s = self.skip(s)
        if self.resample == "down":
            s = downsample(s)
        return h + s

    def forward(self, x: torch.Tensor, params: BlockParams | None = None) -> torch.Tensor:
        return self.finish(x, self.features(x, params), params)
