"""Segmentation backends: a soft foreground (person) probability map for a crop.

* ``mediapipe`` (default): MediaPipe selfie segmentation (general 256×256 model, shipped in the wheel), run on the
  saved crop, then eroded once with the reference 5×5 disk kernel (reference §6.3: the reference eroded its Graphonomy
  foreground map the same way).
* ``none``: no masks. The pipeline then writes no ``segs`` folder at all (rather than all-ones masks, which would
  teach the mask head that everything is foreground): train with segmentation turned off.
"""

from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np

from .registry import BackendRegistry, quiet_native_logs
from .errors import PreprocessError

#: The reference erosion kernel: a 5×5 square without its four corners (21 ones).
DISK_5x5 = np.ones((5, 5), np.uint8)
DISK_5x5[[0, 0, 4, 4], [0, 4, 0, 4]] = 0


class SegmentationBackend:
    """Base class: ``segment(image)`` → H×W float32 foreground probability in [0, 1], or None (no masks)."""

    name: ClassVar[str] = ""
    writes_masks: ClassVar[bool] = True

    def segment(self, image: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the backend's resources."""

    def __enter__(self) -> SegmentationBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


SEGMENTATION_BACKENDS = BackendRegistry("segmentation")
register_segmentation_backend = SEGMENTATION_BACKENDS.register
check_segmentation_backend = SEGMENTATION_BACKENDS.check


def create_segmentation_backend(name: str = "mediapipe", **options: Any) -> SegmentationBackend:
    """Instantiate a registered backend; options it does not take (or that are None) are ignored."""
    return SEGMENTATION_BACKENDS.create(name, **options)


@register_segmentation_backend
class NoSegmentation(SegmentationBackend):
    name = "none"
    writes_masks = False

    def segment(self, image: np.ndarray) -> None:
        return None


@register_segmentation_backend
class MediaPipeSegmentation(SegmentationBackend):
    """MediaPipe selfie segmentation. ``model=0`` is the general 256×256 model (default, best for a square head
    crop), ``model=1`` the landscape 144×256 one. ``erode`` applies the reference 5×5 disk erosion."""

    name = "mediapipe"

    def __init__(self, model: int = 0, erode: bool = True):
        try:
            from mediapipe.python.solutions import selfie_segmentation
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise PreprocessError(
                "the mediapipe segmentation backend needs the mediapipe package "
                "(pip install --no-deps mediapipe==0.10.21)."
            ) from exc
        self._module = selfie_segmentation
        self.model, self.erode = model, erode
        self._seg = None

    def segment(self, image: np.ndarray) -> np.ndarray:
        image = np.ascontiguousarray(image, np.uint8)
        if self._seg is None:  # quiet C++ start-up messages of a new graph
            with quiet_native_logs():
                self._seg = self._module.SelfieSegmentation(model_selection=self.model)
                result = self._seg.process(image)
        else:
            result = self._seg.process(image)
        mask = np.clip(np.asarray(result.segmentation_mask, np.float32), 0.0, 1.0)
        if self.erode:
            mask = cv2.erode(mask, DISK_5x5)
        return mask

    def close(self) -> None:
        if self._seg is not None:
            self._seg.close()
            self._seg = None


def mask_to_uint8(mask: np.ndarray) -> np.ndarray:
    """A [0, 1] float mask → single-channel uint8 (0…255)."""
    return np.clip(np.rint(np.asarray(mask, np.float32) * 255.0), 0, 255).astype(np.uint8)
