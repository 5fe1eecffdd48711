"""Perceptual loss on VGG19 (ImageNet) and VGGFace (VGG16) features (paper eq. 4, reference §3.1).

Σ_l w_l · mean|φ_l(fake) − φ_l(real)| with the released layer weights (1/32, 1/16, 1/8, 1/4, 1) at relu1_1 …
relu5_1, average pooling instead of max pooling, and each network's own input normalisation. The paper's
variant averages the layers with equal weights (``layer_weights="paper"``). Real features carry no gradient.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .vgg import VGGFeatures, load_foreign_state

RELEASED_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
NETWORKS = {
    # name: (arch, relu*_1 indices in torchvision's features)
    "vgg19_imagenet": ("vgg19", (1, 6, 11, 20, 29)),
    "vgg16_imagenet": ("vgg16", (1, 6, 11, 18, 25)),  # in place of VGG19 when only ImageNet VGG16 weights exist
    "vgg16_face": ("vgg16", (1, 6, 11, 18, 25)),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN = (103.939, 116.779, 123.680)  # applied to RGB channels in this order, as released (no BGR swap)


class PerceptualLoss(nn.Module):
    def __init__(self, network: str, layer_weights: str | tuple[float, ...] = "released", num_layers: int = 5) -> None:
        super().__init__()
        if network not in NETWORKS:
            raise ValueError(f"unknown perceptual network {network!r}; expected one of {sorted(NETWORKS)}.")
        arch, taps = NETWORKS[network]
        if not 1 <= num_layers <= len(taps):
            raise ValueError(f"num_layers must be 1 to {len(taps)}, got {num_layers}.")
        taps = taps[:num_layers]  # fewer layers: a cheaper loss for quick runs (the network is cut after the last)
        self.network = network
        self.vgg = VGGFeatures(arch, taps, avg_pool=True)
        if layer_weights == "released":
            weights = RELEASED_LAYER_WEIGHTS[: len(taps)]
        elif layer_weights == "paper":
            weights = (1.0 / len(taps),) * len(taps)
        else:
            weights = tuple(layer_weights)
        if len(weights) != len(taps):
            raise ValueError(f"{network} needs {len(taps)} layer weights, got {len(weights)}.")
        self.layer_weights = weights
        if network.endswith("_imagenet"):
            mean = torch.tensor(IMAGENET_MEAN) * 2 - 1  # x in [-1, 1]: ((x+1)/2 − m)/s = (x − (2m−1)) / 2s
            std = torch.tensor(IMAGENET_STD) * 2
        else:
            mean = torch.tensor(CAFFE_MEAN) / 127.5 - 1  # (x+1)·127.5 − c = (x − (c/127.5 − 1)) · 127.5
            std = torch.full((3,), 1 / 127.5)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)
        self.pretrained = False

    def load_weights(self, path: str | Path) -> None:
        """Load torchvision-format VGG weights from a local file (read with weights_only=True)."""
        self.load_state(load_foreign_state(path), str(path))

    def load_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load a torchvision-format VGG state dict (``features.*`` tensors; ``source`` names it in errors)."""
        dtype = self.dtype
        self.vgg.float().load_torchvision_state(state, source)
        self.vgg.to(dtype)
        self.pretrained = True

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vgg.parameters()).dtype

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.vgg(((x - self.mean) / self.std).to(self.dtype))

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        # fake, real: (N, 3, H, W) in [-1, 1]. The network may be held in bfloat16 (``.to(torch.bfloat16)``; it is
        # frozen, so its weights are cast once, not at every call): the images are cast on the way in, and each
        # layer's mean absolute difference (accumulated in float32) is returned as a float32 loss.
        with torch.no_grad():
            real_feats = self.features(real)
        fake_feats = self.features(fake)
        terms = (F.l1_loss(f, r) for f, r in zip(fake_feats, real_feats))
        return sum(w * t.to(torch.promote_types(t.dtype, torch.float32)) for w, t in zip(self.layer_weights, terms))
