"""Motion transfer: driving keypoints (68 × 2, pixels) → the keypoints an avatar is rendered from.

The model only ever sees keypoints in the pixel frame of a reference crop (reference §6.2), normalised to [-1, 1]. A
driving video therefore goes through the same crop protocol as the training data, with one difference: the
preprocessing stabilises its crop boxes offline (zero-phase smoothing over the whole sequence), while ``bilayer
animate`` streams frames, so ``StreamingCropper`` smooths the boxes causally (a One-Euro filter with the same
``BOX_SMOOTHING`` parameters, in the same units) — no look-ahead, constant memory.

Two ways to drive a photo (``MotionTransfer``):

* ``"absolute"``: the driver's own crop keypoints are used as they are. Head pose *and face shape* come from the
  driver: a long-faced driver makes a round-faced avatar long-faced (identity leak), which is what the paper does
  (it is trained on self-reenactment) and is right when the driver is the same person as the photo.
* ``"relative"``: the photo's keypoints plus the driver's *displacement* since a reference frame,
  ``source + s · (driver_t − driver_ref)``. The photo keeps its own face shape; only the motion is transferred.
  ``s`` = (source face size / driver face size), both measured on the reference keypoints, so a driver filmed
  larger in its crop does not exaggerate the motion. The face size is, by default, the landmark bounding-box
  extent (the larger of its width and height — the same measure as the crop protocol and the smoothing units):
  it is defined for every 68-point set and does not vanish for profile views. ``scale_by="interocular"`` (the
  distance between the two eye centres) ignores the jaw (an open mouth in a reference frame does not change it)
  but shrinks with yaw; pick it when the reference frames are frontal.

Typical use, per driving frame (``DriverFrame`` from ``animate.driver``)::

    cropper = StreamingCropper(size)
    box, kp = cropper.crop(frame.keypoints, frame.time)     # the driver's crop box and crop keypoints
    if transfer is None:                                     # the first frame is the reference
        transfer = MotionTransfer(mode, source_kp_crop, kp)
    pose = to_model_input(transfer(kp), size)                # (136,) float32 for the avatar

All keypoints here are in pixels of a ``size`` × ``size`` crop (continuous coordinates: (0, 0) is the top-left
corner of the top-left pixel); source and driver crops use the same ``size``. ``to_model_input`` turns crop
keypoints into the model's (136,) vector.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..keypoints import check_keypoints, face_size, interocular_distance, normalize_keypoints
from ..vision.crop import CropBox, crop_box, keypoints_to_crop
from ..vision.smoothing import BOX_SMOOTHING, OneEuroFilter, OneEuroParams

MOTION_MODES = ("relative", "absolute")
SCALE_MEASURES = ("extent", "interocular")
CROP_MODES = ("smooth", "fixed", "none")

__all__ = [
    "CROP_MODES", "MOTION_MODES", "SCALE_MEASURES", "MotionTransfer", "StreamingCropper", "crop_keypoints",
    "to_model_input",
]


def _measure(kp: np.ndarray, scale_by: str) -> float:
    return face_size(kp) if scale_by == "extent" else interocular_distance(kp)


def crop_keypoints(kp: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """(68, 2) frame-pixel keypoints → pixels of the ``size``-pixel crop ``box`` (float32)."""
    if not (np.isfinite(box.half) and box.half > 0):
        raise ValueError(f"the crop box has half side {box.half}; expected a positive size (a face of no size?)")
    return keypoints_to_crop(check_keypoints(kp), box, size)


def to_model_input(kp_crop: np.ndarray, size: int) -> np.ndarray:
    """(68, 2) crop-pixel keypoints of a ``size``-pixel crop → the model's (136,) float32 vector in [-1, 1]
    (``normalize_keypoints``; values outside [-1, 1] mean points outside the crop and are passed through)."""
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    return np.asarray(normalize_keypoints(check_keypoints(kp_crop), float(size)), np.float32)


class StreamingCropper:
    """The driver's crop box, frame by frame: ``crop_box`` of each frame's keypoints, stabilised causally.

    ``mode``:

    * ``"smooth"`` (default): a One-Euro filter (``params``, default ``BOX_SMOOTHING``) on the centre in units of
      the first box's half side and on the log half side — the units of ``stabilise_boxes``, so the same
      parameters mean the same smoothing; the first box passes unchanged. A gap of more than ``max_gap`` seconds
      between two calls restarts the filter (the box jumps to the new face instead of sliding there).
    * ``"fixed"``: the first box for the whole stream (a tripod shot of a still head).
    * ``"none"``: the raw per-frame box (the reference protocol; jittery).

    ``cropper(keypoints, time)`` returns the ``CropBox`` of that frame; ``cropper.crop(keypoints, time)`` returns
    (box, keypoints in crop pixels).
    """

    def __init__(self, size: int, mode: str = "smooth", params: OneEuroParams = BOX_SMOOTHING,
                 max_gap: float = 0.5):
        if mode not in CROP_MODES:
            raise ValueError(f"unknown crop mode {mode!r}; valid: {', '.join(CROP_MODES)}")
        if size <= 0:
            raise ValueError(f"crop size must be positive, got {size}")
        self.size, self.mode, self.max_gap = int(size), mode, float(max_gap)
        self._filter = OneEuroFilter.from_params(params)
        self.reset()

    def reset(self) -> None:
        """Forget the state: the next frame starts a new stream."""
        self._filter.reset()
        self._unit: float | None = None
        self._first: CropBox | None = None
        self._last_time: float | None = None

    def __call__(self, keypoints: np.ndarray, time: float) -> CropBox:
        raw = crop_box(check_keypoints(keypoints))
        if self.mode == "none":
            return raw
        if self._first is None:
            self._first = raw
        if self.mode == "fixed":
            return self._first
        if self._last_time is not None and time - self._last_time > self.max_gap:
            self._filter.reset()
        self._last_time = float(time)
        if self._unit is None:
            self._unit = max(raw.half, 1e-6)
        track = np.array([raw.cx / self._unit, raw.cy / self._unit, np.log(max(raw.half, 1e-6))])
        cx, cy, log_half = self._filter(track, float(time))
        return CropBox(float(cx * self._unit), float(cy * self._unit), float(np.exp(log_half)))

    def crop(self, keypoints: np.ndarray, time: float) -> tuple[CropBox, np.ndarray]:
        """(the frame's box, the keypoints in pixels of its ``size``-pixel crop)."""
        box = self(keypoints, time)
        return box, crop_keypoints(keypoints, box, self.size)


class MotionTransfer:
    """Maps the driver's crop keypoints of each frame to the crop keypoints the avatar is rendered from.

    ``source_kp_crop``: the photo's (68, 2) keypoints in its crop; ``driver_reference_kp_crop``: the driver's
    keypoints in its crop at the reference frame (usually the first frame with a face; it should show a neutral
    expression, like the photo). Only ``"relative"`` uses them; see the module docstring for the two modes.
    ``transfer(driver_kp_crop)`` returns float32 (68, 2) crop pixels.
    """

    def __init__(self, mode: Literal["absolute", "relative"], source_kp_crop: np.ndarray | None = None,
                 driver_reference_kp_crop: np.ndarray | None = None, *, scale_by: str = "extent"):
        if mode not in MOTION_MODES:
            raise ValueError(f"unknown motion mode {mode!r}; valid: {', '.join(MOTION_MODES)}")
        if scale_by not in SCALE_MEASURES:
            raise ValueError(f"unknown face-size measure {scale_by!r}; valid: {', '.join(SCALE_MEASURES)}")
        self.mode, self.scale_by = mode, scale_by
        self.source: np.ndarray | None = None
        self.reference: np.ndarray | None = None
        self.scale = 1.0
        if mode == "relative":
            if source_kp_crop is None or driver_reference_kp_crop is None:
                raise ValueError("relative motion needs the source keypoints and the driver's reference keypoints")
            self.source = check_keypoints(source_kp_crop, "source keypoints")
            self.reference = check_keypoints(driver_reference_kp_crop, "driver reference keypoints")
            driver_size = _measure(self.reference, scale_by)
            if driver_size <= 1e-6:
                raise ValueError(f"the driver's reference face has no {scale_by} size")
            self.scale = _measure(self.source, scale_by) / driver_size

    def __call__(self, driver_kp_crop: np.ndarray) -> np.ndarray:
        return self.transfer(driver_kp_crop)

    def transfer(self, driver_kp_crop: np.ndarray) -> np.ndarray:
        kp = check_keypoints(driver_kp_crop, "driver keypoints")
        if self.mode == "absolute":
            return kp.astype(np.float32)
        assert self.source is not None and self.reference is not None
        return (self.source + self.scale * (kp - self.reference)).astype(np.float32)
