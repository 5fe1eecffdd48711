"""Where a live session's frames go: a video file, a virtual camera, or a hub that web clients read.

Each output has ``write(RenderedFrame)`` (called by the render loop, so it must be quick) and ``close()``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from .capture import LiveError
from .session import RenderedFrame


class FileOutput:
    """A video at a constant ``fps`` in real time: each rendered frame is placed at the moment it was captured,
    the previous one repeated over the frames that were dropped, so the file plays as the session looked. The file
    appears when ``close()`` is called (``abort()`` leaves nothing)."""

    def __init__(self, path: str | Path, fps: float = 25.0) -> None:
        from ..animate.videoio import check_output_path

        self.path = check_output_path(path)
        self.fps = float(fps)
        self._writer = None
        self._t0: float | None = None
        self._last: np.ndarray | None = None
        self.frames = 0

    def write(self, frame: RenderedFrame) -> None:
        from ..animate.videoio import VideoWriter

        if self._writer is None:
            h, w = frame.image.shape[:2]
            self._writer = VideoWriter(self.path, self.fps, (w, h))
            self._t0 = frame.capture_time
        slot = int(round((frame.capture_time - self._t0) * self.fps))
        while self._last is not None and self.frames < slot:  # frames dropped since the last one: hold it
            self._writer.write(self._last)
            self.frames += 1
        if self.frames <= slot:
            self._writer.write(frame.image)
            self.frames += 1
        self._last = frame.image

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()


class VirtualCameraOutput:
    """A virtual camera other programs (video calls, OBS) can open: ``pyvirtualcam`` on a v4l2loopback device
    (Linux), OBS's virtual camera (Windows, macOS). Opened at the first frame, whose size it keeps."""

    def __init__(self, fps: float = 25.0, device: str | None = None) -> None:
        try:
            import pyvirtualcam  # noqa: F401
        except ImportError:
            raise LiveError("--virtual-camera needs the pyvirtualcam package (pip install pyvirtualcam) and, on "
                            "Linux, a v4l2loopback device (sudo modprobe v4l2loopback).") from None
        self.fps, self.device = float(fps), device
        self._camera = None

    def write(self, frame: RenderedFrame) -> None:
        if self._camera is None:
            import pyvirtualcam

            h, w = frame.image.shape[:2]
            try:
                self._camera = pyvirtualcam.Camera(width=w, height=h, fps=self.fps, device=self.device)
            except (RuntimeError, OSError) as exc:
                raise LiveError(f"cannot open a virtual camera: {str(exc).strip().rstrip('.')}; on Linux load "
                                "v4l2loopback first (sudo modprobe v4l2loopback).") from None
        self._camera.send(np.ascontiguousarray(frame.image))

    def close(self) -> None:
        if self._camera is not None:
            self._camera.close()
            self._camera = None


def check_virtual_camera(device: str | None = None) -> None:
    """Refuse at once, in one sentence, when no virtual camera can be opened here (no pyvirtualcam, or on Linux
    no v4l2loopback device)."""
    VirtualCameraOutput(device=device)
    import sys

    if sys.platform.startswith("linux"):
        devices = sorted(Path("/sys/devices/virtual/video4linux").glob("video*"))
        loopback = [d for d in devices if "loopback" in (d / "name").read_text(errors="replace").lower()] \
            if devices else []
        if not loopback:
            raise LiveError("no v4l2loopback device on this machine, so there is no virtual camera to write to; "
                            "load the module first (sudo modprobe v4l2loopback) or choose another output.")


class FrameHub:
    """The newest rendered frame as JPEG for any number of readers (a web page's MJPEG stream or WebSocket):
    ``wait(after)`` blocks until a frame newer than sequence number ``after`` exists."""

    def __init__(self, quality: int = 85) -> None:
        self.quality = int(quality)
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._keypoints: np.ndarray | None = None
        self.sequence = 0
        self.closed = False

    def write(self, frame: RenderedFrame) -> None:
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
            return
        with self._cond:
            self._jpeg, self._keypoints = data.tobytes(), frame.keypoints
            self.sequence += 1
            self._cond.notify_all()

    def wait(self, after: int, timeout: float = 1.0) -> tuple[int, bytes | None]:
        """(sequence, JPEG) of the newest frame once it is newer than ``after``; (after, None) after ``timeout``
        seconds or when the hub is closed."""
        with self._cond:
            self._cond.wait_for(lambda: self.sequence > after or self.closed, timeout)
            if self.sequence > after and self._jpeg is not None:
                return self.sequence, self._jpeg
            return after, None

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
