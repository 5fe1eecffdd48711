"""One typed configuration tree for the bi-layer model.

Each network gets only its own frozen dataclass. Values shared between networks (the number of generator
blocks, the identity-embedding channels, the projector widths) are *derived* once by :class:`BilayerConfig`
and passed explicitly to the networks by the composition root (``models/bilayer.py``).

Presets (``PRESETS``) are the paper's model family, which varies only the inference generator's channels
(paper §4.1, supplement §A): small 16→128, medium 32→256 (the paper's default), large 64→512, plus ``tiny``
for tests (the released code's options of the parity vector ``parity_a``, 64 px).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and what was expected."""


def read_json_file(path: str | Path, what: str) -> Any:
    """A JSON file's content; an unreadable or invalid file raises ConfigError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not a UTF-8 text file (expected JSON).") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None


def check_fields(cls: type, data: Any, where: str) -> None:
    """``data`` must be a JSON object whose keys are fields of dataclass ``cls``; otherwise a ConfigError naming
    ``where``, the unknown keys and the valid ones."""
    known = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a JSON object with fields {sorted(known)}, got {type(data).__name__}.")
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown field(s) {unknown} in {where}; valid: {sorted(known)}.")


_Config = TypeVar("_Config", bound="JsonConfig")


class JsonConfig:
    """The JSON side shared by the frozen config dataclasses (``BilayerConfig``, ``TrainConfig``)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self: _Config, **changes: Any) -> _Config:
        """A copy with ``changes`` (validated again by ``__post_init__``)."""
        return dataclasses.replace(self, **changes)


def _log2_ratio(big: int, small: int, what: str) -> int:
    if big < small or big % small or (big // small) & (big // small - 1):
        raise ConfigError(f"{what}: {big} must be {small} times a power of two.")
    return int(math.log2(big // small))


def _pyramid(num_channels: int, max_channels: int, num: int) -> tuple[int, ...]:
    """Channels of a decoder pyramid, widest first: min(num_channels * 2^(num-1-k), max_channels)."""
    return tuple(min(num_channels * 2 ** (num - 1 - k), max_channels) for k in range(num))


@dataclass(frozen=True)
class EmbedderConfig:
    """Identity embedder E (reference §2.2)."""

    num_channels: int = 64
    max_channels: int = 512
    output_size: int = 8  # spatial size of the identity embeddings
    apply_masks: bool = True  # mask the source image with its ground-truth mask (released code: on)


@dataclass(frozen=True)
class TextureGeneratorConfig:
    """Texture generator G_tex with its projector (reference §2.3, §2.6)."""

    num_channels: int = 64
    max_channels: int = 512
    input_size: int = 4  # size of the learned constant input
    projection_size: int = 32  # embeddings are resized (nearest) to this size before the projector


@dataclass(frozen=True)
class KeypointsEmbedderConfig:
    """Keypoints embedder: the per-frame MLP on 136 normalised coordinates (reference §2.4)."""

    hidden_channels: int = 256
    num_layers: int = 4
    # 0: raw coordinates (the paper). N > 0: sin/cos of coordinate * pi * 2^i for i < N (the released script
    # turns this on with N = 4 by an argparse quirk, reference §2.4).
    num_harmonics: int = 0


@dataclass(frozen=True)
class InferenceGeneratorConfig:
    """Inference generator G with its projector (reference §2.5, §2.6); the per-frame network."""

    num_channels: int = 32
    max_channels: int = 256
    input_size: int = 4  # spatial size of the pose embedding
    projection_size: int = 16
    efficient_upsampling: bool = True  # upsample after conv1 (halves the cost, paper §3.2)


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Conditional relativistic PatchGAN discriminator (reference §2.9)."""

    num_channels: int = 64
    max_channels: int = 512
    num_blocks: int = 6
    output_size: int = 8  # side of the score map


@dataclass(frozen=True)
class EnhancerConfig:
    """Texture enhancer G_upd and its unrolled learned gradient descent (paper §3.3, reference §2.10, §5.3)."""

    num_channels: int = 64
    max_channels: int = 128
    bottleneck_size: int = 128
    num_blocks: int = 8
    steps: int = 4  # M, the unrolling depth
    guiding_loss: str = "sse"  # "sse": ½Σ(x - x̂)²; "l1": Σ|x - x̂|


@dataclass(frozen=True)
class BilayerConfig(JsonConfig):
    """The whole model. ``derived`` values are computed here once and handed to the networks."""

    image_size: int = 256
    num_keypoints: int = 68
    eps: float = 1e-7  # every normalisation and the spectral norm (released code)
    bn_momentum: float = 1.0  # released code: running stats = last batch; standing stats fix them (reference §4.4)
    spectral_norm: bool = True
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    texture: TextureGeneratorConfig = field(default_factory=TextureGeneratorConfig)
    keypoints: KeypointsEmbedderConfig = field(default_factory=KeypointsEmbedderConfig)
    inference: InferenceGeneratorConfig = field(default_factory=InferenceGeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    enhancer: EnhancerConfig | None = field(default_factory=EnhancerConfig)
    # False: the LF-only ablation of paper Table 1. personalize makes no texture (zeros, so every frame is the LF
    # layer alone); the texture networks stay in the weights file but are neither run nor trained.
    texture_layer: bool = True

    def __post_init__(self) -> None:
        self.validate()

    # ----------------------------------------------------------------------------------------- derived
    @property
    def num_generator_blocks(self) -> int:
        """K: upsampling blocks of both generators = number of identity embeddings."""
        return _log2_ratio(self.image_size, self.inference.input_size, "image_size / inference.input_size")

    @property
    def pose_dim(self) -> int:
        return 2 * self.num_keypoints

    @property
    def embed_channels(self) -> tuple[int, ...]:
        """E_k: channels of identity embedding k (k = 0 is the coarsest)."""
        e = self.embedder
        return _pyramid(e.num_channels, e.max_channels, self.num_generator_blocks)

    @property
    def embedder_encoder_channels(self) -> tuple[int, ...]:
        e = self.embedder
        n = _log2_ratio(self.image_size, e.output_size, "image_size / embedder.output_size")
        return tuple(min(e.num_channels * 2**i, e.max_channels) for i in range(n + 1))

    @property
    def projector_hidden(self) -> tuple[int, ...]:
        """Hidden widths of the projector MLPs: min(num_channels * 2^(K-k), max_channels) (reference §2.6)."""
        e, k_total = self.embedder, self.num_generator_blocks
        return tuple(min(e.num_channels * 2 ** (k_total - k), e.max_channels) for k in range(k_total))

    @property
    def texture_channels(self) -> tuple[int, ...]:
        t = self.texture
        return _pyramid(t.num_channels, t.max_channels, self.num_generator_blocks)

    @property
    def inference_channels(self) -> tuple[int, ...]:
        i = self.inference
        return _pyramid(i.num_channels, i.max_channels, self.num_generator_blocks)

    # ------------------------------------------------------------------------------------- validation
    def validate(self) -> None:
        if not 32 <= self.image_size <= 1024:
            raise ConfigError(f"image_size {self.image_size} is out of range; expected 32 to 1024 (64-512 tested).")
        if self.texture.input_size != self.inference.input_size:
            raise ConfigError(
                f"texture.input_size ({self.texture.input_size}) must equal inference.input_size "
                f"({self.inference.input_size}): both generators consume one embedding per block."
            )
        self.embedder_encoder_channels  # noqa: B018 - validates embedder.output_size
        for name, chans in (("texture", self.texture_channels), ("inference", self.inference_channels)):
            for idx, (ce, cg) in enumerate(zip(self.embed_channels, chans)):
                if ce % cg:
                    raise ConfigError(
                        f"{name} generator block {idx} has {cg} channels, which must divide the identity "
                        f"embedding's {ce} channels (each projector row takes {ce}/{cg} embedding channels)."
                    )
        if self.keypoints.num_layers < 2:
            raise ConfigError(f"keypoints.num_layers must be at least 2, got {self.keypoints.num_layers}.")
        d = self.discriminator
        down = _log2_ratio(self.image_size, d.output_size, "image_size / discriminator.output_size")
        if d.num_blocks < down:
            raise ConfigError(f"discriminator.num_blocks ({d.num_blocks}) must be at least {down} at {self.image_size} px.")
        if not isinstance(self.texture_layer, bool):
            raise ConfigError(f"texture_layer is {self.texture_layer!r}; expected true or false.")
        if not self.texture_layer and self.enhancer is not None:
            raise ConfigError("a model without the texture layer (texture_layer false) has no texture to enhance; "
                              "set enhancer to null.")
        if self.enhancer is not None:
            _log2_ratio(self.image_size, self.enhancer.bottleneck_size, "image_size / enhancer.bottleneck_size")
            if self.enhancer.guiding_loss not in ("sse", "l1"):
                raise ConfigError(f"enhancer.guiding_loss is {self.enhancer.guiding_loss!r}; expected 'sse' or 'l1'.")
            if self.enhancer.steps < 1:
                raise ConfigError(f"enhancer.steps must be at least 1, got {self.enhancer.steps}.")

    # ------------------------------------------------------------------------------------------ JSON
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BilayerConfig":
        sub = {
            "embedder": EmbedderConfig,
            "texture": TextureGeneratorConfig,
            "keypoints": KeypointsEmbedderConfig,
            "inference": InferenceGeneratorConfig,
            "discriminator": DiscriminatorConfig,
            "enhancer": EnhancerConfig,
        }
        check_fields(cls, data, "the model config")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in sub and value is not None:
                check_fields(sub[key], value, f"model config section '{key}'")
                kwargs[key] = sub[key](**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> "BilayerConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> "BilayerConfig":
        return cls.from_dict(read_json_file(path, "config file"))


def _tiny() -> BilayerConfig:
    # The released code's options of the parity vector parity_a (64 px, thin networks).
    return BilayerConfig(
        image_size=64,
        embedder=EmbedderConfig(num_channels=8, max_channels=32),
        texture=TextureGeneratorConfig(num_channels=8, max_channels=32),
        keypoints=KeypointsEmbedderConfig(hidden_channels=32),
        inference=InferenceGeneratorConfig(num_channels=4, max_channels=16),
        discriminator=DiscriminatorConfig(num_channels=8, max_channels=32, num_blocks=4),
        enhancer=EnhancerConfig(num_channels=8, max_channels=16, bottleneck_size=32, num_blocks=2),
    )


PRESETS: dict[str, BilayerConfig] = {
    "tiny": _tiny(),
    "small": BilayerConfig(inference=InferenceGeneratorConfig(num_channels=16, max_channels=128)),
    "medium": BilayerConfig(),
    "large": BilayerConfig(inference=InferenceGeneratorConfig(num_channels=64, max_channels=512)),
}


def preset(name: str, image_size: int | None = None) -> BilayerConfig:
    """A preset by name, optionally at another image size (the networks' depth follows the size)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}.")
    config = PRESETS[name]
    if image_size is not None and image_size != config.image_size:
        enhancer = config.enhancer
        if enhancer is not None:  # keep the enhancer's bottleneck at the same fraction of the image
            bottleneck = max(1, enhancer.bottleneck_size * image_size // config.image_size)
            enhancer = dataclasses.replace(enhancer, bottleneck_size=bottleneck)
        # keep the discriminator's blocks at its output size: as many down blocks as the new size needs
        d = config.discriminator
        plain = d.num_blocks - (config.image_size // d.output_size).bit_length() + 1
        down = max(0, (image_size // d.output_size).bit_length() - 1)
        discriminator = dataclasses.replace(d, num_blocks=down + plain)
        config = config.replace(image_size=image_size, enhancer=enhancer, discriminator=discriminator)
    return config
