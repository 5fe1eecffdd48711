"""The two image operations every stage shares: warping a texture by a sampling grid, and masking."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def warp(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Sample the texture with a grid: bilinear, zero padding, align_corners=False (SPEC §2.8)."""
    return F.grid_sample(texture, uv, mode="bilinear", padding_mode="zeros", align_corners=False)


def apply_mask(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """image·m + (−1)·(1 − m): a black background (SPEC §2.8)."""
    return image * mask - (1 - mask)
