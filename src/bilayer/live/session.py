"""A live session: capture → track → render → outputs, three stages in parallel, the newest frame always wins.

::

    capture thread ──Latest──▶ tracking thread ──Latest──▶ render loop ──▶ outputs (file, virtual camera, web
    (camera, stream, file)     (landmarks, smoothing,      (per-frame network,  page, keypoint stream)
                               motion transfer)            composition)

Each stage takes the newest item its mailbox holds (``live.mailbox.Latest``) and the items it never took are
counted as dropped: when rendering falls behind the camera, the shown pose is the latest one, never a queue that
grows. Every frame carries the moment it was captured, so the report measures what a viewer sees: the latency
from capture to the rendered frame (median and 95th percentile), the sustained rendered frames per second and
the frames dropped at each stage.

Before the first face is found nothing is rendered; a frame in which the face is lost shows the last pose.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..animate.compose import side_by_side, to_mask, to_uint8
from ..animate.pipeline import DriverPoses
from ..runtime.avatar import Avatar
from .capture import CapturedFrame, LiveSource
from .mailbox import Latest
from .track import LiveTracker


@dataclass
class RenderedFrame:
    index: int  # the captured frame's index
    capture_time: float  # perf_counter at capture
    image: np.ndarray | None  # the composed output, H × W × 3 RGB uint8 (None: a session that only tracks)
    keypoints: np.ndarray  # the model's (136,) input for this frame
    camera: np.ndarray  # the captured frame


@dataclass
class LiveReport:
    source: str
    backend: str | None = None
    captured: int = 0
    tracked: int = 0
    rendered: int = 0
    no_face: int = 0
    dropped_before_tracking: int = 0
    dropped_before_rendering: int = 0
    wall_seconds: float = 0.0
    latency_ms: list[float] = field(default_factory=list)  # capture → rendered and composed, per rendered frame
    track_ms: list[float] = field(default_factory=list)
    render_ms: list[float] = field(default_factory=list)
    renders: bool = True  # False: the session only tracks (a keypoint sender)

    @property
    def fps(self) -> float:
        """Rendered frames per second, from the first rendered frame to the last."""
        return self.rendered / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @staticmethod
    def _percentile(values: list[float], q: float) -> float | None:
        return float(np.percentile(values, q)) if values else None

    def to_dict(self) -> dict:
        p = self._percentile
        return {
            "source": self.source, "backend": self.backend, "captured": self.captured, "tracked": self.tracked,
            "rendered": self.rendered, "no_face": self.no_face,
            "dropped_before_tracking": self.dropped_before_tracking,
            "dropped_before_rendering": self.dropped_before_rendering, "wall_seconds": self.wall_seconds,
            "fps": self.fps,
            "latency_ms": {"median": p(self.latency_ms, 50), "p95": p(self.latency_ms, 95),
                           "max": max(self.latency_ms) if self.latency_ms else None},
            "track_ms": {"median": p(self.track_ms, 50), "p95": p(self.track_ms, 95)},
            "render_ms": {"median": p(self.render_ms, 50), "p95": p(self.render_ms, 95)},
            "renders": self.renders,
        }

    def summary(self) -> str:
        d = self.to_dict()
        lat = d["latency_ms"]
        latency = (f"latency capture→frame {lat['median']:.0f} ms median, {lat['p95']:.0f} ms 95th percentile"
                   if lat["median"] is not None else "no frame rendered")
        engine = f" with {self.backend}" if self.backend else ""
        what = "rendered" if self.renders else "tracked and sent"
        return (f"live: {self.rendered} frames {what}{engine} in {self.wall_seconds:.1f} s = {self.fps:.1f} "
                f"frames/s; {latency}; {self.captured} captured, {self.dropped_before_tracking} dropped before "
                f"tracking, {self.dropped_before_rendering} before rendering, {self.no_face} without a face")


class LiveSession:
    """Drive ``avatar`` live from ``source``.

    ``renderer``: the per-frame callable (B, 136) → (image, mask) (``avatar.renderer(model, backend)``), or None
    for a session that only tracks and hands the keypoints to its outputs (a keypoint sender: the receiver
    renders);
    ``tracker``: a ``LiveTracker`` (or any callable (image, seconds) → (68, 2) keypoints or None);
    ``motion``: "relative" (default: the avatar's face moved by the motion since the first tracked frame, which
    ``recenter()`` resets) or "absolute"; ``side``: the camera frame next to the avatar; ``background``:
    "black" or "white" behind the head; ``outputs``: objects with ``write(RenderedFrame)`` (and optionally
    ``close()``), called from the render loop in order.
    """

    def __init__(self, avatar: Avatar, renderer, source: LiveSource, tracker: LiveTracker, *,
                 motion: str = "relative", side: bool = False, background: str = "black",
                 outputs: tuple = ()) -> None:
        if background not in ("black", "white"):
            raise ValueError(f"background is {background!r}; expected 'black' or 'white'.")
        self.avatar, self.renderer, self.source, self.tracker = avatar, renderer, source, tracker
        self.motion, self.side = motion, side
        self.outputs = list(outputs)
        self.background = 0.0 if background == "black" else 255.0
        self._poses = DriverPoses(avatar, motion)  # checks motion
        self._recenter = threading.Event()
        self.stop_event = threading.Event()
        self.report: LiveReport | None = None
        self._boxes: tuple[Latest, Latest] | None = None

    def recenter(self) -> None:
        """Relative motion: the next tracked frame becomes the reference (the avatar's own pose)."""
        self._recenter.set()

    def stop(self) -> None:
        self.stop_event.set()

    def stats(self) -> dict:
        """The figures so far (``LiveReport.to_dict``), drops included, while the session runs."""
        if self.report is None:
            return {"rendered": 0}
        if self._boxes is not None:
            self.report.dropped_before_tracking = self._boxes[0].dropped
            self.report.dropped_before_rendering = self._boxes[1].dropped
        return self.report.to_dict()

    def compose(self, image: torch.Tensor, mask: torch.Tensor, camera: np.ndarray) -> np.ndarray:
        rgb, m = to_uint8(image), to_mask(mask)[..., None]
        out = (rgb.astype(np.float32) * m + self.background * (1 - m)).round().astype(np.uint8)
        if self.side:
            out = side_by_side(camera, out, out.shape[0])
        return out

    def run(self, *, seconds: float | None = None, max_frames: int | None = None) -> LiveReport:
        """Run until the source ends, ``seconds`` pass, ``max_frames`` frames are rendered or ``stop()``; the
        report counts everything from the start."""
        stop = self.stop_event
        stop.clear()
        report = LiveReport(source=f"{self.source.kind} {self.source.name}",
                            backend=getattr(self.renderer, "name", None), renders=self.renderer is not None)
        self.report = report  # read while it runs (the web page's figures)
        captured, tracked = Latest(), Latest()
        self._boxes = (captured, tracked)
        errors: list[BaseException] = []
        start = time.perf_counter()

        def capture() -> None:
            try:
                for frame in self.source.frames(stop):
                    report.captured += 1
                    captured.put(frame)
                    if stop.is_set():
                        break
            except BaseException as exc:  # noqa: BLE001 - re-raised by run
                errors.append(exc)
                stop.set()
            finally:
                captured.close()

        def track() -> None:
            last = None
            try:
                while not stop.is_set():
                    frame: CapturedFrame | None = captured.get(timeout=0.1)
                    if frame is None:
                        if captured.closed:
                            break
                        continue
                    t0 = time.perf_counter()
                    kp = self.tracker(frame.image, frame.time - start)
                    if kp is None:
                        report.no_face += 1
                        if last is None:
                            continue
                        model_kp = last
                    else:
                        if self._recenter.is_set():
                            self._recenter.clear()
                            self._poses = DriverPoses(self.avatar, self.motion)
                        model_kp = self._poses(kp, frame.time - start)
                        last = model_kp
                    report.track_ms.append(1000 * (time.perf_counter() - t0))
                    report.tracked += 1
                    tracked.put((frame, model_kp))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                stop.set()
            finally:
                tracked.close()

        threads = [threading.Thread(target=capture, name="bilayer-live-capture", daemon=True),
                   threading.Thread(target=track, name="bilayer-live-track", daemon=True)]
        for t in threads:
            t.start()
        first = last = None
        try:
            while not stop.is_set():
                if seconds is not None and time.perf_counter() - start >= seconds:
                    break
                item = tracked.get(timeout=0.1)
                if item is None:
                    if tracked.closed:
                        break
                    continue
                frame, model_kp = item
                t0 = time.perf_counter()
                out = None
                if self.renderer is not None:
                    with torch.inference_mode():
                        image, mask = self.renderer(torch.from_numpy(np.asarray(model_kp, np.float32))[None])
                    out = self.compose(image[0].float(), mask[0].float(), frame.image)
                done = time.perf_counter()
                report.render_ms.append(1000 * (done - t0))
                report.latency_ms.append(1000 * (done - frame.time))
                first = done if first is None else first
                last = done
                report.rendered += 1
                if report.rendered > 1:  # (n - 1) intervals from the first rendered frame to the last
                    report.wall_seconds = (last - first) * report.rendered / (report.rendered - 1)
                rendered = RenderedFrame(frame.index, frame.time, out, np.asarray(model_kp), frame.image)
                for output in self.outputs:
                    output.write(rendered)
                if max_frames is not None and report.rendered >= max_frames:
                    break
        finally:
            stop.set()
            for t in threads:
                t.join(5)
            report.dropped_before_tracking = captured.dropped
            report.dropped_before_rendering = tracked.dropped
        if errors:
            raise errors[0]
        return report
