"""Data: stickman drawing, the training dataset, SynthHeads (procedural videos) and the canonical face."""

from .dataset import (
    DatasetError,
    Sample,
    SampleBatch,
    VideoDataset,
    VideoLoader,
    collate,
    flip_images,
    make_loader,
)
from .stickman import draw_stickmen, keypoints_to_pixels

__all__ = [
    "DatasetError", "Sample", "SampleBatch", "VideoDataset", "VideoLoader", "collate", "flip_images", "make_loader",
    "draw_stickmen", "keypoints_to_pixels",
]
