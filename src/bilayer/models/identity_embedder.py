"""Identity embedder E (paper §3.1, reference §2.2).

Consumes the source image (masked to a black background) concatenated with its stickman, (B·n, 6, H, W);
produces K identity embeddings e_k, each (B, E_k, S, S) (S = 8), averaged over the n source frames.
e_k is the *features* output (after conv1 and the activation) of decoder block k, not the block output.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn.blocks import ResBlock


class IdentityEmbedder(nn.Module):
    def __init__(self, encoder_channels: tuple[int, ...], embed_channels: tuple[int, ...], image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.embed_channels = embed_channels
        self.stem = nn.Conv2d(6, encoder_channels[0], 3, padding=1)
        self.down = nn.ModuleList(
            ResBlock(cin, cout, resample="down") for cin, cout in zip(encoder_channels[:-1], encoder_channels[1:])
        )
        decoder_in = (encoder_channels[-1],) + embed_channels[:-1]
        last = len(embed_channels) - 1
        # The released code also builds (and computes, then discards) the last block's second half; we omit it.
        self.decoder = nn.ModuleList(
            ResBlock(cin, cout, features_only=(k == last)) for k, (cin, cout) in enumerate(zip(decoder_in, embed_channels))
        )

    def forward(self, inputs: torch.Tensor, num_sources: int) -> list[torch.Tensor]:
        # inputs: (B·n, 6, H, W) = [masked source image, source stickman]
        if inputs.dim() != 4 or inputs.shape[1] != 6 or inputs.shape[-1] != self.image_size:
            raise ValueError(
                f"IdentityEmbedder: input has shape {tuple(inputs.shape)}; expected (B·n, 6, {self.image_size}, "
                f"{self.image_size})."
            )
        h = self.stem(inputs)
        for block in self.down:
            h = block(h)
        h = h.view(-1, num_sources, *h.shape[1:]).mean(dim=1)  # (B, C, S, S): average over source frames
        embeds = []
        for block in self.decoder:
            feats = block.features(h)
            embeds.append(feats)  # e_k: (B, E_k, S, S)
            if not block.features_only:
                h = block.finish(h, feats)
        return embeds
