"""The two image operations every stage shares: warping a texture by a sampling grid, and masking."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def warp(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Sample the texture with a grid: bilinear, zero padding, align_corners=False (reference §2.8)."""
    return F.grid_sample(texture, uv, mode="bilinear", padding_mode="zeros", align_corners=False)


@torch.library.custom_op("bilayer::warp", mutates_args=())
def opaque_warp(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """``warp`` as one opaque operator for compilers. Inductor otherwise decomposes grid_sample into generated
    gather loops, which ran 6× slower than PyTorch's own CPU kernel here (7.6 against 1.2 ms for a 256-px frame
    on one thread); as a custom operator it stays a call to that kernel."""
    return warp(texture, uv)


@opaque_warp.register_fake
def _(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    return texture.new_empty((uv.shape[0], texture.shape[1], uv.shape[1], uv.shape[2]))


def apply_mask(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """image·m + (−1)·(1 − m): a black background (reference §2.8)."""
    return image * mask - (1 - mask)
