"""bilayer: Fast Bi-layer Neural Synthesis of One-Shot Realistic Head Avatars (Zakharov et al., ECCV 2020)."""

from .config import PRESETS, BilayerConfig, ConfigError, preset
from .models.bilayer import BilayerModel
from .structures import AdaptiveParams, AvatarState, Render
from .version import __version__

__all__ = ["PRESETS", "BilayerConfig", "ConfigError", "preset", "BilayerModel", "AdaptiveParams", "AvatarState", "Render", "__version__"]
