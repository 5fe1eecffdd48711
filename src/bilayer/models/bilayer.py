"""The bi-layer model: the paper's networks wired in paper order (Fig. 2). Read this file top to bottom.

    personalize (once per avatar)                       render (once per frame)
    source image·mask ⊕ stickman ─► IdentityEmbedder      target keypoints (B, t, 136)
        ├─► TextureProjector ─► TextureGenerator ─► texture     └─► KeypointsEmbedder ─► pose embed
        └─► InferenceProjector ─► inference params ──────────────► InferenceGenerator ─► Δuv, LF, mask logits
    enhance (optional, once per avatar): TextureEnhancer,    image = LF + warp(texture, identity grid + Δuv)
    M unrolled learned gradient steps on the texture

The discriminator is not part of this module: training owns it (see ``models/discriminator.py``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from ..config import BilayerConfig
from ..nn.spectral import apply_spectral_norm
from ..structures import AdaptiveParams, AvatarState, Render
from ._checks import check_finite, check_shape
from .identity_embedder import IdentityEmbedder
from .inference_generator import InferenceGenerator
from .keypoints_embedder import KeypointsEmbedder
from .projector import InferenceProjector, TextureProjector
from ..nn.image import apply_mask, warp
from .texture_enhancer import TextureEnhancer
from .texture_generator import TextureGenerator


def identity_grid(size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Pixel-centre sampling grid (1, H, W, 2), x then y, values −1 + (2i + 1)/H (reference §2.8)."""
    coords = (torch.arange(size, device=device, dtype=torch.float64) * 2 + 1) / size - 1
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([x, y], dim=-1)[None].to(dtype)


class BilayerModel(nn.Module):
    def __init__(self, config: BilayerConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        eps, momentum = c.eps, c.bn_momentum
        embeds = c.embed_channels
        k_blocks = c.num_generator_blocks

        self.identity_embedder = IdentityEmbedder(c.embedder_encoder_channels, embeds, c.image_size)

        tex = c.texture_channels
        self.texture_projector = TextureProjector(
            embeds, tex, (c.texture.max_channels,) + tex[:-1], c.projector_hidden, c.texture.projection_size
        )
        self.texture_generator = TextureGenerator(tex, c.texture.max_channels, c.texture.input_size, eps, momentum)

        inf = c.inference_channels
        self.keypoints_embedder = KeypointsEmbedder(
            c.pose_dim, c.keypoints.hidden_channels, c.keypoints.num_layers, c.keypoints.num_harmonics,
            c.inference.max_channels, c.inference.input_size,
        )
        self.inference_projector = InferenceProjector(
            embeds, inf, (c.inference.max_channels,) + inf[:-1], c.projector_hidden, c.inference.projection_size
        )
        self.inference_generator = InferenceGenerator(
            inf, c.inference.max_channels, c.inference.input_size, c.inference.efficient_upsampling, eps, momentum
        )

        e = c.enhancer
        self.texture_enhancer = (
            None if e is None
            else TextureEnhancer(c.image_size, e.num_channels, e.max_channels, e.bottleneck_size, e.num_blocks)
        )
        assert len(embeds) == k_blocks
        if c.spectral_norm:
            apply_spectral_norm(self, eps)
        self.register_buffer("grid", identity_grid(c.image_size), persistent=False)

    # ------------------------------------------------------------------------------------ checks
    def _check_frames(self, images, keypoints, masks, where: str) -> tuple[int, int]:
        size, pose = self.config.image_size, self.config.pose_dim
        check_shape("keypoints", keypoints, (None, None, pose), where)
        check_finite("keypoints", keypoints, where)
        b, n = keypoints.shape[:2]
        check_shape("images", images, (b, n, 3, size, size), where)
        check_shape("masks", masks, (b, n, 1, size, size), where)
        return b, n

    # ------------------------------------------------------------------------- once per avatar
    def identity_embeds(
        self,
        source_images: torch.Tensor,
        source_keypoints: torch.Tensor,
        source_masks: torch.Tensor,
        source_stickmen: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """The K identity embeddings (B, E_k, 8, 8) of B identities from n source frames each."""
        b, n = self._check_frames(source_images, source_keypoints, source_masks, "personalize")
        if source_stickmen is None:
            from ..data.stickman import draw_stickmen

            source_stickmen = draw_stickmen(source_keypoints, self.config.image_size).to(source_images.dtype)
        check_shape("stickmen", source_stickmen, tuple(source_images.shape), "personalize")
        # The embedder sees the source on a black background (ground-truth mask), next to its stickman.
        images = apply_mask(source_images, source_masks) if self.config.embedder.apply_masks else source_images
        inputs = torch.cat([images, source_stickmen], dim=2).flatten(0, 1)  # (B·n, 6, H, W)
        return self.identity_embedder(inputs, n)  # K × (B, E_k, 8, 8)

    def personalize(
        self,
        source_images: torch.Tensor,
        source_keypoints: torch.Tensor,
        source_masks: torch.Tensor,
        source_stickmen: torch.Tensor | None = None,
    ) -> AvatarState:
        """Make B avatars, each from n source frames.

        source_images (B, n, 3, H, W) in [-1, 1]; source_keypoints (B, n, 136) normalised to [-1, 1];
        source_masks (B, n, 1, H, W) in [0, 1]; source_stickmen (B, n, 3, H, W), drawn from the keypoints
        when omitted.
        """
        embeds = self.identity_embeds(source_images, source_keypoints, source_masks, source_stickmen)
        if self.config.texture_layer:
            texture = self.texture_generator(self.texture_projector(embeds))  # (B, 3, H, W)
        else:  # the LF-only ablation: no high-frequency layer
            texture = source_images.new_zeros(source_images.shape[0], 3, *source_images.shape[-2:])
        inference_params = self.inference_projector(embeds)
        return AvatarState(
            texture=texture,
            inference_params=inference_params,
            source_images=source_images,
            source_keypoints=source_keypoints,
            source_masks=source_masks,
        )

    def enhance(self, state: AvatarState, steps: int | None = None) -> AvatarState:
        """Refine the texture with the texture enhancer: M learned gradient steps (paper §3.3)."""
        if self.texture_enhancer is None:
            raise ValueError("this model has no texture enhancer (config.enhancer is None); cannot enhance.")
        steps = self.config.enhancer.steps if steps is None else steps
        # The inference generator on the source pose gives the warp and LF that reconstruct the source.
        source = self.render_layers(state.inference_params, state.source_keypoints)
        base = state.texture if state.base_texture is None else state.base_texture
        texture = self.texture_enhancer.unroll(
            base, state.source_images, source.uv, source.lf, source.mask, steps, self.config.enhancer.guiding_loss
        )
        return dataclasses.replace(state, texture=texture, base_texture=base, enhanced=True)

    def params_skeleton(self) -> AdaptiveParams:
        """One avatar's inference-generator ``AdaptiveParams``, all zeros (float32, CPU): the structure and shapes
        ``personalize`` produces, taken from the projector itself so that it cannot disagree with it."""
        c = self.config
        size, device = c.embedder.output_size, self.grid.device
        with torch.no_grad():
            params = self.inference_projector([torch.zeros(1, e, size, size, device=device) for e in c.embed_channels])
        return params.map(lambda t: torch.zeros(t.shape, dtype=torch.float32))

    # -------------------------------------------------------------------------- once per frame
    def render_layers(self, params: AdaptiveParams, keypoints: torch.Tensor) -> Render:
        """The texture-free part of a frame: Δuv → uv, LF, mask; ``image`` and ``hf`` are left as LF and 0."""
        pose = self.config.pose_dim
        check_shape("target keypoints", keypoints, (params.batch, None, pose), "render")
        check_finite("target keypoints", keypoints, "render")
        b, t = keypoints.shape[:2]
        pose_embed = self.keypoints_embedder(keypoints.reshape(b * t, pose))  # (B·t, C, 4, 4)
        delta_uv, lf, logits = self.inference_generator(pose_embed, params)
        uv = self.grid.to(delta_uv.dtype) + delta_uv.permute(0, 2, 3, 1)  # (B·t, H, W, 2)
        unflat = lambda x: x.view(b, t, *x.shape[1:])  # noqa: E731
        lf = unflat(lf)
        return Render(
            image=lf, lf=lf, hf=torch.zeros_like(lf), uv=unflat(uv),
            mask=torch.sigmoid(unflat(logits)), mask_logits=unflat(logits),
        )

    def render(self, state: AvatarState, target_keypoints: torch.Tensor) -> Render:
        """Render t frames per avatar: target_keypoints (B, t, 136) → Render with (B, t, ...) tensors."""
        layers = self.render_layers(state.inference_params, target_keypoints)
        b, t = target_keypoints.shape[:2]
        texture = state.texture.repeat_interleave(t, dim=0)  # (B·t, 3, H, W)
        hf = warp(texture, layers.uv.flatten(0, 1)).view(b, t, *texture.shape[1:])
        return dataclasses.replace(layers, image=layers.lf + hf, hf=hf)

    def forward(self, source_images, source_keypoints, source_masks, target_keypoints, enhance: bool = False) -> Render:
        state = self.personalize(source_images, source_keypoints, source_masks)
        if enhance:
            state = self.enhance(state)
        return self.render(state, target_keypoints)

    # ----------------------------------------------------------------------------------- weights
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (atomically)."""
        from ..weights import save_pretrained

        return save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> "BilayerModel":
        """Build the model from ``directory/config.json`` and load ``model.safetensors`` with shape checks."""
        from ..weights import load_pretrained

        return load_pretrained(cls, directory, map_location)
