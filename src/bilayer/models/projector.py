"""Adaptive-parameter projectors P_tex and P_inf (paper §3.1 and supplement §A.2, reference §2.6).

Each identity embedding e_k (B, E_k, S, S) is resized by nearest neighbour to s×s (s = 32 for the texture
generator, 16 for the inference generator), reshaped into ``rows_k`` rows — one per output channel of the
generator block it drives, each the concatenation of E_k/rows_k adjacent flattened channels — and fed to
several three-layer linear MLPs without non-linearity (a low-rank factorisation). Each MLP's output row holds
one adaptive layer's weights for that output channel, with the bias in the last column.

Which layer an MLP drives follows the released code, which is shifted relative to the paper's text (reference §2.6,
§8.2 item 6): embedding k drives block k's second norm and skip, and block k+1's first norm (the final norm
for the last k).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.adaptive import AdaptiveAffine, AdaptiveConv, AdaptiveSpade
from ..nn.blocks import BlockParams
from ..structures import AdaptiveParams


class Projector(nn.Module):
    """heads[k][j]: Linear(D_in,k → H_k) → Linear(H_k → H_k) → Linear(H_k → D_out,k,j); outputs (B, rows_k, D_out)."""

    def __init__(
        self,
        embed_channels: tuple[int, ...],
        rows: tuple[int, ...],
        out_features: list[list[int]],
        hidden: tuple[int, ...],
        size: int,
    ) -> None:
        super().__init__()
        self.embed_channels, self.rows, self.size = embed_channels, rows, size
        self.heads = nn.ModuleList()
        for e_k, rows_k, outs, h_k in zip(embed_channels, rows, out_features, hidden):
            d_in = (e_k // rows_k) * size * size
            self.heads.append(
                nn.ModuleList(
                    nn.Sequential(nn.Linear(d_in, h_k), nn.Linear(h_k, h_k), nn.Linear(h_k, d_out)) for d_out in outs
                )
            )

    def project(self, embeds: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        if len(embeds) != len(self.heads):
            raise ValueError(f"projector expects {len(self.heads)} identity embeddings, got {len(embeds)}.")
        out = []
        for k, (e, heads) in enumerate(zip(embeds, self.heads)):
            if e.shape[1] != self.embed_channels[k]:
                raise ValueError(
                    f"identity embedding {k} has {e.shape[1]} channels; the projector expects {self.embed_channels[k]}."
                )
            # Nearest resize (adaptive average pooling to a larger integer multiple is exactly nearest).
            e = F.adaptive_avg_pool2d(e, self.size)  # (B, E_k, s, s)
            rows = e.reshape(e.shape[0], self.rows[k], -1)  # (B, rows_k, E_k/rows_k · s²)
            out.append([head(rows) for head in heads])
        return out


def _conv(pred: torch.Tensor) -> AdaptiveConv:
    """(B, rows, cols + 1) → 1×1 conv weight (B, rows, cols) and bias (B, rows)."""
    return AdaptiveConv(weight=pred[..., :-1], bias=pred[..., -1])


def _affine(pred: torch.Tensor) -> AdaptiveAffine:
    """(B, C, 2) → γ = 1 + column 0, β = column 1 (the bias column)."""
    return AdaptiveAffine(gamma=1.0 + pred[..., 0], beta=pred[..., -1])


class TextureProjector(Projector):
    """Five MLPs per embedding: SPADE γ/β of block k's norm2, the skip of block k, SPADE γ/β of the next norm1."""

    def __init__(self, embed_channels, generator_channels, input_channels, hidden, size) -> None:
        outs = [
            [c + 1, c + 1, cin + 1, c + 1, c + 1] for c, cin in zip(generator_channels, input_channels)
        ]
        super().__init__(embed_channels, generator_channels, outs, hidden, size)

    def forward(self, embeds: list[torch.Tensor]) -> AdaptiveParams:
        preds = self.project(embeds)
        blocks = [BlockParams() for _ in preds]
        final = None
        for k, (g2, b2, skip, g1, b1) in enumerate(preds):
            blocks[k].norm2 = AdaptiveSpade(_conv(g2), _conv(b2))
            blocks[k].skip = _conv(skip)
            nxt = AdaptiveSpade(_conv(g1), _conv(b1))
            if k + 1 < len(blocks):
                blocks[k + 1].norm1 = nxt
            else:
                final = nxt
        return AdaptiveParams(blocks, final)


class InferenceProjector(Projector):
    """Three MLPs per embedding: AdaBN of block k's norm2, the skip of block k, AdaBN of the next norm1."""

    def __init__(self, embed_channels, generator_channels, input_channels, hidden, size) -> None:
        outs = [[2, cin + 1, 2] for cin in input_channels]
        super().__init__(embed_channels, generator_channels, outs, hidden, size)

    def forward(self, embeds: list[torch.Tensor]) -> AdaptiveParams:
        preds = self.project(embeds)
        blocks = [BlockParams() for _ in preds]
        final = None
        for k, (n2, skip, n1) in enumerate(preds):
            blocks[k].norm2 = _affine(n2)
            blocks[k].skip = _conv(skip)
            if k + 1 < len(blocks):
                blocks[k + 1].norm1 = _affine(n1)
            else:
                final = _affine(n1)
        return AdaptiveParams(blocks, final)
