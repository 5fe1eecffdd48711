"""Animate an avatar with a driving video: decode → keypoints → render → compose → encode, streamed.

Three stages run concurrently on bounded queues (a few frames each), so memory stays flat however long the
driver is and the stages overlap (PyTorch, OpenCV, PyAV and MediaPipe release the GIL while they compute):

1. reader:  the driver's frames and tracked, smoothed keypoints (``animate.driver``), the driver's crop box,
            motion transfer to the avatar's crop (``animate.motion``) → the model's (136,) keypoints;
2. render:  the avatar's per-frame network on the chosen backend (``runtime.backends``), ``workers`` frames at a
            time, handed on in driver order;
3. writer:  composition (crop on a background, paste-back into the photo, RGBA, side by side;
            ``animate.compose``) and H.264 encoding with the driver's audio (``animate.videoio``).

``stream`` returns an ``AnimationReport``: frames written, frames whose driver face was lost (their keypoints
were reused), seconds spent in each stage and the end-to-end frames per second.

``calibration_poses`` gives, before any rendering, model inputs of the kind a driver will bring, for calibrating
the int8 backend on the motion it will actually render (``bilayer animate --backend int8`` does).
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..runtime.avatar import Avatar
from .compose import paste_back, rgba, side_by_side, to_mask, to_uint8
from .driver import Driver, DriverError, spread_indices
from .motion import MOTION_MODES, MotionTransfer, StreamingCropper, to_model_input
from .videoio import VideoWriter

BACKGROUNDS = ("black", "white", "source")
CALIBRATION_POSES = 64  # driver poses sampled for int8's calibration (next to as many jittered photo poses)
_END = object()


@dataclass
class AnimationReport:
    output: Path
    frames: int = 0
    lost: int = 0
    fps_in: float = 0.0
    audio: bool = False
    seconds: dict[str, float] = field(default_factory=lambda: {"read": 0.0, "render": 0.0, "compose": 0.0,
                                                               "encode": 0.0})
    wall_seconds: float = 0.0
    workers: int = 1
    backend: str | None = None  # the renderer's name, when it has one (a FrameRenderer)
    stated: int | None = None  # the frames a driver video states when fewer could be decoded (truncated, damaged)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def summary(self) -> str:
        stages = ", ".join(f"{k} {1000 * v / max(self.frames, 1):.1f} ms" for k, v in self.seconds.items())
        if self.workers > 1:  # each frame's render time; several ran at once
            stages = stages.replace(" ms, compose", f" ms ({self.workers} frames at a time), compose")
        lost = f"; driver face lost in {self.lost} frame(s), last keypoints reused" if self.lost else ""
        audio = ", audio copied" if self.audio else ""
        engine = f" with {self.backend}" if self.backend else ""
        short = (f"; warning: the driver states {self.stated} frames but only {self.frames} could be decoded (a "
                 "truncated or damaged file?)" if self.stated is not None else "")
        return (f"wrote {self.output}: {self.frames} frames in {self.wall_seconds:.1f} s = {self.fps:.1f} frames/s"
                f"{engine} (per frame: {stages}){audio}{lost}{short}")

    def to_dict(self) -> dict:
        return {"output": str(self.output), "frames": self.frames, "lost": self.lost, "fps_in": self.fps_in,
                "audio": self.audio, "seconds": self.seconds, "wall_seconds": self.wall_seconds, "fps": self.fps,
                "workers": self.workers, "backend": self.backend, "driver_frames_stated": self.stated}


class _Stage(threading.Thread):
    """A worker thread that remembers its exception for the main thread to re-raise, and sets ``stop`` when it
    fails, so that no other stage waits for items it will never send."""

    def __init__(self, target, name: str, stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self._stop_all = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc
            self._stop_all.set()


class DriverPoses:
    """Driver keypoints (pixels of its frames), frame after frame → the model's (136,) input, as ``animate`` feeds
    it. Relative motion keeps the driver's crop fixed at its first face, so head translation and scale are
    transferred too, and moves the photo's keypoints by the driver's motion since that frame; absolute motion
    uses the stabilised per-frame crop the model was trained on."""

    def __init__(self, avatar: Avatar, motion: str) -> None:
        if motion not in MOTION_MODES:
            raise ValueError(f"motion is {motion!r}; expected one of {', '.join(MOTION_MODES)}.")
        self.avatar = avatar
        self.cropper = StreamingCropper(avatar.size, "fixed" if motion == "relative" else "smooth")
        self.transfer: MotionTransfer | None = MotionTransfer("absolute") if motion == "absolute" else None

    def __call__(self, keypoints: np.ndarray, time: float) -> np.ndarray:
        _box, kp_crop = self.cropper.crop(keypoints, time)
        if self.transfer is None:  # relative: the first frame is the driver's reference
            self.transfer = MotionTransfer("relative", self.avatar.source_keypoints, kp_crop)
        return to_model_input(self.transfer(kp_crop), self.avatar.size)


def calibration_poses(avatar: Avatar, driver: Driver, motion: str = "relative",
                      count: int = CALIBRATION_POSES) -> np.ndarray:
    """(N ≤ count, 136) model inputs ``animate`` will give the renderer for this driver, computed before rendering,
    from ``count`` frames spread over all of it: rows of its keypoints when they are known up front (a keypoint
    sequence, or ``keypoints=``); otherwise faces detected on frames sought across the video or folder
    (``Driver.sample_keypoints``, about a second), after the driver's first face, relative motion's reference.
    Only a video stating neither frame count nor duration gives its first ``count`` tracked frames instead.
    Calibrating int8 on these next to the photo's jittered poses raised the worst frame of the trained
    synth-quick avatar driven by three other people (150 frames each) from 43.3, 38.4 and 35.6 to 44.0, 43.8 and
    43.2 dB PSNR against float32; with the same drivers as MediaPipe-tracked videos, frames sought across them
    gave 43.9, 43.5 and 43.0 dB where their first 64 tracked frames gave 43.4, 42.4 and 38.2, for 0.6–1.0 s
    (``benchmarks/int8_calibration.py``)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count is {count!r}; expected a whole number ≥ 1.")
    poses = DriverPoses(avatar, motion)
    known = driver.known_keypoints()
    if known is not None:
        found = np.flatnonzero(np.isfinite(known).all(axis=(1, 2)))
        pick = found[spread_indices(len(found), count)]
        return np.stack([poses(known[i], i / driver.fps) for i in pick])
    sampled = driver.sample_keypoints(count)
    if sampled:
        poses(driver.first_keypoints, driver.first_face / driver.fps)  # the reference frame, as animate starts
        return np.stack([poses(kp, time) for time, kp in sampled])
    return np.stack([poses(f.keypoints, f.time) for f in itertools.islice(driver, count)])


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event):
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return _END


@contextmanager
def render_workers(workers: int | None):
    """How many frames ``animate`` renders at once on the CPU (``workers``; default 2 when PyTorch has ≥ 2
    threads; ``bilayer animate --workers``), each with an equal share of PyTorch's intra-op threads. A context:
    enter it before a renderer is made (so that an ONNX Runtime session gets the same share); it gives the number
    of workers and restores the thread count."""
    threads = torch.get_num_threads()
    workers = workers or (2 if threads >= 2 else 1)
    torch.set_num_threads(max(1, threads // workers))
    try:
        yield workers
    finally:
        torch.set_num_threads(threads)


def stream(
    avatar: Avatar,
    render,
    driver: Driver,
    out: str | Path,
    *,
    motion: str = "relative",
    photo: np.ndarray | None = None,
    paste: bool = False,
    alpha: bool = False,
    side: bool = False,
    background: str = "black",
    progress: bool = True,
    queue_size: int = 4,
    workers: int = 1,
    on_frame=None,
) -> AnimationReport:
    """Animate ``avatar`` with ``driver`` into ``out``.

    ``render``: a per-frame callable (B, 136) → (image, mask), e.g. ``avatar.renderer(model, backend)``.
    ``motion``: "relative" (the photo's face moved by the driver's motion since its first face frame, scaled by
    face size; default) or "absolute" (the driver's own keypoints in its crop; leaks the driver's face shape).
    ``paste``: paste the result back into ``photo`` (the avatar's source photo); ``alpha``: RGBA frames from the
    predicted mask (``out`` = .mov or a folder); ``side``: the driver frame next to the result;
    ``background``: what the crop output shows outside the predicted mask.
    ``workers``: frames rendered concurrently (in driver order). On a CPU, two workers with half the intra-op
    threads each (``torch.set_num_threads``, before an onnx renderer is made) beat one worker with all of them
    when decoding, tracking and encoding share the cores: a single-frame renderer's threads meet at a barrier
    after every layer and wait for whichever of them another stage preempted (``render_workers`` sets that up).
    ``on_frame(done, total)``: called after each rendered frame (``total`` None when the driver's length is
    unknown), e.g. for a progress display other than the terminal's bar.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers is {workers!r}; expected a whole number ≥ 1.")
    if background not in BACKGROUNDS:
        raise ValueError(f"background is {background!r}; expected one of {', '.join(BACKGROUNDS)}.")
    if paste and photo is None:
        raise ValueError("paste-back needs the avatar's source photo.")
    if side and driver.size is None:
        raise DriverError(f"side by side needs a driver with frames (a video or a folder of images); {driver.path} "
                          "holds keypoints only.")
    size = avatar.size
    out = Path(out)
    report = AnimationReport(output=out, fps_in=driver.fps, workers=workers, backend=getattr(render, "name", None))
    bg = to_uint8(avatar.source_image).astype(np.float32)  # "source"
    if background != "source":
        bg[:] = 0.0 if background == "black" else 255.0

    poses = DriverPoses(avatar, motion)  # checks motion

    if paste:
        frame_size = (photo.shape[1], photo.shape[0])
    else:
        frame_size = (size, size)
    if side:
        h = frame_size[1]
        w_driver = int(round(driver.size[0] * h / driver.size[1]))
        frame_size = (w_driver + frame_size[0], h)

    stop = threading.Event()
    q_frames: queue.Queue = queue.Queue(queue_size)
    q_out: queue.Queue = queue.Queue(queue_size)
    total = driver.frames_estimate  # a Matroska / WebM driver's is its duration × rate: corrected at the end

    def reader() -> None:
        t0 = time.perf_counter()
        for frame in driver:
            model_kp = poses(frame.keypoints, frame.time)
            report.seconds["read"] += time.perf_counter() - t0
            if not _put(q_frames, (frame, model_kp), stop):
                return
            t0 = time.perf_counter()
        _put(q_frames, _END, stop)

    def writer_loop(writer: VideoWriter) -> None:
        while True:
            item = _get(q_out, stop)
            if item is _END:
                return
            frame, image, mask = item
            t0 = time.perf_counter()
            rgb, m = to_uint8(image), to_mask(mask)
            if alpha:
                result = rgba(rgb, m)
            elif paste:
                result = paste_back(photo, rgb, m, avatar.box)
            else:
                result = (rgb.astype(np.float32) * m[..., None] + bg * (1 - m[..., None])).round().astype(np.uint8)
            if side:
                result = side_by_side(frame.image, result, result.shape[0])
            t1 = time.perf_counter()
            writer.write(result)
            report.seconds["compose"] += t1 - t0
            report.seconds["encode"] += time.perf_counter() - t1

    def render_one(model_kp: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, float]:
        t0 = time.perf_counter()
        with torch.inference_mode():
            image, mask = render(torch.from_numpy(model_kp)[None])
            image, mask = image[0].float(), mask[0].float()
        return image, mask, time.perf_counter() - t0

    from tqdm.auto import tqdm

    wall0 = time.perf_counter()
    audio_from = driver.path if driver.kind == "video" and driver.audio else None
    with VideoWriter(out, driver.fps, frame_size, audio_from=audio_from, alpha=alpha) as writer:
        threads = [_Stage(reader, "bilayer-reader", stop),
                   _Stage(lambda: writer_loop(writer), "bilayer-writer", stop)]
        for t in threads:
            t.start()
        bar = tqdm(total=total, unit="frame", desc="animate", disable=not progress)
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="bilayer-render") as pool:
                pending: deque = deque()  # (frame, future) in driver order
                more = True
                while more or pending:
                    if more and len(pending) < workers:
                        item = _get(q_frames, stop)
                        if item is _END:
                            more = False
                        else:
                            frame, model_kp = item
                            pending.append((frame, pool.submit(render_one, model_kp)))
                        continue
                    frame, job = pending.popleft()
                    image, mask, seconds = job.result()
                    report.seconds["render"] += seconds
                    if not _put(q_out, (frame, image, mask), stop) or any(t.error for t in threads):
                        for _, rest in pending:
                            rest.cancel()
                        break
                    report.frames += 1
                    bar.update(1)
                    if on_frame is not None:
                        on_frame(report.frames, total)
            _put(q_out, _END, stop)
            if bar.total != bar.n and not stop.is_set():  # an estimated length ends where the driver did
                bar.total = bar.n
                bar.refresh()
            for t in threads:
                while t.is_alive() and not any(x.error for x in threads):
                    t.join(0.1)
        except BaseException:
            stop.set()
            raise
        finally:
            bar.close()
            stop.set()
            for t in threads:
                t.join(5)
        for t in threads:
            if t.error is not None:
                raise t.error
    report.wall_seconds = time.perf_counter() - wall0
    report.lost = driver.lost
    stated = driver.num_frames if driver.kind == "video" else None
    if stated is not None and report.frames < stated - max(2, stated // 50):  # containers may miscount a little
        report.stated = stated
    report.audio = writer.audio
    return report
