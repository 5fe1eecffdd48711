"""Conditional relativistic PatchGAN discriminator (paper §3.4, reference §2.9).

Consumes an image concatenated with the target stickman, (N, 6, H, W); produces a realism score map
(N, 1, S, S) (S = 8) and the per-block features used by the feature-matching loss. BatchNorm everywhere
(real and fake share one batch, so the statistics mix both), LReLU, average-pool downsampling.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..nn.blocks import ResBlock, act

if TYPE_CHECKING:
    from ..config import BilayerConfig


class Discriminator(nn.Module):
    def __init__(
        self, image_size: int, num_channels: int, max_channels: int, num_blocks: int, output_size: int,
        eps: float = 1e-7, momentum: float = 1.0,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        num_down = (image_size // output_size).bit_length() - 1
        chans = [min(num_channels * 2**i, max_channels) for i in range(num_down + 1)]
        self.stem = nn.Conv2d(6, chans[0], 3, padding=1)
        blocks = [
            ResBlock(a, b, norm="bn", resample="down", eps=eps, momentum=momentum) for a, b in zip(chans[:-1], chans[1:])
        ]
        blocks += [ResBlock(chans[-1], chans[-1], norm="bn", eps=eps, momentum=momentum) for _ in range(num_blocks - num_down)]
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = nn.BatchNorm2d(chans[-1], eps=eps, momentum=momentum)
        self.score = nn.Conv2d(chans[-1], 1, 1)

    @classmethod
    def from_config(cls, config: "BilayerConfig") -> "Discriminator":
        """The discriminator of ``config``: its ``discriminator`` section, the model's image size, eps and BN
        momentum, with spectral norm on every layer when ``config.spectral_norm`` (as the generators have)."""
        d = config.discriminator
        net = cls(config.image_size, d.num_channels, d.max_channels, d.num_blocks, d.output_size, config.eps,
                  config.bn_momentum)
        if config.spectral_norm:
            from ..nn.spectral import apply_spectral_norm

            apply_spectral_norm(net, config.eps)
        return net

    def forward(self, images: torch.Tensor, stickmen: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # images, stickmen: (N, 3, H, W) → scores (N, 1, S, S), features [(N, C_i, H_i, W_i)] per block
        if images.shape != stickmen.shape or images.dim() != 4 or images.shape[1] != 3 or images.shape[-1] != self.image_size:
            raise ValueError(
                f"Discriminator: images {tuple(images.shape)} and stickmen {tuple(stickmen.shape)} must both be "
                f"(N, 3, {self.image_size}, {self.image_size})."
            )
        h = self.stem(torch.cat([images, stickmen], dim=1))
        features = []
        for block in self.blocks:
            feats = block.features(h)
            features.append(feats)
            h = block.finish(h, feats)
        return self.score(act(self.final_norm(h))), features
