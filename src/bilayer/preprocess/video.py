"""Reading frames: videos through PyAV, image folders through OpenCV, with optional FPS subsampling."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import VideoReadError, short_reason

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".flv", ".wmv", ".ts"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

#: Frame rate assumed for a folder of images (used for ``fps`` subsampling and for the smoothing filters).
IMAGE_SEQUENCE_FPS = 25.0


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``index`` counts every frame of the source (before subsampling), ``time`` is in seconds
    from the start, ``image`` is H×W×3 RGB uint8."""

    index: int
    time: float
    image: np.ndarray


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, in sorted (lexicographic) order."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image(p) and not p.name.startswith("."))


class _Subsampler:
    """Keeps the first frame, then the first frame at or after each multiple of 1/fps seconds."""

    def __init__(self, fps: float | None):
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.step = None if fps is None else 1.0 / fps
        self.next_time: float | None = None

    def keep(self, time: float) -> bool:
        if self.step is None:
            return True
        if self.next_time is None:
            self.next_time = time
        if time + 1e-6 < self.next_time:
            return False
        # advance past ``time`` (a long gap in the timestamps must not release a burst of frames)
        while self.next_time <= time + 1e-6:
            self.next_time += self.step
        return True


def _nominal_rate(stream) -> float | None:
    rate = stream.average_rate or stream.base_rate or stream.guessed_rate
    return float(rate) if rate else None


def video_fps(path: str | Path) -> float:
    """The nominal frame rate of a video (``IMAGE_SEQUENCE_FPS`` for an image or a folder of images)."""
    path = Path(path)
    if path.is_dir() or is_image(path):
        return IMAGE_SEQUENCE_FPS
    import av

    try:
        with av.open(str(path)) as container:
            return _nominal_rate(container.streams.video[0]) or IMAGE_SEQUENCE_FPS
    except (av.FFmpegError, OSError, IndexError) as exc:
        raise VideoReadError(f"cannot read {path}: {short_reason(exc)}") from exc


@contextmanager
def _video_stream(path: Path):
    """(container, first video stream) of a video file opened with PyAV for decoding on PyAV's threads; a missing,
    unreadable or corrupt file (while the block runs, too) becomes ``VideoReadError``."""
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise VideoReadError(f"cannot open {path.name}: {short_reason(exc)}") from exc
    try:
        if not container.streams.video:
            raise VideoReadError(f"{path.name} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield container, stream
    except av.FFmpegError as exc:
        raise VideoReadError(f"{path.name} is corrupt: {short_reason(exc)}") from exc
    finally:
        container.close()


def _upright_rgb(frame) -> np.ndarray:
    """A decoded PyAV frame as H×W×3 RGB uint8, turned upright by its display matrix (phone videos)."""
    image = frame.to_ndarray(format="rgb24")
    turns = round(getattr(frame, "rotation", 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def iter_video(path: str | Path, fps: float | None = None, max_frames: int | None = None) -> Iterator[Frame]:
    """Decode a video file with PyAV. Raises ``VideoReadError`` for a missing, truncated or corrupt file (possibly
    after some frames were yielded)."""
    path = Path(path)
    sub = _Subsampler(fps)
    kept = 0
    if max_frames is not None and max_frames <= 0:
        return
    with _video_stream(path) as (container, stream):
        rate = _nominal_rate(stream) or IMAGE_SEQUENCE_FPS
        time_base = stream.time_base
        for index, frame in enumerate(container.decode(stream)):
            if frame.pts is not None and time_base is not None:
                time = float(frame.pts * time_base)
            else:
                time = index / rate
            if not sub.keep(time):
                continue
            yield Frame(index, time, _upright_rgb(frame))
            kept += 1
            if max_frames is not None and kept >= max_frames:
                break
        if kept == 0:
            raise VideoReadError(f"{path.name} holds no decodable frame")


def sample_video(path: str | Path, times: Sequence[float], seek_after: float = 2.0) -> Iterator[Frame]:
    """For each of ``times`` (seconds, ascending), the first frame of a video at or after it, decoded without
    reading the whole file: a target more than ``seek_after`` seconds (or one keyframe interval, once known) ahead
    of the decoder is reached by seeking to the keyframe before it, a nearer one by decoding on. After a seek lands
    at keyframe K for target T, ``seek_after`` grows to T − K at least, so a video with sparse keyframes is not
    decoded twice between close targets. Times past the end yield nothing; ``index`` counts frames from the seek
    point by the nominal rate (exact without seeking). Raises ``VideoReadError`` like ``iter_video``."""
    path = Path(path)
    wanted = sorted(float(t) for t in times)
    if not wanted:
        return
    with _video_stream(path) as (container, stream):
        rate = _nominal_rate(stream) or IMAGE_SEQUENCE_FPS
        time_base = stream.time_base
        start = float(stream.start_time * time_base) if stream.start_time is not None and time_base else 0.0
        frames = container.decode(stream)
        current, index = -1.0, -1  # the last decoded frame's time and index
        landed: float | None = None  # the target of a seek not yet answered by a decoded frame
        last: Frame | None = None
        for target in wanted:
            if last is not None and last.time + 1e-6 >= target:  # several times within one frame
                yield last
                continue
            if target - current > seek_after and time_base is not None:
                container.seek(int((start + target) / time_base), stream=stream, backward=True, any_frame=False)
                frames = container.decode(stream)
                landed = target
            found = None
            for frame in frames:
                if frame.pts is not None and time_base:
                    time = float(frame.pts * time_base) - start
                else:
                    time = (index + 1) / rate
                if landed is not None:  # the keyframe a seek landed on: learn the keyframe interval
                    seek_after = max(seek_after, landed - time)
                    index = round(time * rate) - 1
                    landed = None
                current, index = time, index + 1
                if time + 1e-6 >= target:
                    found = frame
                    break
            if found is None:
                return  # past the end
            last = Frame(index, current, _upright_rgb(found))
            yield last


def read_image(path: str | Path) -> np.ndarray:
    """An image file as H×W×3 RGB uint8 (grey and RGBA are converted). Raises ``VideoReadError``."""
    data = np.fromfile(str(path), np.uint8) if Path(path).is_file() else None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if img is None:
        raise VideoReadError(f"cannot read image {Path(path).name}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def iter_images(paths: Sequence[str | Path], fps: float | None = None, max_frames: int | None = None,
                source_fps: float = IMAGE_SEQUENCE_FPS) -> Iterator[Frame]:
    """Read a list of image files as a sequence at ``source_fps``."""
    sub = _Subsampler(fps)
    kept = 0
    for index, p in enumerate(paths):
        if max_frames is not None and kept >= max_frames:
            break
        time = index / source_fps
        if not sub.keep(time):
            continue
        yield Frame(index, time, read_image(p))
        kept += 1


def iter_frames(path: str | Path, fps: float | None = None, max_frames: int | None = None) -> Iterator[Frame]:
    """Frames of a video file, an image file (one frame) or a folder of images (sorted order), as ``Frame``s."""
    path = Path(path)
    if path.is_dir():
        return iter_images(list_images(path), fps, max_frames)
    if is_image(path):
        return iter_images([path], fps, max_frames)
    return iter_video(path, fps, max_frames)


def decode_frames(path: str | Path, fps: float | None = None, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Iterate over the frames of a video (or image / folder of images) as H×W×3 RGB uint8 arrays.

    ``fps`` subsamples to at most that rate (the first frame at or after every 1/fps seconds); ``max_frames``
    stops after that many frames have been returned. Raises ``VideoReadError`` for an unreadable input.
    """
    for frame in iter_frames(path, fps, max_frames):
        yield frame.image
