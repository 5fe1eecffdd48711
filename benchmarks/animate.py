"""End-to-end speed and memory of `bilayer animate`: decode → keypoints → render → compose → encode.

    python benchmarks/animate.py [--preset medium] [--image-size 256] [--frames 50]
                                 [--backends eager bf16 compile int8 onnx]
                                 [--landmarks file mediapipe] [--workers 1 2] [--driver-faces 1]
                                 [--out benchmarks/results]

A SynthHeads driving video (H.264, --frames frames at 25 fps, with its keypoint track) animates an avatar of
another person. Each animation runs in a fresh process, which reports its frames/s, per-stage times and peak
resident memory. The driver is then made 10× longer (the same frames played forwards and backwards) and
animated again: streaming keeps memory flat, so the long run's peak should be within 10 % of the short one's.

``--landmarks file`` reads the driver's keypoints from its track (the cost of the model and the video pipeline);
``mediapipe`` tracks the face in every frame (the full user path). ``--workers``: frames rendered at once, each
with its share of the threads (``bilayer animate --workers``, default 2 here); every run is repeated for each
value right after the other, so that the comparison sees the same machine load. ``--driver-faces``: faces
MediaPipe follows (``bilayer animate --driver-faces``, default 1); several values are compared the same way.
Random weights (speed does not depend on them). Target: ≥ 25 frames/s at medium 256 px on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bilayer.io import write_json_atomic


def make_media(root: Path, size: int, frames: int, repeat: int) -> dict:
    from bilayer.demo import DATA_SEED
    from bilayer.synth import render_sequence
    from bilayer.animate.videoio import VideoWriter

    src, src_kp, src_mask = render_sequence(DATA_SEED, 25, 1, size)
    drv, drv_kp, _ = render_sequence(DATA_SEED, 28, frames, size)
    np.save(root / "source_keypoints.npy", src_kp[0])
    import cv2

    cv2.imwrite(str(root / "source.png"), cv2.cvtColor(src[0], cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "source_mask.png"), src_mask[0])
    out = {}
    for name, reps in (("short", 1), ("long", repeat)):
        order = []
        for r in range(reps):
            order += list(range(frames)) if r % 2 == 0 else list(range(frames - 1, -1, -1))
        with VideoWriter(root / f"{name}.mp4", 25.0, (size, size)) as w:
            for i in order:
                w.write(drv[i])
        np.save(root / f"{name}.npy", drv_kp[order])
        out[name] = len(order)
    return out


def child(args: argparse.Namespace) -> None:
    """One animation in this process; prints a JSON line with the report and the peak memory."""
    import torch

    from bilayer.animate.pipeline import render_workers, stream
    from bilayer.runtime.avatar import Avatar
    from bilayer.animate.driver import open_driver

    sys.path.insert(0, str(Path(__file__).parent))
    from render import calibrated_model

    root = Path(args.root)
    model = calibrated_model(args.preset, args.image_size)
    import cv2

    photo = cv2.cvtColor(cv2.imread(str(root / "source.png")), cv2.COLOR_BGR2RGB)
    mask = cv2.imread(str(root / "source_mask.png"), cv2.IMREAD_GRAYSCALE) / 255.0
    avatar = Avatar.create(model, photo, keypoints=np.load(root / "source_keypoints.npy"), mask=mask, crop=False,
                           enhance=False)
    threads = torch.get_num_threads()
    kp = root / f"{args.length}.npy" if args.landmarks == "file" else None
    driver_file = root / f"{args.length}.mp4"
    with render_workers(args.workers_child) as workers, open_driver(driver_file, keypoints=kp,
                                                                    faces=args.faces_child) as driver:
        per_worker = torch.get_num_threads()
        renderer = avatar.renderer(model, args.backend)
        renderer.warmup(1)
        report = stream(avatar, renderer, driver, root / f"out-{args.length}.mp4", side=True, progress=False,
                         workers=workers)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({**report.to_dict(), "peak_rss_mb": peak_mb, "threads": threads,
                      "threads_per_worker": per_worker}))


def measure(root: Path, args: argparse.Namespace) -> list[dict]:
    """One child process per backend × landmark source × driver length × workers (× driver faces when MediaPipe
    tracks); their reports (or the error)."""
    runs = []
    for backend in args.backends:
        for landmarks in args.landmarks:
            for length in ("short", "long") if landmarks == "file" else ("short",):
                for workers, faces in [(w, f) for w in args.workers
                                       for f in (args.driver_faces if landmarks == "mediapipe" else [None])]:
                    cmd = [sys.executable, __file__, "--child", "--root", str(root), "--length", length,
                           "--backend", backend, "--landmarks-child", landmarks, "--preset", args.preset,
                           "--image-size", str(args.image_size), "--workers-child", str(workers),
                           "--faces-child", str(faces or 1)]
                    proc = subprocess.run(cmd, capture_output=True, text=True)
                    tag = {"backend": backend, "landmarks": landmarks, "length": length, "workers": workers,
                           **({"driver_faces": faces} if faces else {})}
                    if proc.returncode != 0:
                        print(proc.stderr[-2000:])
                        runs.append({**tag, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip()
                                     else "failed"})
                        continue
                    r = json.loads(proc.stdout.strip().splitlines()[-1])
                    r.pop("output", None)  # in the temporary folder, removed at the end
                    r.update(tag)
                    runs.append(r)
                    per = ", ".join(f"{k} {1000 * v / r['frames']:.1f}" for k, v in r["seconds"].items())
                    who = f"{landmarks} ({faces} face{'s' if faces > 1 else ''})" if faces else landmarks
                    print(f"{backend:<6} {who:<19} {length:<5} workers {workers}  {r['frames']:4d} frames  "
                          f"{r['fps']:6.1f} frames/s  peak {r['peak_rss_mb']:7.1f} MB  (ms/frame: {per})", flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=50, help="frames of the short driver")
    parser.add_argument("--repeat", type=int, default=10, help="the long driver is this many times longer")
    parser.add_argument("--backends", nargs="+", default=["eager", "bf16", "compile", "int8", "onnx"])
    parser.add_argument("--landmarks", nargs="+", default=["file", "mediapipe"], choices=["file", "mediapipe"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2], help="render workers to compare")
    parser.add_argument("--driver-faces", nargs="+", type=int, default=[1],
                        help="faces MediaPipe follows in the driver, to compare (the first goes into the summary)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--length", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--landmarks-child", dest="landmarks_child", help=argparse.SUPPRESS)
    parser.add_argument("--workers-child", dest="workers_child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--faces-child", dest="faces_child", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.landmarks = args.landmarks_child
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="bilayer-animate-bench-") as tmp:
        root = Path(tmp)
        lengths = make_media(root, args.image_size, args.frames, args.repeat)
        print(f"drivers: short {lengths['short']} frames, long {lengths['long']} frames ({root})", flush=True)
        runs = measure(root, args)
    summary = {}

    def fps(backend: str, landmarks: str, length: str, workers: int, faces: int | None = None) -> dict | None:
        return next((r for r in runs if r["backend"] == backend and r["landmarks"] == landmarks
                     and r["length"] == length and r["workers"] == workers and "fps" in r
                     and r.get("driver_faces") == faces), None)

    target = args.preset == "medium" and args.image_size == 256  # the 25 frames/s target is for this configuration
    for backend in args.backends:
        for workers in args.workers:
            short, long = fps(backend, "file", "short", workers), fps(backend, "file", "long", workers)
            if short and long:
                tracked = {f: fps(backend, "mediapipe", "short", workers, f) for f in args.driver_faces}
                first = tracked[args.driver_faces[0]]
                summary[f"{backend}, workers {workers}"] = {
                    "fps_short": short["fps"], "fps_long": long["fps"],
                    "fps_mediapipe": first["fps"] if first else None,
                    **({"fps_mediapipe_by_driver_faces": {str(f): r["fps"] for f, r in tracked.items() if r}}
                       if len(tracked) > 1 else {}),
                    "peak_mb_short": short["peak_rss_mb"], "peak_mb_long": long["peak_rss_mb"],
                    "memory_growth": long["peak_rss_mb"] / short["peak_rss_mb"] - 1,
                    **({"fps_target": 25.0, "fps_met": long["fps"] >= 25.0} if target else {}),
                    "memory_flat": long["peak_rss_mb"] <= 1.10 * short["peak_rss_mb"]}
    from bilayer.hardware import cpu_info

    report = {"machine": cpu_info(), "preset": args.preset, "image_size": args.image_size,
              "frames_short": lengths["short"], "frames_long": lengths["long"], "runs": runs, "summary": summary}
    for k, v in summary.items():
        print(k, json.dumps(v))
    print(f"wrote {write_json_atomic(args.out / 'animate.json', report)}")


if __name__ == "__main__":
    main()
