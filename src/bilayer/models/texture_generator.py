"""Texture generator G_tex (paper §3.1, reference §2.3).

Consumes the texture adaptive parameters of B identities (from ``TextureProjector``) and produces the
pose-independent high-frequency texture (B, 3, H, W) in [-1, 1]. Its input is a learned constant (1, C, 4, 4).
Blocks: nearest ×2 upsampling before conv1, adaptive SPADE BatchNorm, adaptive 1×1 skips; block 0's first norm is
a plain affine BatchNorm (the paper's "star"). A final SPADE norm, LReLU, a 3×3 head and tanh.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn.adaptive import AdaptiveSpadeBatchNorm2d
from ..nn.blocks import ResBlock, act
from ..structures import AdaptiveParams


class TextureGenerator(nn.Module):
    def __init__(self, channels: tuple[int, ...], input_channels: int, input_size: int, eps: float, momentum: float) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, input_channels, input_size, input_size))
        ins = (input_channels,) + channels[:-1]
        self.blocks = nn.ModuleList(
            ResBlock(
                cin, cout, norm="ada_spade_bn", resample="up", adaptive_skip=True, efficient=False,
                plain_first_norm=(k == 0), spatial_size=input_size * 2**k, eps=eps, momentum=momentum,
            )
            for k, (cin, cout) in enumerate(zip(ins, channels))
        )
        self.image_size = input_size * 2 ** len(channels)
        self.final_norm = AdaptiveSpadeBatchNorm2d(channels[-1], self.image_size, eps=eps, momentum=momentum)
        self.head = nn.Conv2d(channels[-1], 3, 3, padding=1)

    def forward(self, params: AdaptiveParams) -> torch.Tensor:
        if len(params.blocks) != len(self.blocks):
            raise ValueError(f"TextureGenerator: got parameters for {len(params.blocks)} blocks; expected {len(self.blocks)}.")
        h = self.input.expand(params.batch, -1, -1, -1)  # (B, C, 4, 4)
        for block, block_params in zip(self.blocks, params.blocks):
            h = block(h, block_params)
        h = act(self.final_norm(h, params.final_norm))
        return torch.tanh(self.head(h))  # (B, 3, H, W)
