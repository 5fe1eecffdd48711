"""The reference crop protocol (reference §6.2) and its temporal stabilisation.

Reference protocol, per image, from the 68 landmarks in pixels:

1. centre = (min + max) / 2 of the landmarks; size = the larger of the x and y extents;
2. the centre moves up by size // 6;
3. the crop is the square [cx - size, cy - size, cx + size, cy + size] (side 2·size), black outside the image,
   resized to the output size with bicubic interpolation.

The landmark box then covers about half of the crop width and its centre sits 1/12 of the crop below the crop
centre. Run per frame, this crop follows every bit of landmark noise, which makes generated videos jitter (issue
#14). ``stabilise_boxes`` smooths the boxes of a whole sequence (or uses one box when the head barely moves).

Coordinates are continuous pixel coordinates: the image spans [0, W] × [0, H]; a crop box maps linearly onto
[0, size] × [0, size] of the saved image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .smoothing import BOX_SMOOTHING, OneEuroParams, one_euro

BOX_MODES = ("auto", "smooth", "fixed", "none")


@dataclass(frozen=True)
class CropBox:
    """A square crop: centre (cx, cy) and half side ``half`` in pixels of the source image."""

    cx: float
    cy: float
    half: float

    @property
    def side(self) -> float:
        return 2.0 * self.half

    @property
    def ltrb(self) -> tuple[float, float, float, float]:
        """(left, top, right, bottom)."""
        return (self.cx - self.half, self.cy - self.half, self.cx + self.half, self.cy + self.half)

    def to_array(self) -> np.ndarray:
        return np.array([self.cx, self.cy, self.half], np.float64)

    @classmethod
    def from_array(cls, a) -> CropBox:
        cx, cy, half = (float(v) for v in a)
        return cls(cx, cy, half)


def crop_box(keypoints: np.ndarray, *, exact: bool = False) -> CropBox:
    """The reference crop box of one frame's landmarks ((K, 2|3) pixels).

    ``exact=True`` reproduces the released code's integer arithmetic (centre rounded to int, size truncated to
    int, centre moved up by ``size // 6``); the default keeps sub-pixel precision (up by size / 6), which is what
    ``stabilise_boxes`` should be fed.
    """
    kp = np.asarray(keypoints, np.float64)[..., :2].reshape(-1, 2)
    if not np.isfinite(kp).all():
        raise ValueError("keypoints contain NaN or infinity")
    lo, hi = kp.min(0), kp.max(0)
    centre = (lo + hi) / 2
    size = float((hi - lo).max())
    if exact:
        cx, cy = (int(round(v)) for v in centre)
        isize = int(size)
        return CropBox(float(cx), float(cy - isize // 6), float(isize))
    return CropBox(float(centre[0]), float(centre[1] - size / 6), size)


def is_static(boxes: np.ndarray, tolerance: float = 0.05) -> bool:
    """True when every box of a (T, 3) [cx, cy, half] array stays within ``tolerance`` · (median half) of the median
    centre and within ``tolerance`` of the median size (relative): one box then serves the whole sequence."""
    boxes = np.asarray(boxes, np.float64)
    if len(boxes) == 0:
        return True  # no box moves
    med = np.median(boxes, axis=0)
    if med[2] <= 0:
        return False
    shift = np.abs(boxes[:, :2] - med[:2]).max() / med[2]
    zoom = np.abs(np.log(np.maximum(boxes[:, 2], 1e-6) / med[2])).max()
    return bool(shift <= tolerance and zoom <= tolerance)


def resolve_box_mode(boxes: np.ndarray, mode: str = "auto", tolerance: float = 0.05) -> str:
    """The stabilisation ``stabilise_boxes`` applies to the (T, 3) ``boxes`` in ``mode``: ``"auto"`` becomes
    ``"fixed"`` when ``is_static(boxes, tolerance)``, else ``"smooth"``; the other modes stay as given. An unknown
    mode raises a ValueError."""
    if mode not in BOX_MODES:
        raise ValueError(f"unknown box mode {mode!r}; valid: {', '.join(BOX_MODES)}")
    if mode == "auto":
        return "fixed" if is_static(boxes, tolerance) else "smooth"
    return mode


def stabilise_boxes(boxes: np.ndarray, times: np.ndarray | None = None, *, mode: str = "auto",
                    params: OneEuroParams = BOX_SMOOTHING, tolerance: float = 0.05) -> np.ndarray:
    """Stabilise a sequence of per-frame crop boxes, (T, 3) [cx, cy, half] in pixels → (T, 3).

    * ``"fixed"``: one box for the whole sequence (the per-coordinate median).
    * ``"smooth"``: zero-phase One-Euro smoothing (``params``) of the centre, in units of the median half side, and
      of the log half side; ``times`` are the frame times in seconds (default 25 fps).
    * ``"auto"`` (default): ``"fixed"`` when ``is_static(boxes, tolerance)``, else ``"smooth"``.
    * ``"none"``: the boxes unchanged (the reference per-frame protocol).
    """
    boxes = np.asarray(boxes, np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 3:
        raise ValueError(f"expected (T, 3) boxes [cx, cy, half], got shape {boxes.shape}")
    mode = resolve_box_mode(boxes, mode, tolerance)
    if len(boxes) == 0 or mode == "none":
        return boxes.copy()
    if mode == "fixed":
        return np.repeat(np.median(boxes, axis=0, keepdims=True), len(boxes), axis=0)
    if times is None:
        times = np.arange(len(boxes)) / 25.0
    unit = float(np.median(boxes[:, 2]))
    track = np.concatenate([boxes[:, :2] / unit, np.log(np.maximum(boxes[:, 2:], 1e-6))], axis=1)
    smooth = one_euro(track, np.asarray(times, np.float64), params, zero_phase=True)
    return np.concatenate([smooth[:, :2] * unit, np.exp(smooth[:, 2:])], axis=1)


def crop_image(img: np.ndarray, box: CropBox, size: int, *, resample: str = "bicubic") -> np.ndarray:
    """Crop the square ``box`` out of ``img`` (H×W or H×W×C, uint8 or float32) and resize it to ``size`` × ``size``.

    Outside the image is black (0). Sub-pixel boxes are honoured, and the resize is anti-aliased (Pillow's
    convolution resampler, the same as the reference PIL ``crop`` + ``resize(BICUBIC)`` for integer boxes).
    """
    img = np.asarray(img)
    if img.dtype not in (np.uint8, np.float32):
        raise ValueError(f"crop_image expects uint8 or float32 images, got {img.dtype}")
    filters = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}
    if resample not in filters:
        raise ValueError(f"unknown resample {resample!r}; valid: {', '.join(filters)}")
    if box.half <= 0:
        raise ValueError("crop box has no area")
    x0, y0, x1, y1 = box.ltrb
    margin = int(math.ceil(2.0 * max(box.side / size, 1.0))) + 1  # filter support beyond the box edges
    px0, py0 = int(math.floor(x0)) - margin, int(math.floor(y0)) - margin
    px1, py1 = int(math.ceil(x1)) + margin, int(math.ceil(y1)) + margin
    h, w = img.shape[:2]
    patch = np.zeros((py1 - py0, px1 - px0) + img.shape[2:], img.dtype)
    sx0, sy0, sx1, sy1 = max(px0, 0), max(py0, 0), min(px1, w), min(py1, h)
    if sx1 > sx0 and sy1 > sy0:
        patch[sy0 - py0 : sy1 - py0, sx0 - px0 : sx1 - px0] = img[sy0:sy1, sx0:sx1]
    region = (x0 - px0, y0 - py0, x1 - px0, y1 - py0)
    if img.dtype == np.float32:
        channels = [patch] if patch.ndim == 2 else [patch[..., c] for c in range(patch.shape[2])]
        def resize(channel: np.ndarray) -> np.ndarray:
            pil = Image.fromarray(np.ascontiguousarray(channel), "F")
            return np.asarray(pil.resize((size, size), filters[resample], box=region))

        out = [resize(c) for c in channels]
        return out[0] if patch.ndim == 2 else np.stack(out, axis=-1)
    pil = Image.fromarray(patch[..., 0] if patch.ndim == 3 and patch.shape[2] == 1 else patch)
    out = np.asarray(pil.resize((size, size), filters[resample], box=region))
    return out.reshape((size, size) + img.shape[2:])


def keypoints_to_crop(keypoints: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """Map (..., 2|3) pixel keypoints of the source image into pixel coordinates of the ``size``-pixel crop
    (z, when present, is scaled like x and y). Returns float32."""
    kp = np.array(keypoints, np.float64)
    x0, y0, _, _ = box.ltrb
    scale = size / box.side
    kp[..., 0] -= x0
    kp[..., 1] -= y0
    return (kp * scale).astype(np.float32)


def keypoints_from_crop(keypoints: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """The inverse of ``keypoints_to_crop``: crop pixels → source-image pixels. Returns float32."""
    kp = np.array(keypoints, np.float64) * (box.side / size)
    x0, y0, _, _ = box.ltrb
    kp[..., 0] += x0
    kp[..., 1] += y0
    return kp.astype(np.float32)
