"""Data: the training dataset (its sampling modes and sequence records), stickman drawing and the canonical face."""

from .dataset import DatasetError, VideoDataset, flip_images
from .stickman import draw_stickmen, keypoints_to_pixels

__all__ = [
    "DatasetError", "VideoDataset", "flip_images",
    "draw_stickmen", "keypoints_to_pixels",
]
