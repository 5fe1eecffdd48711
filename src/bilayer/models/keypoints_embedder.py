"""Keypoints embedder (paper §3.1, reference §2.4): the per-frame MLP turning 136 normalised keypoint coordinates
into the inference generator's input, (N, 136) → (N, C, 4, 4). Optional harmonic encoding (reference §2.4):
all sines of c·π·2^i (coordinate-major, frequency-minor) followed by all cosines."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..nn.blocks import act


class KeypointsEmbedder(nn.Module):
    def __init__(
        self, pose_dim: int, hidden: int, num_layers: int, num_harmonics: int, out_channels: int, out_size: int
    ) -> None:
        super().__init__()
        self.pose_dim, self.num_harmonics = pose_dim, num_harmonics
        self.out_shape = (out_channels, out_size, out_size)
        freqs = torch.tensor([math.pi * 2.0**i for i in range(num_harmonics)]).view(1, 1, -1)
        self.register_buffer("frequencies", freqs, persistent=False)
        in_dim = pose_dim * 2 * num_harmonics if num_harmonics else pose_dim
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_channels * out_size * out_size]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def encode(self, keypoints: torch.Tensor) -> torch.Tensor:
        if not self.num_harmonics:
            return keypoints
        phase = keypoints[:, :, None] * self.frequencies  # (N, 136, F)
        return torch.cat([phase.sin().flatten(1), phase.cos().flatten(1)], dim=1)

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        # keypoints: (N, 136) in [-1, 1] → pose embedding (N, C, 4, 4)
        if keypoints.dim() != 2 or keypoints.shape[1] != self.pose_dim:
            raise ValueError(f"KeypointsEmbedder: keypoints have shape {tuple(keypoints.shape)}; expected (N, {self.pose_dim}).")
        h = self.encode(keypoints)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = act(h)
        return h.view(-1, *self.out_shape)
