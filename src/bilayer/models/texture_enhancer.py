"""Texture enhancer G_upd and its unrolled learned gradient descent (paper §3.3, reference §2.10, §5.3).

G_upd consumes [texture X_m, guiding gradient g] (B·n, 6, H, W) and produces the update ΔX = tanh(·)
(B, 3, H, W), averaged over the n source frames inside its bottleneck. The procedure runs M steps:
    g   = ∂L_upd/∂Y at Y = X_m (a detached leaf), L_upd = ½Σ(x_s − mask(stopgrad(LF_s) + warp(Y, uv_s)))²
    X_{m+1} = X_m + ΔX(X_m, g)
g is always detached; X_m keeps its graph, so a loss on X_M trains G_upd through all M copies.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn.blocks import ResBlock, act
from ..nn.image import apply_mask, warp


class TextureEnhancer(nn.Module):
    def __init__(self, image_size: int, num_channels: int, max_channels: int, bottleneck_size: int, num_blocks: int) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError("TextureEnhancer needs at least one bottleneck block (it averages the source frames there).")
        num_down = (image_size // bottleneck_size).bit_length() - 1
        chans = [min(num_channels * 2**i, max_channels) for i in range(num_down + 1)]
        self.stem = nn.Conv2d(6, chans[0], 3, padding=1)
        self.down = nn.ModuleList(ResBlock(a, b, resample="down") for a, b in zip(chans[:-1], chans[1:]))
        self.bottleneck = nn.ModuleList(ResBlock(chans[-1], chans[-1]) for _ in range(num_blocks))
        self.up = nn.ModuleList(ResBlock(b, a, resample="up") for a, b in reversed(list(zip(chans[:-1], chans[1:]))))
        self.head = nn.Conv2d(chans[0], 3, 3, padding=1)

    def forward(self, texture: torch.Tensor, gradient: torch.Tensor, num_sources: int) -> torch.Tensor:
        # texture, gradient: (B·n, 3, H, W) → ΔX (B, 3, H, W) in [-1, 1]
        h = self.stem(torch.cat([texture, gradient], dim=1))
        for block in self.down:
            h = block(h)
        for block in self.bottleneck:
            h = block(h)
        h = h.view(-1, num_sources, *h.shape[1:]).mean(dim=1)  # average over the n source frames
        for block in self.up:
            h = block(h)
        return torch.tanh(self.head(act(h)))

    def unroll(
        self,
        texture: torch.Tensor,
        source_images: torch.Tensor,
        source_uv: torch.Tensor,
        source_lf: torch.Tensor,
        source_masks: torch.Tensor,
        steps: int,
        guiding_loss: str = "sse",
    ) -> torch.Tensor:
        """M learned gradient-descent steps on the texture.

        texture (B, 3, H, W); source_images, source_lf (B, n, 3, H, W); source_uv (B, n, H, W, 2);
        source_masks (B, n, 1, H, W) — the *predicted* source masks. Returns the enhanced texture (B, 3, H, W).
        """
        b, n = source_images.shape[:2]
        flat = lambda x: x.reshape(b * n, *x.shape[2:])  # noqa: E731
        # Inputs are detached (released code: enh_detach_inputs); the source is masked by its predicted mask.
        uv, lf, mask = flat(source_uv).detach(), flat(source_lf).detach(), flat(source_masks).detach()
        target = apply_mask(flat(source_images).detach(), mask)
        x = texture.detach()
        for _ in range(steps):
            with torch.enable_grad():  # the guiding gradient is needed even under no_grad
                y = x.detach().repeat_interleave(n, dim=0).requires_grad_(True)
                recon = apply_mask(lf + warp(y, uv), mask)
                diff = target - recon
                loss = 0.5 * diff.square().sum() if guiding_loss == "sse" else diff.abs().sum()
                (gradient,) = torch.autograd.grad(loss, y)
            x = x + self(x.repeat_interleave(n, dim=0), gradient.detach(), n)
        return x
