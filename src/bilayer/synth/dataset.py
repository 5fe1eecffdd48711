"""The SynthHeads dataset writer: a procedural talking-head video dataset, rendered from scratch in NumPy (no OpenGL, no models).

What it is for: the bi-layer model needs videos of people whose appearance depends on pose (so the
low-frequency layer and the warp have something to learn) and who carry identity-specific fine detail that
only the texture can reproduce. SynthHeads renders exactly that, deterministically from a seed:

- **identities** — head and face shape, skin tone, hair style and colour, eye colour, brows, lips, and sharp
  high-frequency detail (freckles, moles, stubble, hair strands, patterned clothes);
- **videos** — a background (flat, gradient or a soft textured room), lighting and clothes per video;
- **frames** — a smooth random performance: head yaw ±40°, pitch ±20°, roll ±15°, small translation and
  scale, speech-like jaw motion, smiles, blinks, brow raises and gaze saccades, rendered with shading and
  self-occlusion by a z-buffer rasteriser (``synth.raster``) over grid meshes (``synth.head``,
  ``synth.body``), shaded per pixel (``synth.render``).

It produces, per frame, the RGB image, the 68 iBUG keypoints (jaw points on the visible cheek contour, as a
2-D detector places them) and the person mask, in the reference dataset layout (reference §1.1)::

    ROOT/imgs/{train,test}/idNNNNN/vidNNN/seqNNN/NNNNNN.jpg        RGB, JPEG quality 95
    ROOT/keypoints/{train,test}/idNNNNN/vidNNN/seqNNN/NNNNNN.npy   float32 (68, 2), pixels of the saved image
    ROOT/segs/{train,test}/idNNNNN/vidNNN/seqNNN/NNNNNN.png        uint8 single channel, 255 = person
    ROOT/videos/{train,test}/idNNNNN/vidNNN/seqNNN.mp4             optional, H.264 at the frame rate (``videos=True``)
    ROOT/preview.png                                               optional contact sheet with keypoints
    ROOT/synth.json                                                the arguments and the identity split
    ROOT/.synth/{train,test}/idNNNNN/vidNNN/seqNNN.json            the record of a finished sequence
    ROOT/cross/A_as_B/{imgs,keypoints,segs}/NNNNNN.{jpg,npy,png}   optional cross-person ground truth (below)
    ROOT/cross/pairs.json                                          the cross-person pairs
    ROOT/.synth/cross/A_as_B.json                                  the record of a finished pair

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

**Cross-person ground truth** (``cross_pairs`` P > 0): for P ordered pairs (A, B) of distinct test identities,
the frames of person A performing person B's motion — what a perfect cross-person reenactment of A driven by B
looks like. Pair i takes A = test identity i mod T and B = the test identity 1 + i // T places after it
(cyclically, T = the number of test identities), so the first T pairs drive each test person by the next one,
and P is at most T × (T − 1). A keeps everything that is A's: the identity (face shape, skin, hair) and the
scene of A's video 0 (camera framing, background, lighting, clothes). B gives every per-frame parameter of
B's sequence test/B/vid000/seq000: head yaw, pitch and roll, the small head translation and scale, body sway,
jaw, smile, blinks, brow raises and gaze. None of these is tied to B's face or scene: translation and scale are
offsets from the framing, which stays A's, so the head moves as B's does, within A's shot. The driver's frames
and keypoints are B's ordinary test sequence (not copied); A's own test/A/vid000/seq000 begins with the natural
source photo. ``ROOT/cross/pairs.json`` lists, per pair, the source and driver identities, the pair's folder
and those two sequences; ``cross_pairs(root)`` gives the paths an evaluation needs. A pair is written like a
sequence, complete or not at all: into a hidden temporary folder, moved into place, then recorded under
``ROOT/.synth/cross``. The training loader reads only the imgs/keypoints/segs trees, so ``cross/`` is not seen
by it.

**Shards** (``shard=(K, N)``, ``--shard K/N``): the sequences, in their fixed order (person by person, video by
video, sequence by sequence), are cut into N consecutive runs whose lengths differ by at most one, and shard K
renders run K, so that a person's sequences stay together (a worker builds a person's head model once); cross
pair i belongs to shard i mod N. Every shard writes the same ``synth.json`` and ``cross/pairs.json``, so N
machines can each write their own root and copying the roots into one folder gives exactly the dataset one
unsharded run writes (only ``preview.png``, drawn from the shard's own sequences, differs between shards). The
memory and disk checks, the progress bar and the summary count the shard's share only.

Python: ``generate(...)`` writes a dataset; ``cross_pairs(root)`` lists its cross-person pairs' files;
``render_frame(identity, frame, size)`` renders one frame;
``sample_identity(rng)``, ``sample_scene(rng)`` and ``sample_trajectory(rng, frames)`` draw parameters.
Command line (wired as ``bilayer synth``): ``configure_parser`` and ``command``.
"""

from __future__ import annotations

import argparse
import contextlib
from fractions import Fraction
import itertools
import json
import multiprocessing
import os
import re
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import cv2
import numpy as np

from ..io import encode_image, encode_npy, write_image_atomic, write_json_atomic
from ..outputs import claim_folder, make_folder, replace_folder, staging_folder, sweep_stale
from ..shard import check_shard
from ..data.sequences import TREES, SequenceWriter
from .params import (FPS, FrameParams, IdentityParams, SceneParams, sample_identity, sample_scene,
                           sample_trajectory)
from .render import SynthRenderer, render_frame

__all__ = [
    "MAX_FRAMES", "MAX_IDENTITIES", "MAX_SEQUENCES_PER_VIDEO", "MAX_SHARDS", "MAX_SIZE", "MAX_VIDEOS_PER_IDENTITY",
    "FrameParams", "IdentityParams", "SceneParams", "SynthRenderer", "available_memory", "check_resources", "command",
    "configure_parser", "cross_pair_list", "cross_pairs", "disk_bytes_per_frame", "draw_keypoints", "generate",
    "identity_params", "render_frame", "sample_identity", "sample_scene", "sample_trajectory", "scene_params",
    "sequence_trajectory", "shard_pairs", "shard_sequences", "worker_memory",
]

JPEG_QUALITY = 95
PREVIEW_ROWS, PREVIEW_COLUMNS = 6, 6
RECORDS = ".synth"  # ROOT/.synth/SPLIT/PERSON/VIDEO/SEQ.json: finished sequences
CROSS = "cross"  # ROOT/cross/A_as_B/{imgs,keypoints,segs}: cross-person ground truth; ROOT/.synth/cross/A_as_B.json
PAIRS_FILE = "pairs.json"  # ROOT/cross/pairs.json: the pairs

# Limits. The image side: one renderer's peak memory grows with the square of the side (measured peak RSS of a
# process rendering frames: 259 MiB at 64 px, 411 at 256, 867 at 512, 2,522 at 1,024 and 9,269 at 2,048, of
# which about 245 MiB is Python, NumPy, OpenCV and torch; 9.6 s per frame and 88 s to set up at 2,048).
MAX_SIZE = 2048
# The layout's zero-padded names: id00000-id99999, vid000-vid999, seq000-seq999.
MAX_IDENTITIES, MAX_VIDEOS_PER_IDENTITY, MAX_SEQUENCES_PER_VIDEO = 100_000, 1000, 1000
# Frames per sequence: the trajectory is drawn whole (about 0.8 KiB and 16 µs per frame); 100,000 frames are
# 67 minutes at 25 fps.
MAX_FRAMES = 100_000
# Frame rate: the performance's speed is set in seconds; below 25 fps a sequence samples it sparsely (wider motion
# per frame), above it more densely.
MAX_FPS = 120.0
# Shards of one dataset (--shard K/N): one per machine or job of a cluster array.
MAX_SHARDS = 1000
_WORKER_BASE = 300 * 2**20     # bytes: the interpreter and libraries, with margin
_WORKER_PER_PIXEL = 2304       # bytes per output pixel (2.25 KiB: fits the measurements above within 4 %)
_WORKER_PER_FRAME = 1024       # bytes per frame of the trajectory
_MAX_GROUP = 16                # sequences of one person handed to a worker together
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


def sequence_trajectory(seed: int, person: int, video: int, sequence: int, frames: int,
                        fps: float = FPS) -> list[FrameParams]:
    return sample_trajectory(np.random.default_rng([seed, 2, person, video, sequence]), frames, fps)


def person_name(person: int) -> str:
    return f"id{person:05d}"


def cross_pair_list(test_people: list[int], count: int) -> list[tuple[int, int]]:
    """The first ``count`` (source, driver) pairs of distinct people among ``test_people`` (T of them): pair i
    is (person i mod T, the person 1 + i // T places after it, cyclically), so the first T pairs drive each
    person by the next one; at most T × (T − 1) pairs exist."""
    n = len(test_people)
    if count > n * (n - 1):
        raise ValueError(f"{count} cross pairs need more than the {n} test identities give ({n * (n - 1)}).")
    return [(test_people[i % n], test_people[(i % n + 1 + i // n) % n]) for i in range(count)]


def pair_name(source: int, driver: int) -> str:
    """The folder name of a cross-person pair: ``idAAAAA_as_idBBBBB`` (A's appearance, B's motion)."""
    return f"{person_name(source)}_as_{person_name(driver)}"


def _sequence_path(split: str, person: int, video: int = 0, sequence: int = 0) -> str:
    return f"{split}/{person_name(person)}/vid{video:03d}/seq{sequence:03d}"


def _parse_shard(shard, label: str) -> tuple[int, int] | None:
    """``shard`` as (K, N) with 0 ≤ K < N ≤ ``MAX_SHARDS``, from (K, N) or "K/N"; None for the whole dataset.
    Anything else is one sentence naming ``label`` (``shard.ShardError``, a ``ValueError``)."""
    return check_shard(shard, label, MAX_SHARDS)


def shard_sequences(count: int, shard: tuple[int, int] | None) -> range:
    """The indices (in the fixed order) of the sequences of ``shard`` among ``count``: shard K of N has the
    K-th of N consecutive runs whose lengths differ by at most one."""
    if shard is None:
        return range(count)
    k, n = shard
    return range(k * count // n, (k + 1) * count // n)


def shard_pairs(count: int, shard: tuple[int, int] | None) -> range:
    """The indices of the cross pairs of ``shard`` among ``count``: pair i belongs to shard i mod N."""
    if shard is None:
        return range(count)
    k, n = shard
    return range(k, count, n)


# ------------------------------------------------------------------------------------------ validation
def _check(root: Path, identities, videos_per_identity, frames, size, seed, test_identities, sequences_per_video,
           workers, *, flags: bool = False, shard=None, cross_pairs=0, fps=FPS) -> int:
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
    numeric = not isinstance(fps, bool) and isinstance(fps, (int, float, np.integer, np.floating))
    if not numeric or not 0 < fps <= MAX_FPS:
        raise ValueError(f"{label('fps')} must be a number of frames per second above 0 and at most {MAX_FPS:g}, "
                         f"got {format(fps, 'g') if numeric else repr(fps)}.")
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
    pairs = integer("cross_pairs", cross_pairs)
    if pairs < 0:
        raise ValueError(f"{label('cross_pairs')} must be 0 or more, got {cross_pairs}.")
    if pairs > 0 and test < 2:
        raise ValueError(f"{label('cross_pairs')} needs at least 2 test identities to pair, but there "
                         f"{'is' if test == 1 else 'are'} {test} (raise {label('test_identities')}).")
    if pairs > test * (test - 1):
        raise ValueError(f"{label('cross_pairs')} must be at most {test * (test - 1)}, the ordered pairs of distinct "
                         f"people among the {test} test identities, got {pairs}.")
    _parse_shard(shard, label("shard"))
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


def _finished_count(root: Path, owned=None) -> int:
    """The records of finished sequences and pairs under ``root`` (only those whose record path relative to
    ``ROOT/.synth``, without ``.json``, passes ``owned``, when given)."""
    count = 0
    base = root / RECORDS
    for folder, _, names in os.walk(base):
        rel = Path(folder).relative_to(base)
        count += sum(n.endswith(".json") and not n.startswith(".") and (owned is None or owned(rel / n[:-5]))
                     for n in names)
    return count


def _owned_by_shard(shard: tuple[int, int], identities: int, videos_per_identity: int, sequences_per_video: int,
                    pairs: list[tuple[int, int]]):
    """A test of a record path (SPLIT/PERSON/VIDEO/SEQ or cross/A_as_B) for belonging to ``shard``."""
    mine = shard_sequences(identities * videos_per_identity * sequences_per_video, shard)
    my_pairs = {pair_name(*pairs[i]) for i in shard_pairs(len(pairs), shard)}
    pattern = re.compile(r"id(\d{5})/vid(\d{3})/seq(\d{3})")

    def owned(rel: Path) -> bool:
        if len(rel.parts) == 2 and rel.parts[0] == CROSS:
            return rel.parts[1] in my_pairs
        m = pattern.fullmatch("/".join(rel.parts[1:]))
        if m is None:
            return False
        person, video, seq = (int(g) for g in m.groups())
        ok = person < identities and video < videos_per_identity and seq < sequences_per_video
        return ok and (person * videos_per_identity + video) * sequences_per_video + seq in mine

    return owned


def check_resources(root, identities: int, videos_per_identity: int, frames: int, size: int,
                    sequences_per_video: int = 1, workers: int = 1, videos: bool = False, *,
                    flags: bool = False, shard=None, cross_pairs: int = 0, test_identities: int | None = None) -> None:
    """Refuse, with one sentence, a run whose processes need more memory than is available (``worker_memory``;
    not checked where the available memory cannot be read) or whose files need more disk space than ``root``'s
    file system has free (``disk_bytes_per_frame``; sequences and pairs finished by an earlier run are not
    counted). With ``shard`` only the shard's share of the sequences and ``cross_pairs`` pairs counts. The
    arguments must have passed ``_check``; messages name them by keyword, or with ``flags`` by flag."""
    def label(name):
        return "--" + name.replace("_", "-") if flags else name

    root = Path(root)
    shard = _parse_shard(shard, label("shard"))
    all_sequences = identities * videos_per_identity * sequences_per_video
    sequences = len(shard_sequences(all_sequences, shard))
    pairs = len(shard_pairs(int(cross_pairs), shard))
    processes = min(workers, sequences + pairs)
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
    per_pair_frame = disk_bytes_per_frame(size, False)  # pairs have no mp4
    need = sequences * frames * per_frame + pairs * frames * per_pair_frame
    folder = _existing(root)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if need > free and root.is_dir():  # a resumed run writes only the unfinished sequences and pairs
        owned = None
        if shard is not None:
            n = identities
            test = max(1, n // 5) if test_identities is None else int(test_identities)
            pair_list = cross_pair_list(list(range(n - test, n)), int(cross_pairs))
            owned = _owned_by_shard(shard, identities, videos_per_identity, sequences_per_video, pair_list)
        need = max(0, sequences + pairs - _finished_count(root, owned)) * frames * per_frame
    if need > free:
        what = (f"{label('identities')} {identities} × {label('videos_per_identity')} {videos_per_identity} × "
                f"{label('sequences_per_video')} {sequences_per_video} × {label('frames')} {frames}")
        if cross_pairs:
            what += f", plus {label('cross_pairs')} {cross_pairs} × {label('frames')} {frames}"
        if shard is not None:
            what = f"the share of {label('shard')} {shard[0]}/{shard[1]} of " + what
        raise ValueError(
            f"{(sequences + pairs) * frames:,} frames ({what}) at {label('size')} {size} need about {_bytes(need)} "
            f"of disk space, but {folder} has {_bytes(free)} free; ask for fewer frames or free some space.")


# ---------------------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def _video_writer(path: Path, size: int, fps: float = FPS):
    """A function writing RGB frames to an H.264 mp4 at ``path`` through PyAV (a sequence's temporary file)."""
    import av

    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
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
    return _settings(job)


def _settings(job: dict) -> dict:
    """The settings every file of a dataset depends on; ``fps`` is named only when it is not the default 25, so
    that datasets written before the option existed still resume."""
    settings = {"generator": "SynthHeads", "seed": job["seed"], "size": job["size"], "frames": job["frames"]}
    if job.get("fps", FPS) != FPS:
        settings["fps"] = job["fps"]
    return settings


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
            trajectory = sequence_trajectory(seed, person, video, seq, job["frames"], job.get("fps", FPS))
            renderer = SynthRenderer(identity_params(seed, person), scene_params(seed, person, video), size)
            for i in sorted(keep):
                rgb, keypoints, _ = renderer.render(trajectory[i])
                shots.append((rgb, keypoints))
        if tick is not None:
            tick(job["frames"])
        return {"person": person, "video": video, "sequence": seq, "frames": job["frames"], "shots": shots,
                "resumed": True}
    renderer = SynthRenderer(identity_params(seed, person), scene_params(seed, person, video), size)
    trajectory = sequence_trajectory(seed, person, video, seq, job["frames"], job.get("fps", FPS))
    shots = []
    with writer:
        with contextlib.ExitStack() as stack:
            write_video = (stack.enter_context(_video_writer(writer.temp_file("video"), size, job.get("fps", FPS)))
                           if job["videos"] else None)
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


def _pair_settings(job: dict) -> dict:
    """What a cross pair's files depend on; a recorded pair with the same settings is not rendered again."""
    return dict(_settings(job), source=person_name(job["source"]), driver=person_name(job["driver"]))


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _render_pair(job: dict, tick=None) -> dict:
    """Render and write one cross pair, person A (``source``) with the motion of person B (``driver``), complete or
    not at all: into a hidden temporary folder beside ``ROOT/cross/A_as_B``, which is then moved into place and
    recorded under ``ROOT/.synth/cross``; or skip it when an earlier run recorded it with the same settings."""
    root, size, seed, frames = Path(job["root"]), job["size"], job["seed"], job["frames"]
    source, driver = job["source"], job["driver"]
    name = pair_name(source, driver)
    folder = root / CROSS / name
    record = root / RECORDS / CROSS / f"{name}.json"
    sweep_stale(folder.parent, name)  # temporaries of killed runs
    settings = _pair_settings(job)
    old = _read_json(record)
    if old is not None and old.get("settings") == settings and folder.is_dir():
        if tick is not None:
            tick(frames)
        return {"frames": frames, "shots": [], "resumed": True}
    renderer = SynthRenderer(identity_params(seed, source), scene_params(seed, source, 0), size)
    trajectory = sequence_trajectory(seed, driver, 0, 0, frames, job.get("fps", FPS))
    try:
        staging = staging_folder(folder)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(folder)) from None
    moved = False
    try:
        for tree in TREES:
            (staging / tree).mkdir(mode=0o777)
        for i, frame in enumerate(trajectory):
            rgb, keypoints, mask = renderer.render(frame)
            stem = f"{i:06d}"
            for tree, file, data in (("imgs", f"{stem}.jpg", encode_image(rgb, ".jpg", JPEG_QUALITY)),
                                     ("keypoints", f"{stem}.npy", encode_npy(keypoints.astype(np.float32))),
                                     ("segs", f"{stem}.png", encode_image(mask, ".png"))):
                try:
                    with open(staging / tree / file, "xb") as f:
                        f.write(data)
                except OSError as exc:  # name the final path, never the temporary one
                    raise OSError(exc.errno, exc.strerror or str(exc), str(folder / tree / file)) from None
            if tick is not None:
                tick(1)
        from .. import __version__

        try:
            record.unlink(missing_ok=True)
            replace_folder(staging, folder)
            moved = True
            make_folder(record.parent)
            write_json_atomic(record, {"pair": name, "status": "done", "frames": len(trajectory),
                                       "settings": settings, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                       "bilayer_version": __version__}, indent=1)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror or str(exc), str(record if moved else folder)) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if moved:  # in place but not recorded: removed, so no unrecorded pair is left
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return {"frames": len(trajectory), "shots": [], "resumed": False}


def _render_job(job: dict, tick=None) -> dict:
    """Render one job of the enumeration: a sequence or a cross pair."""
    return _render_pair(job, tick) if job["kind"] == "pair" else _render_sequence(job, tick)


def _render_jobs(jobs: list[dict]) -> list[dict]:
    """Render a worker's task: a few consecutive jobs (a person's sequences share the cached head model)."""
    return [_render_job(job) for job in jobs]


def _groups(jobs, limit: int):
    """``jobs`` in lists of up to ``limit`` consecutive sequences of one person; each pair alone."""
    def key(job):
        return ("sequence", job["person"]) if job["kind"] == "sequence" else ("pair", job["source"], job["driver"])

    for _, same in itertools.groupby(jobs, key):
        while chunk := list(itertools.islice(same, limit)):
            yield chunk


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
             preview: bool = False, workers: int = 1, progress: bool = True, shard=None,
             cross_pairs: int = 0, fps: float = FPS) -> dict:
    """Render a SynthHeads dataset under ``root`` (layout in the module docstring) and return a summary dict.

    ``identities`` people (``test_identities`` of them, by default max(1, identities // 5), form the test
    split) × ``videos_per_identity`` videos (each its own background, lighting and clothes) ×
    ``sequences_per_video`` sequences of ``frames`` frames at ``fps`` frames per second (the performance's
    motion is timed in seconds, so 20 frames at 5 fps span 4 s of it). ``workers`` > 1 renders sequences in
    parallel processes; the output does not depend on it. ``cross_pairs`` > 0 also writes that many
    cross-person ground-truth pairs of test identities (``ROOT/cross``). ``shard=(K, N)`` (or "K/N") renders
    only shard K of N of the sequences and pairs (see the module docstring); the summary then counts the
    shard's share.

    Bad values, a ``root`` that is a non-empty folder bilayer did not write (``outputs.OutputError``), and a run
    that needs more memory or disk space than there is (``check_resources``) raise a one-sentence ``ValueError``
    before anything is written. Sequences and pairs recorded by an earlier run with the same seed, size and
    frames are skipped (``resumed`` in the summary). An ``OSError`` while writing (a full disk) names the file
    and leaves no half-written sequence or pair."""
    root = Path(root)
    n_test = _check(root, identities, videos_per_identity, frames, size, seed, test_identities, sequences_per_video,
                    workers, shard=shard, cross_pairs=cross_pairs, fps=fps)
    shard = _parse_shard(shard, "shard")
    check_resources(root, identities, videos_per_identity, frames, size, sequences_per_video, workers, videos,
                    shard=shard, cross_pairs=cross_pairs, test_identities=n_test)
    if videos:
        try:
            import av  # noqa: F401
        except ImportError as exc:  # pragma: no cover - av is installed with the package's data extras
            raise RuntimeError("videos=True needs PyAV (pip install av).") from exc
    claim_folder(root, "synth", "--out")
    n_train = identities - n_test
    split = ["train" if p < n_train else "test" for p in range(identities)]
    preview_people = set(np.linspace(0, identities - 1, min(identities, PREVIEW_ROWS)).round().astype(int).tolist())
    pairs = cross_pair_list(list(range(n_train, identities)), int(cross_pairs))
    n_sequences = identities * videos_per_identity * sequences_per_video
    common = {"root": str(root), "size": int(size), "seed": int(seed), "frames": int(frames), "fps": float(fps)}
    # the shard's sequences, in the fixed order (person by person, video by video), then its pairs
    mine = shard_sequences(n_sequences, shard)
    sequence_jobs = (
        dict(common, kind="sequence", person=p, video=v, sequence=s, split=split[p], videos=bool(videos),
             preview=bool(preview) and p in preview_people and v == 0 and s == 0)
        for p, v, s in itertools.islice(
            itertools.product(range(identities), range(videos_per_identity), range(sequences_per_video)),
            mine.start, mine.stop)
    )
    my_pairs = shard_pairs(len(pairs), shard)
    pair_jobs = (dict(common, kind="pair", source=pairs[i][0], driver=pairs[i][1]) for i in my_pairs)
    jobs = itertools.chain(sequence_jobs, pair_jobs)
    n_shard_sequences, n_shard_pairs = len(mine), len(my_pairs)
    n_jobs = n_shard_sequences + n_shard_pairs
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

    shard_name = None if shard is None else f"{shard[0]}/{shard[1]}"
    label = "SynthHeads" if shard is None else f"SynthHeads {shard_name}"
    with tqdm(total=total, disable=not progress, unit="frame", desc=label, dynamic_ncols=True) as bar:
        if workers == 1 or n_jobs <= 1:
            for job in jobs:
                record(_render_job(job, tick=bar.update))
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
            # A worker gets a person's consecutive sequences together (at most ``group`` of them, so that all
            # workers stay busy), and builds the person's head model once for them (``synth.render.head_model``).
            group = max(1, min(_MAX_GROUP, n_jobs // (4 * processes)))
            tasks = _groups(jobs, group)
            # A few tasks queued per worker; on the first error (a full disk) the queued ones are cancelled and the
            # running ones end by themselves (finished, or failed and cleaned up), so no worker is killed
            # mid-sequence.
            with ProcessPoolExecutor(processes, mp_context=ctx, initializer=_worker_init) as pool:
                pending: set = set()
                try:
                    while True:
                        for task in itertools.islice(tasks, 2 * processes - len(pending)):
                            pending.add(pool.submit(_render_jobs, task))
                        if not pending:
                            break
                        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in finished:
                            for result in future.result():
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
    rows = sorted((r for r in results if r["shots"]), key=lambda r: r["person"])
    if preview and rows:  # a shard may hold none of the preview's sequences
        sheet = contact_sheet([(f"{person_name(r['person'])} ({split[r['person']]})", r["shots"]) for r in rows],
                              tile=min(int(size), 192))
        preview_path = write_image_atomic(root / "preview.png", sheet)

    people = {"train": [person_name(p) for p in range(n_train)],
              "test": [person_name(p) for p in range(n_train, identities)]}
    # the same in every shard, so that the shards' roots merge by copying
    meta = {"generator": "SynthHeads", "seed": int(seed), "size": int(size), "frames_per_sequence": int(frames),
            "videos_per_identity": int(videos_per_identity), "sequences_per_video": int(sequences_per_video),
            "fps": float(fps), "identities": people}
    if pairs:
        meta["cross_pairs"] = len(pairs)
        write_json_atomic(root / CROSS / PAIRS_FILE, {
            **_settings(common),
            "about": "each pair's folder shows the source identity with its own scene performing the motion of the "
                     "driver identity's sequence",
            "pairs": [{"name": pair_name(a, b), "source": person_name(a), "driver": person_name(b),
                       "folder": f"{CROSS}/{pair_name(a, b)}", "source_sequence": _sequence_path("test", a),
                       "driver_sequence": _sequence_path("test", b)} for a, b in pairs],
        })
    write_json_atomic(root / "synth.json", meta)
    return {
        "root": str(root),
        "identities": people,
        "sequences": n_shard_sequences,
        "cross_pairs": n_shard_pairs,
        "shard": shard_name,
        "frames": total,
        "resumed": resumed,
        "videos": n_shard_sequences if videos else 0,
        "preview": str(preview_path) if preview_path else None,
        "seconds": seconds,
        "frames_per_second": rendered / seconds if seconds > 0 else float("inf"),
    }


# ------------------------------------------------------------------------------------------ cross pairs
def cross_pairs(root) -> list[dict]:
    """The cross-person pairs of the SynthHeads dataset at ``root`` (``ROOT/cross/pairs.json``), each a dict:

    - ``name`` (``idAAAAA_as_idBBBBB``), ``source`` (A) and ``driver`` (B): identity names;
    - ``source_image``, ``source_keypoints``, ``source_mask``: the paths of the first frame of A's sequence
      test/A/vid000/seq000, the natural source photo (A in the same scene as the ground truth);
    - ``driver_images``, ``driver_keypoints``, ``driver_masks``: the paths of B's frames, test/B/vid000/seq000;
    - ``truth_images``, ``truth_keypoints``, ``truth_masks``: the paths of the ground truth, A performing frame
      i of the driver in frame i (``ROOT/cross/A_as_B``);
    - ``frames``, ``source_sequence``, ``driver_sequence`` and ``folder`` as pairs.json gives them.

    Paths are ``pathlib.Path``; the keypoints are float32 (68, 2) pixel arrays (``numpy.load``). A root without
    pairs.json, or with a pair, driver or source sequence that is missing, unfinished or written with other
    settings (a shard not yet merged, a killed run), is one sentence (``ValueError``)."""
    root = Path(root)
    index = root / CROSS / PAIRS_FILE
    meta = _read_json(index)
    if meta is None or not isinstance(meta.get("pairs"), list):
        raise ValueError(f"{root} has no readable list of cross-person pairs ({index}); write one with bilayer synth "
                         "--cross-pairs P.")
    frames = int(meta["frames"])
    want = _settings({"seed": meta["seed"], "size": meta["size"], "frames": frames, "fps": meta.get("fps", FPS)})
    stems = [f"{i:06d}" for i in range(frames)]
    out, problems = [], []
    for pair in meta["pairs"]:
        folder = root / pair["folder"]
        rec = _read_json(root / RECORDS / CROSS / f"{pair['name']}.json")
        if not folder.is_dir() or rec is None or rec.get("settings") != dict(
                want, source=pair["source"], driver=pair["driver"]):
            problems.append(f"{pair['name']}: its folder {folder} is missing or unfinished")
        for role in ("source", "driver"):
            seq = pair[f"{role}_sequence"]
            rec = _read_json(root / RECORDS / f"{seq}.json")
            if rec is None or rec.get("settings") != want or not (root / "imgs" / seq).is_dir():
                problems.append(f"{pair['name']}: its {role} sequence {seq} is missing or unfinished")
        source, driver = pair["source_sequence"], pair["driver_sequence"]
        out.append({
            "name": pair["name"], "source": pair["source"], "driver": pair["driver"], "frames": frames,
            "folder": folder, "source_sequence": source, "driver_sequence": driver,
            "source_image": root / "imgs" / source / f"{stems[0]}.jpg",
            "source_keypoints": root / "keypoints" / source / f"{stems[0]}.npy",
            "source_mask": root / "segs" / source / f"{stems[0]}.png",
            "driver_images": [root / "imgs" / driver / f"{t}.jpg" for t in stems],
            "driver_keypoints": [root / "keypoints" / driver / f"{t}.npy" for t in stems],
            "driver_masks": [root / "segs" / driver / f"{t}.png" for t in stems],
            "truth_images": [folder / "imgs" / f"{t}.jpg" for t in stems],
            "truth_keypoints": [folder / "keypoints" / f"{t}.npy" for t in stems],
            "truth_masks": [folder / "segs" / f"{t}.png" for t in stems],
        })
    if problems:
        raise ValueError(f"{len(problems)} part{'' if len(problems) == 1 else 's'} of the cross-person pairs under "
                         f"{root} {'is' if len(problems) == 1 else 'are'} not ready (e.g. {problems[0]}); rerun "
                         "bilayer synth with the same settings, or merge every shard's folder first.")
    return out


# --------------------------------------------------------------------------------------------------- CLI
def configure_parser(p: argparse.ArgumentParser) -> None:
    """Options of ``bilayer synth``."""
    p.add_argument("--out", required=True, metavar="ROOT", help="dataset root to write: new, empty, or a dataset bilayer wrote (a rerun resumes)")
    p.add_argument("--identities", type=int, default=10, metavar="N", help="number of people (default 10)")
    p.add_argument("--videos-per-identity", type=int, default=2, metavar="V", help="videos per person (default 2)")
    p.add_argument("--frames", type=int, default=50, metavar="F", help="frames per sequence (default 50)")
    p.add_argument("--fps", type=float, default=FPS, metavar="R",
                   help="frames per second of the performance's motion (default 25, a smooth video); lower rates "
                        "sample it sparsely, so the same frames span more head motion (20 frames at 5 fps: 4 s)")
    p.add_argument("--size", type=int, default=256, metavar="S",
                   help=f"image side in pixels, a multiple of 32 up to {MAX_SIZE} (default 256)")
    p.add_argument("--seed", type=int, default=0, metavar="K", help="random seed, 0 or more (default 0)")
    p.add_argument("--test-identities", type=int, default=None, metavar="T",
                   help="people in the test split, disjoint from train (default max(1, N // 5))")
    p.add_argument("--sequences-per-video", type=int, default=1, metavar="Q", help="sequences per video (default 1)")
    p.add_argument("--videos", action="store_true", help="also write an H.264 mp4 per sequence under ROOT/videos")
    p.add_argument("--preview", action="store_true", help="also write ROOT/preview.png, a contact sheet with keypoints")
    p.add_argument("--workers", type=int, default=1, metavar="W", help="parallel worker processes (default 1)")
    p.add_argument("--cross-pairs", type=int, default=0, metavar="P",
                   help="also write P cross-person ground-truth pairs under ROOT/cross: a test person with their own "
                        "scene performing another test person's motion, for scoring cross-person reenactment "
                        "(default 0; at most T × (T - 1) for T test identities)")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="render only shard K of N (0 <= K < N <= 1000) of the sequences and pairs; N runs, each "
                        "into its own --out, copied into one folder give the same dataset as one run")


def command(args: argparse.Namespace) -> int:
    """Run ``generate`` from parsed options and print a one-line summary. Bad values raise a one-sentence
    ``ValueError`` naming the flag."""
    shard, cross_pairs = getattr(args, "shard", None), getattr(args, "cross_pairs", 0)
    n_test = _check(Path(args.out), args.identities, args.videos_per_identity, args.frames, args.size, args.seed,
                    args.test_identities, args.sequences_per_video, args.workers, flags=True, shard=shard,
                    cross_pairs=cross_pairs, fps=getattr(args, "fps", FPS))
    check_resources(args.out, args.identities, args.videos_per_identity, args.frames, args.size,
                    args.sequences_per_video, args.workers, args.videos, flags=True, shard=shard,
                    cross_pairs=cross_pairs, test_identities=n_test)
    s = generate(args.out, args.identities, args.videos_per_identity, args.frames, size=args.size, seed=args.seed,
                 test_identities=args.test_identities, sequences_per_video=args.sequences_per_video,
                 videos=args.videos, preview=args.preview, workers=args.workers, progress=True, shard=shard,
                 cross_pairs=cross_pairs, fps=getattr(args, "fps", FPS))

    def count(n: int, what: str) -> str:
        return f"{n} {what}{'' if n == 1 else 's'}"

    pairs = f" and {count(s['cross_pairs'], 'cross-person pair')}" if cross_pairs else ""
    extra = f", {s['videos']} videos" if s["videos"] else ""
    extra += ", preview.png" if s["preview"] else ""
    done = "sequences and pairs" if cross_pairs else "sequences"
    extra += f", {s['resumed']} {done} finished by an earlier run" if s["resumed"] else ""
    where = f"shard {s['shard']} of " if s["shard"] else ""
    print(f"wrote {s['frames']} frames in {count(s['sequences'], 'sequence')}{pairs} ({where}"
          f"{len(s['identities']['train'])} train / {len(s['identities']['test'])} test identities{extra}) to "
          f"{s['root']} in {s['seconds']:.1f} s ({s['frames_per_second']:.1f} frames/s)")
    return 0
