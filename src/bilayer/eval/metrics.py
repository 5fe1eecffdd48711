"""Image metrics on tensors: PSNR and SSIM (paper §4 settings: 11×11 Gaussian window, σ = 1.5).

Images are (N, C, H, W) in [-1, 1]; both metrics work on [0, 1] (data range 1, C1 = 0.01², C2 = 0.03²),
which fixes the released SSIM's mismatch of range-1 constants on [-1, 1] data (reference §3.4). Returns one value
per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image (data range 1 after mapping [-1, 1] → [0, 1])."""
    mse = (_unit(pred) - _unit(target)).square().flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image, averaged over channels and valid (unpadded) positions."""
    x, y = _unit(pred).double(), _unit(target).double()
    c = x.shape[1]
    w = _gaussian_window(window, sigma, c, x.device, x.dtype)
    blur = lambda t: F.conv2d(t, w, groups=c)  # noqa: E731
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1).float()
