"""Live sources: a camera, a network stream, a video file played at its own speed, or frames pushed in.

Every source yields ``CapturedFrame`` s — the RGB image and the moment it arrived (``time.perf_counter``) — as
fast as they arrive and never waits for the consumer: a live session hands them on through ``Latest`` mailboxes,
so a slow stage skips frames instead of building a backlog.

``open_live_source(spec)`` chooses by the text given:

* ``/dev/videoN``, ``camera`` or ``camera:N`` — a V4L2 camera through PyAV (Linux); ``camera_size`` ("WxH") and
  ``camera_fps`` ask the device for a mode;
* ``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://``, ``tcp://``, ``srt://`` … — a network stream through PyAV;
* anything else — a video file, played at its real frame rate (each frame is delivered at its presentation
  time; ``loop`` starts it over at the end; ``rate`` plays its frames at that many per second instead, like a
  camera of that rate), which makes a file behave like a camera for demos, tests and benchmarks.

Network streams are paced by their timestamps too, so one that arrives in a burst (a file served over HTTP)
still plays in real time, while a truly live one, whose frames arrive late, is never delayed further.

``PushSource`` takes frames from code (the web app's WebSocket, which receives a browser's webcam).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..vision.errors import short_reason
from .mailbox import Latest

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
OPEN_TIMEOUT = 10.0  # seconds to open a network stream or camera
READ_TIMEOUT = 5.0  # seconds without a packet before a network stream counts as ended


class LiveError(ValueError):
    """A live source, output or option that cannot work as given; the message is one sentence."""


@dataclass
class CapturedFrame:
    index: int  # 0, 1, 2 … in the order the source delivered them
    time: float  # time.perf_counter() when the frame arrived
    image: np.ndarray  # H × W × 3 RGB uint8


class LiveSource:
    """Base class: ``frames(stop)`` yields ``CapturedFrame`` s until the source ends or ``stop`` is set."""

    kind = ""
    name = ""
    fps: float | None = None  # the nominal rate, when the source states one
    size: tuple[int, int] | None = None  # (W, H)

    def frames(self, stop: threading.Event) -> Iterator[CapturedFrame]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "LiveSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _scheme(spec: str) -> str | None:
    head, sep, _ = spec.partition("://")
    return head.lower() if sep and head.isalpha() else None


def camera_path(spec: str) -> str | None:
    """The device path a camera spec names (``/dev/videoN``, ``camera``, ``camera:N``), or None."""
    if spec == "camera":
        return "/dev/video0"
    if spec.startswith("camera:") and spec[7:].isdigit():
        return f"/dev/video{int(spec[7:])}"
    if spec.startswith("/dev/video"):
        return spec
    return None


class AVSource(LiveSource):
    """A camera, network stream or video file read through PyAV (see the module docstring)."""

    def __init__(self, spec: str, *, loop: bool = False, camera_size: str | None = None,
                 camera_fps: float | None = None, rate: float | None = None, open_timeout: float = OPEN_TIMEOUT,
                 read_timeout: float = READ_TIMEOUT) -> None:
        self.spec = spec
        if rate is not None and not 0 < rate <= 1000:
            raise LiveError(f"the playing rate is {rate:g} frames per second; expected a number above 0 and at "
                            "most 1000.")
        self.rate = rate
        device = camera_path(spec)
        scheme = _scheme(spec)
        self.loop = bool(loop)
        self._open_args: dict = {}
        if device is not None:
            self.kind, self.name = "camera", device
            if not Path(device).exists():
                raise LiveError(f"no camera at {device}; give another device (/dev/videoN), a network stream or a "
                                "video file.")
            options = {}
            if camera_size:
                options["video_size"] = camera_size
            if camera_fps:
                options["framerate"] = f"{camera_fps:g}"
            self._open_args = {"format": "v4l2", "options": options, "timeout": open_timeout}
        elif scheme is not None:
            if scheme not in NETWORK_SCHEMES:
                raise LiveError(f"live source {spec} uses {scheme}://, which is not a video stream protocol; expected "
                                f"one of {', '.join(s + '://' for s in NETWORK_SCHEMES)}, a camera or a video file.")
            self.kind, self.name = "stream", spec
            # FFmpeg's defaults: its "nobuffer" flag lost every frame of short MPEG-TS streams over HTTP
            self._open_args = {"timeout": (open_timeout, read_timeout)}
        else:
            path = Path(spec).expanduser()
            self.kind, self.name = "file", str(path)
            if not path.is_file():
                raise LiveError(f"live source {spec} is not a camera, a stream URL or an existing video file.")
            self._open_args = {}
        if self.loop and self.kind != "file":
            raise LiveError("looping works only for a video file, not for a camera or a stream.")
        if rate is not None and self.kind != "file":
            raise LiveError("a playing rate can be set only for a video file; ask a camera for a rate with its own "
                            "option.")
        self._container = None
        self._stream = None
        self._open()

    def _open(self) -> None:
        import av

        what = {"camera": "camera", "stream": "stream", "file": "video"}[self.kind]
        try:
            self._container = av.open(self.name if self.kind != "file" else str(self.name), **self._open_args)
        except (av.FFmpegError, OSError) as exc:
            raise LiveError(f"cannot open {what} {self.name}: {short_reason(exc)}.") from None
        if not self._container.streams.video:
            self._container.close()
            raise LiveError(f"{what} {self.name} has no video stream.")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._stream = stream
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(self.rate) if self.rate else float(rate) if rate else None
        cc = stream.codec_context
        self.size = (int(cc.width), int(cc.height)) if cc.width and cc.height else None

    def frames(self, stop: threading.Event) -> Iterator[CapturedFrame]:
        import av

        index = 0
        start: float | None = None  # perf_counter of the first frame: the clock timestamps are paced on
        offset = 0.0  # seconds of the file already played, per loop
        pace = self.kind in ("file", "stream")
        while not stop.is_set():
            first = last = None  # this pass's first and last timestamps
            pass_index = 0
            try:
                for frame in self._container.decode(self._stream):
                    if stop.is_set():
                        return
                    stamp = frame.time if self.rate is None else pass_index / self.rate
                    pass_index += 1
                    if pace and stamp is not None:
                        first = stamp if first is None else first
                        last = stamp
                        if start is None:
                            start = time.perf_counter()
                        due = start + offset + (stamp - first)
                        while not stop.is_set() and (wait := due - time.perf_counter()) > 0:
                            time.sleep(min(wait, 0.05))
                    image = frame.to_ndarray(format="rgb24")
                    yield CapturedFrame(index, time.perf_counter(), image)
                    index += 1
            except av.FFmpegError as exc:
                if self.kind == "file" or index == 0:
                    what = {"camera": "camera", "stream": "stream", "file": "video"}[self.kind]
                    raise LiveError(f"cannot decode {what} {self.name}: {short_reason(exc)}.") from None
                return  # a stream or camera that stopped delivering after its first frames has ended
            if not self.loop or index == 0:
                return
            # start the file over; its timestamps go on one frame after the last one
            if first is not None:
                offset += last - first + (1.0 / self.fps if self.fps else 0.04)
            self._container.close()
            self._open()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


class PushSource(LiveSource):
    """Frames handed in by code (``push``), delivered newest first: a frame pushed while the previous one was not
    yet taken replaces it."""

    def __init__(self, name: str = "frames", fps: float | None = None, kind: str = "pushed") -> None:
        self.name, self.fps, self.kind = name, fps, kind
        self._box = Latest()
        self._count = 0

    def push(self, image: np.ndarray) -> None:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise LiveError(f"a pushed frame must be an H×W×3 RGB uint8 image, got {image.dtype} {image.shape}.")
        self.size = (int(image.shape[1]), int(image.shape[0]))
        self._box.put(CapturedFrame(self._count, time.perf_counter(), image))
        self._count += 1

    @property
    def dropped(self) -> int:
        return self._box.dropped

    def frames(self, stop: threading.Event) -> Iterator[CapturedFrame]:
        while not stop.is_set():
            item = self._box.get(timeout=0.1)
            if item is None:
                if self._box.closed:
                    return
                continue
            yield item

    def close(self) -> None:
        self._box.close()


def open_live_source(spec: str, *, loop: bool = False, camera_size: str | None = None,
                     camera_fps: float | None = None, rate: float | None = None) -> LiveSource:
    """A camera, network stream or video file by ``spec`` (see the module docstring); one-sentence ``LiveError``
    when it cannot be opened."""
    if not isinstance(spec, str) or not spec.strip():
        raise LiveError("the live source is empty; give a camera (/dev/video0), a stream URL or a video file.")
    return AVSource(spec.strip(), loop=loop, camera_size=camera_size, camera_fps=camera_fps, rate=rate)
