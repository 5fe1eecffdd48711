"""Baking: one avatar's per-frame network as a plain module (paper §A.3, reference §6.4).

The avatar's adaptive parameters become ordinary convolutions, every BatchNorm / AdaBN becomes a per-channel
scale and shift (folded into the preceding convolution where nothing sits between them), spectral norm is
folded away, the three heads become one 6-channel convolution, and the texture is a buffer:

    keypoints (B, 136) → image (B, 3, H, W) = LF + warp(texture), mask (B, 1, H, W)

Three rewrites do the same arithmetic with less work (same outputs up to float rounding; ~1.7× fewer multiply-adds
per frame than the network as trained, see ``executed_macs``):

- a 3×3 convolution after a nearest ×2 upsampling becomes one stride-2 transposed convolution on the
  low-resolution input (``UpsampleConv2d``: 2.25× fewer multiply-adds, no upsampled copy);
- the 1×1 skip convolution runs *before* the skip's upsampling (the two commute), on a quarter of the pixels;
- the generator's final normalisation is folded into the last block's convolutions.

``bake`` returns a *new* module; the model is not modified. This module is the reference form of an avatar's
per-frame network: the backends run copies of it in other layouts and precisions, or wrap it in the faster forms
of ``runtime.forms``, and every one of them is tested against it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..models.bilayer import BilayerModel, identity_grid
from ..nn.adaptive import AdaptiveAffine, AdaptiveBatchNorm2d
from ..nn.blocks import NEGATIVE_SLOPE, ResBlock
from ..nn.image import warp
from ..structures import AvatarState


def _affine(norm: nn.BatchNorm2d, params: AdaptiveAffine | None, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode (Ada)BatchNorm as y = x·scale + shift, per channel."""
    inv = torch.rsqrt(norm.running_var + norm.eps)
    if isinstance(norm, AdaptiveBatchNorm2d):
        gamma, beta = params.gamma[index], params.beta[index]
    else:
        gamma, beta = norm.weight, norm.bias
    scale = gamma * inv
    return scale, beta - norm.running_mean * scale


def _conv(weight: torch.Tensor, bias: torch.Tensor, padding: int) -> nn.Conv2d:
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[-1], padding=padding)
    conv.weight.data.copy_(weight)
    conv.bias.data.copy_(bias)
    return conv


class UpsampleConv2d(nn.Conv2d):
    """``conv3x3(upsample_nearest×2(x))`` (padding 1), by default as one stride-2 transposed convolution.

    Every pixel of the upsampled convolution's output sees only a 2×2 neighbourhood of input pixels, and which
    taps of the 3×3 kernel fall on which of them depends only on the pixel's parity: an even row sees input rows
    (i-1, i) through kernel rows (w0, w1 + w2), an odd row sees (i, i+1) through (w0 + w1, w2); columns alike.
    A transposed convolution with a 4×4 kernel, stride 2 and padding 1 computes exactly that: kernel row k
    reaches output row 2i + k - 1, so k = 3, 1 are the even rows' taps and k = 2, 0 the odd rows'. Work: 16
    instead of 36 multiply-adds per input pixel and channel pair (2.25× fewer) and no upsampled copy of the
    input; the result equals the two-step form up to float rounding (~1e-6).

    It keeps the 3×3 weight too, for its other forms (``two_step_upsampling``: what the ONNX export writes by
    default, since ONNX Runtime's CPU transposed convolution is slower than its upsample + convolution at few
    channels; ``subpixel_upsampling``: the int8 backend's). The 4×4 kernel is derived once, here: a baked module's
    weights are not edited afterwards (a dtype or device move converts both alike).
    """

    # transposed-kernel row k (0..3) as a combination of the 3×3 kernel rows (w0, w1, w2)
    _TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        out_channels, in_channels, kh, kw = weight.shape
        if (kh, kw) != (3, 3):
            raise ValueError(f"UpsampleConv2d folds 3×3 kernels, not {kh}×{kw}.")
        super().__init__(in_channels, out_channels, 3, padding=1)
        self.weight.data.copy_(weight)
        self.bias.data.copy_(bias)
        taps = torch.tensor(self._TAPS, dtype=weight.dtype, device=weight.device)
        # (in, out, 4, 4), the layout conv_transpose2d expects
        self.register_buffer("folded_weight", torch.einsum("ki,lj,oxij->xokl", taps, taps, weight).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.folded_weight, self.bias, stride=2, padding=1)


class TwoStepUpsampleConv2d(nn.Conv2d):
    """An ``UpsampleConv2d`` in the two steps it stands for: nearest ×2 upsampling, then the 3×3 convolution."""

    def __init__(self, layer: UpsampleConv2d) -> None:
        super().__init__(layer.in_channels, layer.out_channels, 3, padding=1, device=layer.weight.device,
                         dtype=layer.weight.dtype)
        self.weight.data.copy_(layer.weight.detach())
        self.bias.data.copy_(layer.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class SubpixelUpsampleConv2d(nn.Module):
    """An ``UpsampleConv2d`` as a plain convolution: one 2×2 convolution (padding 1) computes the four output
    phases (even/odd row × even/odd column) as four channel groups, and an interleave puts them in place.

    Same multiply-adds as the transposed form (16 per input pixel and channel pair, on a one-pixel larger
    grid), but a plain convolution, which int8 recipes quantize and transposed ones they do not (the int8
    backend uses it). On the padded input, window p covers input rows (p-1, p): an even output row 2i needs
    rows (i-1, i) through kernel rows (w0, w1 + w2), i.e. window i; an odd row 2i+1 needs (i, i+1) through
    (w0 + w1, w2), window i+1. So output row r reads window (r + 1) // 2 of phase r % 2, and storing the odd
    phase's group first makes the interleave a reshape of the window grid shifted by one pixel (a crop).
    The groups are the outermost part of the channel index, so in channels-last memory each output pixel's
    channels are read as one contiguous run.
    """

    # phase (0 even, 1 odd) → its 2×2 kernel's rows: the transposed kernel's rows k = 3, 1 (even) and 2, 0 (odd),
    # as combinations of the 3×3 kernel rows in UpsampleConv2d._TAPS
    _PHASE_ROWS = ((3, 1), (2, 0))

    def __init__(self, layer: UpsampleConv2d) -> None:
        super().__init__()
        weight = layer.weight.detach()
        taps = torch.tensor(UpsampleConv2d._TAPS, dtype=weight.dtype, device=weight.device)
        taps = taps[torch.tensor(self._PHASE_ROWS)]  # (phase, row, 3)
        self.out_channels = layer.out_channels
        # group g = 2·(1 - row phase) + (1 - column phase): odd phases first
        kernels = [torch.einsum("ki,lj,oxij->oxkl", taps[1 - a], taps[1 - b], weight) for a in (0, 1) for b in (0, 1)]
        self.conv = nn.Conv2d(layer.in_channels, 4 * layer.out_channels, 2, padding=1).to(weight.device, weight.dtype)
        self.conv.weight.data.copy_(torch.cat(kernels))
        self.conv.bias.data.copy_(layer.bias.detach().repeat(4))
        if layer.weight.is_contiguous(memory_format=torch.channels_last):  # the layout of the module it replaces
            self.conv.to(memory_format=torch.channels_last)

    def phases(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution's output as a view (n, out, h + 1, 2, w + 1, 2): element (i, p, j, q) is pixel
        (2i + p, 2j + q) of the (2h + 2) × (2w + 2) image whose centre, one pixel in from each side, is the
        output (``native.heads_tail`` reads this form directly)."""
        n, _, h, w = x.shape
        y = self.conv(x)  # (n, 4·out, h + 1, w + 1)
        return y.view(n, 2, 2, self.out_channels, h + 1, w + 1).permute(0, 3, 4, 1, 5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        y = self.phases(x).reshape(n, self.out_channels, 2 * h + 2, 2 * w + 2)
        return y[:, :, 1 : 2 * h + 1, 1 : 2 * w + 1]


def _replace_upsampling(module: nn.Module, form) -> nn.Module:
    out = copy.deepcopy(module)
    for name, layer in list(out.named_modules()):
        if isinstance(layer, UpsampleConv2d):
            parent, _, child = name.rpartition(".")
            setattr(out.get_submodule(parent), child, form(layer))
    return out


def subpixel_upsampling(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every ``UpsampleConv2d`` in its sub-pixel form (``SubpixelUpsampleConv2d``)."""
    return _replace_upsampling(module, SubpixelUpsampleConv2d)


def two_step_upsampling(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every ``UpsampleConv2d`` in its two-step form (``TwoStepUpsampleConv2d``)."""
    return _replace_upsampling(module, TwoStepUpsampleConv2d)


class BakedBlock(nn.Module):
    """One residual block with its avatar's adaptive parameters folded in. ``out_affine`` (per-channel scale,
    shift): a normalisation applied to the block's output, folded into conv2 and the skip (which must exist)."""

    def __init__(
        self, block: ResBlock, params, index: int, out_affine: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> None:
        super().__init__()
        self.up, self.efficient = block.resample == "up", block.efficient
        s1, b1 = _affine(block.norm1, params.norm1, index)
        self.register_buffer("scale1", s1[None, :, None, None].clone())
        self.register_buffer("shift1", b1[None, :, None, None].clone())
        s2, b2 = _affine(block.norm2, params.norm2, index)
        w1 = block.conv1.weight * s2[:, None, None, None]  # norm2 directly follows conv1: fold it in
        b1 = block.conv1.bias * s2 + b2
        w2, b2 = block.conv2.weight, block.conv2.bias
        skip_w = params.skip.weight[index][:, :, None, None] if block.has_skip else None
        skip_b = params.skip.bias[index] if block.has_skip else None
        if out_affine is not None:  # (conv2(h) + skip(x))·scale + shift: scale both, shift once
            if not block.has_skip:
                raise ValueError("an output affine can only be folded into a block with a skip convolution.")
            scale, shift = out_affine
            w2, b2 = w2 * scale[:, None, None, None], b2 * scale + shift
            skip_w, skip_b = skip_w * scale[:, None, None, None], skip_b * scale
        # the upsampling (after conv1 when efficient, else before it, where it commutes with the pointwise
        # norm1 and activation) is folded into the convolution that follows it
        up1, up2 = self.up and not self.efficient, self.up and self.efficient
        self.conv1 = UpsampleConv2d(w1, b1) if up1 else _conv(w1, b1, 1)
        self.conv2 = UpsampleConv2d(w2, b2) if up2 else _conv(w2, b2, 1)
        self.skip = _conv(skip_w, skip_b, 0) if block.has_skip else None
        # the activation after conv1, as a module: a runtime that fuses it into conv1 replaces it by Identity
        self.act1 = nn.LeakyReLU(NEGATIVE_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.join(*self.parts(x))

    def join(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The block's output from its two ``parts`` (conv2's output in its plain form)."""
        return h + (F.interpolate(s, scale_factor=2.0, mode="nearest") if self.up else s)

    def parts(self, x: torch.Tensor, phases: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The two terms of the block's output before their sum: conv2's output and the skip path's (at the
        input's resolution; upsampling by nearest neighbour is left to the sum, since a 1×1 convolution commutes
        with it). ``phases``: a sub-pixel conv2 gives its un-interleaved view (``SubpixelUpsampleConv2d.phases``)."""
        h = F.leaky_relu(x * self.scale1 + self.shift1, NEGATIVE_SLOPE)
        h = self.act1(self.conv1(h))
        h = self.conv2.phases(h) if phases and isinstance(self.conv2, SubpixelUpsampleConv2d) else self.conv2(h)
        return h, (self.skip(x) if self.skip is not None else x)


class BakedRenderer(nn.Module):
    """The per-frame network of one avatar: keypoints (B, 136) → (image (B, 3, H, W), mask (B, 1, H, W))."""

    def __init__(self, model: BilayerModel, state: AvatarState, index: int = 0) -> None:
        super().__init__()
        kp = model.keypoints_embedder
        if kp.num_harmonics:
            self.register_buffer("frequencies", kp.frequencies.clone())
        self.num_harmonics, self.pose_dim, self.embed_shape = kp.num_harmonics, kp.pose_dim, kp.out_shape
        self.mlp = nn.ModuleList(_linear(layer) for layer in kp.layers)
        gen, params = model.inference_generator, state.inference_params
        # every block upsamples, so the last one has a skip convolution: the final norm is folded into it and its
        # conv2 (saves a full-resolution multiply and add per frame)
        final = _affine(gen.final_norm, params.final_norm, index)
        last = len(gen.blocks) - 1
        self.blocks = nn.ModuleList(
            BakedBlock(b, p, index, final if i == last else None) for i, (b, p) in enumerate(zip(gen.blocks, params.blocks))
        )
        heads = (gen.head_uv, gen.head_lf, gen.head_mask)
        self.heads = _conv(torch.cat([h.weight for h in heads]), torch.cat([h.bias for h in heads]), 1)
        size = model.config.image_size
        self.register_buffer("texture", state.texture[index : index + 1].detach().clone())
        self.register_buffer("grid", identity_grid(size))

    def forward(self, keypoints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tail(self.blocks[-1](self.trunk(keypoints)))

    def embed(self, keypoints: torch.Tensor) -> torch.Tensor:
        """Keypoints (B, 136) → the first block's input (B, C, 4, 4): the harmonic encoding (if any) and the MLP."""
        h = keypoints
        if self.num_harmonics:
            phase = h[:, :, None] * self.frequencies
            h = torch.cat([phase.sin().flatten(1), phase.cos().flatten(1)], dim=1)
        for i, layer in enumerate(self.mlp):
            h = layer(h)
            if i < len(self.mlp) - 1:
                h = F.leaky_relu(h, NEGATIVE_SLOPE)
        return h.view(-1, *self.embed_shape)

    def trunk(self, keypoints: torch.Tensor) -> torch.Tensor:
        """Keypoints (B, 136) → the last block's input: ``embed`` and every block before the last."""
        h = self.embed(keypoints)
        for block in self.blocks[:-1]:
            h = block(h)
        return h

    def tail(self, features: torch.Tensor, *, bounded=torch.tanh, sample=warp) -> tuple[torch.Tensor, torch.Tensor]:
        """The last block's output (B, C, H, W) → (image, mask): the activation (the final norm is inside the
        last block), the heads convolution, Δuv and LF through ``bounded`` (tanh), the texture warped by
        ``sample`` (``nn.image.warp``) at the identity grid plus Δuv and added to LF, the mask through sigmoid.
        ``bounded`` and ``sample`` take other forms of the same functions (``runtime.forms``)."""
        out = self.heads(F.leaky_relu(features, NEGATIVE_SLOPE))
        # planar (NCHW) before splitting channels: tanh on a channel slice of a channels-last tensor is strided
        # and ran ~40× slower than on a contiguous one (8 ms of a 30-ms frame on the small preset)
        out = out.contiguous()
        limited = bounded(out[:, :5])
        delta_uv, lf, logits = limited[:, :2], limited[:, 2:5], out[:, 5:6]
        uv = self.grid + delta_uv.permute(0, 2, 3, 1)
        texture = self.texture.expand(out.shape[0], -1, -1, -1)
        return lf + sample(texture, uv), torch.sigmoid(logits)


def _linear(layer: nn.Linear) -> nn.Linear:
    out = nn.Linear(layer.in_features, layer.out_features)
    out.weight.data.copy_(layer.weight)
    out.bias.data.copy_(layer.bias)
    return out


@torch.no_grad()
def bake(model: BilayerModel, state: AvatarState, index: int = 0) -> BakedRenderer:
    """A new plain per-frame module for avatar ``index`` of ``state`` (the model must be in eval mode)."""
    if model.training:
        raise ValueError("bake needs the model in eval mode (BatchNorm statistics and spectral norm are folded).")
    if not 0 <= index < state.batch:
        raise ValueError(f"avatar index {index} is out of range for a state of {state.batch} avatar(s).")
    return BakedRenderer(model, state, index).eval()
