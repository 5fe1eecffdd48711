"""Keypoint backends: 68 iBUG landmarks in pixels for every face of a frame, and the choice of the main face.

Backends (``LANDMARK_BACKENDS``, created by ``create_landmark_backend(name, **options)``):

* ``mediapipe`` (default): MediaPipe face mesh (models ship inside the wheel, CPU, offline) → 68 points through the
  index map of ``index_map.py``.
* ``face-alignment``: the ``face_alignment`` package's 2-D FAN with its S3FD detector, the landmarks the reference
  model was trained with. Weights are read from a local folder (``weights_dir``); nothing is downloaded.
* ``file``: precomputed keypoints, a ``.npy`` of shape (T, 68, 2|3) in pixels of the original frames (rows of NaN
  mean "no face in that frame").

A backend is used per sequence: ``start_sequence(...)`` then ``detect(image, index)`` for every frame, where
``index`` is the frame's position in the source video (before any subsampling).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ._util import BackendRegistry, quiet_native_logs
from .errors import MissingWeightsError, PreprocessError, short_reason
from .index_map import mesh_to_ibug68

NUM_KEYPOINTS = 68


@dataclass(frozen=True)
class Face:
    """One detected face: ``keypoints`` (68, 2) float32 in pixels of the frame, and a confidence ``score``."""

    keypoints: np.ndarray
    score: float = 1.0

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The landmarks' bounding box (x0, y0, x1, y1)."""
        lo, hi = self.keypoints.min(0), self.keypoints.max(0)
        return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))

    @property
    def centre(self) -> np.ndarray:
        x0, y0, x1, y1 = self.box
        return np.array([(x0 + x1) / 2, (y0 + y1) / 2])

    @property
    def size(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(x1 - x0, y1 - y0)


class LandmarkBackend:
    """Base class of the keypoint backends."""

    name: ClassVar[str] = ""

    def start_sequence(self, source: Path | None = None, keypoints_file: Path | None = None) -> None:
        """Forget any tracking state: the next frames belong to a new sequence read from ``source``."""

    def detect(self, image: np.ndarray, index: int | None = None) -> list[Face]:
        """All faces of one H×W×3 RGB uint8 frame (any order)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the backend's resources."""

    def __enter__(self) -> LandmarkBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


LANDMARK_BACKENDS = BackendRegistry("keypoint")
register_landmark_backend = LANDMARK_BACKENDS.register
check_landmark_backend = LANDMARK_BACKENDS.check


def create_landmark_backend(name: str = "mediapipe", **options: Any) -> LandmarkBackend:
    """Instantiate a registered backend; options it does not take (or that are None) are ignored, so one options
    dict can serve all."""
    return LANDMARK_BACKENDS.create(name, **options)


# ------------------------------------------------------------------------------------------------ mediapipe
@register_landmark_backend
class MediaPipeLandmarks(LandmarkBackend):
    """MediaPipe face mesh → 68 iBUG points.

    ``static=False`` (default) lets the face mesh track faces from frame to frame inside a sequence (steadier and
    faster); ``static=True`` detects every frame independently (use it for unrelated photos). ``max_faces`` faces
    are returned per frame so that the main face can be chosen.
    """

    name = "mediapipe"

    def __init__(self, static: bool = False, max_faces: int = 4, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5):
        try:
            from mediapipe.python.solutions import face_mesh
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise PreprocessError(
                "the mediapipe keypoint backend needs the mediapipe package (pip install --no-deps mediapipe==0.10.21)."
            ) from exc
        self._face_mesh = face_mesh
        self.options = dict(static_image_mode=static, max_num_faces=max_faces, refine_landmarks=False,
                            min_detection_confidence=min_detection_confidence,
                            min_tracking_confidence=min_tracking_confidence)
        self._mesh = None

    def start_sequence(self, source: Path | None = None, keypoints_file: Path | None = None) -> None:
        self.close()  # a fresh graph: no tracking state leaks from the previous sequence

    def detect(self, image: np.ndarray, index: int | None = None) -> list[Face]:
        image = np.ascontiguousarray(image, np.uint8)
        h, w = image.shape[:2]
        if self._mesh is None:  # the first frames of a new graph print C++ start-up messages: keep them quiet
            with quiet_native_logs():
                self._mesh = self._face_mesh.FaceMesh(**self.options)
                result = self._mesh.process(image)
        else:
            result = self._mesh.process(image)
        faces = []
        for lms in result.multi_face_landmarks or ():
            mesh = np.array([(p.x * w, p.y * h) for p in lms.landmark], np.float64)
            faces.append(Face(mesh_to_ibug68(mesh)))
        return faces

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None


# ------------------------------------------------------------------------------------------- face-alignment
FACE_ALIGNMENT_MISSING = ("the face-alignment keypoint backend needs the face_alignment package "
                          "(pip install -c constraints.txt face-alignment), which is not installed.")

# File names of face_alignment 1.5's weights, used when the package is not installed to say what is expected.
_FA_DEFAULT_URLS = {
    "fan": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
    "s3fd": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
}


def face_alignment_weight_files() -> dict[str, str]:
    """{"fan": file name, "s3fd": file name} expected by the installed face_alignment (or by version 1.5)."""
    urls = dict(_FA_DEFAULT_URLS)
    try:
        from face_alignment import api
        from face_alignment.detection.sfd import sfd_detector

        urls["fan"] = api.models_urls.get("2DFAN-4", urls["fan"])
        urls["s3fd"] = sfd_detector.models_urls.get("s3fd", urls["s3fd"])
    except Exception:  # noqa: BLE001 - not installed, or a layout we do not know: keep the defaults
        pass
    return {k: os.path.basename(v) for k, v in urls.items()}


def check_face_alignment_weights(weights_dir: str | Path | None) -> dict[str, Path]:
    """The paths of the FAN and S3FD weight files in ``weights_dir`` (or its ``checkpoints/`` subfolder, the
    torch-hub layout). Raises ``MissingWeightsError`` with one sentence naming the missing file and the folder."""
    names = face_alignment_weight_files()
    hint = "https://www.adrianbulat.com/downloads/python-fan/"
    if weights_dir is None:
        raise MissingWeightsError(
            f"the face-alignment backend reads its weights from a local folder: pass --landmark-weights DIR holding "
            f"{names['fan']} and {names['s3fd']} (from {hint}); nothing is downloaded."
        )
    folder = Path(weights_dir).expanduser()
    found: dict[str, Path] = {}
    for key, fname in names.items():
        for candidate in (folder / fname, folder / "checkpoints" / fname):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            raise MissingWeightsError(
                f"face-alignment weight file {fname} not found in {folder} (expected {folder / fname}; "
                f"get it from {hint}, nothing is downloaded)."
            )
    return found


@contextlib.contextmanager
def _torch_hub_dir(files: dict[str, Path]) -> Iterator[None]:
    """Point torch.hub at a temporary folder whose ``checkpoints/`` links to ``files``: face_alignment then finds
    its weights there instead of downloading them."""
    import torch.hub

    previous = torch.hub.get_dir()
    with tempfile.TemporaryDirectory(prefix="bilayer-fa-") as tmp:
        ckpt = Path(tmp, "checkpoints")
        ckpt.mkdir()
        for path in files.values():
            os.symlink(path.resolve(), ckpt / path.name)
        torch.hub.set_dir(tmp)
        try:
            yield
        finally:
            torch.hub.set_dir(previous)


@register_landmark_backend
class FaceAlignmentLandmarks(LandmarkBackend):
    """face-alignment's 2-D FAN (with flip augmentation, as the reference ``infer.py``) and its S3FD detector."""

    name = "face-alignment"

    def __init__(self, weights_dir: str | Path | None = None, device: str = "cpu", flip_input: bool = True):
        files = check_face_alignment_weights(weights_dir)
        try:
            import face_alignment
        except ImportError as exc:
            raise PreprocessError(FACE_ALIGNMENT_MISSING) from exc
        lt = face_alignment.LandmarksType
        kind = getattr(lt, "TWO_D", None) or getattr(lt, "_2D", None)  # 1.2+ / older versions
        kwargs: dict[str, Any] = dict(device=device, flip_input=flip_input, face_detector="sfd",
                                      face_detector_kwargs={"path_to_detector": str(files["s3fd"])})
        if "compile" in inspect.signature(face_alignment.FaceAlignment.__init__).parameters:
            kwargs["compile"] = False
        with _torch_hub_dir(files):
            self._fa = face_alignment.FaceAlignment(kind, **kwargs)

    def detect(self, image: np.ndarray, index: int | None = None) -> list[Face]:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No faces were detected." on every empty frame
            result = self._fa.get_landmarks(np.ascontiguousarray(image))
        return [Face(np.asarray(k, np.float32)[:NUM_KEYPOINTS, :2]) for k in (result or ())]


# ----------------------------------------------------------------------------------------------------- file
def load_keypoint_file(path: str | Path) -> np.ndarray:
    """A (T, K>=68, 2|3) keypoint array in pixels → (T, 68, 2) float32 (rows with NaN mean "no face")."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise PreprocessError(
            f"cannot read keypoint file {path} ({short_reason(exc)}); expected a .npy array."
        ) from exc
    if not isinstance(arr, np.ndarray):  # an .npz archive
        arr.close()
        raise PreprocessError(f"keypoint file {path} holds several arrays (.npz); expected one (T, 68, 2) array.")
    if arr.dtype.kind not in "fiu":
        raise PreprocessError(f"keypoint file {path} holds {arr.dtype} values; expected a float (T, 68, 2) array.")
    if arr.ndim == 2 and arr.shape[0] >= NUM_KEYPOINTS:  # a single frame
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1] < NUM_KEYPOINTS or arr.shape[2] not in (2, 3):
        raise PreprocessError(f"keypoint file {path} has shape {arr.shape}; expected (T, 68, 2) or (T, 68, 3).")
    return arr[:, :NUM_KEYPOINTS, :2].astype(np.float32)


@register_landmark_backend
class FileLandmarks(LandmarkBackend):
    """Precomputed keypoints. ``path`` is a .npy file (used for every sequence) or a folder; by default, the file
    is the one found next to the source (``clip.mp4`` → ``clip.npy``; a folder of images ``frames/`` →
    ``frames.npy``). Frame ``index`` reads row ``index``; a row of NaN (or past the end) means no face."""

    name = "file"

    def __init__(self, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        if self.path is not None and not self.path.exists():
            raise PreprocessError(f"keypoint path {self.path} does not exist.")
        self._keypoints: np.ndarray | None = None

    def resolve(self, source: Path | None, relative: Path | None = None) -> Path:
        """The keypoint file of ``source`` (a video, image or image folder); ``relative`` is its path inside the
        input folder, used to look it up inside a keypoint folder."""
        if self.path is not None and self.path.is_file():
            return self.path
        if source is None:
            raise PreprocessError("the file keypoint backend needs the path of a keypoint file.")
        name = (source.stem if source.is_file() else source.name) + ".npy"
        if self.path is not None:  # a folder: mirroring the input layout, or flat
            if relative is not None:
                candidate = self.path / relative.parent / name
                if candidate.is_file():
                    return candidate
            return self.path / name
        return source.parent / name

    def start_sequence(self, source: Path | None = None, keypoints_file: Path | None = None) -> None:
        file = keypoints_file if keypoints_file is not None else self.resolve(source)
        if not Path(file).is_file():
            raise PreprocessError(f"no keypoint file for {source}: expected {file}.")
        self._keypoints = load_keypoint_file(file)

    def detect(self, image: np.ndarray, index: int | None = None) -> list[Face]:
        if self._keypoints is None:
            raise RuntimeError("FileLandmarks.detect called before start_sequence")
        if index is None or index >= len(self._keypoints):
            return []
        kp = self._keypoints[index]
        return [Face(kp)] if np.isfinite(kp).all() else []


# ------------------------------------------------------------------------------------------ main face choice
class MainFaceTracker:
    """Picks the same person through a sequence: the largest face at the first frame that has one, then in every
    frame the face whose landmark-box centre is nearest to the last chosen one."""

    def __init__(self) -> None:
        self.last: Face | None = None

    def reset(self) -> None:
        self.last = None

    def __call__(self, faces: list[Face]) -> Face | None:
        if not faces:
            return None
        if self.last is None:
            chosen = max(faces, key=lambda f: f.size)
        else:
            ref = self.last.centre
            chosen = min(faces, key=lambda f: float(np.linalg.norm(f.centre - ref)))
        self.last = chosen
        return chosen


def detect_keypoints(image: np.ndarray, backend: str | LandmarkBackend = "mediapipe",
                     **options: Any) -> np.ndarray | None:
    """The (68, 2) float32 landmarks (pixels) of the largest face in one RGB uint8 image, or None if no face.

    ``backend`` is a name (a backend is created for this call; MediaPipe runs in static-image mode) or a backend
    instance (reused; call its ``start_sequence`` yourself for a new video).
    """
    if isinstance(backend, str):
        if backend == "mediapipe":
            options.setdefault("static", True)
        with create_landmark_backend(backend, **options) as b:
            b.start_sequence()
            faces = b.detect(image, 0)
    else:
        faces = backend.detect(image, 0)
    if not faces:
        return None
    return max(faces, key=lambda f: f.size).keypoints.astype(np.float32)

