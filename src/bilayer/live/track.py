"""Live face tracking: one frame at a time, the landmarks of the person in view, smoothed as they arrive.

``LiveTracker`` is the live counterpart of ``animate.driver.Driver``'s tracking: MediaPipe (or another landmark
backend) in tracking mode, ``MainFaceTracker`` to stay on the same person, and the causal One-Euro filter on
keypoints divided by the first face's size (so the smoothing is the same at any distance from the camera),
reset after a gap of more than ``MAX_GAP`` seconds without a face. A frame without a face gives None; the
session shows the last pose instead.
"""

from __future__ import annotations

import numpy as np

from ..animate.driver import MAX_GAP
from ..keypoints import face_size
from ..vision.errors import PreprocessError, short_reason
from ..vision.landmarks import LandmarkBackend, MainFaceTracker, create_landmark_backend
from ..vision.smoothing import KEYPOINT_SMOOTHING, OneEuroFilter, OneEuroParams
from .capture import LiveError


class LiveTracker:
    """``tracker(image, seconds)`` → the (68, 2) float32 keypoints (pixels) of the followed face, or None."""

    def __init__(self, landmarks: str | LandmarkBackend = "mediapipe", *,
                 smoothing: bool | OneEuroParams = True, faces: int = 1) -> None:
        if isinstance(landmarks, LandmarkBackend):
            self.backend, self._own = landmarks, False
        else:
            try:
                self.backend = create_landmark_backend(str(landmarks), static=False, max_faces=faces)
            except (PreprocessError, TypeError) as exc:
                raise LiveError(f"cannot create the {landmarks} landmark backend: {short_reason(exc)}.") from None
            self._own = True
        self.backend.start_sequence()
        params = KEYPOINT_SMOOTHING if smoothing is True else (smoothing or None)
        self._filter = OneEuroFilter.from_params(params) if params is not None else None
        self._chooser = MainFaceTracker()
        self._scale: float | None = None
        self._last_time: float | None = None
        self.frames = 0
        self.lost = 0

    def __call__(self, image: np.ndarray, seconds: float) -> np.ndarray | None:
        self.frames += 1
        face = self._chooser(self.backend.detect(image, self.frames - 1))
        if face is None:
            self.lost += 1
            return None
        kp = np.asarray(face.keypoints, np.float32)[:, :2]
        if self._scale is None:
            self._scale = max(face_size(kp), 1e-6)
        if self._filter is not None:
            if self._last_time is not None and seconds - self._last_time > MAX_GAP:
                self._filter.reset()
            kp = (self._filter(kp / self._scale, seconds) * self._scale).astype(np.float32)
        self._last_time = seconds
        return kp.copy()

    def close(self) -> None:
        if self._own:
            self.backend.close()

    def __enter__(self) -> "LiveTracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
