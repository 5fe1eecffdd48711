"""Driving sources for ``bilayer animate``: a video, a folder of frames or a keypoint sequence, streamed as
(frame, 68 keypoints) with face tracking, lost-face handling and causal smoothing. Each kind of source is a small
class (``VideoSource``, ``FramesSource``, ``KeypointSource``; ``open_source`` picks one); ``Driver`` wraps a source
with the tracking, the first-face search and the smoothing.

Why a separate layer from the preprocessing: preprocessing sees a whole sequence at once (it smooths keypoints
and crop boxes forward and backward, and drops frames without a face), while animation must produce exactly one
output frame per driving frame, in order, with flat memory whatever the length of the driver. So here:

* frames are decoded one at a time (``iter_frames``) and never collected;
* the landmark backend runs in tracking (video) mode and ``MainFaceTracker`` keeps following the same person.
  MediaPipe follows ``faces`` faces (default 1): while it holds as many as it may follow it skips its face
  detector, so one face costs 6.9 instead of 11.1 ms per 256-px frame here with the same landmarks. With one,
  MediaPipe keeps the face it detected with the highest score (often, not always, the largest); with ``faces``
  ≥ the number of people, the tracker sees them all and follows the largest;
* a frame where the face is lost reuses the last keypoints (``found=False``) and is counted in ``Driver.lost``;
  frames before the first detection reuse the first detection (found while checking the driver);
* keypoints are smoothed causally (a ``OneEuroFilter`` with ``KEYPOINT_SMOOTHING``, one frame at a time, no
  look-ahead), in units of the face size as ``smooth_keypoints`` does — here the landmark-box size of the first
  detected face, since the median of the whole sequence is not known while streaming. The filter restarts after
  a gap of more than ``MAX_GAP`` seconds without a face, so a returning face jumps to its place instead of
  sliding there.

Problems are reported before any work starts (``open_driver`` runs ``Driver.check()``): a missing or unreadable
file, a file without a video stream, a keypoint file of the wrong shape or with unusable values, a frame rate
outside ``FPS_RANGE``, or no face in the first ``face_search`` frames raise ``DriverError`` with one sentence
naming the file and what was expected.

Keypoint sequences (``path`` itself, or ``keypoints=`` next to a video or a folder of frames, which skips
detection): pixels of the driver's frames, one row per frame, a row of NaN (or ``null`` in JSON) meaning no face.
A row whose 68 points lie on one spot (less than ``MIN_FACE_SIZE`` pixel apart, such as the row of zeros some
landmark tools write for a missed face) is a frame without a face too. Every other row must be a face: 68 finite
points within ±``MAX_KEYPOINT_COORDINATE`` pixels and, next to a video or frames, within ``KEYPOINT_REACH``
times the frame's larger side of it (``check_keypoint_rows``); inf, a partly NaN row or an absurd coordinate is
an error, not a frame to skip. The first face found is the reference of relative motion.

* ``.npy``: (T, 68, 2|3) or (T, K > 68, 2|3) (the first 68 points are used), as ``load_keypoint_file`` reads;
* ``.json``: a list with one entry per frame, each a list of 68 ``[x, y]`` (or ``[x, y, z]``) or ``null``; or an
  object ``{"fps": 25, "keypoints": [...]}`` with that list;
* a folder of per-frame ``.npy`` files (68, 2) in sorted order — the ``keypoints/`` layout of the preprocessed
  dataset.

The frame rate — a JSON file's ``fps``, ``fps=``, or a video's own — must lie within ``FPS_RANGE`` (1 to 1000
frames per second; a video stating another average rate falls back to its guessed or base rate when one lies
within it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..vision.errors import PreprocessError, VideoReadError, short_reason
from ..keypoints import MAX_KEYPOINT_COORDINATE, MIN_FACE_SIZE, NUM_KEYPOINTS, face_size
from ..vision.landmarks import (LandmarkBackend, MainFaceTracker, check_keypoint_rows, create_landmark_backend,
                                    load_keypoint_file)
from ..vision.smoothing import KEYPOINT_SMOOTHING, OneEuroFilter, OneEuroParams
from ..vision.video import (IMAGE_SEQUENCE_FPS, Frame, is_image, iter_frames, list_images, read_image,
                                sample_video)

#: Frames searched for a first face before the driver is rejected.
FACE_SEARCH_FRAMES = 50
#: A gap without a face longer than this (seconds) restarts the keypoint filter.
MAX_GAP = 0.5
KEYPOINT_SUFFIXES = (".npy", ".json")
#: The frame rates a driver may have, in frames per second (both ends included).
FPS_RANGE = (1.0, 1000.0)
#: Keypoints given next to a video or frames may lie this many times the frame's larger side away from it.
KEYPOINT_REACH = 10

__all__ = ["Driver", "DriverError", "DriverFrame", "DriverSource", "FramesSource", "KeypointSource", "VideoSource",
           "open_source", "FACE_SEARCH_FRAMES", "FPS_RANGE", "KEYPOINT_REACH",
           "KEYPOINT_SUFFIXES", "MAX_KEYPOINT_COORDINATE", "MIN_FACE_SIZE", "check_fps", "load_keypoint_sequence",
           "open_driver"]


class DriverError(ValueError):
    """A driver that cannot be used (unreadable, no video stream, wrong keypoint shape, no face): one sentence."""


@dataclass(frozen=True)
class DriverFrame:
    """One driving frame: ``index`` (position in the driver, from 0), ``time`` (seconds), ``image`` (H × W × 3
    RGB uint8, None for a keypoint-only driver), ``keypoints`` ((68, 2) float32, pixels of the driver frame,
    smoothed) and ``found`` (False when the face was not found and the keypoints are reused)."""

    index: int
    time: float
    image: np.ndarray | None
    keypoints: np.ndarray
    found: bool


# ---------------------------------------------------------------------------------------- keypoint files
def check_fps(value: object, what: str) -> float:
    """``value`` as a float when it is a frame rate within ``FPS_RANGE``; else ``DriverError`` saying that
    ``what`` (e.g. "the fps of keypoint file kp.json") is out of range."""
    low, high = FPS_RANGE
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not low <= value <= high:  # NaN fails the comparison
        shown = ("NaN" if value != value else f"{value:g}") if number else repr(value)
        raise DriverError(f"{what} is {shown}; expected a frame rate of {low:g} to {high:g} frames per second.")
    return float(value)


def _keypoints_from_json(path: Path) -> tuple[np.ndarray, float | None]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DriverError(f"cannot read keypoint file {path} ({short_reason(exc)}); expected JSON.") from exc
    fps = None
    if isinstance(data, dict):
        fps = data.get("fps")
        data = data.get("keypoints")
        if fps is not None:
            fps = check_fps(fps, f"the fps of keypoint file {path}")
    expected = 'a list of frames, each 68 [x, y] pairs or null (or {"fps": ..., "keypoints": [...]})'
    if not isinstance(data, list) or not data:
        raise DriverError(f"keypoint file {path} holds no keypoint list; expected {expected}.")
    rows = []
    for i, frame in enumerate(data):
        if frame is None:
            rows.append(np.full((NUM_KEYPOINTS, 2), np.nan, np.float32))
            continue
        try:
            arr = np.asarray(frame, np.float64)
        except (TypeError, ValueError):
            arr = np.zeros(0)
        if arr.ndim != 2 or arr.shape[0] < NUM_KEYPOINTS or arr.shape[1] not in (2, 3):
            raise DriverError(f"frame {i} of keypoint file {path} has shape {arr.shape}; expected {expected}.")
        rows.append(arr[:NUM_KEYPOINTS, :2])
    try:
        kp = check_keypoint_rows(np.stack(rows), f"keypoint file {path}", no_face="null", no_size="no face")
    except PreprocessError as exc:
        raise DriverError(str(exc)) from None
    return kp, fps


def _keypoints_from_folder(path: Path) -> np.ndarray:
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".npy")
    if not files:
        raise DriverError(f"keypoint folder {path} holds no .npy file; expected one (68, 2) file per frame.")
    rows = []
    for f in files:
        try:
            kp = load_keypoint_file(f, no_size="no face")  # (T, 68, 2), checked
        except PreprocessError as exc:
            raise DriverError(str(exc)) from None
        if len(kp) != 1:
            raise DriverError(f"keypoint file {f} holds {len(kp)} frames; expected one (68, 2) frame per file in "
                              f"keypoint folder {path}.")
        rows.append(kp[0])
    return np.stack(rows)


def load_keypoint_sequence(path: str | Path) -> tuple[np.ndarray, float | None]:
    """A keypoint sequence (``.npy``, ``.json`` or a folder of per-frame ``.npy``; see the module docstring) →
    ((T, 68, 2) float32 pixels with NaN rows for "no face", the fps stored in the file or None). Every row is
    checked (``check_keypoint_rows``: a face, or no face — all NaN, or points on one spot, which become NaN); the
    fps must lie within ``FPS_RANGE``. Raises ``DriverError`` (one sentence naming the file)."""
    path = Path(path)
    if not path.exists():
        raise DriverError(f"keypoint file {path} does not exist.")
    if path.is_dir():
        return _keypoints_from_folder(path), None
    suffix = path.suffix.lower()
    if suffix == ".json":
        kp, fps = _keypoints_from_json(path)
    elif suffix == ".npy":
        try:
            kp, fps = load_keypoint_file(path, no_size="no face"), None
        except PreprocessError as exc:
            raise DriverError(str(exc)) from None
    else:
        raise DriverError(f"keypoint file {path} has an unsupported suffix; expected .npy or .json.")
    if len(kp) == 0:
        raise DriverError(f"keypoint file {path} holds no frame; expected (T, 68, 2) with T ≥ 1.")
    return kp, fps


def _check_reach(kp: np.ndarray, where: Path, driver: Path, size: tuple[int, int]) -> None:
    """``DriverError`` when a face of the (T, 68, 2) keypoints lies more than ``KEYPOINT_REACH`` times the larger
    side of the driver's ``size`` (W, H) frames away from them."""
    w, h = size
    margin = KEYPOINT_REACH * max(w, h)
    with np.errstate(invalid="ignore"):
        far = ((kp[..., 0] < -margin) | (kp[..., 0] > w + margin)
               | (kp[..., 1] < -margin) | (kp[..., 1] > h + margin)).any(axis=1)
    if far.any():
        i = int(np.argmax(far))
        x, y = kp[i][int(np.abs(kp[i] - (w / 2, h / 2)).max(axis=1).argmax())]
        raise DriverError(f"frame {i} of keypoint file {where} has a point at ({x:.4g}, {y:.4g}), more than "
                          f"{KEYPOINT_REACH} times the {w}×{h} frame of driver {driver.name} away from it; expected "
                          "pixels of the driver's frames.")


# --------------------------------------------------------------------------------------------- driver
def spread_indices(total: int, count: int) -> np.ndarray:
    """Up to ``count`` indices of ``range(total)`` spread evenly over it, the first and the last included."""
    return np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(int))


def _video_seconds(container, stream) -> float | None:
    """The video stream's duration in seconds: the stream's own, else a Matroska/WebM track's ``DURATION`` tag
    ("HH:MM:SS.fraction"), else the container's (which a longer audio track inflates); None when none is stated."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        try:
            hours, minutes, seconds = tag.strip().split(":")
            value = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            value = 0.0
        if value > 0:
            return value
    if container.duration and container.duration > 0:  # in av.time_base units (µs)
        import av

        return float(container.duration) / av.time_base
    return None


class DriverSource:
    """Where a driver's frames come from, without tracking: ``kind``, ``fps``, ``size`` ((W, H); None for keypoints
    only), ``num_frames`` (None when unknown), ``seconds`` (a video's duration, for estimates), ``audio``, and
    ``keypoints`` (a (T, 68, 2) pixel sequence when the source is one; else None). ``frames(count)`` yields
    (position, time, image, the decoder's frame index) from the start; ``sample(picks)`` the frames at those indices, found without decoding
    the rest where the source allows it."""

    kind = ""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self.size: tuple[int, int] | None = None
        self.num_frames: int | None = None
        self.seconds: float | None = None
        self.audio = False
        self.keypoints: np.ndarray | None = None

    def frames(self, count: int | None = None) -> Iterator[tuple[int, float, np.ndarray | None, int]]:
        raise NotImplementedError

    def sample(self, picks: np.ndarray) -> Iterator[Frame]:
        raise NotImplementedError

    def _first_frame(self) -> np.ndarray:
        try:
            for frame in iter_frames(self.path, max_frames=1):
                return frame.image
        except VideoReadError as exc:
            raise DriverError(f"cannot decode driver {self.path} ({short_reason(exc)}); expected a readable video or "
                              "image.") from exc
        raise DriverError(f"driver {self.path} holds no decodable frame; expected a video with at least one frame.")

    def _decoded(self, count: int | None, video_time: bool) -> Iterator[tuple[int, float, np.ndarray, int]]:
        frames = iter_frames(self.path, max_frames=count)
        position = 0
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except VideoReadError as exc:
                raise DriverError(f"driver {self.path} stopped decoding after {position} frames ({short_reason(exc)}); "
                                  "expected a complete video.") from exc
            # folders of images (and videos read at their own rate) number their frames from 0 without gaps
            yield position, (frame.time if video_time else position / self.fps), frame.image, frame.index
            position += 1


class VideoSource(DriverSource):
    """A video file, decoded with PyAV at its own frame rate."""

    kind = "video"

    def __init__(self, path: Path) -> None:
        import av

        super().__init__(path, IMAGE_SEQUENCE_FPS)
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise DriverError(f"driver {path} has no video stream; expected a video file.")
                stream = container.streams.video[0]
                rates = [float(r) for r in (stream.average_rate, stream.guessed_rate, stream.base_rate) if r]
                usable = [r for r in rates if FPS_RANGE[0] <= r <= FPS_RANGE[1]]
                if rates and not usable:
                    check_fps(rates[0], f"the frame rate of driver {path}")
                self.fps = usable[0] if usable else IMAGE_SEQUENCE_FPS  # a video keeps its own rate
                self.num_frames = int(stream.frames) if stream.frames else None
                self.seconds = _video_seconds(container, stream)
                self.audio = bool(container.streams.audio)
        except (av.FFmpegError, OSError) as exc:
            raise DriverError(f"cannot read driver {path} ({short_reason(exc)}); expected a video file, a folder of frames "
                              "or a keypoint file (.npy, .json).") from exc
        first = self._first_frame()
        self.size = (first.shape[1], first.shape[0])  # after the display rotation, as the frames are yielded

    def frames(self, count: int | None = None) -> Iterator[tuple[int, float, np.ndarray, int]]:
        return self._decoded(count, video_time=True)

    def sample(self, picks: np.ndarray) -> Iterator[Frame]:
        return sample_video(self.path, picks / self.fps)


class FramesSource(DriverSource):
    """A folder of frames (or one image), numbered from 0 at ``fps``."""

    kind = "images"

    def __init__(self, path: Path, count: int, fps: float) -> None:
        super().__init__(path, fps)
        self.num_frames = count
        first = self._first_frame()
        self.size = (first.shape[1], first.shape[0])

    def frames(self, count: int | None = None) -> Iterator[tuple[int, float, np.ndarray, int]]:
        return self._decoded(count, video_time=False)

    def sample(self, picks: np.ndarray) -> Iterator[Frame]:
        images = list_images(self.path) if self.path.is_dir() else [self.path]
        return (Frame(int(i), i / self.fps, read_image(images[i])) for i in picks)


class KeypointSource(DriverSource):
    """A keypoint sequence (``load_keypoint_sequence``): no frames, only the keypoints of each."""

    kind = "keypoints"

    def __init__(self, path: Path, fps: float | None) -> None:
        keypoints, stated = load_keypoint_sequence(path)
        super().__init__(path, float(fps or stated or IMAGE_SEQUENCE_FPS))
        self.keypoints = keypoints
        self.num_frames = len(keypoints)

    def frames(self, count: int | None = None) -> Iterator[tuple[int, float, None, int]]:
        n = self.num_frames if count is None else min(self.num_frames, count)
        return ((i, i / self.fps, None, i) for i in range(n))


def open_source(path: Path, fps: float | None = None) -> DriverSource:
    """The source ``path`` is: a keypoint file or a folder of .npy keypoints, a folder of frames or one image, or a
    video file (``fps``: the rate of a keypoint sequence or frames; a video keeps its own)."""
    if not path.exists():
        raise DriverError(f"driver {path} does not exist; expected a video file, a folder of frames or a "
                          "keypoint file (.npy, .json).")
    if path.is_dir():
        images = list_images(path)
        if images:
            return FramesSource(path, len(images), float(fps or IMAGE_SEQUENCE_FPS))
        if any(p.suffix.lower() == ".npy" for p in path.iterdir()):
            return KeypointSource(path, fps)
        raise DriverError(f"driver folder {path} holds no image or .npy keypoint file; expected the frames "
                          "of a video or per-frame keypoints.")
    if path.suffix.lower() in KEYPOINT_SUFFIXES:
        return KeypointSource(path, fps)
    if is_image(path):
        return FramesSource(path, 1, float(fps or IMAGE_SEQUENCE_FPS))
    return VideoSource(path)


class Driver:
    """A driving source (``DriverSource``: a video, frames or a keypoint sequence) with face tracking, lost-face
    handling and smoothing (see the module docstring). Build it with ``open_driver`` (which checks it), or
    construct and call ``check()`` yourself. Attributes, valid after ``check()``:

    ``kind`` ("video", "images" or "keypoints"), ``fps``, ``size`` ((W, H), None for keypoints only),
    ``num_frames`` (None when the container does not say), ``frames_estimate`` (``num_frames``, else the
    video's duration times ``fps``; None when neither is known), ``audio`` (the file has an audio stream),
    ``first_face`` (index of the first frame with a face). During / after iteration: ``frames_read`` and
    ``lost`` (frames whose keypoints were reused).

    Iterating decodes the driver from its start again each time. ``close()`` releases a landmark backend the
    driver created (a backend instance passed in is left to its owner).
    """

    def __init__(self, path: str | Path, *, landmarks: str | LandmarkBackend = "mediapipe",
                 keypoints: str | Path | None = None, smoothing: bool | OneEuroParams = True,
                 max_frames: int | None = None, fps: float | None = None,
                 face_search: int = FACE_SEARCH_FRAMES, faces: int = 1) -> None:
        self.path = Path(path).expanduser()
        self.keypoints_path = None if keypoints is None else Path(keypoints).expanduser()
        self.landmarks = landmarks
        if smoothing is True:
            smoothing = KEYPOINT_SMOOTHING
        self.smoothing: OneEuroParams | None = smoothing or None
        if max_frames is not None and max_frames <= 0:
            raise DriverError(f"the maximum number of frames is {max_frames}; expected a whole number ≥ 1.")
        if face_search <= 0:
            raise DriverError(f"the number of frames searched for a face is {face_search}; expected a whole number "
                              "≥ 1.")
        if fps is not None:
            fps = check_fps(fps, "the driver's frame rate")
        if isinstance(faces, bool) or not isinstance(faces, int) or faces < 1:
            raise DriverError(f"faces must be a positive number of faces to follow, got {faces!r}.")
        self.faces = faces
        self.max_frames, self.face_search, self._fps_override = max_frames, int(face_search), fps
        self.source: DriverSource | None = None
        self.kind = ""
        self.fps = IMAGE_SEQUENCE_FPS
        self.size: tuple[int, int] | None = None
        self.num_frames: int | None = None
        self._seconds: float | None = None  # the video's duration, for frames_estimate
        self.audio = False
        self.first_face: int | None = None
        self.lost = 0
        self.frames_read = 0
        self._keypoints: np.ndarray | None = None  # a keypoint sequence, when detection does not run
        self._first_keypoints: np.ndarray | None = None
        self._scale = 1.0
        self._backend: LandmarkBackend | None = landmarks if isinstance(landmarks, LandmarkBackend) else None
        self._own_backend = False
        self._checked = False

    # ------------------------------------------------------------------------------------------ checks
    def check(self) -> Driver:
        """Validate the driver and find its first face (see the module docstring); returns ``self``. Idempotent."""
        if self._checked:
            return self
        path = self.path
        if self.keypoints_path is not None and path.exists() and (path.suffix.lower() in KEYPOINT_SUFFIXES or (
                path.is_dir() and not list_images(path) and any(p.suffix.lower() == ".npy" for p in path.iterdir()))):
            raise DriverError(f"driver {path} is already a keypoint sequence; separate keypoints go only with a "
                              "video or a folder of frames.")
        self.source = source = open_source(path, self._fps_override)
        self.kind, self.fps, self.size = source.kind, source.fps, source.size
        self.num_frames, self._seconds, self.audio = source.num_frames, source.seconds, source.audio
        self._keypoints = source.keypoints
        if self.max_frames is not None and self.num_frames is not None:
            self.num_frames = min(self.num_frames, self.max_frames)
        if self.kind != "keypoints" and self.keypoints_path is not None:
            self._keypoints, _ = load_keypoint_sequence(self.keypoints_path)
            if self.size is not None:
                _check_reach(self._keypoints, self.keypoints_path, path, self.size)
            if self.num_frames is not None and len(self._keypoints) < self.num_frames:
                raise DriverError(f"keypoint file {self.keypoints_path} has {len(self._keypoints)} frames but "
                                  f"driver {path.name} has {self.num_frames}; expected one row per frame.")
        self._find_first_face()
        self._checked = True
        return self

    def _find_first_face(self) -> None:
        searched = 0
        for index, _time, _image, kp in self._raw_frames(limit=self.face_search):
            searched += 1
            if kp is not None:
                self.first_face, self._first_keypoints = index, kp
                self._scale = max(face_size(kp), 1e-6)
                return
        where = (f"its first {searched} frames" if searched >= self.face_search
                 else "its only frame" if searched == 1 else f"any of its {searched} frames")
        if self._keypoints is None:
            raise DriverError(f"no face found in driver {self.path} ({where}); expected a video of a face.")
        given = "" if self.kind == "keypoints" else f" by keypoint file {self.keypoints_path}"
        raise DriverError(f"no face found in driver {self.path}{given} ({where}): each row is NaN or null, or its 68 "
                          "points lie on one spot (such as zeros), which means no face; expected at least one face's "
                          "68 points in pixels.")

    # ------------------------------------------------------------------------------------------ frames
    def _ensure_backend(self) -> LandmarkBackend:
        if self._backend is None:
            # MediaPipe in tracking (video) mode, following self.faces faces (see the module docstring)
            options: dict[str, Any] = {"static": False, "max_faces": self.faces}
            try:
                self._backend = create_landmark_backend(str(self.landmarks), **options)
            except PreprocessError as exc:
                raise DriverError(f"cannot create the landmark backend for driver {self.path}: {short_reason(exc)}.") from exc
            self._own_backend = True
        return self._backend

    def _raw_frames(self, limit: int | None = None
                    ) -> Iterator[tuple[int, float, np.ndarray | None, np.ndarray | None]]:
        """(index, time, image, raw keypoints or None) for every frame, from the start."""
        limits = [n for n in (limit, self.max_frames) if n is not None]
        count = min(limits) if limits else None
        backend = tracker = None
        if self._keypoints is None:  # tracked while it plays
            backend = self._ensure_backend()
            tracker = MainFaceTracker()
            try:
                backend.start_sequence(source=self.path)
            except PreprocessError as exc:
                raise DriverError(f"cannot track faces in driver {self.path}: {short_reason(exc)}.") from exc
        for position, time, image, decoded in self.source.frames(count):
            if self._keypoints is not None:
                rows = self._keypoints
                kp = rows[position] if position < len(rows) and np.isfinite(rows[position]).all() else None
                kp = None if kp is None else kp.copy()
            else:
                face = tracker(backend.detect(image, decoded))
                kp = None if face is None else np.asarray(face.keypoints, np.float32)[:, :2].copy()
            yield position, time, image, kp

    def __iter__(self) -> Iterator[DriverFrame]:
        self.check()
        self.lost = 0
        self.frames_read = 0
        filt = OneEuroFilter.from_params(self.smoothing) if self.smoothing is not None else None
        last: np.ndarray | None = None
        last_time: float | None = None
        for index, time, image, raw in self._raw_frames():
            self.frames_read += 1
            if raw is None:
                self.lost += 1
                kp = last if last is not None else self._first_keypoints
                yield DriverFrame(index, time, image, kp.astype(np.float32, copy=True), False)
                continue
            if filt is not None:
                if last_time is not None and time - last_time > MAX_GAP:
                    filt.reset()
                raw = (filt(raw / self._scale, time) * self._scale).astype(np.float32)
            last, last_time = raw, time
            yield DriverFrame(index, time, image, raw.copy(), True)

    def known_keypoints(self) -> np.ndarray | None:
        """The (T, 68, 2) pixel keypoints of every frame (after ``max_frames``; a row of NaN where there is no
        face, unsmoothed) when they are known before playing: a keypoint sequence, or a video or frame folder given
        ``keypoints=``. None for a driver whose faces are tracked while it plays."""
        self.check()
        if self._keypoints is None:
            return None
        limits = [n for n in (self.num_frames, self.max_frames) if n is not None]
        rows = self._keypoints[: min(limits)] if limits else self._keypoints
        return np.asarray(rows, np.float32)[..., :2].copy()

    @property
    def first_keypoints(self) -> np.ndarray:
        """The raw (68, 2) pixel keypoints of the driver's first face (frame ``first_face``): what iterating yields
        first (the frames before it reuse them), so relative motion's reference."""
        self.check()
        return self._first_keypoints.copy()

    def sample_keypoints(self, count: int) -> list[tuple[float, np.ndarray]] | None:
        """(time, raw (68, 2) pixel keypoints) of up to ``count`` frames spread evenly over a driver whose faces
        are tracked while it plays, found before playing: a video is sought to each frame's time
        (``sample_video``), a folder's images are read directly, and each face is detected on its own (MediaPipe
        in static-image mode, following the same person by ``MainFaceTracker``); frames without a face are
        skipped. None when the driver's length is unknown (a video stating neither frame count nor duration), or
        when its keypoints are known anyway (``known_keypoints``)."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise DriverError(f"count is {count!r}; expected a whole number of frames ≥ 1.")
        self.check()
        if self._keypoints is not None or self.kind == "keypoints":
            return None
        total = self.frames_estimate if self.kind == "video" else self.num_frames
        if not total:
            return None
        frames = self.source.sample(spread_indices(total, count))
        own = not isinstance(self.landmarks, LandmarkBackend)
        try:
            backend = (create_landmark_backend(str(self.landmarks), static=True, max_faces=self.faces) if own
                       else self.landmarks)
        except PreprocessError as exc:
            reason = short_reason(exc)
            raise DriverError(f"cannot create the landmark backend for driver {self.path}: {reason}.") from exc
        tracker, found = MainFaceTracker(), []
        try:
            backend.start_sequence(source=self.path)
            for frame in frames:
                face = tracker(backend.detect(frame.image, frame.index))
                if face is not None:
                    found.append((frame.time, np.asarray(face.keypoints, np.float32)[:, :2].copy()))
        except (PreprocessError, VideoReadError) as exc:
            raise DriverError(f"cannot sample the faces of driver {self.path}: {short_reason(exc)}.") from exc
        finally:
            if own:
                backend.close()
        return found

    @property
    def duration(self) -> float | None:
        """num_frames / fps in seconds, when the number of frames is known."""
        return None if self.num_frames is None else self.num_frames / self.fps

    @property
    def frames_estimate(self) -> int | None:
        """``num_frames`` when known; else, for a container that states only durations (Matroska, WebM), the
        video's duration times ``fps`` (at most ``max_frames``); else None. The video's duration is its stream's
        (or the ``DURATION`` tag Matroska muxers write per track), so a longer audio track does not inflate it;
        the container's duration is the last resort."""
        if self.num_frames is not None:
            return self.num_frames
        if self._seconds is None:
            return None
        frames = max(1, round(self._seconds * self.fps))
        return frames if self.max_frames is None else min(frames, self.max_frames)

    # ------------------------------------------------------------------------------------------ closing
    def close(self) -> None:
        if self._own_backend and self._backend is not None:
            self._backend.close()
            self._backend = None
            self._own_backend = False

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Driver({str(self.path)!r}, kind={self.kind!r}, fps={self.fps:g}, size={self.size}, "
                f"num_frames={self.num_frames}, audio={self.audio})")


def open_driver(path: str | Path, *, landmarks: str | LandmarkBackend = "mediapipe",
                keypoints: str | Path | None = None, smoothing: bool | OneEuroParams = True,
                max_frames: int | None = None, fps: float | None = None,
                face_search: int = FACE_SEARCH_FRAMES, faces: int = 1) -> Driver:
    """A checked ``Driver`` for ``path`` (a video file, a folder of frames, or a keypoint sequence: .npy, .json or
    a folder of per-frame .npy). ``landmarks``: backend name or instance (MediaPipe runs in tracking mode);
    ``keypoints``: a keypoint sequence for a video / frame folder (no detection then); ``smoothing``: True (the
    ``KEYPOINT_SMOOTHING`` One-Euro filter), False, or ``OneEuroParams``; ``max_frames``: stop after that many
    frames; ``fps``: the rate of a keypoint sequence or frame folder (default: the file's, else 25; a video keeps
    its own);
    ``face_search``: frames searched for a first face; ``faces``: faces a landmark backend created here follows
    (MediaPipe; 1 is fastest, more for drivers with several people, see the module docstring). Raises
    ``DriverError`` (one sentence)."""
    driver = Driver(path, landmarks=landmarks, keypoints=keypoints, smoothing=smoothing, max_frames=max_frames,
                    fps=fps, face_search=face_search, faces=faces)
    try:
        return driver.check()
    except BaseException:
        driver.close()
        raise

