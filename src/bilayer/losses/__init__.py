"""Losses: each module owns its math; ``objectives`` combines weighted, named terms."""

from .objectives import GeneratorObjective, GeneratorTerms, LossWeights, discriminator_objective
from .perceptual import PerceptualLoss
from .pixelwise import WarpSchedule

__all__ = ["GeneratorObjective", "GeneratorTerms", "LossWeights", "discriminator_objective", "PerceptualLoss", "WarpSchedule"]
