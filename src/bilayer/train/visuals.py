"""Training image grids in the released code's column order (reference §4.9), mapped from [-1, 1] to [0, 1]:
source, source stickman, texture, target, prediction, LF, HF, uv (as RGB with B = −1), ground-truth mask,
predicted mask, target stickman. One row per identity (its first target), at most ``rows`` rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..io import write_image_atomic
from ..losses.objectives import GeneratorTerms


@torch.no_grad()
def visual_grid(batch, terms: GeneratorTerms, model, rows: int = 4) -> torch.Tensor:
    """(3, rows·H, 11·W) float in [0, 1]."""
    b, t = batch.target_keypoints.shape[:2]
    n = min(rows, b)
    first = torch.arange(n, device=terms.image.device) * t  # each identity's first target in the flat batch
    gray = lambda m: m.expand(-1, 3, -1, -1) * 2 - 1  # noqa: E731
    uv = terms.uv[first].permute(0, 3, 1, 2) if terms.uv is not None else torch.zeros_like(terms.image[first][:, :2])
    uv_rgb = torch.cat([uv.clamp(-1, 1), -torch.ones_like(uv[:, :1])], dim=1)
    texture = terms.texture[:n] if terms.texture is not None else torch.zeros_like(terms.image[first])
    columns = [
        batch.source_images[:n, 0], batch.source_stickmen[:n, 0], texture, terms.target_images[first],
        terms.image[first], terms.lf[first], terms.hf[first], uv_rgb, gray(terms.target_masks[first]),
        gray(torch.sigmoid(terms.mask_logits[first])), terms.target_stickmen[first],
    ]
    grid = torch.cat([torch.cat(list(c.float().clamp(-1, 1)), dim=1) for c in columns], dim=2)  # (3, n·H, 11·W)
    return ((grid + 1) / 2).cpu()


def save_grid(grid: torch.Tensor, path: Path) -> None:
    """Write a (3, H, W) [0, 1] image as PNG, atomically."""
    write_image_atomic(path, (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
