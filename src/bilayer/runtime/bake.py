"""Baking: one avatar's per-frame network as a plain module (paper §A.3, SPEC §6.4).

The avatar's adaptive parameters become ordinary convolutions, every BatchNorm / AdaBN becomes a per-channel
scale and shift (folded into the preceding convolution where nothing sits between them), spectral norm is
folded away, the three heads become one 6-channel convolution, and the texture is a buffer:

    keypoints (B, 136) → image (B, 3, H, W) = LF + warp(texture), mask (B, 1, H, W)

``bake`` returns a *new* module; the model is not modified.
"""

from __future__ import annotations

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


class BakedBlock(nn.Module):
    def __init__(self, block: ResBlock, params, index: int) -> None:
        super().__init__()
        self.up, self.efficient = block.resample == "up", block.efficient
        s1, b1 = _affine(block.norm1, params.norm1, index)
        self.register_buffer("scale1", s1[None, :, None, None].clone())
        self.register_buffer("shift1", b1[None, :, None, None].clone())
        s2, b2 = _affine(block.norm2, params.norm2, index)
        w1 = block.conv1.weight * s2[:, None, None, None]  # norm2 directly follows conv1: fold it in
        self.conv1 = _conv(w1, block.conv1.bias * s2 + b2, 1)
        self.conv2 = _conv(block.conv2.weight, block.conv2.bias, 1)
        skip = params.skip
        self.skip = _conv(skip.weight[index][:, :, None, None], skip.bias[index], 0) if block.has_skip else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(x * self.scale1 + self.shift1, NEGATIVE_SLOPE)
        if self.up and not self.efficient:
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        h = F.leaky_relu(self.conv1(h), NEGATIVE_SLOPE)
        if self.up and self.efficient:
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        h = self.conv2(h)
        s = F.interpolate(x, scale_factor=2.0, mode="nearest") if self.up else x
        return h + (self.skip(s) if self.skip is not None else s)


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
        self.blocks = nn.ModuleList(BakedBlock(b, p, index) for b, p in zip(gen.blocks, params.blocks))
        sf, bf = _affine(gen.final_norm, params.final_norm, index)
        self.register_buffer("final_scale", sf[None, :, None, None].clone())
        self.register_buffer("final_shift", bf[None, :, None, None].clone())
        heads = (gen.head_uv, gen.head_lf, gen.head_mask)
        self.heads = _conv(torch.cat([h.weight for h in heads]), torch.cat([h.bias for h in heads]), 1)
        size = model.config.image_size
        self.register_buffer("texture", state.texture[index : index + 1].detach().clone())
        self.register_buffer("grid", identity_grid(size))
        # Channels-last activations: oneDNN's CPU convolutions run ~2× faster in NHWC (see benchmarks/render.py's
        # ceiling). Backends switch it on together with channels-last weights; export leaves it off.
        self.channels_last = False

    def forward(self, keypoints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = keypoints
        if self.num_harmonics:
            phase = h[:, :, None] * self.frequencies
            h = torch.cat([phase.sin().flatten(1), phase.cos().flatten(1)], dim=1)
        for i, layer in enumerate(self.mlp):
            h = layer(h)
            if i < len(self.mlp) - 1:
                h = F.leaky_relu(h, NEGATIVE_SLOPE)
        h = h.view(-1, *self.embed_shape)
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        for block in self.blocks:
            h = block(h)
        h = F.leaky_relu(h * self.final_scale + self.final_shift, NEGATIVE_SLOPE)
        out = self.heads(h)
        delta_uv, lf, logits = torch.tanh(out[:, :2]), torch.tanh(out[:, 2:5]), out[:, 5:6]
        uv = self.grid + delta_uv.permute(0, 2, 3, 1)
        texture = self.texture.expand(keypoints.shape[0], -1, -1, -1)
        return lf + warp(texture, uv), torch.sigmoid(logits)


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
