"""SynthHeads: a procedural talking-head video dataset, rendered from scratch in NumPy (no OpenGL, no models).

What it is for: the bi-layer model needs videos of people whose appearance depends on pose (so the
low-frequency layer and the warp have something to learn) and who carry identity-specific fine detail that
only the texture can reproduce. SynthHeads renders exactly that, deterministically from a seed:

- **identities** — head and face shape, skin tone, hair style and colour, eye colour, brows, lips, and sharp
  high-frequency detail (freckles, moles, stubble, hair strands, patterned clothes);
- **videos** — a background (flat, gradient or a soft textured room), lighting and clothes per video;
- **frames** — a smooth random performance: head yaw ±40°, pitch ±20°, roll ±15°, small translation and
  scale, speech-like jaw motion, smiles, blinks, brow raises and gaze saccades, rendered with shading and
  self-occlusion by a z-buffer rasteriser (``synth_raster``) over grid meshes (``synth_head``,
  ``synth_body``), shaded per pixel (``synth_render``).

It produces, per frame, the RGB image, the 68 iBUG keypoints (jaw points on the visible cheek contour, as a
2-D detector places them) and the person mask, in the reference dataset layout (SPEC §1.1)::

    ROOT/imgs/{train,test}/idNNNNN/vidNNN/seqNNN/NNNNNN.jpg        RGB, JPEG quality 95
    ROOT/keypoints/{train,test}/idNNNNN/vidNNN/seqNNN/NNNNNN.npy   float32 (68, 2), pixels of the saved image
    ROOT/segs/{train,test}/idNNNNN/vidNNN/seqNNN/NNNNNN.png        uint8 single channel, 255 = person
    ROOT/videos/{train,test}/idNNNNN/vidNNN/seqNNN.mp4             optional, H.264 at 25 fps (``videos=True``)
    ROOT/preview.png                                               optional contact sheet with keypoints
    ROOT/synth.json                                                the arguments and the identity split
    ROOT/.synth/{train,test}/idNNNNN/vidNNN/seqNNN.json            the record of a finished sequence

Keypoint coordinates are continuous: (0, 0) is the top-left corner of the top-left pixel, so x / width maps
the image onto [0, 1] as the reference loader expects. Train and test identities are disjoint (the last
``test_identities`` identities are the test split). The same seed gives byte-identical keypoints, masks and
images whatever the number of workers.

A sequence appears complete or not at all (``data.sequences``): its files are written into hidden temporary
folders, moved into place (imgs last) and then recorded under ``ROOT/.synth``. A run that is killed leaves no
sequence the dataset uses; the next run with the same settings removes its temporaries and resumes, skipping
the recorded sequences. Before any work the sizes are checked against ``MAX_SIZE`` and the layout's name widths,
the memory the workers need against the memory available, and the disk space the run needs against the free
space (``check_resources``).

Python: ``generate(...)`` writes a dataset; ``render_frame(identity, frame, size)`` renders one frame;
``sample_identity(rng)``, ``sample_scene(rng)`` and ``sample_trajectory(rng, frames)`` draw parameters.
Command line (wired as ``bilayer synth``): ``configure_parser`` and ``command``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import cv2
import numpy as np

from ..io import encode_image, encode_npy, write_image_atomic, write_json_atomic
from ..outputs import claim_folder
from .sequences import SequenceWriter
from .synth_params import (FPS, FrameParams, IdentityParams, SceneParams, sample_identity, sample_scene,
                           sample_trajectory)
from .synth_render import SynthRenderer, render_frame

__all__ = [
    "MAX_FRAMES", "MAX_IDENTITIES", "MAX_SEQUENCES_PER_VIDEO", "MAX_SIZE", "MAX_VIDEOS_PER_IDENTITY", "FrameParams",
    "IdentityParams", "SceneParams", "SynthRenderer", "available_memory", "check_resources", "command",
    "configure_parser", "disk_bytes_per_frame", "draw_keypoints", "generate", "identity_params", "render_frame",
    "sample_identity", "sample_scene", "sample_trajectory", "scene_params", "sequence_trajectory", "worker_memory",
]

JPEG_QUALITY = 95
PREVIEW_ROWS, PREVIEW_COLUMNS = 6, 6
RECORDS = ".synth"  # ROOT/.synth/SPLIT/PERSON/VIDEO/SEQ.json: finished sequences

# Limits. The image side: one renderer's peak memory grows with the square of the side (measured peak RSS of a
# process rendering frames: 259 MiB at 64 px, 411 at 256, 867 at 512, 2,522 at 1,024 and 9,269 at 2,048, of
# which about 245 MiB is Python, NumPy, OpenCV and torch; 9.6 s per frame and 88 s to set up at 2,048).
MAX_SIZE = 2048
# The layout's zero-padded names: id00000-id99999, vid000-vid999, seq000-seq999.
MAX_IDENTITIES, MAX_VIDEOS_PER_IDENTITY, MAX_SEQUENCES_PER_VIDEO = 100_000, 1000, 1000
# Frames per sequence: the trajectory is drawn whole (about 0.8 KiB and 16 µs per frame); 100,000 frames are
# 67 minutes at 25 fps.
MAX_FRAMES = 100_000
_WORKER_BASE = 300 * 2**20     # bytes: the interpreter and libraries, with margin
_WORKER_PER_PIXEL = 2304       # bytes per output pixel (2.25 KiB: fits the measurements above within 4 %)
_WORKER_PER_FRAME = 1024       # bytes per frame of the trajectory
# Disk per frame: JPEG about 0.25 bytes per pixel at 256 px and 0.15 at 1,024 (16.6 / 47.9 / 160 KB at
# 256 / 512 / 1,024 px), the .npy 672 bytes and the mask PNG 0.4-8 KB, each file at least one 4 KiB block;
# the mp4 about 0.035 bytes per pixel and frame.
_DISK_PER_PIXEL, _DISK_PER_FRAME, _VIDEO_PER_PIXEL = 0.2, 14 * 1024, 0.05

# keypoint groups for drawing: (first, last + 1, RGB colour)
_GROUPS = ((0, 17, (255, 255, 255)), (17, 27, (255, 200, 0)), (27, 36, (0, 160, 255)), (36, 48, (255, 0, 0)),
           (48, 68, (0, 255, 0)))


# --------------------------------------------------------------------------------------------- seeding
# Every random draw comes from its own generator keyed by (seed, kind, indices), so an identity, a video's
# scene or a sequence's trajectory never depend on how many others are generated or on the worker layout.
def identity_params(seed: int, person: int) -> IdentityParams:
    return sample_identity(np.random.default_rng([seed, 0, person]))


def scene_params(seed: int, person: int, video: int) -> SceneParams:
    return sample_scene(np.random.default_rng([seed, 1, person, video]))


def sequence_trajectory(seed: int, person: int, video: int, sequence: int, frames: int) -> list[FrameParams]:
    return sample_trajectory(np.random.default_rng([seed, 2, person, video, sequence]), frames)


def person_name(person: int) -> str:
    return f"id{person:05d}"


# ------------------------------------------------------------------------------------------ validation
def _check(root: Path, identities, videos_per_identity, frames, size, seed, test_identities, sequences_per_video,
           workers, *, flags: bool = False) -> int:
    """Validate the arguments (one sentence per mistake); returns the number of test identities. Messages call
    each argument by its keyword, or with ``flags`` by its ``bilayer synth`` flag (``test_identities`` →
    ``--test-identities``)."""
    if root.exists() and not root.is_dir():
        raise ValueError(f"output {root} exists and is not a folder.")

    def label(name):
        return "--" + name.replace("_", "-") if flags else name

    def integer(name, value):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{label(name)} must be an integer, got {value!r}.")
        return int(value)

    size = integer("size", size)
    if size <= 0 or size % 32:
        raise ValueError(f"{label('size')} must be a positive multiple of 32, got {size}.")
    if size > MAX_SIZE:
        raise ValueError(f"{label('size')} must be at most {MAX_SIZE} pixels, the largest SynthHeads renders (about "
                         f"{_gib(worker_memory(MAX_SIZE, 2))} of memory per worker at {MAX_SIZE}), got {size}.")
    if integer("frames", frames) < 2:
        raise ValueError(f"{label('frames')} must be at least 2 per sequence, got {frames}.")
    if frames > MAX_FRAMES:
        raise ValueError(f"{label('frames')} must be at most {MAX_FRAMES} per sequence (67 minutes at 25 fps), "
                         f"got {frames}.")
    if integer("videos_per_identity", videos_per_identity) < 1:
        raise ValueError(f"{label('videos_per_identity')} must be at least 1, got {videos_per_identity}.")
    if videos_per_identity > MAX_VIDEOS_PER_IDENTITY:
        raise ValueError(f"{label('videos_per_identity')} must be at most {MAX_VIDEOS_PER_IDENTITY} (the videos are "
                         f"named vid000 to vid999), got {videos_per_identity}.")
    if integer("sequences_per_video", sequences_per_video) < 1:
        raise ValueError(f"{label('sequences_per_video')} must be at least 1, got {sequences_per_video}.")
    if sequences_per_video > MAX_SEQUENCES_PER_VIDEO:
        raise ValueError(f"{label('sequences_per_video')} must be at most {MAX_SEQUENCES_PER_VIDEO} (the sequences "
                         f"are named seq000 to seq999), got {sequences_per_video}.")
    if integer("seed", seed) < 0:
        raise ValueError(f"{label('seed')} must be 0 or more, got {seed}.")
    if integer("workers", workers) < 1:
        raise ValueError(f"{label('workers')} must be at least 1, got {workers}.")
    n = integer("identities", identities)
    if n < 1:
        raise ValueError(f"{label('identities')} must be at least 1, got {identities}.")
    if n > MAX_IDENTITIES:
        raise ValueError(f"{label('identities')} must be at most {MAX_IDENTITIES} (the people are named id00000 to "
                         f"id99999), got {identities}.")
    test = max(1, n // 5) if test_identities is None else integer("test_identities", test_identities)
    if test < 0:
        raise ValueError(f"{label('test_identities')} must be 0 or more, got {test_identities}.")
    if test > 0 and n < 2:
        raise ValueError(f"{label('identities')} must be at least 2 so that the train and test identities are "
                         f"disjoint, got {n} (set {label('test_identities')} to 0 for a train-only set).")
    if test >= n:
        raise ValueError(f"{label('test_identities')} must leave at least one training identity, got {test} of {n} "
                         "identities.")
    return test


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def _bytes(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n / 1e3:.1f} kB"


# ------------------------------------------------------------------------------------------- resources
def worker_memory(size: int, frames: int) -> int:
    """Bytes one rendering process needs at its peak: the measured growth with the image side (see ``MAX_SIZE``)
    plus the sequence's trajectory."""
    return int(_WORKER_BASE + _WORKER_PER_PIXEL * size * size + _WORKER_PER_FRAME * frames)


def disk_bytes_per_frame(size: int, videos: bool = False) -> int:
    """Bytes one frame takes on disk (JPEG, keypoints, mask, and its share of the mp4 with ``videos``), an
    estimate on the large side (see the measurements above)."""
    per_pixel = _DISK_PER_PIXEL + (_VIDEO_PER_PIXEL if videos else 0.0)
    return int(per_pixel * size * size + _DISK_PER_FRAME)


def available_memory() -> int | None:
    """Bytes of memory available to new processes: ``MemAvailable`` of /proc/meminfo, less when a cgroup (v2)
    limit leaves less; else the free physical memory (``os.sysconf``); None when none of these can be read."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            stat = dict(line.split()[:2] for line in Path("/sys/fs/cgroup/memory.stat").read_text().splitlines())
            found.append(int(limit) - used + int(stat.get("inactive_file", 0)))
    except (OSError, ValueError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            return None
    return max(0, min(found))


def _existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            return candidate
    return Path(path.anchor or ".")


def _finished_count(root: Path) -> int:
    count = 0
    for _, _, names in os.walk(root / RECORDS):
        count += sum(n.endswith(".json") for n in names)
    return count


def check_resources(root, identities: int, videos_per_identity: int, frames: int, size: int,
                    sequences_per_video: int = 1, workers: int = 1, videos: bool = False, *,
                    flags: bool = False) -> None:
    """Refuse, with one sentence, a run whose processes need more memory than is available (``worker_memory``;
    not checked where the available memory cannot be read) or whose files need more disk space than ``root``'s
    file system has free (``disk_bytes_per_frame``; sequences finished by an earlier run are not counted). The
    arguments must have passed ``_check``; messages name them by keyword, or with ``flags`` by flag."""
    def label(name):
        return "--" + name.replace("_", "-") if flags else name

    root = Path(root)
    sequences = identities * videos_per_identity * sequences_per_video
    processes = min(workers, sequences)
    per_worker = worker_memory(size, frames)
    need = per_worker * processes + (_WORKER_BASE if processes > 1 else 0)  # the main process waits on workers
    available = available_memory()
    if available is not None and need > available:
        if processes > 1:
            raise ValueError(
                f"{label('size')} {size} with {processes} {label('workers')} needs about {_gib(need)} of memory "
                f"({_gib(per_worker)} per worker), but {_gib(available)} is available; use fewer "
                f"{label('workers')} or a smaller {label('size')}.")
        raise ValueError(f"{label('size')} {size} needs about {_gib(need)} of memory to render, but "
                         f"{_gib(available)} is available; use a smaller {label('size')}.")
    per_frame = disk_bytes_per_frame(size, videos)
    need = sequences * frames * per_frame
    folder = _existing(root)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if need > free and root.is_dir():  # a resumed run writes only the unfinished sequences
        need = max(0, sequences - _finished_count(root)) * frames * per_frame
    if need > free:
        raise ValueError(
            f"{sequences * frames:,} frames ({label('identities')} {identities} × {label('videos_per_identity')} "
            f"{videos_per_identity} × {label('sequences_per_video')} {sequences_per_video} × {label('frames')} "
            f"{frames}) at {label('size')} {size} need about {_bytes(need)} of disk space, but {folder} has "
            f"{_bytes(free)} free; ask for fewer frames or free some space.")


# ---------------------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def _video_writer(path: Path, size: int):
    """A function writing RGB frames to an H.264 mp4 at ``path`` through PyAV (a sequence's temporary file)."""
    import av

    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(FPS))
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        # one encoder thread: workers already use the cores, and x264 output stays reproducible
        stream.options = {"crf": "16", "preset": "veryfast", "threads": "1"}

        def write(rgb: np.ndarray) -> None:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))

        yield write
        container.mux(stream.encode())  # flush the encoder


def _sequence_settings(job: dict) -> dict:
    """What a sequence's files depend on; a recorded sequence with the same settings is not rendered again."""
    return {"generator": "SynthHeads", "seed": job["seed"], "size": job["size"], "frames": job["frames"]}


def _render_sequence(job: dict, tick=None) -> dict:
    """Render and write one sequence (``SequenceWriter``: complete or not at all), or skip it when an earlier run
    recorded it with the same settings; returns what the summary and the preview need."""
    root, size, seed = Path(job["root"]), job["size"], job["seed"]
    person, video, seq = job["person"], job["video"], job["sequence"]
    key = (person_name(person), f"vid{video:03d}", f"seq{seq:03d}")
    video_file = root.joinpath("videos", job["split"], key[0], key[1], f"{key[2]}.mp4")
    writer = SequenceWriter(root, RECORDS, job["split"], key, files={"video": video_file})
    writer.sweep()  # temporaries of killed runs
    settings = _sequence_settings(job)
    old = writer.read_record()
    done = (old is not None and old.get("settings") == settings and (old.get("video") or not job["videos"])
            and (not old.get("video") or video_file.is_file()))
    keep = set()
    if job["preview"]:
        keep = set(np.linspace(0, job["frames"] - 1, PREVIEW_COLUMNS).round().astype(int).tolist())
    if done:  # finished by an earlier run: only the preview's frames are rendered again
        shots = []
        if keep:
            trajectory = sequence_trajectory(seed, person, video, seq, job["frames"])
            renderer = SynthRenderer(identity_params(seed, person), scene_params(seed, person, video), size)
            for i in sorted(keep):
                rgb, keypoints, _ = renderer.render(trajectory[i])
                shots.append((rgb, keypoints))
        if tick is not None:
            tick(job["frames"])
        return {"person": person, "video": video, "sequence": seq, "frames": job["frames"], "shots": shots,
                "resumed": True}
    renderer = SynthRenderer(identity_params(seed, person), scene_params(seed, person, video), size)
    trajectory = sequence_trajectory(seed, person, video, seq, job["frames"])
    shots = []
    with writer:
        with contextlib.ExitStack() as stack:
            write_video = (stack.enter_context(_video_writer(writer.temp_file("video"), size)) if job["videos"]
                           else None)
            for i, frame in enumerate(trajectory):
                rgb, keypoints, mask = renderer.render(frame)
                stem = f"{i:06d}"
                writer.write("imgs", f"{stem}.jpg", encode_image(rgb, ".jpg", JPEG_QUALITY))
                writer.write("keypoints", f"{stem}.npy", encode_npy(keypoints.astype(np.float32)))
                writer.write("segs", f"{stem}.png", encode_image(mask, ".png"))
                if write_video is not None:
                    write_video(rgb)
                if i in keep:
                    shots.append((rgb, keypoints))
                if tick is not None:
                    tick(1)
        from .. import __version__

        writer.commit({"key": list(key), "split": job["split"], "status": "done", "frames": len(trajectory),
                       "video": bool(job["videos"]), "settings": settings,
                       "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "bilayer_version": __version__})
    return {"person": person, "video": video, "sequence": seq, "frames": len(trajectory), "shots": shots,
            "resumed": False}


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one core per worker process


# ---------------------------------------------------------------------------------------------- preview
def draw_keypoints(rgb: np.ndarray, keypoints: np.ndarray, radius: float | None = None) -> np.ndarray:
    """A copy of ``rgb`` with the 68 keypoints drawn as dots coloured by group (jaw, brows, nose, eyes, mouth)."""
    out = np.array(rgb, np.uint8)
    r = max(1.0, rgb.shape[0] / 160) if radius is None else radius
    for lo, hi, colour in _GROUPS:
        for x, y in keypoints[lo:hi]:
            cv2.circle(out, (int(round(x * 16 - 8)), int(round(y * 16 - 8))), int(r * 16), colour, -1, cv2.LINE_AA, 4)
    return out


def contact_sheet(rows: list[tuple[str, list[tuple[np.ndarray, np.ndarray]]]], tile: int) -> np.ndarray:
    """An RGB sheet: one labelled row per sequence, its frames left to right, keypoints drawn."""
    columns = max(len(shots) for _, shots in rows)
    sheet = np.full((len(rows) * tile, columns * tile, 3), 32, np.uint8)
    for r, (label, shots) in enumerate(rows):
        for c, (rgb, kp) in enumerate(shots):
            scale = tile / rgb.shape[0]
            small = cv2.resize(rgb, (tile, tile), interpolation=cv2.INTER_AREA) if scale != 1 else rgb
            sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = draw_keypoints(small, kp * scale)
        cv2.putText(sheet, label, (4, r * tile + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return sheet


# --------------------------------------------------------------------------------------------- generate
def generate(root, identities: int, videos_per_identity: int, frames: int, size: int = 256, seed: int = 0,
             test_identities: int | None = None, sequences_per_video: int = 1, videos: bool = False,
             preview: bool = False, workers: int = 1, progress: bool = True) -> dict:
    """Render a SynthHeads dataset under ``root`` (layout in the module docstring) and return a summary dict.

    ``identities`` people (``test_identities`` of them, by default max(1, identities // 5), form the test
    split) × ``videos_per_identity`` videos (each its own background, lighting and clothes) ×
    ``sequences_per_video`` sequences of ``frames`` frames at 25 fps. ``workers`` > 1 renders sequences in
    parallel processes; the output does not depend on it.

    Bad values, a ``root`` that is a non-empty folder bilayer did not write (``outputs.OutputError``), and a run
    that needs more memory or disk space than there is (``check_resources``) raise a one-sentence ``ValueError``
    before anything is written. Sequences recorded by an earlier run with the same seed, size and frames are
    skipped (``resumed`` in the summary). An ``OSError`` while writing (a full disk) names the file and leaves no
    half-written sequence."""
    root = Path(root)
    n_test = _check(root, identities, videos_per_identity, frames, size, seed, test_identities, sequences_per_video,
                    workers)
    check_resources(root, identities, videos_per_identity, frames, size, sequences_per_video, workers, videos)
    if videos:
        try:
            import av  # noqa: F401
        except ImportError as exc:  # pragma: no cover - av is installed with the package's data extras
            raise RuntimeError("videos=True needs PyAV (pip install av).") from exc
    claim_folder(root, "synth", "--out")
    n_train = identities - n_test
    split = ["train" if p < n_train else "test" for p in range(identities)]
    preview_people = set(np.linspace(0, identities - 1, min(identities, PREVIEW_ROWS)).round().astype(int).tolist())
    n_jobs = identities * videos_per_identity * sequences_per_video
    jobs = (
        {"root": str(root), "size": int(size), "seed": int(seed), "person": p, "video": v, "sequence": s,
         "frames": int(frames), "split": split[p], "videos": bool(videos),
         "preview": bool(preview) and p in preview_people and v == 0 and s == 0}
        for p in range(identities) for v in range(videos_per_identity) for s in range(sequences_per_video)
    )
    total = n_jobs * frames
    start = time.perf_counter()
    from tqdm import tqdm

    results = []  # the sequences with preview shots
    resumed = 0

    def record(result: dict) -> None:
        nonlocal resumed
        resumed += result["resumed"]
        if result["shots"]:
            results.append(result)

    with tqdm(total=total, disable=not progress, unit="frame", desc="SynthHeads", dynamic_ncols=True) as bar:
        if workers == 1 or n_jobs == 1:
            for job in jobs:
                record(_render_sequence(job, tick=bar.update))
        else:
            methods = multiprocessing.get_all_start_methods()
            # Not plain fork: a process that already used OpenCV's thread pool deadlocks its forked children.
            # A fork server that has imported this module once starts workers almost as fast.
            if "forkserver" in methods:
                ctx = multiprocessing.get_context("forkserver")
                ctx.set_forkserver_preload([__name__])
            else:
                ctx = multiprocessing.get_context("spawn")
            processes = min(workers, n_jobs)
            # A few sequences queued per worker; on the first error (a full disk) the queued ones are cancelled and
            # the running ones end by themselves (finished, or failed and cleaned up), so no worker is killed
            # mid-sequence.
            with ProcessPoolExecutor(processes, mp_context=ctx, initializer=_worker_init) as pool:
                pending: set = set()
                try:
                    while True:
                        for job in itertools.islice(jobs, 2 * processes - len(pending)):
                            pending.add(pool.submit(_render_sequence, job))
                        if not pending:
                            break
                        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in finished:
                            result = future.result()
                            record(result)
                            bar.update(result["frames"])
                except BrokenProcessPool:
                    raise ValueError(f"a SynthHeads worker process ended abruptly (killed for lack of memory?); "
                                     f"run again with fewer than {processes} --workers or a smaller --size (the "
                                     "finished sequences are kept).") from None
                except BaseException:
                    for future in pending:
                        future.cancel()
                    raise
    seconds = time.perf_counter() - start
    rendered = (n_jobs - resumed) * frames

    preview_path = None
    if preview:
        rows = sorted((r for r in results if r["shots"]), key=lambda r: r["person"])
        sheet = contact_sheet([(f"{person_name(r['person'])} ({split[r['person']]})", r["shots"]) for r in rows],
                              tile=min(int(size), 192))
        preview_path = write_image_atomic(root / "preview.png", sheet)

    people = {"train": [person_name(p) for p in range(n_train)],
              "test": [person_name(p) for p in range(n_train, identities)]}
    meta = {"generator": "SynthHeads", "seed": int(seed), "size": int(size), "frames_per_sequence": int(frames),
            "videos_per_identity": int(videos_per_identity), "sequences_per_video": int(sequences_per_video),
            "fps": FPS, "identities": people}
    write_json_atomic(root / "synth.json", meta)
    return {
        "root": str(root),
        "identities": people,
        "sequences": n_jobs,
        "frames": total,
        "resumed": resumed,
        "videos": n_jobs if videos else 0,
        "preview": str(preview_path) if preview_path else None,
        "seconds": seconds,
        "frames_per_second": rendered / seconds if seconds > 0 else float("inf"),
    }


# --------------------------------------------------------------------------------------------------- CLI
def configure_parser(p: argparse.ArgumentParser) -> None:
    """Options of ``bilayer synth``."""
    p.add_argument("--out", required=True, metavar="ROOT", help="dataset root to write: new, empty, or a dataset bilayer wrote (a rerun resumes)")
    p.add_argument("--identities", type=int, default=10, metavar="N", help="number of people (default 10)")
    p.add_argument("--videos-per-identity", type=int, default=2, metavar="V", help="videos per person (default 2)")
    p.add_argument("--frames", type=int, default=50, metavar="F", help="frames per sequence, 25 fps (default 50)")
    p.add_argument("--size", type=int, default=256, metavar="S",
                   help=f"image side in pixels, a multiple of 32 up to {MAX_SIZE} (default 256)")
    p.add_argument("--seed", type=int, default=0, metavar="K", help="random seed, 0 or more (default 0)")
    p.add_argument("--test-identities", type=int, default=None, metavar="T",
                   help="people in the test split, disjoint from train (default max(1, N // 5))")
    p.add_argument("--sequences-per-video", type=int, default=1, metavar="Q", help="sequences per video (default 1)")
    p.add_argument("--videos", action="store_true", help="also write an H.264 mp4 per sequence under ROOT/videos")
    p.add_argument("--preview", action="store_true", help="also write ROOT/preview.png, a contact sheet with keypoints")
    p.add_argument("--workers", type=int, default=1, metavar="W", help="parallel worker processes (default 1)")


def command(args: argparse.Namespace) -> int:
    """Run ``generate`` from parsed options and print a one-line summary. Bad values raise a one-sentence
    ``ValueError`` naming the flag."""
    _check(Path(args.out), args.identities, args.videos_per_identity, args.frames, args.size, args.seed,
           args.test_identities, args.sequences_per_video, args.workers, flags=True)
    check_resources(args.out, args.identities, args.videos_per_identity, args.frames, args.size,
                    args.sequences_per_video, args.workers, args.videos, flags=True)
    s = generate(args.out, args.identities, args.videos_per_identity, args.frames, size=args.size, seed=args.seed,
                 test_identities=args.test_identities, sequences_per_video=args.sequences_per_video,
                 videos=args.videos, preview=args.preview, workers=args.workers, progress=True)
    extra = f", {s['videos']} videos" if s["videos"] else ""
    extra += ", preview.png" if s["preview"] else ""
    extra += f", {s['resumed']} sequences finished by an earlier run" if s["resumed"] else ""
    print(f"wrote {s['frames']} frames in {s['sequences']} sequences ({len(s['identities']['train'])} train / "
          f"{len(s['identities']['test'])} test identities{extra}) to {s['root']} in {s['seconds']:.1f} s "
          f"({s['frames_per_second']:.1f} frames/s)")
    return 0
