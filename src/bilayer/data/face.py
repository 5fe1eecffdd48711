"""A canonical frontal 68-point face (iBUG order) and simple pose/expression edits of it.

Coordinates are normalised to [-1, 1] in the crop, with the landmark box about half the crop wide and its
centre 1/12 of the crop below the crop centre (the reference crop protocol, reference §6.2).
"""

from __future__ import annotations

import numpy as np


def canonical_keypoints() -> np.ndarray:
    """(68, 2) float32 landmarks of a neutral frontal face in [-1, 1] crop coordinates."""
    pts = np.zeros((68, 2), np.float64)
    # jaw: the lower half of an ellipse, from the image-left temple to the image-right one
    pts[0:17, 1] = -0.05 + 0.55 * np.abs(np.sin(np.linspace(0, np.pi, 17))) ** 0.9
    pts[0:17, 0] = 0.5 * np.cos(np.linspace(np.pi, 0, 17))
    brow = np.linspace(-0.1, 0.1, 5)
    pts[17:22] = np.stack([-0.27 + brow * 1.4, -0.30 - 0.05 * np.cos(brow * 15)], 1)
    pts[22:27] = np.stack([0.27 + brow * 1.4, -0.30 - 0.05 * np.cos(brow * 15)], 1)
    pts[27:31] = np.stack([np.zeros(4), np.linspace(-0.2, 0.08, 4)], 1)
    pts[31:36] = np.stack([np.linspace(-0.09, 0.09, 5), 0.13 + 0.02 * np.cos(np.linspace(-1.5, 1.5, 5))], 1)
    for start, cx in ((36, -0.2), (42, 0.2)):
        t = np.linspace(0, 2 * np.pi, 7)[:-1]
        pts[start : start + 6] = np.stack([cx - 0.08 * np.cos(t), -0.17 - 0.035 * np.sin(t)], 1)
    t = np.linspace(0, 2 * np.pi, 13)[:-1]
    pts[48:60] = np.stack([-0.18 * np.cos(t), 0.30 - 0.07 * np.sin(t)], 1)
    t = np.linspace(0, 2 * np.pi, 9)[:-1]
    pts[60:68] = np.stack([-0.12 * np.cos(t), 0.30 - 0.02 * np.sin(t)], 1)
    return pts.astype(np.float32)


def posed_keypoints(yaw: float = 0.0, roll: float = 0.0, mouth_open: float = 0.0) -> np.ndarray:
    """A crude pose/expression edit of the canonical face: yaw squeezes x, roll rotates, the jaw drops."""
    pts = canonical_keypoints().astype(np.float64)
    pts[list(range(5, 12)) + list(range(56, 60)) + list(range(64, 68)), 1] += 0.15 * mouth_open
    pts[:, 0] = pts[:, 0] * np.cos(yaw) + 0.15 * np.sin(yaw) * (1 - np.abs(pts[:, 0]))
    c, s = np.cos(roll), np.sin(roll)
    centre = np.array([0.0, 0.1])
    pts = (pts - centre) @ np.array([[c, s], [-s, c]]) + centre
    return pts.astype(np.float32)
