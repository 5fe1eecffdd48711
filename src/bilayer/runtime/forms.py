"""Faster forms of a baked renderer, each the same arithmetic as ``bake.BakedRenderer`` up to float rounding.

- ``channels_last(renderer)``: a copy whose images (weights, texture, activations) are channels-last (NHWC), the
  layout in which oneDNN's CPU convolutions run about twice as fast; the (1, H, W, 2) grid stays row-major.
- ``FastRenderer(renderer, tail=…, channels_last=…)`` wraps a renderer (without changing it) and runs its
  forward with channels-last activations and one of three tails: ``pytorch`` (the reference), ``inductor``
  (the warp as one opaque operator and tanh as 2·σ(2x) − 1: inductor's own CPU code for both ran 6× and 3×
  slower) or ``native`` (``runtime.native``: activation, heads convolution, tanh, grid, warp, sum and sigmoid in
  one parallel loop, reading the last block's two terms before their sum).
- ``packed(fast)``: every convolution of a channels-last ``FastRenderer`` on a weight laid out for oneDNN once
  (``PackedConv2d``), each block's first convolution with its activation fused.

The backends (``runtime.backends``) compose these; none of them edits the caller's renderer.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..nn.blocks import NEGATIVE_SLOPE
from ..nn.image import opaque_warp
from . import native
from .bake import BakedBlock, BakedRenderer, UpsampleConv2d

TAILS = ("pytorch", "inductor", "native")


def channels_last(renderer: BakedRenderer) -> BakedRenderer:
    """A copy of ``renderer`` with channels-last weights and texture (results differ from NCHW by float rounding
    only, ~1e-5); the grid stays row-major, since the warp reads it as (x, y) pairs."""
    out = copy.deepcopy(renderer).to(memory_format=torch.channels_last)
    out.grid = out.grid.contiguous()
    return out


def _tanh_by_sigmoid(x: torch.Tensor) -> torch.Tensor:
    # tanh(x) = 2σ(2x) − 1 (equal within 2e-7): inductor's tanh ran 3× slower than this on CPU (1.2 against 0.4 ms
    # per frame at 256 px on one thread)
    return 2 * torch.sigmoid(2 * x) - 1


class FastRenderer(nn.Module):
    """``renderer``'s forward with channels-last activations (``channels_last``) and the ``tail`` form (one of
    ``TAILS``; see the module docstring). ``native`` needs ``runtime.native.available()`` and a CPU renderer whose
    heads are a float32 convolution."""

    def __init__(self, renderer: BakedRenderer, *, tail: str = "pytorch", channels_last: bool = False) -> None:
        super().__init__()
        if tail not in TAILS:
            raise ValueError(f"unknown tail form {tail!r}; valid forms: {', '.join(TAILS)}.")
        self.renderer = renderer
        self.tail_form = tail
        self.channels_last = channels_last
        self.pose_dim = renderer.pose_dim

    def forward(self, keypoints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.renderer
        h = r.embed(keypoints)
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        for block in r.blocks[:-1]:
            h = block(h)
        if self.tail_form == "native":
            # the loop sums the last block's two terms as it reads them (a sub-pixel conv2 as its phases): the
            # block's full-resolution output is never written
            features, skip = r.blocks[-1].parts(h, phases=True)
            return native.heads_tail(features, r.heads.weight, r.heads.bias, NEGATIVE_SLOPE, r.grid, r.texture, skip)
        features = r.blocks[-1](h)
        if self.tail_form == "inductor":
            return r.tail(features, bounded=_tanh_by_sigmoid, sample=opaque_warp)
        return r.tail(features)


class PackedConv2d(nn.Module):
    """A float32 or bfloat16 CPU convolution (or the transposed form of an ``UpsampleConv2d``) run by oneDNN on a
    weight laid out for it once, optionally with the LeakyReLU that follows it fused in (eager and bf16).

    Eager PyTorch hands oneDNN a channels-last weight at every call, and oneDNN re-lays it into its blocked
    format each time (~1 ms per frame on small, by oneDNN's verbose log). Inductor does the same when it freezes
    a graph (the compile backend, which also fuses the pointwise work and gains more); this is its eager
    counterpart. The weight is an opaque oneDNN tensor: this module cannot be saved, moved or exported — the baked
    module it was made from can.
    """

    def __init__(self, conv: nn.Conv2d, input_size: list[int], negative_slope: float | None = None) -> None:
        super().__init__()
        mkldnn = torch.ops.mkldnn
        self.transposed = isinstance(conv, UpsampleConv2d)
        self.bias = conv.bias.detach().clone()
        if self.transposed:  # stride 2, padding 1, 4×4 kernel (see UpsampleConv2d)
            self.geometry = ([1, 1], [0, 0], [2, 2], [1, 1], 1)
            self.weight = mkldnn._reorder_convolution_transpose_weight(
                conv.folded_weight.detach().contiguous(), *self.geometry, input_size)
        else:
            self.geometry = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
            self.weight = mkldnn._reorder_convolution_weight(conv.weight.detach().contiguous(), *self.geometry,
                                                             input_size)
        self.attr, self.scalars = ("leaky_relu", [negative_slope]) if negative_slope is not None else ("none", [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            return torch.ops.mkldnn._convolution_transpose_pointwise(
                x, self.weight, self.bias, *self.geometry, self.attr, self.scalars, "")
        return torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, *self.geometry, self.attr,
                                                       self.scalars, "")


PACKED_OPS = ("_reorder_convolution_weight", "_reorder_convolution_transpose_weight", "_convolution_pointwise",
              "_convolution_transpose_pointwise")


def packable() -> bool:
    """Whether this torch build has oneDNN's inference operators that ``PackedConv2d`` uses."""
    return torch.backends.mkldnn.is_available() and all(hasattr(torch.ops.mkldnn, op) for op in PACKED_OPS)


def packed(fast: FastRenderer) -> FastRenderer:
    """A ``FastRenderer`` like ``fast`` (channels-last, on CPU) over a copy of its renderer whose convolutions are
    ``PackedConv2d``s, each block's conv1 fused with the activation after it; ``fast`` itself is unchanged (without
    oneDNN's operators it is returned as it is). oneDNN picks weight layouts for the input sizes of a batch-1
    frame; other batch sizes run on the same weights."""
    if not (fast.channels_last and packable()):
        return fast
    renderer = copy.deepcopy(fast.renderer)
    out = FastRenderer(renderer, tail=fast.tail_form, channels_last=True)
    # plain and folded-upsampling convolutions (other forms, such as the two-step one, keep their own forward);
    # not the heads when the native loop reads their plain weight
    convs = {name: m for name, m in renderer.named_modules() if type(m) in (nn.Conv2d, UpsampleConv2d)
             and not (name == "heads" and fast.tail_form == "native")}
    sizes: dict[str, list[int]] = {}

    def record(name: str):
        def hook(_, args) -> None:  # returns None: the input goes on unchanged
            sizes.setdefault(name, list(args[0].shape))
        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in convs.items()]
    try:
        with torch.inference_mode():
            out(torch.zeros(1, renderer.pose_dim))
    finally:
        for hook in hooks:
            hook.remove()
    for name, conv in convs.items():
        parent_name, _, child = name.rpartition(".")
        parent = renderer.get_submodule(parent_name)
        fuse = isinstance(parent, BakedBlock) and child == "conv1"
        setattr(parent, child, PackedConv2d(conv, sizes[name], NEGATIVE_SLOPE if fuse else None))
        if fuse:
            parent.act1 = nn.Identity()
    return out
