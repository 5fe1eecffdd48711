"""Data: stickman drawing (more arrives with the data issue: SynthHeads, preprocessing, datasets)."""

from .stickman import draw_stickmen, keypoints_to_pixels

__all__ = ["draw_stickmen", "keypoints_to_pixels"]
