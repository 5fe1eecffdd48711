"""Typed tensor bundles passed between the networks and through training (no string-keyed dicts): adaptive
parameters, an avatar's state, a render, and the dataset's samples and batches."""

from __future__ import annotations

from collections.abc import Sequence
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


@dataclass
class Sample:
    """One dataset item: n source and t target frames of one video.

    source_images (n, 3, H, W) in [-1, 1]; source_keypoints (n, 136) in [-1, 1] (reference §1.2);
    source_masks (n, 1, H, W) in [0, 1], or None when the dataset reads no masks; source_stickmen (n, 3, H, W)
    in [-1, 1] (background −0.992, reference §1.5); the same for the t targets. ``index`` is the video's index in
    ``dataset.videos``; ``video`` its PERSON/VIDEO name; ``*_frames`` the SEQ/FRAME stems actually read (after
    any corrupt-frame replacement); ``flipped`` whether the flip augmentation was applied.
    """

    source_images: torch.Tensor
    source_keypoints: torch.Tensor
    source_masks: torch.Tensor | None
    source_stickmen: torch.Tensor
    target_images: torch.Tensor
    target_keypoints: torch.Tensor
    target_masks: torch.Tensor | None
    target_stickmen: torch.Tensor
    index: int
    video: str
    source_frames: tuple[str, ...]
    target_frames: tuple[str, ...]
    flipped: bool = False


_TENSOR_FIELDS = (
    "source_images", "source_keypoints", "source_masks", "source_stickmen",
    "target_images", "target_keypoints", "target_masks", "target_stickmen",
)


@dataclass
class SampleBatch:
    """B samples stacked by ``collate``: every tensor of ``Sample`` gains a leading batch dimension,
    e.g. source_images (B, n, 3, H, W), target_keypoints (B, t, 136); index (B,) long; flipped (B,) bool."""

    source_images: torch.Tensor
    source_keypoints: torch.Tensor
    source_masks: torch.Tensor | None
    source_stickmen: torch.Tensor
    target_images: torch.Tensor
    target_keypoints: torch.Tensor
    target_masks: torch.Tensor | None
    target_stickmen: torch.Tensor
    index: torch.Tensor
    video: list[str]
    source_frames: list[tuple[str, ...]]
    target_frames: list[tuple[str, ...]]
    flipped: torch.Tensor

    @property
    def batch(self) -> int:
        return self.source_images.shape[0]

    def _map(self, fn) -> "SampleBatch":
        changed = {name: fn(getattr(self, name)) for name in (*_TENSOR_FIELDS, "index", "flipped")
                   if getattr(self, name) is not None}
        return SampleBatch(**{**self.__dict__, **changed})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "SampleBatch":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "SampleBatch":
        """Called by ``DataLoader(pin_memory=True)``."""
        return self._map(lambda t: t.pin_memory())


def collate(samples: Sequence[Sample]) -> SampleBatch:
    """Stack samples into a ``SampleBatch`` (pass as ``DataLoader(collate_fn=collate)``)."""
    if not samples:
        raise ValueError("collate needs at least one sample.")
    stacked: dict[str, torch.Tensor | None] = {}
    for name in _TENSOR_FIELDS:
        values = [getattr(s, name) for s in samples]
        if all(v is None for v in values):
            stacked[name] = None
        elif any(v is None for v in values):
            raise ValueError(f"cannot collate samples where only some have {name}.")
        else:
            stacked[name] = torch.stack(values)
    return SampleBatch(
        **stacked,
        index=torch.tensor([s.index for s in samples], dtype=torch.long),
        video=[s.video for s in samples],
        source_frames=[s.source_frames for s in samples],
        target_frames=[s.target_frames for s in samples],
        flipped=torch.tensor([s.flipped for s in samples], dtype=torch.bool),
    )
