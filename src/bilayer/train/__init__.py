"""Training: the loop, stages, standing statistics, checkpoints, distributed set-up and visuals."""

from .checkpoint import CheckpointError
from .config import TRAIN_PRESETS, TrainConfig, train_config
from .loop import Perceptual, TrainingError, evaluate, train

__all__ = ["CheckpointError", "TRAIN_PRESETS", "TrainConfig", "train_config", "Perceptual", "TrainingError", "evaluate", "train"]
