"""Reduced precision for a baked renderer: its body in bfloat16 or float16, its warp and composition in float32.

Why the warp stays in float32: the sampling grid holds absolute coordinates in [-1, 1]. bfloat16 has 8
significant bits, so near ±1 it can only represent steps of 2⁻⁸ — half a pixel at 256 px — and the high-frequency
layer would visibly jitter; float16 (11 bits) would still cost a few percent of a pixel. Only the network's
*output* Δuv is rounded, which is small and smooth, then added to a float32 grid.

Used by the bf16 and fp16 backends and by the float16 ONNX export.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .bake import BakedRenderer


class Cast(nn.Module):
    """Cast floating-point activations to ``dtype`` (a graph edge between precisions)."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype)

    def extra_repr(self) -> str:
        return str(self.dtype)


def low_precision(renderer: BakedRenderer, dtype: torch.dtype, *, float32_heads: bool = False,
                  float32_mlp: bool = False) -> BakedRenderer:
    """A copy of ``renderer`` whose MLP, residual blocks and heads run in ``dtype``.

    Two casts are inserted at the edges of that body — before the first linear layer (so a harmonic encoding
    is still computed in float32) and after the merged heads — so the unchanged ``BakedRenderer.forward``
    computes tanh, the grid ``identity + Δuv``, the warp of the (float32) texture, ``LF + HF`` and the sigmoid
    in float32. Inputs and outputs stay float32. ``dtype=torch.float32`` gives an exact copy.

    ``float32_heads``: the heads keep their float32 weights and no cast follows them, for the native heads-and-
    tail loop (``native.heads_tail``), which reads the last block's bfloat16 output itself and computes the heads
    in float32; the caller runs it with ``forms.FastRenderer(tail="native")``.

    ``float32_mlp``: the keypoint MLP stays float32 and the cast follows its last layer instead: on CPU its
    single-row products are faster in float32 than in bfloat16.
    """
    low = copy.deepcopy(renderer).eval()
    if float32_mlp:
        low.mlp[-1] = nn.Sequential(low.mlp[-1], Cast(dtype))
    else:
        low.mlp.to(dtype)
        low.mlp[0] = nn.Sequential(Cast(dtype), low.mlp[0])
    low.blocks.to(dtype)
    if not float32_heads:
        low.heads = nn.Sequential(low.heads.to(dtype), Cast(torch.float32))
    return low
