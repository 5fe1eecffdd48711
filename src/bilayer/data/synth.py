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

Keypoint coordinates are continuous: (0, 0) is the top-left corner of the top-left pixel, so x / width maps
the image onto [0, 1] as the reference loader expects. Train and test identities are disjoint (the last
``test_identities`` identities are the test split). Every file is written under a temporary name and then
renamed, so an interrupted run never leaves a half-written file. The same seed gives byte-identical
keypoints, masks and images whatever the number of workers.

Python: ``generate(...)`` writes a dataset; ``render_frame(identity, frame, size)`` renders one frame;
``sample_identity(rng)``, ``sample_scene(rng)`` and ``sample_trajectory(rng, frames)`` draw parameters.
Command line (wired as ``bilayer synth``): ``configure_parser`` and ``command``.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import time
from pathlib import Path

import cv2
import numpy as np

from ..io import atomic_path, write_image_atomic, write_json_atomic, write_npy_atomic
from .synth_params import (FPS, FrameParams, IdentityParams, SceneParams, sample_identity, sample_scene,
                           sample_trajectory)
from .synth_render import SynthRenderer, render_frame

__all__ = [
    "FrameParams", "IdentityParams", "SceneParams", "SynthRenderer", "command", "configure_parser", "draw_keypoints",
    "generate", "identity_params", "render_frame", "sample_identity", "sample_scene", "sample_trajectory",
    "scene_params", "sequence_trajectory",
]

JPEG_QUALITY = 95
PREVIEW_ROWS, PREVIEW_COLUMNS = 6, 6

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
    if integer("frames", frames) < 2:
        raise ValueError(f"{label('frames')} must be at least 2 per sequence, got {frames}.")
    if integer("videos_per_identity", videos_per_identity) < 1:
        raise ValueError(f"{label('videos_per_identity')} must be at least 1, got {videos_per_identity}.")
    if integer("sequences_per_video", sequences_per_video) < 1:
        raise ValueError(f"{label('sequences_per_video')} must be at least 1, got {sequences_per_video}.")
    if integer("seed", seed) < 0:
        raise ValueError(f"{label('seed')} must be 0 or more, got {seed}.")
    if integer("workers", workers) < 1:
        raise ValueError(f"{label('workers')} must be at least 1, got {workers}.")
    n = integer("identities", identities)
    if n < 1:
        raise ValueError(f"{label('identities')} must be at least 1, got {identities}.")
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


# ---------------------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def _video_writer(path: Path, size: int):
    """A function writing RGB frames to an H.264 mp4 through PyAV; the file gets its name only when the block
    ends without an exception (``atomic_path``)."""
    import av

    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=int(FPS))
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            # one encoder thread: workers already use the cores, and x264 output stays reproducible
            stream.options = {"crf": "16", "preset": "veryfast", "threads": "1"}

            def write(rgb: np.ndarray) -> None:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))

            yield write
            container.mux(stream.encode())  # flush the encoder


def _render_sequence(job: dict, tick=None) -> dict:
    """Render and write one sequence; returns what the summary and the preview need."""
    root, size, seed = Path(job["root"]), job["size"], job["seed"]
    person, video, seq = job["person"], job["video"], job["sequence"]
    rel = Path(job["split"]) / person_name(person) / f"vid{video:03d}" / f"seq{seq:03d}"
    renderer = SynthRenderer(identity_params(seed, person), scene_params(seed, person, video), size)
    trajectory = sequence_trajectory(seed, person, video, seq, job["frames"])
    keep = set()
    if job["preview"]:
        keep = set(np.linspace(0, len(trajectory) - 1, PREVIEW_COLUMNS).round().astype(int).tolist())
    shots = []
    with contextlib.ExitStack() as stack:
        video_file = root / "videos" / rel.parent / f"{rel.name}.mp4"
        write_video = stack.enter_context(_video_writer(video_file, size)) if job["videos"] else None
        for i, frame in enumerate(trajectory):
            rgb, keypoints, mask = renderer.render(frame)
            stem = f"{i:06d}"
            write_image_atomic(root / "imgs" / rel / f"{stem}.jpg", rgb, quality=JPEG_QUALITY)
            write_npy_atomic(root / "keypoints" / rel / f"{stem}.npy", keypoints.astype(np.float32))
            write_image_atomic(root / "segs" / rel / f"{stem}.png", mask)
            if write_video is not None:
                write_video(rgb)
            if i in keep:
                shots.append((rgb, keypoints))
            if tick is not None:
                tick(1)
    return {"person": person, "video": video, "sequence": seq, "frames": len(trajectory), "shots": shots}


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
    parallel processes; the output does not depend on it."""
    root = Path(root)
    n_test = _check(root, identities, videos_per_identity, frames, size, seed, test_identities, sequences_per_video,
                    workers)
    if videos:
        try:
            import av  # noqa: F401
        except ImportError as exc:  # pragma: no cover - av is installed with the package's data extras
            raise RuntimeError("videos=True needs PyAV (pip install av).") from exc
    root.mkdir(parents=True, exist_ok=True)
    n_train = identities - n_test
    split = ["train" if p < n_train else "test" for p in range(identities)]
    preview_people = set(np.linspace(0, identities - 1, min(identities, PREVIEW_ROWS)).round().astype(int).tolist())
    jobs = [
        {"root": str(root), "size": int(size), "seed": int(seed), "person": p, "video": v, "sequence": s,
         "frames": int(frames), "split": split[p], "videos": bool(videos),
         "preview": bool(preview) and p in preview_people and v == 0 and s == 0}
        for p in range(identities) for v in range(videos_per_identity) for s in range(sequences_per_video)
    ]
    total = len(jobs) * frames
    start = time.perf_counter()
    from tqdm import tqdm

    results = []
    with tqdm(total=total, disable=not progress, unit="frame", desc="SynthHeads", dynamic_ncols=True) as bar:
        if workers == 1 or len(jobs) == 1:
            for job in jobs:
                results.append(_render_sequence(job, tick=bar.update))
        else:
            methods = multiprocessing.get_all_start_methods()
            # Not plain fork: a process that already used OpenCV's thread pool deadlocks its forked children.
            # A fork server that has imported this module once starts workers almost as fast.
            if "forkserver" in methods:
                ctx = multiprocessing.get_context("forkserver")
                ctx.set_forkserver_preload([__name__])
            else:
                ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(min(workers, len(jobs)), initializer=_worker_init) as pool:
                for result in pool.imap_unordered(_render_sequence, jobs):
                    results.append(result)
                    bar.update(result["frames"])
    seconds = time.perf_counter() - start

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
        "sequences": len(jobs),
        "frames": total,
        "videos": len(jobs) if videos else 0,
        "preview": str(preview_path) if preview_path else None,
        "seconds": seconds,
        "frames_per_second": total / seconds if seconds > 0 else float("inf"),
    }


# --------------------------------------------------------------------------------------------------- CLI
def configure_parser(p: argparse.ArgumentParser) -> None:
    """Options of ``bilayer synth``."""
    p.add_argument("--out", required=True, metavar="ROOT", help="dataset root to write (created if missing)")
    p.add_argument("--identities", type=int, default=10, metavar="N", help="number of people (default 10)")
    p.add_argument("--videos-per-identity", type=int, default=2, metavar="V", help="videos per person (default 2)")
    p.add_argument("--frames", type=int, default=50, metavar="F", help="frames per sequence, 25 fps (default 50)")
    p.add_argument("--size", type=int, default=256, metavar="S",
                   help="image side in pixels, a multiple of 32 (default 256)")
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
    s = generate(args.out, args.identities, args.videos_per_identity, args.frames, size=args.size, seed=args.seed,
                 test_identities=args.test_identities, sequences_per_video=args.sequences_per_video,
                 videos=args.videos, preview=args.preview, workers=args.workers, progress=True)
    extra = f", {s['videos']} videos" if s["videos"] else ""
    extra += ", preview.png" if s["preview"] else ""
    print(f"wrote {s['frames']} frames in {s['sequences']} sequences ({len(s['identities']['train'])} train / "
          f"{len(s['identities']['test'])} test identities{extra}) to {s['root']} in {s['seconds']:.1f} s "
          f"({s['frames_per_second']:.1f} frames/s)")
    return 0
