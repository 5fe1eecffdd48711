"""One module per network of the paper, and ``bilayer.py`` wiring them in paper order."""

from .bilayer import BilayerModel, identity_grid
from .discriminator import Discriminator
from .identity_embedder import IdentityEmbedder
from .inference_generator import InferenceGenerator
from .keypoints_embedder import KeypointsEmbedder
from .projector import InferenceProjector, TextureProjector
from .texture_enhancer import TextureEnhancer
from .texture_generator import TextureGenerator

__all__ = [
    "BilayerModel", "identity_grid", "Discriminator", "IdentityEmbedder", "InferenceGenerator", "KeypointsEmbedder",
    "InferenceProjector", "TextureProjector", "TextureEnhancer", "TextureGenerator",
]
