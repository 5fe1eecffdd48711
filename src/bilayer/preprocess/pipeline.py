"""The preprocessing pipeline: videos / images → the reference training layout (reference §1.1).

``ROOT/{imgs,keypoints,segs}/SPLIT/PERSON/VIDEO/SEQ/FRAME.{jpg,npy,png}`` where FRAME is the frame's index in
the source (zero-padded to 6 digits), imgs are ``size``² RGB JPEGs, keypoints (68, 2) float32 pixel coordinates of
the saved crop, segs single-channel 8-bit PNGs.

Per sequence:

1. decode (PyAV), detect the faces of every frame, keep the main face (``MainFaceTracker``); frames without a face
   are dropped;
2. if fewer than ``min_frames`` frames remain, skip the sequence;
3. smooth the keypoints over time (zero-phase One-Euro), compute the reference crop box of every frame and
   stabilise the boxes over the sequence (``stabilise_boxes``);
4. decode again (or reuse the frames cached in memory), crop, map the keypoints into the crop, segment the crop;
5. write the files into hidden temporary folders, move them into place (imgs last) and finally write the marker
   ``ROOT/.preprocess/SPLIT/PERSON/VIDEO/SEQ.json`` with the sequence's statistics (``data.sequences``): a
   sequence appears complete or not at all, and the dataset skips one without a marker. A sequence with a
   marker written with the same settings is skipped by the next run, so an interrupted run resumes where it
   stopped; what a killed run left (temporaries, folders without a marker) is removed by the next run.

An ``OSError`` while writing (a full disk, a file-size limit, a read-only folder) stops the whole run and names
the final path; a bad video only fails its own sequence.

With ``test_tail`` every source gives two sequences of the same name, its start in ``train`` and its end in
``test`` (``tail.TimeWindow``); with ``shard=(K, N)`` only the sources K, K + N, … of the sorted list are processed
(``bilayer.shard``), and the run's summary is written as ``last_run.shard-K-of-N.json``.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..data.sequences import SequenceWriter, record_path
from ..io import encode_image, encode_npy, write_json_atomic
from ..outputs import OutputError, claim_folder
from ..shard import ShardError, check_shard, shard_items, shard_label
from ..vision.crop import (
    BOX_MODES,
    CropBox,
    crop_box,
    crop_image,
    keypoints_to_crop,
    resolve_box_mode,
    stabilise_boxes,
)
from ..vision.errors import PreprocessError, VideoReadError
from ..vision.landmarks import (
    FACE_ALIGNMENT_MISSING,
    FileLandmarks,
    LandmarkBackend,
    MainFaceTracker,
    check_face_alignment_weights,
    check_landmark_backend,
    create_landmark_backend,
)
from ..vision.segmentation import SegmentationBackend, check_segmentation_backend, create_segmentation_backend, mask_to_uint8
from ..vision.smoothing import SMOOTHING_METHODS, smooth_keypoints
from .sources import SequenceJob, discover
from .tail import DEFAULT_TEST_GAP, IN_GAP, TimeWindow, check_test_tail
from ..vision.video import Frame, is_image, iter_frames, video_fps

MARKER_DIR = ".preprocess"
SPLITS = ("train", "test")

# Why frames are dropped and sequences skipped (the keys of the summary).
NO_FACE = "no face"
TOO_FEW = "too few valid frames"
UNREADABLE = "unreadable video"
NO_KEYPOINT_FILE = "missing keypoint file"
BAD_KEYPOINT_FILE = "bad keypoint file"

#: The largest crop side ``--size`` takes (the models' largest image size is 1024).
MAX_SIZE = 2048

#: Decoded frames are kept in memory between the two passes up to this many bytes per sequence (then re-decoded).
FRAME_CACHE_BYTES = 512 * 1024**2


@dataclass(frozen=True)
class Settings:
    """Everything that changes the written files. A finished sequence is redone when these differ."""

    size: int = 256
    fps: float | None = None
    max_frames: int | None = None
    landmarks: str = "mediapipe"
    segmentation: str = "mediapipe"
    smoothing: str = "one-euro"
    box_mode: str = "auto"
    min_frames: int = 10
    jpeg_quality: int = 95
    test_tail: float | None = None  # --test-tail: the last fraction of each video goes to the test split
    test_gap: float | None = None  # seconds between the training and the test part (with test_tail)

    def fingerprint(self) -> dict:
        """The settings as a sequence's record keeps them (compared by the next run). ``test_tail`` and
        ``test_gap`` appear only when a held-out split in time is made, so the records of other runs keep the form
        they always had (and such runs resume on datasets written before these settings existed)."""
        d = asdict(self)
        if self.test_tail is None:
            d.pop("test_tail")
            d.pop("test_gap")
        return d

    def validate(self) -> None:
        check_landmark_backend(self.landmarks)
        check_segmentation_backend(self.segmentation)
        if self.smoothing not in SMOOTHING_METHODS:
            raise PreprocessError(f"unknown smoothing {self.smoothing!r}; valid: {', '.join(SMOOTHING_METHODS)}.")
        if self.box_mode not in BOX_MODES:
            raise PreprocessError(f"unknown crop-box mode {self.box_mode!r}; valid: {', '.join(BOX_MODES)}.")
        if not 8 <= self.size <= MAX_SIZE:
            raise PreprocessError(f"--size must be 8 to {MAX_SIZE} pixels (the side of the saved crops), got "
                                  f"{self.size}.")
        if self.fps is not None and self.fps <= 0:
            raise PreprocessError(f"--fps must be positive, got {self.fps}.")
        if self.max_frames is not None and self.max_frames < 1:
            raise PreprocessError(f"--max-frames must be at least 1, got {self.max_frames}.")
        if self.min_frames < 1:
            raise PreprocessError(f"--min-frames must be at least 1, got {self.min_frames}.")
        if not 1 <= self.jpeg_quality <= 100:
            raise PreprocessError(f"JPEG quality must be in 1..100, got {self.jpeg_quality}.")
        check_test_tail(self.test_tail, self.test_gap)


@dataclass
class SequenceResult:
    """What happened to one sequence. ``status``: done (written by this run), already done (finished by an
    earlier run with the same settings), skipped (too few valid frames) or failed (unreadable video, missing
    keypoint file, unexpected error). ``reason`` is the category (the summary's key), ``detail`` the specifics."""

    name: str
    source: str
    status: str
    reason: str | None = None
    detail: str | None = None
    frames_read: int = 0
    frames_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    box_mode: str | None = None
    seconds: float = 0.0
    split: str | None = None
    removed: str | None = None  # the other split's part of this video from an earlier --test-tail run, removed


@dataclass
class Summary:
    """The outcome of a ``preprocess`` run. ``split`` is ``train+test`` for a run with ``test_tail``; ``shard`` is
    (K, N) for a run that processed shard K of N (``sources`` of the ``all_sources`` inputs found)."""

    out_root: Path
    split: str
    sequences: list[SequenceResult] = field(default_factory=list)
    shard: tuple[int, int] | None = None
    sources: int = 0
    all_sources: int = 0
    test_tail: float | None = None
    test_gap: float | None = None

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.sequences)

    @property
    def frames_kept(self) -> int:
        """Frames written by this run."""
        return sum(r.frames_kept for r in self.sequences if r.status == "done")

    @property
    def frames_dropped(self) -> Counter:
        """Frames not written by this run, by reason."""
        total: Counter = Counter()
        for r in self.sequences:
            if r.status != "already done":
                total.update(r.dropped)
        return total

    @property
    def reasons(self) -> Counter:
        """Skipped and failed sequences, by reason."""
        return Counter(r.reason or "?" for r in self.sequences if r.status in ("skipped", "failed"))

    @property
    def ok(self) -> bool:
        """True when at least one sequence is finished (by this run or an earlier one), or when this run's shard
        holds no input at all (more shards than inputs: nothing to do is not a failure)."""
        if self.shard is not None and self.sources == 0:
            return True
        return any(r.status in ("done", "already done") for r in self.sequences)

    def _scope(self) -> str:
        if self.test_tail is None:
            scope = f"split {self.split}"
        else:
            share = f"{self.test_tail * 100:g} %"
            scope = (f"test: the last {share} of each video, train: the rest but the {self.test_gap:g} s before "
                     f"the test part")
        if self.shard is not None:
            scope += f"; shard {shard_label(self.shard)}: {self.sources:,} of {self.all_sources:,} input(s)"
        return scope

    def _name(self, r: SequenceResult) -> str:
        return f"{r.split} {r.name}" if self.test_tail is not None and r.split else r.name

    def report(self) -> str:
        """A few human-readable lines."""
        dropped = self.frames_dropped
        lines = [
            f"preprocess → {self.out_root} ({self._scope()}): {len(self.sequences)} sequence(s): "
            f"{self.count('done')} done, {self.count('already done')} already done, "
            f"{self.count('skipped')} skipped, {self.count('failed')} failed",
            f"frames kept {self.frames_kept}, dropped {sum(dropped.values())}"
            + (f" ({_fmt_counter(dropped)})" if dropped else ""),
        ]
        if self.reasons:
            lines.append(f"sequences not written: {_fmt_counter(self.reasons)}")
            for r in self.sequences:
                if r.status in ("skipped", "failed"):
                    detail = f" ({r.detail})" if r.detail else ""
                    lines.append(f"  {r.status:<8} {self._name(r)}: {r.reason}{detail}")
        removed = [r for r in self.sequences if r.removed]
        if removed:
            lines.append(f"removed {len(removed)} sequence(s) that an earlier --test-tail run wrote into the other "
                         "split (they overlapped this run's sequences in time):")
            lines.extend(f"  removed  {r.removed} {r.name}" for r in removed)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_root": str(self.out_root),
            "split": self.split,
            "shard": shard_label(self.shard) if self.shard is not None else None,
            "sources": self.sources,
            "all_sources": self.all_sources,
            "test_tail": self.test_tail,
            "test_gap": self.test_gap,
            "sequences": {s: self.count(s) for s in ("done", "already done", "skipped", "failed")},
            "frames_kept": self.frames_kept,
            "frames_dropped": dict(self.frames_dropped),
            "reasons": dict(self.reasons),
            "results": [asdict(r) for r in self.sequences],
        }


def _fmt_counter(c: Counter) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(c.items()))


# --------------------------------------------------------------------------------------------- file output
def sequence_dirs(out_root: Path, split: str, key: tuple[str, str, str]) -> dict[str, Path]:
    """The imgs / keypoints / segs folders of one sequence."""
    return {kind: out_root.joinpath(kind, split, *key) for kind in ("imgs", "keypoints", "segs")}


def marker_path(out_root: Path, split: str, key: tuple[str, str, str]) -> Path:
    """The ``.json`` file that marks a sequence as finished (outside imgs/keypoints/segs, so no loader sees it)."""
    return record_path(out_root, MARKER_DIR, split, key)


class OutputFolderError(PreprocessError, OutputError):
    """``--out`` is a folder that preprocessing must not write into (a file, another kind of folder, or a non-empty
    folder bilayer did not write): one sentence."""


# ------------------------------------------------------------------------------------------ one sequence
def _source_frames(job: SequenceJob, settings: Settings, window: TimeWindow | None, counts: dict) -> Iterator[Frame]:
    """The frames of a sequence: the whole source (``--fps``, ``--max-frames``), or the part of it in ``window``
    (``--test-tail``: the whole source subsampled by ``--fps``, then the part, then its first ``--max-frames``)."""
    if window is None:
        return iter_frames(job.source, settings.fps, settings.max_frames)
    return window.frames(iter_frames(job.source, settings.fps, None), settings.max_frames, counts)


@contextlib.contextmanager
def _maybe_cache(job: SequenceJob, settings: Settings, window: TimeWindow | None = None,
                 counts: dict | None = None) -> Iterator[Callable[[], Iterator[Frame]]]:
    """Yields a function that iterates over the job's frames; the first pass fills a memory cache that the second
    pass reuses, unless the frames exceed ``FRAME_CACHE_BYTES`` (the second pass then decodes again)."""
    cache: list[Frame] = []
    state = {"complete": False, "overflow": False}
    counts = {} if counts is None else counts

    def frames() -> Iterator[Frame]:
        if state["complete"]:
            yield from cache
            return
        used = 0
        for frame in _source_frames(job, settings, window, counts):
            if not state["overflow"]:
                used += frame.image.nbytes
                if used <= FRAME_CACHE_BYTES:
                    cache.append(frame)
                else:
                    state["overflow"] = True
                    cache.clear()
            yield frame
        state["complete"] = not state["overflow"]

    try:
        yield frames
    finally:
        cache.clear()


def process_sequence(job: SequenceJob, settings: Settings, out_root: Path, split: str,
                     landmarks: LandmarkBackend, segmentation: SegmentationBackend, *,
                     keypoints_file: Path | None = None, overwrite: bool = False,
                     on_frame: Callable[[], None] | None = None) -> SequenceResult:
    """Process one sequence with the given backends; see the module docstring. Never raises for a bad video; an
    ``OSError`` writing the outputs is raised (naming the final path) after the sequence's temporaries are
    removed."""
    start = time.perf_counter()
    out_root = Path(out_root)
    result = SequenceResult(job.name, str(job.source), "done", split=split)
    writer = SequenceWriter(out_root, MARKER_DIR, split, job.key)
    writer.sweep()  # temporaries of killed runs
    fingerprint = settings.fingerprint()
    old = writer.read_record()
    if old is None and writer.leftovers():
        writer.clear()  # folders without a marker: an unfinished sequence of a killed run
    if not overwrite:
        if old is not None and old.get("settings") == fingerprint:
            if old.get("status") == "done":
                result.status = "already done"
                result.frames_kept = int(old.get("frames_kept", 0))
            else:  # skipped by an earlier run with the same settings: still skipped
                result.status, result.reason = "skipped", old.get("reason")
                result.detail = f"{old.get('detail')}, decided by an earlier run"
            if settings.test_tail is None:
                result.removed = _remove_other_part(out_root, split, job.key)
            return result

    def finish(status: str, reason: str | None = None, detail: str | None = None) -> SequenceResult:
        result.status, result.reason, result.detail = status, reason, detail
        result.seconds = round(time.perf_counter() - start, 3)
        return result

    # From here on the sequence is (re)done; an old sequence and its marker stay until the new one replaces them.
    window = None
    if settings.test_tail is not None:
        try:
            gap = DEFAULT_TEST_GAP if settings.test_gap is None else settings.test_gap
            window = TimeWindow.of(job.source, split, settings.test_tail, gap)
        except VideoReadError as exc:
            return finish("failed", UNREADABLE, str(exc))
    counts: dict = {}
    try:
        landmarks.start_sequence(job.source, keypoints_file)
    except PreprocessError as exc:
        if isinstance(landmarks, FileLandmarks):
            missing = keypoints_file is not None and not Path(keypoints_file).is_file()
            return finish("failed", NO_KEYPOINT_FILE if missing else BAD_KEYPOINT_FILE, str(exc))
        return finish("failed", "backend error", str(exc))

    with _maybe_cache(job, settings, window, counts) as frames:
        # pass 1: keypoints of the main face
        tracker = MainFaceTracker()
        indices, times, points = [], [], []
        source_size = None
        try:
            for frame in frames():
                result.frames_read += 1
                source_size = frame.image.shape[1::-1]
                face = tracker(landmarks.detect(frame.image, frame.index))
                if face is None:
                    result.dropped[NO_FACE] = result.dropped.get(NO_FACE, 0) + 1
                else:
                    indices.append(frame.index)
                    times.append(frame.time)
                    points.append(face.keypoints[:, :2])
                if on_frame is not None:
                    on_frame()
        except VideoReadError as exc:
            result.dropped.clear()
            return finish("failed", UNREADABLE, str(exc))
        if counts.get("gap"):
            result.dropped[IN_GAP] = counts["gap"]

        if len(indices) < settings.min_frames:
            if indices:
                result.dropped[TOO_FEW] = len(indices)
            finish("skipped", TOO_FEW, f"{len(indices)} < --min-frames {settings.min_frames}")
            # an older sequence of other settings is removed, then the marker records the skip
            writer.commit(_marker(job, settings, result, split, source_size, {}, None, window))
            if settings.test_tail is None:
                result.removed = _remove_other_part(out_root, split, job.key)
            return result

        # keypoint smoothing and stabilised crop boxes
        times_a = np.asarray(times, np.float64)
        kps = np.stack(points).astype(np.float32)
        kps = smooth_keypoints(kps, times_a, settings.smoothing)
        raw_boxes = np.stack([crop_box(k).to_array() for k in kps])
        result.box_mode = resolve_box_mode(raw_boxes, settings.box_mode)
        boxes = stabilise_boxes(raw_boxes, times_a, mode=result.box_mode)
        plan = {idx: (CropBox.from_array(b), k) for idx, b, k in zip(indices, boxes, kps)}

        # pass 2: crop, segment, write into the temporary folders
        written = 0
        with writer:
            try:
                for frame in frames():
                    if frame.index not in plan:
                        continue
                    box, kp = plan[frame.index]
                    crop = crop_image(frame.image, box, settings.size)
                    stem = f"{frame.index:06d}"
                    writer.write("imgs", f"{stem}.jpg", encode_image(crop, ".jpg", settings.jpeg_quality))
                    writer.write("keypoints", f"{stem}.npy", encode_npy(keypoints_to_crop(kp, box, settings.size)))
                    mask = segmentation.segment(crop)
                    if mask is not None:
                        writer.write("segs", f"{stem}.png", encode_image(mask_to_uint8(mask), ".png"))
                    written += 1
            except VideoReadError as exc:  # the file changed between the passes: nothing of this run is kept
                writer.abort()
                result.dropped.clear()
                return finish("failed", UNREADABLE, str(exc))
            result.frames_kept = written
            if written < len(plan):
                result.dropped["not decoded again"] = len(plan) - written
            finish("done")
            boxes_by_frame = {f"{i:06d}": [round(float(v), 3) for v in b] for i, b in zip(indices, boxes)}
            writer.commit(_marker(job, settings, result, split, source_size, boxes_by_frame, _fps_of(job), window))
    if settings.test_tail is None:
        result.removed = _remove_other_part(out_root, split, job.key)
    return result


def _other_split(split: str) -> str:
    return SPLITS[1 - SPLITS.index(split)]


def _remove_other_part(out_root: Path, split: str, key: tuple[str, str, str]) -> str | None:
    """After a run without ``--test-tail`` finished PERSON/VIDEO/SEQ in ``split``: remove the sequence of the same
    name in the other split if an earlier ``--test-tail`` run wrote it (it holds the other part of the same video,
    which the new sequence overlaps in time). Returns that split, or None when nothing was removed."""
    other = _other_split(split)
    writer = SequenceWriter(out_root, MARKER_DIR, other, key)
    if not writer.record.is_file():
        return None
    record = writer.read_record()
    if record is None or not isinstance(record.get("settings"), dict) or record["settings"].get("test_tail") is None:
        return None
    writer.clear()
    for path in (*writer.final.values(), writer.record):  # PERSON/VIDEO and PERSON folders left empty
        for folder in (path.parent, path.parent.parent):
            with contextlib.suppress(OSError):
                folder.rmdir()
    return other


def _fps_of(job: SequenceJob) -> float | None:
    try:
        return video_fps(job.source)
    except VideoReadError:
        return None


def _marker(job: SequenceJob, settings: Settings, result: SequenceResult, split: str, source_size, boxes: dict,
            fps: float | None, window: TimeWindow | None = None) -> dict:
    from .. import __version__

    record = {
        "key": list(job.key),
        "source": str(job.source),
        "split": split,
        "status": result.status,
        "reason": result.reason,
        "detail": result.detail,
        "frames_read": result.frames_read,
        "frames_kept": result.frames_kept,
        "dropped": result.dropped,
        "box_mode": result.box_mode,
        "source_size": list(source_size) if source_size is not None else None,
        "source_fps": fps,
        "seconds": result.seconds,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "bilayer_version": __version__,
        "settings": settings.fingerprint(),
        "boxes": boxes,  # FRAME → [cx, cy, half] of the crop in source pixels
    }
    if window is not None:  # --test-tail: which part of the video this sequence holds (seconds)
        record["time_window"] = window.record()
    return record


# --------------------------------------------------------------------------------------- workers and run
@dataclass(frozen=True)
class _RunConfig:
    settings: Settings
    out_root: Path
    split: str
    landmark_options: dict
    overwrite: bool


class _Runner:
    """Backends of one process, created on first use and reused for every sequence."""

    def __init__(self, config: _RunConfig):
        self.config = config
        self.landmarks: LandmarkBackend | None = None
        self.segmentation: SegmentationBackend | None = None

    def run(self, job: SequenceJob, on_frame: Callable[[], None] | None = None) -> SequenceResult:
        c = self.config
        try:
            if self.landmarks is None:
                self.landmarks = create_landmark_backend(c.settings.landmarks, **c.landmark_options)
            if self.segmentation is None:
                self.segmentation = create_segmentation_backend(c.settings.segmentation)
            keypoints_file = None
            if isinstance(self.landmarks, FileLandmarks):
                keypoints_file = self.landmarks.resolve(job.source, job.relative)
            return process_sequence(job, c.settings, c.out_root, job.split or c.split, self.landmarks,
                                    self.segmentation, keypoints_file=keypoints_file, overwrite=c.overwrite,
                                    on_frame=on_frame)
        except (PreprocessError, OSError):  # a user error, or an output that cannot be written (a full disk)
            raise
        except Exception as exc:  # noqa: BLE001 - one broken sequence must not stop the run
            return SequenceResult(job.name, str(job.source), "failed", "error", f"{type(exc).__name__}: {exc}",
                                  split=job.split or c.split)

    def close(self) -> None:
        for b in (self.landmarks, self.segmentation):
            if b is not None:
                b.close()


_WORKER: _Runner | None = None


def _worker_init(config: _RunConfig) -> None:
    global _WORKER
    cv2.setNumThreads(1)
    _WORKER = _Runner(config)


def _worker_run(job: SequenceJob) -> SequenceResult:
    assert _WORKER is not None
    return _WORKER.run(job)


def _validate_backend_options(settings: Settings, landmark_options: dict, jobs: list[SequenceJob]) -> None:
    if settings.landmarks == "face-alignment":
        check_face_alignment_weights(landmark_options.get("weights_dir"))
        import importlib.util

        if importlib.util.find_spec("face_alignment") is None:
            raise PreprocessError(FACE_ALIGNMENT_MISSING)
    if settings.landmarks == "dlib":  # dlib and its shape predictor are there (one sentence before any work)
        from ..vision.landmarks import check_dlib_landmarks

        check_dlib_landmarks(landmark_options.get("weights_dir"))
    if settings.landmarks == "file":
        path = landmark_options.get("path")
        if path is not None and not Path(path).exists():
            raise PreprocessError(f"keypoint path {path} does not exist.")
        if path is not None and Path(path).is_file() and len(jobs) > 1:
            raise PreprocessError(
                f"one keypoint file {path} was given for {len(jobs)} sequences; give a folder of .npy files instead."
            )
        if path is not None and Path(path).is_file():  # one file for one sequence: read it before any work
            from ..vision.landmarks import load_keypoint_file

            load_keypoint_file(path, no_size="no face")


def preprocess(input: str | Path, out_root: str | Path, *, size: int = 256, fps: float | None = None,
               max_frames: int | None = None, landmarks: str = "mediapipe", segmentation: str = "mediapipe",
               smoothing: str = "one-euro", min_frames: int = 10, workers: int = 1, split: str = "train",
               progress: bool = True, landmark_weights: str | Path | None = None,
               keypoints: str | Path | None = None, box_mode: str = "auto", jpeg_quality: int = 95,
               overwrite: bool = False, max_faces: int = 4, shard: tuple[int, int] | str | None = None,
               test_tail: float | None = None, test_gap: float | None = None) -> Summary:
    """Preprocess a video, a folder of videos or a folder of images into ``out_root`` (the reference layout).

    Args:
        input: a video file, an image file, a folder of images (one sequence) or a folder tree of videos
            (``PERSON/VIDEO/CLIP.mp4`` → PERSON/VIDEO/CLIP; a flat ``CLIP.mp4`` → CLIP/CLIP/CLIP).
        out_root: the dataset root; ``imgs``, ``keypoints`` and ``segs`` are created inside.
        size: side of the saved crops in pixels.
        fps: subsample each video to at most this frame rate (None keeps every frame).
        max_frames: keep at most this many (subsampled) frames per sequence.
        landmarks: keypoint backend, ``mediapipe``, ``face-alignment``, ``dlib`` or ``file``.
        segmentation: ``mediapipe`` or ``none`` (no segs folder is written).
        smoothing: ``one-euro`` (zero-phase One-Euro on the keypoints) or ``none``.
        min_frames: sequences with fewer frames with a face are skipped.
        workers: parallel processes (one sequence per process at a time).
        split: ``train`` or ``test``.
        progress: show a tqdm progress bar.
        landmark_weights: folder of the face-alignment weights (or of dlib's shape predictor).
        keypoints: for the ``file`` backend, a .npy file (single sequence) or a folder of them (default: the
            ``.npy`` next to each video).
        box_mode: crop-box stabilisation, ``auto`` / ``smooth`` / ``fixed`` / ``none`` (see ``stabilise_boxes``).
        jpeg_quality: quality of the saved JPEGs.
        overwrite: redo sequences that are already finished.
        max_faces: faces MediaPipe follows per frame (default 4), of which the main-face tracker keeps the
            largest at the first face, then the same person. In tracking mode MediaPipe runs its face detector on
            every frame until it follows that many, so 1 makes one-person videos faster (about 7 instead of 11 ms
            per 256-px frame) but keeps MediaPipe's most confident face, not necessarily the largest.
        shard: ``(K, N)`` (or ``"K/N"``): process only the inputs ``K, K + N, K + 2N, …`` of the sorted input list
            (both parts of a video with ``test_tail``). N runs with K = 0 … N − 1 into N roots write disjoint
            sequences; copying the roots together gives the dataset one run writes, with one summary file per
            shard (``last_run.shard-K-of-N.json``) in place of ``last_run.json``.
        test_tail: a fraction 0 < F < 1: the last F of each video's duration (a folder of frames: of its sorted
            frames) is written to the ``test`` split and the rest to ``train``, as sequences of the same name,
            with ``test_gap`` seconds between the two parts (see ``bilayer.preprocess.tail``). ``fps`` subsamples
            the whole video first; ``max_frames`` then keeps the first frames of each part. Not with
            ``split="test"``, nor for a single image.
        test_gap: seconds between the last training and the first test frame of a video (default 1 s; only with
            ``test_tail``).

    Returns a ``Summary``. Raises ``PreprocessError`` (a ``ValueError``) for a bad request, among them an
    ``out_root`` that is a non-empty folder bilayer did not write (``OutputFolderError``, also an
    ``OutputError``), before anything is written; a bad video only fails its own sequence; an ``OSError`` while
    writing (a full disk) stops the run, naming the file, with no half-written sequence left.
    """
    check_test_tail(test_tail, test_gap)
    if test_tail is not None:
        test_tail = float(test_tail)
        test_gap = DEFAULT_TEST_GAP if test_gap is None else float(test_gap)
    settings = Settings(size=int(size), fps=fps, max_frames=max_frames, landmarks=landmarks,
                        segmentation=segmentation, smoothing=smoothing, box_mode=box_mode,
                        min_frames=int(min_frames), jpeg_quality=int(jpeg_quality), test_tail=test_tail,
                        test_gap=test_gap)
    settings.validate()
    try:
        shard = check_shard(shard)
    except ShardError as exc:
        raise PreprocessError(str(exc)) from None
    if split not in SPLITS:
        raise PreprocessError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}.")
    if test_tail is not None and split != SPLITS[0]:
        raise PreprocessError(f"--test-tail writes both splits (the start of each video to train, its end to "
                              f"test); leave out --split {split}.")
    if workers < 1:
        raise PreprocessError(f"--workers must be at least 1, got {workers}.")
    if isinstance(max_faces, bool) or not isinstance(max_faces, int) or max_faces < 1:
        raise PreprocessError(f"--max-faces must be a whole number of faces ≥ 1, got {max_faces!r}.")
    out_root = Path(out_root).expanduser()
    if out_root.exists() and not out_root.is_dir():
        raise PreprocessError(f"output {out_root} exists and is not a directory.")
    all_jobs = discover(input, exclude=[out_root])
    if test_tail is not None and len(all_jobs) == 1 and all_jobs[0].source.is_file() \
            and is_image(all_jobs[0].source):
        raise PreprocessError(f"--test-tail splits a video or a folder of frames in time, and {all_jobs[0].source} "
                              f"is a single image; give a video or a folder of frames, or leave out --test-tail.")
    landmark_options = {"weights_dir": landmark_weights, "path": keypoints, "max_faces": max_faces}
    _validate_backend_options(settings, landmark_options, all_jobs)
    try:
        claim_folder(out_root, "dataset", "--out")
    except OutputError as exc:
        raise OutputFolderError(str(exc)) from None

    sources = shard_items(all_jobs, shard)
    splits = SPLITS if test_tail is not None else (split,)
    jobs = [replace(job, split=s) for job in sources for s in splits]
    config = _RunConfig(settings, out_root, split, landmark_options, overwrite)
    summary = Summary(out_root, "+".join(splits), shard=shard, sources=len(sources), all_sources=len(all_jobs),
                      test_tail=test_tail, test_gap=test_gap)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), unit="seq", desc="preprocess", disable=not progress, dynamic_ncols=True)

    def record(res: SequenceResult) -> None:
        summary.sequences.append(res)
        bar.update(1)
        bar.set_postfix(kept=summary.frames_kept, dropped=sum(summary.frames_dropped.values()), refresh=False)

    try:
        if workers == 1 or len(jobs) <= 1:
            runner = _Runner(config)
            try:
                for job in jobs:
                    desc = f"{job.split} {job.name}" if test_tail is not None else job.name
                    with tqdm(unit="frame", desc=desc, leave=False, disable=not progress,
                              dynamic_ncols=True) as fbar:
                        record(runner.run(job, on_frame=lambda: fbar.update(1)))
            finally:
                runner.close()
        else:
            ctx = get_context("spawn")  # MediaPipe and OpenCV threads do not survive fork
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx,
                                     initializer=_worker_init, initargs=(config,)) as pool:
                pending = {pool.submit(_worker_run, job): job for job in jobs}
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        job = pending.pop(fut)
                        try:
                            res = fut.result()
                        except (PreprocessError, OSError):  # a full disk stops the run, not one sequence
                            for f in pending:
                                f.cancel()
                            raise
                        except Exception as exc:  # noqa: BLE001 - a crashed worker fails its sequence only
                            res = SequenceResult(job.name, str(job.source), "failed", "error",
                                                 f"{type(exc).__name__}: {exc}", split=job.split or split)
                        record(res)
    finally:
        bar.close()
    summary.sequences.sort(key=lambda r: (r.name, SPLITS.index(r.split) if r.split in SPLITS else 0))
    name = "last_run.json" if shard is None else f"last_run.shard-{shard[0]}-of-{shard[1]}.json"
    for s in splits:  # the summary of the last run that wrote each split (per shard: the shards' roots merge)
        with contextlib.suppress(OSError):
            write_json_atomic(out_root / MARKER_DIR / s / name, summary.to_dict(), indent=1)
    return summary
