"""SynthHeads rendering speed on one core: frames per second per core at 256 px.

    python benchmarks/synth.py [--frames 40] [--identities 4] [--size 256] [--out benchmarks/results]

Pins NumPy/OpenCV (and torch, which the package imports) to one thread, renders ``frames`` frames spread over
``identities`` people (each its own scene and trajectory), and reports the per-frame render time alone, the
time with the in-memory JPEG/PNG/NPY encoding that ``generate`` adds, and the one-off per-identity set-up
(meshes and textures). Writes synth.json. Nothing is asserted: the numbers depend on the machine and on
what else is running (the load average is recorded next to them).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before NumPy is imported

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402

from bilayer.io import write_json_atomic  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--identities", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()

    cv2.setNumThreads(1)
    import torch

    torch.set_num_threads(1)
    from bilayer.synth import JPEG_QUALITY, SynthRenderer, identity_params, scene_params, sequence_trajectory
    from bilayer.hardware import cpu_name
    from bilayer.io import encode_image, encode_npy

    per_identity = max(1, args.frames // args.identities)
    setup, render, encode, frames = 0.0, 0.0, 0.0, 0
    for person in range(args.identities):
        t0 = time.perf_counter()
        renderer = SynthRenderer(identity_params(args.seed, person), scene_params(args.seed, person, 0), args.size)
        setup += time.perf_counter() - t0
        trajectory = sequence_trajectory(args.seed, person, 0, 0, per_identity + 1)
        renderer.render(trajectory[0])  # warm-up (first-touch allocations)
        for frame in trajectory[1:]:
            t0 = time.perf_counter()
            rgb, keypoints, mask = renderer.render(frame)
            t1 = time.perf_counter()
            encode_image(rgb, ".jpg", JPEG_QUALITY), encode_npy(keypoints), encode_image(mask, ".png")
            t2 = time.perf_counter()
            render += t1 - t0
            encode += t2 - t1
            frames += 1

    results = {
        "size": args.size,
        "frames": frames,
        "identities": args.identities,
        "threads": 1,
        "supersample": renderer.ss,
        "render_ms_per_frame": 1000 * render / frames,
        "frames_per_second_per_core": frames / render,
        "frames_per_second_per_core_with_encoding": frames / (render + encode),
        "setup_seconds_per_identity": setup / args.identities,
        "cpu": cpu_name(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    print(f"SynthHeads at {args.size} px on 1 thread: {results['frames_per_second_per_core']:.2f} frames/s/core "
          f"({results['render_ms_per_frame']:.0f} ms/frame; {results['frames_per_second_per_core_with_encoding']:.2f} "
          f"with JPEG/PNG/NPY encoding), set-up {results['setup_seconds_per_identity']:.2f} s per identity "
          f"(load average {results['load_average_1min']:.2f})")
    print(f"wrote {write_json_atomic(Path(args.out) / 'synth.json', results)}")


if __name__ == "__main__":
    main()
