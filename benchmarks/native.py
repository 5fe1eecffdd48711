"""Whole frames with and without the native heads-and-tail loop (``runtime/native.py``), per backend, alternated.

    python benchmarks/native.py [--presets small medium] [--backends int8 compile eager] [--rounds 5]
                                [--image-size 256] [--threads N] [--out benchmarks/results] [--quick]

Each backend is built twice from the same baked avatar: once as it ships (the last block's output → activation,
heads convolution and tail in one native pass, ``bilayer::heads_tail``) and once with the native loop withheld
(oneDNN's heads convolution and PyTorch's or inductor's tail: what a machine without a C++ compiler runs). The
two are then timed in alternating blocks, ``--rounds`` times, so that both see the same load of this shared host;
each round prints the two medians and their ratio. The largest difference between the two versions' frames is
reported too (float rounding only).

Writes ``native.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import render  # noqa: E402  (the benchmark helpers: calibrated_model, interleaved, ceilings)

from bilayer.hardware import cpu_info  # noqa: E402
from bilayer.io import write_json_atomic  # noqa: E402
from bilayer.runtime import native  # noqa: E402
from bilayer.runtime.backends import jittered_keypoints, make_renderer  # noqa: E402


def build(baked, backend: str, calibration: torch.Tensor, use_native: bool):
    """``backend`` with the native loop used where it can be built, or withheld; (renderer, seconds to build)."""
    with contextlib.nullcontext() if use_native else render.native_withheld():
        start = time.perf_counter()
        renderer = make_renderer(baked, backend, calibration=calibration)
        renderer.warmup()
        return renderer, time.perf_counter() - start


def bench_preset(name: str, size: int, backends: list[str], rounds: int) -> dict:
    baked, kp, frame = render.baked_avatar(name, size)
    calibration = jittered_keypoints(kp[0, 0])
    out: dict = {"preset": name, "image_size": size, "backends": {}}
    for backend in backends:
        fast, fast_s = build(baked, backend, calibration, True)
        plain, plain_s = build(baked, backend, calibration, False)
        a, b = fast(frame), plain(frame)
        entry = {"build_s": {"native": fast_s, "without": plain_s},
                 "max_abs_difference": max(float((x - y).abs().max()) for x, y in zip(a, b)), "rounds": []}
        for i in range(rounds):
            ab = render.interleaved({"native": lambda: fast(frame), "without": lambda: plain(frame)}, seconds=3.0)
            entry["rounds"].append({"native_ms": ab["native"], "without_ms": ab["without"],
                                    "speedup": ab["without"] / ab["native"]})
            print(f"  {name:<7}{backend:<8}round {i + 1}: {ab['native']:7.2f} ms native, {ab['without']:7.2f} ms "
                  f"without ({ab['without'] / ab['native']:.2f}×)", flush=True)
        speedups = sorted(r["speedup"] for r in entry["rounds"])
        entry["median_speedup"] = speedups[len(speedups) // 2]
        entry["best_native_fps"] = 1000.0 / min(r["native_ms"] for r in entry["rounds"])
        out["backends"][backend] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["small", "medium"])
    parser.add_argument("--backends", nargs="+", default=["int8", "compile", "eager"],
                        choices=["int8", "compile", "eager"])
    parser.add_argument("--rounds", type=int, default=5)
    args = render.parse_common(parser)
    if not native.available():
        parser.exit(1, "benchmarks/native.py: the native loop cannot be built here (no working C++ compiler), "
                       "so there is nothing to compare.\n")
    print(f"threads: {torch.get_num_threads()}")
    before = render.conv_ceiling(torch.float32)
    print(f"ceiling float32 {before['gflops']:6.1f} GFLOP/s at the start", flush=True)
    results = [bench_preset(name, args.image_size, args.backends, args.rounds) for name in args.presets]
    after = render.conv_ceiling(torch.float32)
    print(f"ceiling float32 {after['gflops']:6.1f} GFLOP/s at the end")
    report = {"threads": torch.get_num_threads(), "torch": torch.__version__, "machine": cpu_info(), "ceiling": before,
              "ceiling_after": after, "results": results}
    print(f"wrote {write_json_atomic(args.out / 'native.json', report)}")


if __name__ == "__main__":
    main()
