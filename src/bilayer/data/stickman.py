"""Stickman ("landmark image") drawing for the 68-point iBUG layout, exactly as reference §1.5.

Parts are drawn in a fixed order as OpenCV polylines without anti-aliasing on a canvas filled with the value 1
(so the background maps to -0.992, not -1, like the released code), then mapped to [-1, 1].
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

# (indices, closed, colour written into channels 0, 1, 2 = R, G, B)
PARTS: tuple[tuple[tuple[int, ...], bool, tuple[int, int, int]], ...] = (
    (tuple(range(0, 17)), False, (255, 255, 255)),  # jaw
    (tuple(range(17, 22)), False, (255, 0, 0)),  # right eyebrow (image left)
    (tuple(range(22, 27)), False, (0, 255, 0)),  # left eyebrow
    ((27, 28, 29, 30, 30, 33), False, (0, 0, 255)),  # nose bridge, ending with a 30→33 segment
    (tuple(range(31, 36)), False, (0, 0, 255)),  # nostrils
    (tuple(range(36, 42)), True, (255, 0, 255)),  # eye
    (tuple(range(42, 48)), True, (0, 255, 255)),  # eye
    (tuple(range(48, 60)), True, (255, 255, 0)),  # outer lips
    (tuple(range(60, 68)), True, (255, 255, 0)),  # inner lips
)


def line_thickness(size: int) -> int:
    """2 px at 256 px (the released default), scaled with the resolution."""
    return max(1, int(round(2 * size / 256)))


def keypoints_to_pixels(keypoints: np.ndarray, size: int) -> np.ndarray:
    """Normalised keypoints (..., 136) in [-1, 1] → int32 pixel coordinates (..., 68, 2), truncated."""
    pts = (np.asarray(keypoints, dtype=np.float32).reshape(*np.shape(keypoints)[:-1], -1, 2) + 1.0) / 2.0 * size
    return pts.astype(np.int32)


def draw_stickman(keypoints: np.ndarray, size: int, thickness: int | None = None) -> np.ndarray:
    """One stickman as uint8 (size, size, 3) RGB from normalised keypoints (136,)."""
    if np.shape(keypoints)[-1] != 136:
        raise ValueError(f"stickman drawing needs 68 keypoints as 136 values, got shape {np.shape(keypoints)}.")
    pts = keypoints_to_pixels(keypoints, size)
    canvas = np.ones((size, size, 3), dtype=np.uint8)
    thick = line_thickness(size) if thickness is None else thickness
    for indices, closed, colour in PARTS:
        cv2.polylines(canvas, [pts[list(indices)].reshape(-1, 1, 2)], closed, colour, thickness=thick)
    return canvas


def draw_stickmen(keypoints: torch.Tensor, size: int, thickness: int | None = None) -> torch.Tensor:
    """Stickmen for a batch: keypoints (..., 136) → (..., 3, size, size) float in [-1, 1], on the keypoints' device."""
    flat = keypoints.detach().reshape(-1, keypoints.shape[-1]).float().cpu().numpy()
    images = np.stack([draw_stickman(k, size, thickness) for k in flat]) if len(flat) else np.zeros((0, size, size, 3), np.uint8)
    out = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5).mul_(2.0)
    return out.reshape(*keypoints.shape[:-1], 3, size, size).to(keypoints.device)
