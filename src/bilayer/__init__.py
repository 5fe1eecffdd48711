"""bilayer: Fast Bi-layer Neural Synthesis of One-Shot Realistic Head Avatars (Zakharov et al., ECCV 2020)."""

from .config import PRESETS, BilayerConfig, ConfigError, preset
from .models.bilayer import BilayerModel
from .structures import AdaptiveParams, AvatarState, Render

__all__ = ["PRESETS", "BilayerConfig", "ConfigError", "preset", "BilayerModel", "AdaptiveParams", "AvatarState", "Render"]
__version__ = "0.1.0"
