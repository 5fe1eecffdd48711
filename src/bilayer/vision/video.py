"""Reading frames: videos through PyAV, images and image folders through Pillow, with optional FPS subsampling."""

from __future__ import annotations

import re
import struct
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import VideoReadError, short_reason

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".flv", ".wmv", ".ts"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

#: Frame rate assumed for a folder of images (used for ``fps`` subsampling and for the smoothing filters).
IMAGE_SEQUENCE_FPS = 25.0

#: The largest image ``read_image`` decodes, in pixels (width × height, read from the file header first): 100
#: megapixels, 300 MB once decoded to RGB. It holds a 10000 × 10000 scan and every camera's full-resolution
#: photo up to 100 MP, and refuses a small file that claims an enormous size (a 2.6 MB PNG of 30000 × 30000
#: zero pixels would take 2.7 GB). Pillow's own guard (``PIL.Image.MAX_IMAGE_PIXELS``) warns from 89.5 and
#: refuses from 179 megapixels.
MAX_IMAGE_PIXELS = 100_000_000


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


def time_span(path: str | Path) -> tuple[float, float]:
    """(start, end) of a video in seconds, on the clock of ``Frame.time``: the first frame's time, and the last
    frame's time plus one frame (1 / the nominal rate). Read from the packets' timestamps without decoding a
    frame. A folder of images spans [0, n / ``IMAGE_SEQUENCE_FPS``), an image one frame. Raises ``VideoReadError``
    for an unreadable video."""
    path = Path(path)
    if path.is_dir() or is_image(path):
        count = len(list_images(path)) if path.is_dir() else 1
        return 0.0, count / IMAGE_SEQUENCE_FPS
    with _video_stream(path) as (container, stream):
        rate = _nominal_rate(stream) or IMAGE_SEQUENCE_FPS
        time_base = stream.time_base
        count, stamps = 0, []
        for packet in container.demux(stream):
            if packet.size == 0:  # the flush packet at the end
                continue
            count += 1
            if packet.pts is not None and time_base is not None:
                stamps.append(float(packet.pts * time_base))
        if count == 0:
            raise VideoReadError(f"{path.name} holds no decodable frame")
        if len(stamps) < count:  # no timestamps: frames are timed by their index (as iter_video does)
            return 0.0, count / rate
        return min(stamps), max(stamps) + 1.0 / rate


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


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG or JPEG file, None for another format or a header that does not
    parse. Used when Pillow refuses to open an image for its size."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
                return struct.unpack(">II", head[16:24])
            if not head.startswith(b"\xff\xd8"):
                return None
            f.seek(2)
            while True:  # walk the JPEG segments up to the frame header (SOF0..SOF15 without DHT, JPG, DAC)
                marker = f.read(4)
                if len(marker) < 4 or marker[0] != 0xFF:
                    return None
                kind, length = marker[1], struct.unpack(">H", marker[2:])[0]
                if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):
                    frame = f.read(5)
                    if len(frame) < 5:
                        return None
                    height, width = struct.unpack(">HH", frame[1:])
                    return width, height
                f.seek(length - 2, 1)
    except (OSError, struct.error):
        return None


def _too_large(path: Path, size: tuple[int, int] | None, pixels: int) -> VideoReadError:
    """The one-clause refusal of an image over ``MAX_IMAGE_PIXELS``."""
    mp = f"{pixels / 1e6:,.0f} megapixels"
    shape = f"{size[0]}×{size[1]} pixels ({mp})" if size else mp
    return VideoReadError(f"image {path.name} is {shape}, more than the limit of {MAX_IMAGE_PIXELS / 1e6:,.0f} "
                          f"megapixels")


def _open_image(path: Path):
    """The image file opened by Pillow (its header read, nothing decoded), after checking its size against
    ``MAX_IMAGE_PIXELS``. Raises ``VideoReadError``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            im = Image.open(path)
    except Image.DecompressionBombError as exc:  # more than twice Pillow's limit: refused before its size is kept
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = _header_size(path)
        pixels = size[0] * size[1] if size else int(found.group(1)) if found else 2 * Image.MAX_IMAGE_PIXELS
        raise _too_large(path, size, pixels) from None
    except UnidentifiedImageError:
        what = "an empty file" if path.stat().st_size == 0 else "not an image file, or its header is damaged"
        raise VideoReadError(f"cannot read image {path.name} ({what})") from None
    except Exception as exc:  # noqa: BLE001 - a missing file, a folder, or a header that makes the decoder fail
        raise VideoReadError(f"cannot read image {path.name} ({short_reason(exc)})") from None
    width, height = im.size
    if width * height > MAX_IMAGE_PIXELS:
        im.close()
        raise _too_large(path, (width, height), width * height)
    return im


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file, read from its header without decoding the pixels. Raises
    ``VideoReadError`` for a file that is not a readable image or that is larger than ``MAX_IMAGE_PIXELS``."""
    with _open_image(Path(path)) as im:
        return im.size


def _to_rgb(im) -> np.ndarray:
    """A decoded Pillow image as a new (writable) H×W×3 RGB uint8 array: grey and palette images are expanded, 16-
    and 32-bit grey scaled to 8 bits, and a transparent image laid over white."""
    from PIL import Image

    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(im, np.float64)
        if im.mode.startswith("I;16") or (im.mode == "I" and values.max(initial=0) > 255):
            values = values / 257.0
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.array(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.array(im if im.mode == "RGB" else im.convert("RGB"))  # np.asarray would be read-only


def read_image(path: str | Path) -> np.ndarray:
    """An image file as H×W×3 RGB uint8, turned upright by its EXIF orientation (grey, 16-bit and palette images
    are converted; transparent pixels are laid over white). The size in the header is checked against
    ``MAX_IMAGE_PIXELS`` before anything is decoded. Raises ``VideoReadError`` (one clause naming the file) for a
    missing, empty, truncated, corrupt or oversized file."""
    from PIL import ImageOps

    path = Path(path)
    with _open_image(path) as im:
        try:
            im.load()
        except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds of error on a damaged file
            reason = short_reason(exc)
            raise VideoReadError(f"cannot read image {path.name} (truncated or corrupt: {reason})") from None
        try:
            turned = im.getexif().get(0x0112, 1) not in (1, None)  # the EXIF Orientation tag
            upright = ImageOps.exif_transpose(im) if turned else im
        except Exception:  # noqa: BLE001 - unreadable EXIF data: keep the pixels as they are stored
            upright = im
        try:
            return _to_rgb(upright)
        except (ValueError, OSError) as exc:  # a mode Pillow cannot turn into RGB
            raise VideoReadError(f"cannot read image {path.name} ({im.mode} pixels: {short_reason(exc)})") from None


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
