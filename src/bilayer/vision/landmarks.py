"""Keypoint backends: 68 iBUG landmarks in pixels for every face of a frame, and the choice of the main face.

Backends (``LANDMARK_BACKENDS``, created by ``create_landmark_backend(name, **options)``):

* ``mediapipe`` (default): MediaPipe face mesh (models ship inside the wheel, CPU, offline) → 68 points through the
  index map of ``index_map.py``.
* ``face-alignment``: the ``face_alignment`` package's 2-D FAN with its S3FD detector, the landmarks the reference
  model was trained with. Weights are read from a local folder (``weights_dir``); nothing is downloaded.
* ``dlib``: dlib's HOG face detector and 68-point shape predictor (``dlib-bin`` and ``face_recognition_models``,
  installed by ``make install``; the model was trained on iBUG 300-W, whose images exclude commercial use).
* ``file``: precomputed keypoints, a ``.npy`` of shape (T, 68, 2|3) in pixels of the original frames (rows of NaN
  mean "no face in that frame").

A backend is used per sequence: ``start_sequence(...)`` then ``detect(image, index)`` for every frame, where
``index`` is the frame's position in the source video (before any subsampling).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..keypoints import MAX_KEYPOINT_COORDINATE, MIN_FACE_SIZE, NUM_KEYPOINTS
from .registry import BackendRegistry, quiet_native_logs
from .errors import MissingWeightsError, PreprocessError, short_reason
from .index_map import mesh_to_ibug68


log = logging.getLogger(__name__)


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

    def fit(self, image: np.ndarray, keypoints: np.ndarray) -> np.ndarray | None:
        """The (68, 2) landmarks of the face that ``keypoints`` (68, 2 pixels, e.g. another detector's) locate in
        ``image``, for backends that place landmarks in a given face box (dlib); the others detect instead and do
        not override this."""
        raise NotImplementedError(f"the {self.name} keypoint backend detects faces itself.")

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
#: Longest side, in pixels, of the copy of a frame that MediaPipe's face mesh reads. A larger frame is shrunk first
#: by a whole factor (area averaging; about 15 ms for 20 megapixels) and the points are scaled back to its pixels.
#: The landmark model reads each face through a 192-px crop, so a face wider than 192 px in the copy loses nothing;
#: MediaPipe itself crashes (SIGSEGV) on a frame of more than 2 GB.
MESH_MAX_SIDE = 2048
#: Longest side of the copy in which MediaPipe's full-range face detector looks for the faces the face mesh missed.
SEARCH_MAX_SIDE = 1024
#: Side, in pixels of that copy, of the overlapping tiles searched in static-image mode when the whole copy shows
#: no face: a face down to about 24 px of the copy (2.3 % of its longest side) is found.
SEARCH_TILE = 384
#: Side of the square crop around a detected face in which the face mesh places the landmarks, in face-box sizes,
#: and the size in pixels it is resampled to.
SEARCH_CROP_SCALE, SEARCH_CROP_SIDE = 2.0, 256
#: In static-image mode, a face the face mesh found on the whole frame whose landmark box is smaller than this
#: fraction of the frame's longest side gets its landmarks placed again in a crop around it: on the whole frame,
#: the face mesh's points strayed by 10-18 % of the face's width for faces of 9-12 % of the side (against about
#: 1 % in the crop, for 5-10 ms more per face).
MESH_REFINE_FRACTION = 0.15


def _shrink(image: np.ndarray, max_side: int) -> tuple[np.ndarray, int]:
    """(``image`` shrunk by the smallest whole factor that brings its longest side to at most ``max_side``, the
    factor). Each pixel of the copy averages a factor × factor block (the rows and columns that do not fill a
    block are left out), so pixel (x, y) of the copy covers (x·f … x·f + f, y·f … y·f + f) of the image."""
    h, w = image.shape[:2]
    factor = -(-max(h, w) // max_side)
    if factor <= 1:
        return image, 1
    import cv2

    sw, sh = max(1, w // factor), max(1, h // factor)
    block = image[:sh * factor, :sw * factor]
    return cv2.resize(block, (sw, sh), interpolation=cv2.INTER_AREA), factor


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def _tile_starts(length: int, tile: int) -> list[int]:
    """Starts of tiles of side ``tile`` covering ``length`` pixels, overlapping by at least a third of a tile."""
    count = -(-(length - tile) // (tile - tile // 3)) + 1
    return [round(i * (length - tile) / max(count - 1, 1)) for i in range(count)]


@register_landmark_backend
class MediaPipeLandmarks(LandmarkBackend):
    """MediaPipe face mesh → 68 iBUG points.

    ``static=False`` (default) lets the face mesh track faces from frame to frame inside a sequence (steadier and
    faster); ``static=True`` detects every frame independently (use it for unrelated photos). ``max_faces`` faces
    are returned per frame so that the main face can be chosen.

    Frames larger than ``MESH_MAX_SIDE`` are shrunk for the face mesh. The face mesh's own detector is made for
    faces within about 2 m of the camera and misses faces narrower than about a tenth of the frame; when it finds
    none, MediaPipe's full-range face detector (``model_selection=1``, faces up to about 5 m) searches a copy of at
    most ``SEARCH_MAX_SIDE`` px, in static-image mode also in overlapping ``SEARCH_TILE`` tiles of it, and the face
    mesh places the landmarks in a crop of the full-resolution frame around each face it found.
    """

    name = "mediapipe"

    def __init__(self, static: bool = False, max_faces: int = 4, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5):
        try:
            from mediapipe.python.solutions import face_detection, face_mesh
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise PreprocessError(
                "the mediapipe keypoint backend needs the mediapipe package (pip install --no-deps mediapipe==0.10.21)."
            ) from exc
        self._face_mesh, self._face_detection = face_mesh, face_detection
        self.static, self.max_faces = bool(static), int(max_faces)
        self.options = dict(static_image_mode=static, max_num_faces=max_faces, refine_landmarks=False,
                            min_detection_confidence=min_detection_confidence,
                            min_tracking_confidence=min_tracking_confidence)
        self.min_detection_confidence = min_detection_confidence
        self._mesh = None  # the face mesh on whole frames (tracking in a sequence unless static)
        self._detector = None  # the full-range face detector
        self._crop_mesh = None  # a static face mesh for the crops around detected faces
        self._spoken: set[str] = set()  # the graphs that have found a face (their messages are no longer silenced)

    def _run(self, attr: str, make, image: np.ndarray):
        """``graph.process(image)`` with the graph kept in ``attr``, made on first use. Its C++ messages are
        silenced until it has found a face: MediaPipe prints start-up lines, and one more warning at the first face
        found (a result with faces then ends the quiet)."""
        graph = getattr(self, attr)
        if graph is not None and attr in self._spoken:
            return graph.process(image)
        with quiet_native_logs():
            if graph is None:
                graph = make()
                setattr(self, attr, graph)
            result = graph.process(image)
        if getattr(result, "multi_face_landmarks", None) or getattr(result, "detections", None):
            self._spoken.add(attr)
        return result

    def start_sequence(self, source: Path | None = None, keypoints_file: Path | None = None) -> None:
        if self._mesh is not None:  # a fresh graph: no tracking state leaks from the previous sequence
            self._mesh.close()
            self._mesh = None
            self._spoken.discard("_mesh")

    def detect(self, image: np.ndarray, index: int | None = None) -> list[Face]:
        image = np.ascontiguousarray(image, np.uint8)
        h, w = image.shape[:2]
        if h == 0 or w == 0:
            return []
        small, factor = _shrink(image, MESH_MAX_SIDE)
        sh, sw = small.shape[:2]
        result = self._run("_mesh", lambda: self._face_mesh.FaceMesh(**self.options), small)
        faces = []
        for lms in result.multi_face_landmarks or ():
            # relative coordinates in the copy → pixels of the frame
            mesh = np.array([(p.x * sw * factor, p.y * sh * factor) for p in lms.landmark], np.float64)
            face = Face(mesh_to_ibug68(mesh))
            if self.static and face.size < MESH_REFINE_FRACTION * max(h, w):
                face = self._mesh_in_box(image, np.array(face.box)) or face
            faces.append(face)
        return faces or self._search(image, small, factor)

    def _detect_boxes(self, image: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """(score, (x0, y0, x1, y1) in pixels of ``image``) of the faces the full-range detector finds."""
        make = lambda: self._face_detection.FaceDetection(  # noqa: E731
            model_selection=1, min_detection_confidence=self.min_detection_confidence)
        result = self._run("_detector", make, image)
        h, w = image.shape[:2]
        boxes = []
        for d in result.detections or ():
            b = d.location_data.relative_bounding_box
            if b.width > 0 and b.height > 0:
                box = np.array([b.xmin, b.ymin, b.xmin + b.width, b.ymin + b.height]) * [w, h, w, h]
                boxes.append((float(d.score[0]), box))
        return boxes

    def _search(self, image: np.ndarray, copy: np.ndarray, factor: int) -> list[Face]:
        """Faces that the face mesh missed on the whole frame (``copy``: the frame shrunk ``factor`` times): found
        by the full-range detector, their landmarks placed by the face mesh in a crop around each."""
        import cv2

        small = copy
        if max(copy.shape[:2]) > SEARCH_MAX_SIDE:
            scale = SEARCH_MAX_SIDE / max(copy.shape[:2])
            size = (max(1, round(copy.shape[1] * scale)), max(1, round(copy.shape[0] * scale)))
            small = cv2.resize(copy, size, interpolation=cv2.INTER_AREA)
        sh, sw = small.shape[:2]
        to_image = np.array([copy.shape[1] / sw, copy.shape[0] / sh] * 2) * factor  # pixels of small → of image
        found = self._detect_boxes(small)
        if not found and self.static and min(sh, sw) > SEARCH_TILE:
            for y in _tile_starts(sh, SEARCH_TILE):
                for x in _tile_starts(sw, SEARCH_TILE):
                    tile = np.ascontiguousarray(small[y:y + SEARCH_TILE, x:x + SEARCH_TILE])
                    found += [(score, box + [x, y, x, y]) for score, box in self._detect_boxes(tile)]
        kept: list[np.ndarray] = []  # the most confident of overlapping boxes (tiles overlap)
        for _, box in sorted(found, key=lambda f: -f[0]):
            if all(_iou(box, k) < 0.3 for k in kept):
                kept.append(box)
        faces: list[Face] = []
        for box in kept:
            face = self._mesh_in_box(image, box * to_image)
            if face is not None and all(np.linalg.norm(face.centre - f.centre) > 0.5 * f.size for f in faces):
                faces.append(face)
            if len(faces) >= self.max_faces:
                break
        return faces

    def _mesh_in_box(self, image: np.ndarray, box: np.ndarray) -> Face | None:
        """The face mesh's landmarks (pixels of ``image``) of the face in ``box`` ((x0, y0, x1, y1) pixels), placed
        in a ``SEARCH_CROP_SIDE`` square crop of ``SEARCH_CROP_SCALE`` box sizes around it; None if it sees no
        face."""
        import cv2

        h, w = image.shape[:2]
        x0, y0, x1, y1 = box
        side = max(2, round(SEARCH_CROP_SCALE * max(x1 - x0, y1 - y0)))
        left, top = round((x0 + x1 - side) / 2), round((y0 + y1 - side) / 2)
        patch = image[max(top, 0):max(min(top + side, h), 0), max(left, 0):max(min(left + side, w), 0)]
        if patch.size == 0:
            return None
        pad = (max(-top, 0), max(top + side - h, 0), max(-left, 0), max(left + side - w, 0))
        if any(pad):  # a face at the frame's edge: the crop reaches past it
            patch = cv2.copyMakeBorder(patch, *pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        interp = cv2.INTER_AREA if side > SEARCH_CROP_SIDE else cv2.INTER_CUBIC
        patch = cv2.resize(patch, (SEARCH_CROP_SIDE, SEARCH_CROP_SIDE), interpolation=interp)
        if self.static:  # the whole-frame face mesh is a static one already
            result = self._run("_mesh", lambda: self._face_mesh.FaceMesh(**self.options), patch)
        else:
            make = lambda: self._face_mesh.FaceMesh(  # noqa: E731
                static_image_mode=True, max_num_faces=1, refine_landmarks=False,
                min_detection_confidence=self.min_detection_confidence)
            result = self._run("_crop_mesh", make, patch)
        if not result.multi_face_landmarks:
            return None
        meshes = [np.array([(p.x, p.y) for p in lms.landmark], np.float64) for lms in result.multi_face_landmarks]
        mesh = min(meshes, key=lambda m: float(np.linalg.norm(m.mean(0) - 0.5)))  # the face at the crop's centre
        return Face(mesh_to_ibug68(mesh * side + [left, top]))

    def close(self) -> None:
        for attr in ("_mesh", "_detector", "_crop_mesh"):
            graph = getattr(self, attr)
            if graph is not None:
                graph.close()
                setattr(self, attr, None)
            self._spoken.discard(attr)


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


# ----------------------------------------------------------------------------------------------------- dlib
#: Longest side, in pixels, of the copy of a frame in which dlib's HOG detector looks for faces (a larger frame is
#: shrunk by a whole factor first, as for MediaPipe); the detector sees faces down to 80 px of that copy, so a copy
#: shorter than ``DLIB_MIN_SIDE`` is upsampled (doubled, at most ``DLIB_MAX_UPSAMPLE`` times) until it is not.
DLIB_MAX_SIDE, DLIB_MIN_SIDE, DLIB_MAX_UPSAMPLE = 1024, 512, 3
#: The shape predictor places whole-pixel points; a face box smaller than this many pixels is enlarged to it (a
#: bicubic crop) first, so that its landmarks keep sub-pixel precision.
DLIB_FACE_SIDE = 200
#: The box dlib's detector draws, relative to the bounding box (x0, y0, width, height) of a face's 68 landmarks:
#: its left, top, right and bottom edges lie at these fractions (the mean over 26 portraits and video frames of the
#: test material with dlib's and with MediaPipe's landmarks, which differ by 0.02-0.04; spread ±0.05-0.07). The
#: shape predictor started from this box instead of the detector's places its points 1.5-1.7 % of the inter-ocular
#: distance away on average (7 % at most).
DLIB_BOX_FROM_LANDMARKS = (-0.02, -0.14, 1.12, 0.92)


def dlib_box_from_keypoints(keypoints: np.ndarray) -> np.ndarray:
    """The (x0, y0, x1, y1) box in which dlib's detector would report a face whose 68 landmarks are
    ``keypoints`` (pixels): the box the shape predictor was trained to start from."""
    kp = np.asarray(keypoints, np.float64)[:, :2]
    (x0, y0), (x1, y1) = kp.min(0), kp.max(0)
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    left, top, right, bottom = DLIB_BOX_FROM_LANDMARKS
    return np.array([x0 + left * w, y0 + top * h, x0 + right * w, y0 + bottom * h])


def check_dlib_landmarks(weights_dir: str | Path | None = None) -> Path:
    """The path of dlib's 68-point shape predictor, after checking that dlib imports; ``MissingWeightsError`` (one
    sentence saying what to install) otherwise."""
    from ..pretrained import DLIB_LANDMARKS, dlib_model_file, import_dlib
    from ..weights import WeightsError

    try:
        import_dlib()
        return dlib_model_file(DLIB_LANDMARKS, weights_dir)
    except WeightsError as exc:
        raise MissingWeightsError(f"the dlib keypoint backend cannot run: {str(exc).rstrip('.')}.") from None


@register_landmark_backend
class DlibLandmarks(LandmarkBackend):
    """dlib's HOG face detector and its 68-point shape predictor (the iBUG 300-W layout the paper's keypoints
    follow), from the ``dlib-bin`` wheel and ``face_recognition_models``' ``shape_predictor_68_face_landmarks.dat``
    (found by ``bilayer.pretrained.dlib_model_file``: the weights folder ``weights_dir``, the default weights
    folder, or the installed package). The model was trained on iBUG 300-W, whose images exclude commercial use.

    Every frame is detected on its own (no tracking). Frames larger than ``DLIB_MAX_SIDE`` are shrunk for the
    detector, small ones upsampled; the predictor then works on the full-resolution frame, in a crop enlarged to
    ``DLIB_FACE_SIDE`` px for small faces. ``score`` is the detector's confidence.
    """

    name = "dlib"

    def __init__(self, weights_dir: str | Path | None = None, max_faces: int = 4):
        from ..pretrained import import_dlib

        path = check_dlib_landmarks(weights_dir)
        self._dlib = import_dlib()
        try:
            self._predictor = self._dlib.shape_predictor(str(path))
        except RuntimeError as exc:
            raise MissingWeightsError(f"cannot read dlib's shape predictor {path} ({short_reason(exc)}); reinstall "
                                      "face_recognition_models==0.3.0.") from None
        self._detector = self._dlib.get_frontal_face_detector()
        self.max_faces = int(max_faces)

    def boxes(self, image: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """(score, (x0, y0, x1, y1) in pixels of ``image``) of the faces dlib's HOG detector finds, best first."""
        image = np.ascontiguousarray(image, np.uint8)
        if image.shape[0] == 0 or image.shape[1] == 0:
            return []
        small, factor = _shrink(image, DLIB_MAX_SIDE)
        upsample, side = 0, max(small.shape[:2])
        while side << upsample < DLIB_MIN_SIDE and upsample < DLIB_MAX_UPSAMPLE:
            upsample += 1
        rects, scores, _ = self._detector.run(np.ascontiguousarray(small), upsample, 0.0)
        found = [(float(s), np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], np.float64) * factor)
                 for r, s in zip(rects, scores)]
        return sorted(found, key=lambda f: -f[0])

    def crop(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """(a crop of ``image`` around ``box`` holding half a box of margin on every side, enlarged when the box is
        smaller than ``DLIB_FACE_SIDE``; the crop's top-left corner in ``image``; its scale): pixel p of the crop
        is pixel p / scale + corner of the image."""
        import cv2

        h, w = image.shape[:2]
        x0, y0, x1, y1 = box
        margin = 0.5 * max(x1 - x0, y1 - y0)
        cx0, cy0 = max(int(np.floor(x0 - margin)), 0), max(int(np.floor(y0 - margin)), 0)
        cx1, cy1 = min(int(np.ceil(x1 + margin)), w), min(int(np.ceil(y1 + margin)), h)
        patch = np.ascontiguousarray(image[cy0:max(cy1, cy0 + 1), cx0:max(cx1, cx0 + 1)])
        scale = max(1.0, DLIB_FACE_SIDE / max(x1 - x0, y1 - y0, 1.0))
        if scale > 1.0:  # OpenCV maps pixel centres: crop pixel p shows image pixel (p + 0.5) / scale - 0.5
            patch = cv2.resize(patch, (0, 0), fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        return patch, np.array([cx0, cy0], np.float64), float(scale)

    def shape(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, Any, np.ndarray]:
        """(the 68 landmarks in pixels of ``image`` of the face in ``box``, dlib's ``full_object_detection`` of
        them in the crop, that crop) — the crop and detection are what ``dlib.get_face_chip`` aligns."""
        patch, corner, scale = self.crop(np.ascontiguousarray(image, np.uint8), np.asarray(box, np.float64))
        b = (np.asarray(box, np.float64) - np.concatenate([corner, corner]) + 0.5) * scale - 0.5
        rect = self._dlib.rectangle(int(round(b[0])), int(round(b[1])), int(round(b[2])) - 1, int(round(b[3])) - 1)
        detection = self._predictor(patch, rect)
        points = np.array([(p.x, p.y) for p in detection.parts()], np.float64)
        return ((points + 0.5) / scale - 0.5 + corner).astype(np.float32), detection, patch

    def fit(self, image: np.ndarray, keypoints: np.ndarray) -> np.ndarray | None:
        """The shape predictor's 68 points in the box dlib's detector would draw around ``keypoints``
        (``dlib_box_from_keypoints``); None when the keypoints are not finite."""
        kp = np.asarray(keypoints, np.float64)
        if kp.ndim != 2 or kp.shape[0] < NUM_KEYPOINTS or not np.isfinite(kp).all():
            return None
        return self.shape(image, dlib_box_from_keypoints(kp[:NUM_KEYPOINTS]))[0]

    def detect(self, image: np.ndarray, index: int | None = None) -> list[Face]:
        faces = []
        for score, box in self.boxes(image)[: self.max_faces]:
            points, _, _ = self.shape(image, box)
            faces.append(Face(points, score))
        return faces


# ----------------------------------------------------------------------------------------------------- file


def check_keypoint_rows(keypoints: np.ndarray, where: str, *, no_face: str = "a row of NaN",
                        no_size: str = "error") -> np.ndarray:
    """Check (T, 68, 2) pixel keypoints read from ``where`` (e.g. "keypoint file kp.npy") frame by frame; returns
    them as float32. Each frame is either a face — 68 finite points within ±``MAX_KEYPOINT_COORDINATE`` pixels
    that span at least ``MIN_FACE_SIZE`` pixels — or all NaN, meaning no face in that frame (``no_face`` names that
    marker in the messages, e.g. "null" for JSON). A frame whose 68 points lie on one spot (a row of zeros, as
    some landmark tools write for a missed face) raises with ``no_size="error"`` and becomes a row of NaN (no face)
    with ``no_size="no face"``. Anything else (inf, a partly NaN frame, an absurd coordinate) raises
    ``PreprocessError`` with one sentence naming the frame."""
    if no_size not in ("error", "no face"):
        raise ValueError(f"no_size is {no_size!r}; expected 'error' or 'no face'.")
    kp = np.asarray(keypoints, np.float64)
    expected = f"expected a face's 68 points in pixels, or {no_face} for a frame without a face"
    if len(kp) == 0:
        return kp.astype(np.float32)
    inf = np.isinf(kp).any(axis=(1, 2))
    if inf.any():
        i = int(np.argmax(inf))
        raise PreprocessError(f"frame {i} of {where} holds inf; {expected}.")
    nan = np.isnan(kp).any(axis=2)  # (T, 68): a point with a NaN coordinate
    partly = nan.any(axis=1) & ~nan.all(axis=1)
    if partly.any():
        i = int(np.argmax(partly))
        raise PreprocessError(f"frame {i} of {where} is partly NaN ({int(nan[i].sum())} of 68 points); {expected}.")
    face = ~nan.all(axis=1)
    if not face.any():
        return kp.astype(np.float32)
    faces = kp[face]
    reach = np.abs(faces).max(axis=(1, 2))
    far = reach > MAX_KEYPOINT_COORDINATE
    if far.any():
        j = int(np.argmax(far))
        i = int(np.flatnonzero(face)[j])
        x, y = faces[j][int(np.abs(faces[j]).max(axis=1).argmax())]
        raise PreprocessError(f"frame {i} of {where} has a point at ({x:.4g}, {y:.4g}), beyond "
                              f"±{MAX_KEYPOINT_COORDINATE:,.0f} px; {expected}.")
    span = (faces.max(axis=1) - faces.min(axis=1)).max(axis=1)
    tiny = span < MIN_FACE_SIZE
    if tiny.any() and no_size == "error":
        j = int(np.argmax(tiny))
        i = int(np.flatnonzero(face)[j])
        raise PreprocessError(f"frame {i} of {where} describes a face of no size (its 68 points span "
                              f"{span[j]:.3g} px); {expected}.")
    kp = kp.astype(np.float32)
    kp[np.flatnonzero(face)[tiny]] = np.nan
    return kp


def load_keypoint_file(path: str | Path, *, no_size: str = "error") -> np.ndarray:
    """A (T, K>=68, 2|3) keypoint array in pixels → (T, 68, 2) float32 (rows of NaN mean "no face"), checked
    frame by frame with ``check_keypoint_rows`` (``no_size``: what a frame whose points lie on one spot is, an
    error or a frame without a face). Raises ``PreprocessError`` (one sentence naming the file)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise PreprocessError(f"cannot read keypoint file {path} ({short_reason(exc)}); expected a .npy array.") from None
    if not (magic == b"\x93NUMPY" or magic.startswith(b"PK\x03\x04")):  # a .npy file, or an .npz archive
        what = "an empty file" if not magic else "not a NumPy .npy file"
        raise PreprocessError(f"keypoint file {path} is {what}; expected a (T, 68, 2) array saved with numpy.save.")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
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
    return check_keypoint_rows(arr[:, :NUM_KEYPOINTS, :2], f"keypoint file {path}", no_size=no_size)


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
        self._keypoints = load_keypoint_file(file, no_size="no face")  # zeros: a missed face, as some tools write

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


def detect_keypoints(image: np.ndarray, backend: str | LandmarkBackend = "mediapipe", *, name: str = "the photo",
                     **options: Any) -> np.ndarray | None:
    """The (68, 2) float32 landmarks (pixels) of the largest face in one RGB uint8 image, or None if no face.

    ``backend`` is a name (a backend is created for this call; MediaPipe runs in static-image mode) or a backend
    instance (reused; call its ``start_sequence`` yourself for a new video). When several faces are found, the
    choice is logged as a warning of the ``bilayer.vision.landmarks`` logger naming the image by ``name``
    ("2 faces found in photo.jpg; using the largest, ..."), which Python prints on stderr when logging is not
    configured.
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
    chosen = max(faces, key=lambda f: f.size)
    if len(faces) > 1:
        x, y = chosen.centre
        log.warning("%d faces found in %s; using the largest, at x=%.0f, y=%.0f (%.0f px wide)", len(faces), name,
                    x, y, chosen.box[2] - chosen.box[0])
    return chosen.keypoints.astype(np.float32)

