"""The training objectives: weighted, named loss terms (paper eq. 2–14, reference §3).

``GeneratorObjective`` returns (total, {name: value}) for the generator side; ``discriminator_objective`` the
same for D. Names follow the released logs: G_ADV, G_FM, G_VGG19, G_VGGFace, G_L1, G_BCE, G_WPR, D_ADV.
Masking (paper §3.4, reference §2.8): ground truth and predictions are shown on a black background using the
*detached predicted* mask; the perceptual loss sees stop-gradient(LF) + HF, so it trains only the HF path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..nn.image import apply_mask
from . import adversarial
from .perceptual import PerceptualLoss
from .pixelwise import WarpSchedule, lf_l1_loss, mask_bce_loss, warp_regulariser


@dataclass(frozen=True)
class LossWeights:
    """Paper defaults: adversarial 0.5, others 10, VGGFace 0.01; the warping regulariser follows a schedule."""

    adversarial: float = 0.5
    feature_matching: float = 10.0
    vgg19: float = 10.0
    vggface: float = 0.01
    lf_l1: float = 10.0
    mask_bce: float = 10.0
    warp: WarpSchedule = field(default_factory=WarpSchedule)


@dataclass
class GeneratorTerms:
    """What the generator objective needs for one batch of B·t rendered targets, all (N, C, H, W)."""

    target_images: torch.Tensor
    target_masks: torch.Tensor  # ground-truth soft masks (for the BCE)
    target_stickmen: torch.Tensor
    image: torch.Tensor  # LF + HF, unmasked
    lf: torch.Tensor
    hf: torch.Tensor
    mask_logits: torch.Tensor  # predicted; its detached sigmoid masks everything (paper §3.4)
    delta_uv: torch.Tensor | None  # for the warping regulariser; None when the warp is not trained
    pixel_terms: bool = True  # G_L1 and G_BCE (constants when the base networks are frozen: enhancer stage)
    uv: torch.Tensor | None = None  # (N, H, W, 2), for visuals
    texture: torch.Tensor | None = None  # (B, 3, H, W), for visuals


class GeneratorObjective(nn.Module):
    def __init__(self, weights: LossWeights, perceptual_layer_weights: str = "released", perceptual_layers: int = 5) -> None:
        super().__init__()
        self.weights = weights
        self.perceptual_options = (perceptual_layer_weights, perceptual_layers)
        self.vgg19 = PerceptualLoss("vgg19_imagenet", perceptual_layer_weights, perceptual_layers)
        self.vggface = PerceptualLoss("vgg16_face", perceptual_layer_weights, perceptual_layers)
        self.requires_grad_(False)  # loss networks are frozen (the released code forgot to, reference §3.1)

    def use_imagenet_vgg16(self, state: dict[str, torch.Tensor], source: str) -> "GeneratorObjective":
        """Compute the ImageNet term (G_VGG19) with an ImageNet VGG16 instead of the paper's VGG19: the same
        layers (relu1_1 … relu5_1, average pooling, ImageNet normalisation) of the 16-layer network, loaded from
        ``state`` (torchvision ``vgg16`` keys). Up to relu3_1 the two networks have the same shape; from relu4_1
        VGG19 has one more convolution per stage."""
        self.vgg19 = PerceptualLoss("vgg16_imagenet", *self.perceptual_options)
        self.vgg19.load_state(state, source)
        self.vgg19.requires_grad_(False)
        return self

    def perceptual_dtype(self, dtype: torch.dtype) -> "GeneratorObjective":
        """Hold the frozen perceptual networks in ``dtype`` (bfloat16: cast once here instead of at every call by
        autocast; the images are cast on the way in and the loss stays float32)."""
        self.vgg19.vgg.to(dtype)
        self.vggface.vgg.to(dtype)
        return self

    def masked(self, terms: GeneratorTerms) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(real, fake, fake with stop-gradient LF, LF), each on a black background (detached predicted mask)."""
        mask = torch.sigmoid(terms.mask_logits).detach()
        return (
            apply_mask(terms.target_images, mask),
            apply_mask(terms.image, mask),
            apply_mask(terms.lf.detach() + terms.hf, mask),
            apply_mask(terms.lf, mask),
        )

    @property
    def uses_discriminator(self) -> bool:
        """Whether any term needs D: with the adversarial and feature-matching weights both 0 it is never run."""
        return bool(self.weights.adversarial or self.weights.feature_matching)

    def forward(
        self, terms: GeneratorTerms, discriminator, iteration: int, gan_scale: float = 1.0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Returns (total G loss, named terms, masked real, masked fake); the caller feeds D with the last two.
        ``gan_scale`` multiplies the adversarial and feature-matching weights (a warm-up schedule). Without
        ``uses_discriminator``, or at ``gan_scale`` 0, D is not called (it may be None) and G_ADV, G_FM are absent."""
        w = self.weights
        real, fake, fake_lf_detached, lf = self.masked(terms)
        named = {}
        if self.uses_discriminator and gan_scale > 0:
            # D is frozen by the caller for this pass: gradients reach only the generators (reference §2.9 pass 2).
            # One batch of real and fake so BatchNorm statistics mix both (paper §3.4, reference §2.9).
            scores, feats = discriminator(torch.cat([real, fake]), torch.cat([terms.target_stickmen] * 2))
            real_scores, fake_scores = scores.chunk(2)
            real_feats, fake_feats = zip(*(f.chunk(2) for f in feats))
            named["G_ADV"] = adversarial.generator_loss(real_scores, fake_scores) * (w.adversarial * gan_scale)
            named["G_FM"] = adversarial.feature_matching_loss(fake_feats, real_feats) * (w.feature_matching * gan_scale)
        if w.vgg19:
            named["G_VGG19"] = self.vgg19(fake_lf_detached, real) * w.vgg19
        if w.vggface:  # a zero weight skips the network entirely (quick presets)
            named["G_VGGFace"] = self.vggface(fake_lf_detached, real) * w.vggface
        if terms.pixel_terms:
            named["G_L1"] = lf_l1_loss(lf, real) * w.lf_l1
            named["G_BCE"] = mask_bce_loss(terms.mask_logits, terms.target_masks) * w.mask_bce
        if terms.delta_uv is not None:  # logged as 0 once the schedule has switched it off, as released
            named["G_WPR"] = warp_regulariser(terms.delta_uv) * w.warp.weight(iteration)
        total = sum(named.values())
        return total, named, real, fake


def discriminator_objective(discriminator, real: torch.Tensor, fake: torch.Tensor, stickmen: torch.Tensor, weight: float):
    """D_ADV on real and *detached* fake images, one batch so BatchNorm sees both (reference §2.9 pass 1)."""
    scores, _ = discriminator(torch.cat([real.detach(), fake.detach()]), torch.cat([stickmen, stickmen]))
    real_scores, fake_scores = scores.chunk(2)
    loss = adversarial.discriminator_loss(real_scores, fake_scores) * weight
    return loss, {"D_ADV": loss}
