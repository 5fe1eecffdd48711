"""Training configuration: one frozen dataclass beside the model's config, stored as JSON in every run.

Presets (``TRAIN_PRESETS``):
* ``synth-quick`` — a small model at 128 px that learns one-shot avatars from SynthHeads on a 2-core CPU in under
  two hours;
* ``person-quick`` — the same networks trained on one person's own video in about an hour;
* ``paper-base`` / ``paper-enhancer`` — the paper's medium model at 256 px, batch 48 / 32 (paper §4),
  which the released scripts ran at 40 (reference §8.2 item 1);
* ``tiny`` — the 64-px test preset (two steps, a checkpoint at every step).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import BilayerConfig, ConfigError, EmbedderConfig, EnhancerConfig, InferenceGeneratorConfig, preset, read_json_file
from ..config import DiscriminatorConfig, JsonConfig, KeypointsEmbedderConfig, TextureGeneratorConfig, check_fields
from ..losses.objectives import LossWeights
from ..losses.pixelwise import WarpSchedule


# every scalar loss weight (all LossWeights fields but the warp schedule), so a new term is validated too
_LOSS_WEIGHTS = tuple(f.name for f in dataclasses.fields(LossWeights) if f.name != "warp")


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _expect(name: str, value: Any, ok: bool, expected: str) -> None:
    """A ConfigError naming the field unless ``ok``."""
    if not ok:
        raise ConfigError(f"training config field {name} is {value!r}; expected {expected}.")


PRECISIONS = ("auto", "fp32", "bf16")
LR_DECAYS = ("none", "cosine")


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    model: BilayerConfig = field(default_factory=BilayerConfig)
    # data
    num_sources: int = 1
    num_targets: int = 1
    sampling: str = "random"  # "random" (paper) or "reference" (the released Weyl sequence)
    workers: int = 2
    # optimisation (reference §4.2): Adam 2e-4, betas (0.5, 0.999), eps 1e-7, no schedule
    batch_size: int = 48  # global batch across processes and accumulation steps
    micro_batch: int = 0  # per-process batch per forward; 0 = batch_size / world size (no accumulation)
    lr: float = 2e-4
    discriminator_lr: float = 0.0  # the discriminator's Adam rate; 0 = lr (paper: both 2e-4)
    # Both rates: constant ("none", the paper), or from iteration lr_decay_start on a cosine that ends at
    # lr_decay_to × the rate at the run's last iteration ("cosine").
    lr_decay: str = "none"
    lr_decay_start: int = 0
    lr_decay_to: float = 0.01
    # The adversarial and feature-matching terms: off before iteration gan_start (D is not run), then their weights
    # rise linearly to the full value over gan_ramp iterations (0: at once). Paper: 0 and 0.
    gan_start: int = 0
    gan_ramp: int = 0
    betas: tuple[float, float] = (0.5, 0.999)
    adam_eps: float = 1e-7
    steps: int = 100_000
    losses: LossWeights = field(default_factory=LossWeights)
    perceptual_layer_weights: str = "released"  # or "paper" (equal weights)
    perceptual_layers: int = 5  # relu1_1 … relu5_1; fewer = a cheaper loss (quick presets)
    # maintenance
    standing_stats_batches: int = 500
    eval_every: int = 1000
    eval_batches: int = 8  # held-out pairs scored per evaluation: 4 × eval_batches
    checkpoint_every: int = 1000
    log_every: int = 10
    visual_every: int = 500
    max_nonfinite: int = 5  # consecutive non-finite losses that stop the run
    seed: int = 0
    # "auto": "bf16" where the device computes bfloat16 natively (a GPU with bf16, a CPU with AVX512-BF16 or AMX),
    # else "fp32"; "bf16": the generators and D under bf16 autocast and the frozen perceptual networks held in
    # bfloat16 (benchmarks/train.py: the same held-out PSNR per step as fp32); "fp32": float32 throughout.
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.sampling not in ("random", "reference"):
            raise ConfigError(f"sampling is {self.sampling!r}; expected 'random' or 'reference'.")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision is {self.precision!r}; expected one of {', '.join(PRECISIONS)}.")
        if self.lr_decay not in LR_DECAYS:
            raise ConfigError(f"lr_decay is {self.lr_decay!r}; expected one of {', '.join(LR_DECAYS)}.")
        if self.perceptual_layer_weights not in ("released", "paper"):
            raise ConfigError(
                f"perceptual_layer_weights is {self.perceptual_layer_weights!r}; expected 'released' or 'paper'."
            )
        ranges = {  # field: (smallest, largest) valid value; 0 turns eval/visual_every off
            "num_sources": (1, None), "num_targets": (1, None), "workers": (0, None), "batch_size": (1, None),
            "micro_batch": (0, None), "steps": (0, None), "perceptual_layers": (1, 5), "standing_stats_batches": (1, None),
            "eval_every": (0, None), "eval_batches": (1, None), "checkpoint_every": (1, None), "log_every": (1, None),
            "visual_every": (0, None), "max_nonfinite": (1, None), "gan_start": (0, None), "gan_ramp": (0, None),
            "lr_decay_start": (0, None),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            expected = f"an integer from {low} to {high}" if high else f"an integer ≥ {low}"
            _expect(name, value, _is_integer(value) and low <= value and not (high and value > high), expected)
        _expect("lr", self.lr, _is_number(self.lr) and self.lr > 0, "a positive number")
        _expect("discriminator_lr", self.discriminator_lr,
                _is_number(self.discriminator_lr) and self.discriminator_lr >= 0, "a number ≥ 0 (0: the same as lr)")
        _expect("lr_decay_to", self.lr_decay_to, _is_number(self.lr_decay_to) and 0 <= self.lr_decay_to <= 1,
                "a number from 0 to 1 (the last iteration's rate as a fraction of lr)")
        losses, warp = self.losses, self.losses.warp
        weights = {**{f"losses.{name}": getattr(losses, name) for name in _LOSS_WEIGHTS},
                   **{f"losses.warp.{name}": getattr(warp, name) for name in ("initial", "decay", "floor")}}
        for name, value in weights.items():
            _expect(name, value, _is_number(value) and value >= 0, "a number ≥ 0")
        _expect("losses.warp.every", warp.every, _is_integer(warp.every) and warp.every >= 0, "an integer ≥ 0")
        # Feature matching with the adversarial weight at 0 is valid here: it needs a trained discriminator from
        # --init, which only the training loop can see (``policy.check_feature_matching``).

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        check_fields(cls, data, "the training config")
        data = dict(data)
        if "model" in data:
            data["model"] = BilayerConfig.from_dict(data["model"])
        if "losses" in data:
            check_fields(LossWeights, data["losses"], "training config section 'losses'")
            losses = dict(data["losses"])
            if "warp" in losses:
                check_fields(WarpSchedule, losses["warp"], "training config section 'losses.warp'")
                losses["warp"] = WarpSchedule(**losses["warp"])
            data["losses"] = LossWeights(**losses)
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        data = read_json_file(path, "training config")
        try:
            return cls.from_dict(data)
        except (ConfigError, TypeError) as exc:  # TypeError: a value of the wrong JSON type, e.g. "lr": "fast"
            raise ConfigError(f"training config {path}: {exc}") from None


def _synth_quick() -> TrainConfig:
    # Sized to learn one-shot avatars from SynthHeads on a 2-core CPU in under two hours (12,000 base iterations,
    # then the texture enhancer): thin networks, a small batch, the perceptual loss up to relu3_1 with equal layer
    # weights and no VGGFace term. Measured choices (benchmarks/learning.py, held-out PSNR): lr 1e-3, because with
    # 2e-4 the identity path barely moves in a thousand steps (held-out colours stay generic, the texture a
    # pose-independent stripe pattern); and no adversarial / feature-matching terms, because at this batch the GAN
    # game lowers held-out quality within such a run (with them, held-out PSNR fell from 20.2 dB at step 400 to
    # 18.0 dB at step 1000 while the training losses kept falling; with a late start and ramp, 22.3 dB and LPIPS
    # 0.27 after 4000 steps, the discriminator's hinge loss at 0); and the rate on a cosine to a hundredth over the
    # last 2,000 iterations, because at the constant rate held-out PSNR stays at 23 ± 0.4 dB from iteration 4000
    # on (23.20 dB mean over the evaluations from 10,500 to 12,000 at the constant rate, 23.68 with the tail, and
    # LPIPS 0.242 against 0.232 at the end). The paper's presets keep every term.
    model = BilayerConfig(
        image_size=128,
        embedder=EmbedderConfig(num_channels=8, max_channels=64),
        texture=TextureGeneratorConfig(num_channels=8, max_channels=64),
        keypoints=KeypointsEmbedderConfig(hidden_channels=128),
        inference=InferenceGeneratorConfig(num_channels=8, max_channels=64),
        discriminator=DiscriminatorConfig(num_channels=8, max_channels=64, num_blocks=5),
        enhancer=EnhancerConfig(num_channels=8, max_channels=16, bottleneck_size=64, num_blocks=2),
    )
    return TrainConfig(
        model=model, batch_size=4, lr=1e-3, lr_decay="cosine", lr_decay_start=10_000, workers=1, steps=12_000,
        standing_stats_batches=10, eval_every=500,
        eval_batches=8, checkpoint_every=500, log_every=50, visual_every=1000, perceptual_layers=3,
        perceptual_layer_weights="paper",
        losses=LossWeights(adversarial=0.0, feature_matching=0.0, vggface=0.0, warp=WarpSchedule(every=50)),
    )


def _person_quick() -> TrainConfig:
    # One person's own video (``bilayer preprocess VIDEO --test-tail 0.2``) at 128 px on a 2-core CPU in about
    # an hour: the synth-quick networks with the paper's perceptual, LF, mask and warp terms, and no adversarial
    # or feature-matching terms; 7000 iterations, the last 2000 on the cosine tail. Measured on a held-out 20 % of
    # a 200-s talking-head clip (benchmarks/person.py, docs/training.md): the tail raised the full model from
    # 22.76 to 23.37 dB (LPIPS 0.087 either way) against the same run at the constant rate; with the adversarial
    # terms starting at iteration 3000 (2000-iteration ramp, discriminator at a tenth of the generator's rate) the
    # held-out PSNR fell from 22.8 dB at 2000 iterations to 21.3 dB at 7000 and LPIPS rose from 0.088 to 0.112
    # against the run without them (constant rate); the discriminator's hinge loss still reached 0 in many steps.
    # The enhancer stage (1000 iterations) trains with the same terms at the constant rate.
    return dataclasses.replace(_synth_quick(), steps=7000, lr_decay_start=5000)


TRAIN_PRESETS: dict[str, TrainConfig] = {
    "synth-quick": _synth_quick(),
    "person-quick": _person_quick(),
    "paper-base": TrainConfig(model=preset("medium"), batch_size=48),
    "paper-enhancer": TrainConfig(model=preset("medium"), batch_size=32),
    "tiny": TrainConfig(
        model=preset("tiny"), batch_size=2, workers=0, steps=2, standing_stats_batches=2, eval_every=0,
        eval_batches=1, checkpoint_every=1, log_every=1, visual_every=0,
    ),
}


def train_config(name_or_path: str) -> TrainConfig:
    """A training preset by name, or a JSON file written by a previous run (``runs/NAME/train_config.json``)."""
    if name_or_path in TRAIN_PRESETS:
        return TRAIN_PRESETS[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        return TrainConfig.load(path)
    raise ConfigError(f"unknown training config {name_or_path!r}; presets: {', '.join(TRAIN_PRESETS)}, or a .json file.")
