"""Training configuration: one frozen dataclass beside the model's config, stored as JSON in every run.

Presets (``TRAIN_PRESETS``):
* ``synth-quick`` — a small model at 128 px that learns on SynthHeads on a 2-core CPU in minutes;
* ``paper-base`` / ``paper-enhancer`` — the paper's medium model at 256 px, batch 48 / 32 (paper §4),
  which the released scripts ran at 40 (SPEC §8.2 item 1).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import BilayerConfig, ConfigError, EmbedderConfig, EnhancerConfig, InferenceGeneratorConfig, preset, read_json_file
from ..config import DiscriminatorConfig, KeypointsEmbedderConfig, TextureGeneratorConfig
from ..losses.objectives import LossWeights
from ..losses.pixelwise import WarpSchedule

STAGES = ("base", "enhancer")


@dataclass(frozen=True)
class TrainConfig:
    model: BilayerConfig = field(default_factory=BilayerConfig)
    # data
    num_sources: int = 1
    num_targets: int = 1
    sampling: str = "random"  # "random" (paper) or "reference" (the released Weyl sequence)
    workers: int = 2
    # optimisation (SPEC §4.2): Adam 2e-4, betas (0.5, 0.999), eps 1e-7, no schedule
    batch_size: int = 48  # global batch across processes and accumulation steps
    micro_batch: int = 0  # per-process batch per forward; 0 = batch_size / world size (no accumulation)
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    adam_eps: float = 1e-7
    steps: int = 100_000
    losses: LossWeights = field(default_factory=LossWeights)
    perceptual_layer_weights: str = "released"  # or "paper" (equal weights)
    perceptual_layers: int = 5  # relu1_1 … relu5_1; fewer = a cheaper loss (quick presets)
    # maintenance
    standing_stats_batches: int = 500
    eval_every: int = 1000
    eval_batches: int = 8
    checkpoint_every: int = 1000
    log_every: int = 10
    visual_every: int = 500
    max_nonfinite: int = 5  # consecutive non-finite losses that stop the run
    seed: int = 0
    precision: str = "fp32"  # "fp32" or "bf16" (autocast; the paper found reduced precision unstable)

    def __post_init__(self) -> None:
        if self.sampling not in ("random", "reference"):
            raise ConfigError(f"sampling is {self.sampling!r}; expected 'random' or 'reference'.")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision is {self.precision!r}; expected 'fp32' or 'bf16'.")
        if self.batch_size < 1 or self.steps < 0:
            raise ConfigError("batch_size must be positive and steps non-negative.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training config field(s) {unknown}; valid: {sorted(known)}.")
        if "model" in data:
            data["model"] = BilayerConfig.from_dict(data["model"])
        if "losses" in data:
            losses = dict(data["losses"])
            if "warp" in losses:
                losses["warp"] = WarpSchedule(**losses["warp"])
            data["losses"] = LossWeights(**losses)
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(read_json_file(path, "training config"))

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def _synth_quick() -> TrainConfig:
    # Sized to learn on SynthHeads on a 2-core CPU in minutes: thin networks, a small batch, the VGG19 loss up to
    # relu3_1 with equal layer weights and no VGGFace term (random VGGs on synthetic faces). Measured choices
    # (benchmarks/learning.py, held-out PSNR): lr 1e-3, because with 2e-4 the identity path barely moves in a
    # thousand steps (held-out colours stay generic, the texture a pose-independent stripe pattern); and no
    # adversarial / feature-matching terms, because at this batch and lr the GAN game destabilises the minutes-scale
    # run (with them, held-out PSNR fell from 20.2 dB at step 400 to 18.0 dB at step 1000 while the training losses
    # kept falling). The paper's presets keep every term.
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
        model=model, batch_size=4, lr=1e-3, workers=1, steps=800, standing_stats_batches=10, eval_every=200, eval_batches=4,
        checkpoint_every=200, log_every=10, visual_every=200, perceptual_layers=3, perceptual_layer_weights="paper",
        losses=LossWeights(adversarial=0.0, feature_matching=0.0, vggface=0.0, warp=WarpSchedule(every=50)),
    )


TRAIN_PRESETS: dict[str, TrainConfig] = {
    "synth-quick": _synth_quick(),
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
