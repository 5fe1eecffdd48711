"""Data: stickman drawing, the training dataset, SynthHeads (procedural videos) and the canonical face."""

from .dataset import (
    IBUG68_FLIP,
    DatasetError,
    Sample,
    SampleBatch,
    VideoDataset,
    VideoLoader,
    collate,
    denormalize_keypoints,
    flip_images,
    flip_keypoints,
    make_loader,
    normalize_keypoints,
)
from .stickman import draw_stickmen, keypoints_to_pixels

__all__ = [
    "IBUG68_FLIP", "DatasetError", "Sample", "SampleBatch", "VideoDataset", "VideoLoader", "collate",
    "denormalize_keypoints", "flip_images", "flip_keypoints", "make_loader", "normalize_keypoints",
    "draw_stickmen", "keypoints_to_pixels",
]
