"""The 68 facial keypoints: their count, their normalisation to the model's input, the left/right permutation of a
mirrored face, and the measures of a face that cropping, motion transfer and input checks share.

Keypoints follow the iBUG 68-point layout (jaw 0–16, eyebrows 17–26, nose 27–35, eyes 36–47, lips 48–67) in
continuous pixel coordinates: (0, 0) is the top-left corner of the top-left pixel, so pixel j covers [j, j + 1).
"""

from __future__ import annotations

import numpy as np

#: keypoints per face, and the length of the model's flattened pose vector [x0, y0, x1, y1, …]
NUM_KEYPOINTS = 68
POSE_DIM = 2 * NUM_KEYPOINTS

#: iBUG-68 eye contours: the subject's right eye (36–41) and left eye (42–47)
RIGHT_EYE = slice(36, 42)
LEFT_EYE = slice(42, 48)

#: Keypoint coordinates beyond ± this many pixels are refused (ten times the width of an 8K frame).
MAX_KEYPOINT_COORDINATE = 100_000.0
#: A face whose 68 points span less than this many pixels (the larger of width and height) has no size.
MIN_FACE_SIZE = 1.0


def normalize_keypoints(keypoints, width: float):
    """Pixel keypoints (..., K ≥ 68, 2 or 3) of a ``width``-px-wide image → (..., 136) in [-1, 1] (reference §1.2).

    The first 68 rows are kept, z is dropped, x **and y** are divided by the width (the released code does this
    for non-square images too), then (p − 0.5)·2, flattened as [x0, y0, x1, y1, …]. Works on numpy and torch.
    """
    pts = keypoints[..., :NUM_KEYPOINTS, :2] / width
    pts = (pts - 0.5) * 2
    return pts.reshape(*pts.shape[:-2], POSE_DIM)


def denormalize_keypoints(keypoints, width: float):
    """The inverse of ``normalize_keypoints``: (..., 136) in [-1, 1] → (..., 68, 2) pixel coordinates."""
    pts = keypoints.reshape(*keypoints.shape[:-1], NUM_KEYPOINTS, 2)
    return (pts / 2 + 0.5) * width


def _mirror_pairs(*pairs: tuple[int, int]) -> tuple[int, ...]:
    perm = list(range(NUM_KEYPOINTS))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


# The iBUG 68-point left/right permutation: after a horizontal flip, point i of the new face is the mirrored
# point IBUG68_FLIP[i] of the old one (an involution: applying it twice is the identity).
IBUG68_FLIP: tuple[int, ...] = _mirror_pairs(
    *[(i, 16 - i) for i in range(8)],  # jaw 0–16 (8 is the chin)
    *[(17 + i, 26 - i) for i in range(5)],  # eyebrows 17–21 ↔ 26–22
    (31, 35), (32, 34),  # nostrils (33 is the nose tip; 27–30 the bridge)
    (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),  # eyes: outer corner 36 ↔ 45, inner 39 ↔ 42
    (48, 54), (49, 53), (50, 52), (55, 59), (56, 58),  # outer lips (51, 57 on the axis)
    (60, 64), (61, 63), (65, 67),  # inner lips (62, 66 on the axis)
)


def flip_keypoints(keypoints):
    """Normalised keypoints (..., 136) of a horizontally flipped image: x → −x and the left/right points swap places
    (``IBUG68_FLIP``). With the continuous pixel convention, x → −x is exact."""
    pts = keypoints.reshape(*keypoints.shape[:-1], NUM_KEYPOINTS, 2)[..., list(IBUG68_FLIP), :]
    pts[..., 0] = -pts[..., 0]
    return pts.reshape(keypoints.shape)


def check_keypoints(kp, name: str = "keypoints") -> np.ndarray:
    """One face's keypoints as float64 (68, 2): the first 68 rows and 2 columns of ``kp``; ValueError naming
    ``name`` when the shape is wrong or a value is not finite."""
    kp = np.asarray(kp, np.float64)
    if kp.ndim != 2 or kp.shape[0] < NUM_KEYPOINTS or kp.shape[1] not in (2, 3):
        raise ValueError(f"{name} must have shape (68, 2), got {kp.shape}")
    kp = kp[:NUM_KEYPOINTS, :2]
    if not np.isfinite(kp).all():
        nan, inf = bool(np.isnan(kp).any()), bool(np.isinf(kp).any())
        raise ValueError(f"{name} hold {'NaN and inf' if nan and inf else 'NaN' if nan else 'inf'}; expected 68 "
                         "finite points")
    return kp


def face_size(kp) -> float:
    """The landmark bounding-box extent of (68, 2) keypoints: max(width, height), in their units."""
    kp = check_keypoints(kp)
    return float((kp.max(0) - kp.min(0)).max())


def interocular_distance(kp) -> float:
    """The distance between the two eye centres (means of iBUG points 36–41 and 42–47) of (68, 2) keypoints."""
    kp = check_keypoints(kp)
    return float(np.linalg.norm(kp[RIGHT_EYE].mean(0) - kp[LEFT_EYE].mean(0)))
