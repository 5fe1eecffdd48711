"""Whole frames with and without ``PackedConv2d`` (oneDNN weights laid out once, the block's activation fused), per
backend, alternated; and, for float32, against ``torch.compile`` with freezing, which lays weights out and fuses the
pointwise work by itself.

    python benchmarks/packing.py [--presets small medium] [--backends eager bf16] [--rounds 5]

Each backend's module is built twice from the same baked avatar (``runtime.forms``: channels-last, the native tail
where it builds), once with its convolutions packed (what the backend runs) and once with PyTorch's convolutions,
and the two are timed in alternating blocks. ``PackedConv2d`` calls private oneDNN operators of PyTorch
(``torch.ops.mkldnn._*``); this benchmark is how to tell whether it still earns its place. Writes ``packing.json``
to ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import render  # noqa: E402  (the benchmark helpers: calibrated_model, interleaved, conv_ceiling)

from bilayer.hardware import cpu_info, native_bfloat16  # noqa: E402
from bilayer.io import write_json_atomic  # noqa: E402
from bilayer.runtime import native  # noqa: E402
from bilayer.runtime.backends import make_renderer  # noqa: E402
from bilayer.runtime.forms import FastRenderer, channels_last, packable, packed  # noqa: E402
from bilayer.runtime.precision import low_precision  # noqa: E402


def forms(baked, backend: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(packed, plain): the backend's module and the same without packing."""
    tail = "native" if native.available() else "pytorch"
    if backend == "bf16":
        body = low_precision(baked, torch.bfloat16, float32_heads=tail == "native", float32_mlp=True)
    else:
        body = copy.deepcopy(baked)
    plain = FastRenderer(channels_last(body), tail=tail, channels_last=True).eval()
    return packed(plain), plain


def bench_preset(name: str, size: int, backends: list[str], rounds: int) -> dict:
    baked, kp, frame = render.baked_avatar(name, size)
    out: dict = {"preset": name, "image_size": size, "backends": {}}
    for backend in backends:
        fast, plain = forms(baked, backend)
        candidates = {"packed": fast, "plain": plain}
        if backend == "eager" and native.compiler():
            candidates["compile"] = make_renderer(baked, "compile").warmup()
        runs = {}
        with torch.inference_mode():
            for key, module in candidates.items():
                runs[key] = (lambda m=module: m(frame))
                runs[key]()
            a, b = fast(frame), plain(frame)
        entry = {"max_abs_difference": max(float((x - y).abs().max()) for x, y in zip(a, b)), "rounds": []}
        for i in range(rounds):
            with torch.inference_mode():
                ab = render.interleaved(runs, seconds=3.0)
            record = {f"{k}_ms": v for k, v in ab.items()} | {"speedup": ab["plain"] / ab["packed"]}
            entry["rounds"].append(record)
            extra = f", compile {ab['compile']:.2f} ms" if "compile" in ab else ""
            print(f"  {name:<7}{backend:<6}round {i + 1}: packed {ab['packed']:7.2f} ms, plain {ab['plain']:7.2f} ms "
                  f"({ab['plain'] / ab['packed']:.2f}×){extra}", flush=True)
        speedups = sorted(r["speedup"] for r in entry["rounds"])
        entry["median_speedup"] = speedups[len(speedups) // 2]
        out["backends"][backend] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["small", "medium"])
    parser.add_argument("--backends", nargs="+", default=["eager", "bf16"], choices=["eager", "bf16"])
    parser.add_argument("--rounds", type=int, default=5)
    args = render.parse_common(parser)
    if not packable():
        parser.exit(1, "benchmarks/packing.py: this torch build lacks oneDNN's inference operators, so nothing is "
                       "packed and there is nothing to compare.\n")
    backends = [b for b in args.backends if b != "bf16" or native_bfloat16() or args.quick]
    print(f"threads: {torch.get_num_threads()}; native bfloat16: {native_bfloat16()}")
    before = render.conv_ceiling(torch.float32)
    results = [bench_preset(name, args.image_size, backends, args.rounds) for name in args.presets]
    report = {"threads": torch.get_num_threads(), "torch": torch.__version__, "machine": cpu_info(), "ceiling": before,
              "ceiling_after": render.conv_ceiling(torch.float32), "results": results}
    print(f"wrote {write_json_atomic(args.out / 'packing.json', report)}")


if __name__ == "__main__":
    main()
