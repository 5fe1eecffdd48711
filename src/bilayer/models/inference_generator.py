"""Inference generator G (paper §3.1–3.2, reference §2.5, §2.8): the per-frame network.

Consumes the pose embedding (B·t, C, 4, 4) and the inference adaptive parameters of B identities; produces
three maps at the image resolution: the warp Δuv (tanh, 2 channels, x then y), the low-frequency layer LF
(tanh, 3 channels) and the mask logits (1 channel). Blocks use AdaBN, adaptive 1×1 skips and *efficient*
upsampling (×2 after conv1); block 0's first norm is a plain affine BatchNorm (the "star").
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn.adaptive import AdaptiveBatchNorm2d
from ..nn.blocks import ResBlock, act
from ..structures import AdaptiveParams


class InferenceGenerator(nn.Module):
    def __init__(
        self, channels: tuple[int, ...], input_channels: int, input_size: int, efficient: bool, eps: float, momentum: float
    ) -> None:
        super().__init__()
        self.input_channels, self.input_size = input_channels, input_size
        ins = (input_channels,) + channels[:-1]
        self.blocks = nn.ModuleList(
            ResBlock(
                cin, cout, norm="ada_bn", resample="up", adaptive_skip=True, efficient=efficient,
                plain_first_norm=(k == 0), spatial_size=input_size * 2**k, eps=eps, momentum=momentum,
            )
            for k, (cin, cout) in enumerate(zip(ins, channels))
        )
        self.final_norm = AdaptiveBatchNorm2d(channels[-1], eps=eps, momentum=momentum)
        self.head_uv = nn.Conv2d(channels[-1], 2, 3, padding=1)
        self.head_lf = nn.Conv2d(channels[-1], 3, 3, padding=1)
        self.head_mask = nn.Conv2d(channels[-1], 1, 3, padding=1)

    def forward(self, pose_embed: torch.Tensor, params: AdaptiveParams) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # pose_embed: (B·t, C, 4, 4) → (Δuv (B·t, 2, H, W), LF (B·t, 3, H, W), mask logits (B·t, 1, H, W))
        expected = (self.input_channels, self.input_size, self.input_size)
        if pose_embed.dim() != 4 or tuple(pose_embed.shape[1:]) != expected:
            raise ValueError(f"InferenceGenerator: pose embedding has shape {tuple(pose_embed.shape)}; expected (B·t, {expected[0]}, {expected[1]}, {expected[2]}).")
        h = pose_embed
        for block, block_params in zip(self.blocks, params.blocks):
            h = block(h, block_params)
        h = act(self.final_norm(h, params.final_norm))
        return torch.tanh(self.head_uv(h)), torch.tanh(self.head_lf(h)), self.head_mask(h)
