"""Typed tensor bundles passed between the networks (no string-keyed dicts; DESIGN principle 1)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from .nn.adaptive import AdaptiveAffine, AdaptiveSpade
from .nn.blocks import BlockParams
from .nn.image import apply_mask


@dataclass
class AdaptiveParams:
    """Everything a generator needs from the projector for B identities: one ``BlockParams`` per upsampling
    block and the parameters of the final normalisation."""

    blocks: list[BlockParams]
    final_norm: AdaptiveAffine | AdaptiveSpade

    @property
    def batch(self) -> int:
        norm = self.final_norm
        return (norm.gamma if isinstance(norm, AdaptiveAffine) else norm.gamma.weight).shape[0]

    def named_tensors(self, prefix: str = "params") -> list[tuple[str, torch.Tensor]]:
        """(field path, tensor) pairs in a fixed order (the projector's assignment order, reference §2.6), e.g.
        ``params.blocks.0.norm2.gamma``, ``params.final_norm.beta``."""
        out: list[tuple[str, torch.Tensor]] = []

        def visit(item, name: str) -> None:
            if item is None:
                return
            if isinstance(item, torch.Tensor):
                out.append((name, item))
                return
            for f in fields(item):
                visit(getattr(item, f.name), f"{name}.{f.name}")

        for k, block in enumerate(self.blocks):
            visit(block, f"{prefix}.blocks.{k}")
        visit(self.final_norm, f"{prefix}.final_norm")
        return out

    def tensors(self) -> list[torch.Tensor]:
        """All tensors in the order of ``named_tensors``."""
        return [t for _, t in self.named_tensors()]

    def map(self, fn) -> "AdaptiveParams":
        """A copy with ``fn`` applied to every tensor (e.g. ``.detach()``, ``.to(device)``, select identities)."""

        def apply(item):
            if item is None:
                return None
            if isinstance(item, torch.Tensor):
                return fn(item)
            return replace(item, **{f.name: apply(getattr(item, f.name)) for f in fields(item)})

        return AdaptiveParams([apply(b) for b in self.blocks], apply(self.final_norm))


@dataclass
class AvatarState:
    """Everything computed once per avatar (B identities), reused for every rendered frame.

    texture: (B, 3, H, W) high-frequency texture in [-1, 1] (enhanced if ``enhanced``).
    inference_params: the inference generator's adaptive parameters.
    source_images (B, n, 3, H, W), source_keypoints (B, n, 136), source_masks (B, n, 1, H, W): what the
    avatar was made from; the texture enhancer reads them.
    """

    texture: torch.Tensor
    inference_params: AdaptiveParams
    source_images: torch.Tensor
    source_keypoints: torch.Tensor
    source_masks: torch.Tensor
    base_texture: torch.Tensor | None = None  # the generator's texture before enhancement
    enhanced: bool = False

    @property
    def batch(self) -> int:
        return self.texture.shape[0]


@dataclass
class Render:
    """One rendered frame per (identity, target): tensors are (B, t, ...).

    image = lf + hf (not clamped, not masked); mask = sigmoid(mask_logits); uv is the sampling grid
    (B, t, H, W, 2) in grid_sample coordinates, x then y.
    """

    image: torch.Tensor
    lf: torch.Tensor
    hf: torch.Tensor
    uv: torch.Tensor
    mask: torch.Tensor
    mask_logits: torch.Tensor

    def masked(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The image on a black (-1) background: image·m + (-1)·(1 - m) (reference §2.8)."""
        return apply_mask(self.image, self.mask if mask is None else mask)
