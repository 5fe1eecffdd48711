"""Per-frame rendering speed of baked avatars, per model size and backend, against this machine's ceiling.

    python benchmarks/render.py [--presets small medium large] [--backends eager bf16 compile int8 onnx]
                                [--image-size 256] [--threads N] [--out benchmarks/results] [--quick]

For every preset: per-avatar initialisation time (personalize, and personalize + texture enhancer), then the
baked per-frame network (keypoints → image, mask) at batch 1 on each backend: median latency, frames/s, and
achieved GFLOP/s against the ceiling — a large 3×3 convolution (256 → 256 channels at 64 × 64) measured in the
same run and dtype, because this machine is shared and its speed varies. GFLOP/s are given two ways:

    effective   2 × the network's per-frame MACs as trained (paper Table 2's count) / latency;
    executed    2 × the MACs the backend's graph really runs / latency. Baking folds each upsampling + 3×3
                convolution into a transposed convolution and moves the 1×1 skips before their upsampling
                (``runtime/bake.py``), so the torch backends run ~1.7× fewer MACs than the network as trained;
                the ONNX graph keeps the two-step upsampling (faster in ONNX Runtime on CPU), only the skips move.

The bf16 and int8 images are compared with the fp32 image (PSNR); int8 is calibrated on jittered copies of the
timed frame's keypoints and, like every non-bf16 backend, measured against the fp32 ceiling (so its fraction can
pass 100 %: it is how much faster than fp32 arithmetic it gets the frame done). fp16 runs only on a GPU.

Each backend's latency is timed in alternating blocks with the ceiling convolution itself (same dtype, its
faster layout), so that both see the same load of the shared host and their ratio — the fraction of the ceiling —
is steady even when absolute times drift by 2×. The ceilings printed at the start and the end show that drift.

Tail (fp32): the per-frame work after the last residual block's convolutions — the sum of its two paths,
activation, heads convolution, tanh, grid, bilinear warp, sum, sigmoid — alone, as the native one-pass loop the
CPU backends use (``runtime/native.py``) against the eager form without it (PyTorch's upsampling and add, oneDNN's
convolution, PyTorch's operations), alternated.

Layer bound (eager fp32): every convolution of the frame timed alone on its real input, fastest of several
runs, summed — a lower bound on the frame time that no scheduling of the other ops can beat with these kernels.

Stream throughput (eager fp32, and the fastest of the other PyTorch backends timed): frames/s when a stream of
frames is rendered by one worker with all threads (the latency figures) and by two workers with half the threads
each (``bilayer animate --workers 2``), timed in alternating blocks.

Random weights with well-conditioned BatchNorm statistics (see ``calibrated_model``); speed does not depend on
the weights' values.
Targets (2-core CPU): medium fp32 ≥ 70 % of the fp32 ceiling (the best fp32 backend, effective; the
executed fraction is reported next to it); bf16 ≥ 1.6× faster than fp32 with PSNR
≥ 40 dB against the fp32 image; small ≥ 100 frames/s.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bilayer.config import preset
from bilayer.eval.complexity import complexity, executed_macs
from bilayer.eval.metrics import psnr
from bilayer.io import write_json_atomic
from bilayer.models.bilayer import BilayerModel
from bilayer.runtime import native
from bilayer.hardware import CPU_FEATURES, cpu_info
from bilayer.runtime.backends import BACKENDS, jittered_keypoints, make_renderer
from bilayer.runtime.bake import bake, two_step_upsampling
from bilayer.runtime.forms import PackedConv2d
from bilayer.nn.blocks import NEGATIVE_SLOPE
from bilayer.testing import randomize_buffers


#: every minimum timing window is multiplied by this (``--quick`` lowers it: a smoke run, not a measurement)
TIME_SCALE = 1.0


def timed(fn, min_seconds: float = 2.0, min_runs: int = 5, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in milliseconds (after ``warmup`` calls; at least ``min_runs`` runs and
    ``min_seconds`` in total)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds * TIME_SCALE:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 200:
            break
    return 1000.0 * statistics.median(times)


def interleaved(fns: dict, seconds: float = 4.0, block: int = 4) -> dict[str, float]:
    """Median milliseconds of each of ``fns`` (name → callable), timed in alternating blocks of ``block`` calls
    so that a change in this shared machine's speed hits all of them alike (a ratio of two of these is far
    steadier than of two ``timed``). The first call of each block only warms the caches and is not counted:
    a renderer in use runs alone, with its weights in cache."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    while min(len(t) for t in times.values()) < 9 or time.perf_counter() - start < seconds * TIME_SCALE:
        for name, fn in fns.items():
            fn()
            for _ in range(block - 1):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: 1000.0 * statistics.median(t) for name, t in times.items()}


CEILING_SHAPE = (256, 64)  # channels, size: 256 → 256 channels, 3×3, at 64 × 64


def ceiling_conv(dtype: torch.dtype, layout: str, channels: int = CEILING_SHAPE[0], size: int = CEILING_SHAPE[1]):
    """(callable, FLOPs): one large 3×3 convolution in ``dtype`` and ``layout`` ("nchw" or "channels_last")."""
    w = torch.randn(channels, channels, 3, 3, dtype=dtype) * 0.02
    x = torch.randn(1, channels, size, size, dtype=dtype)
    if layout == "channels_last":
        x, w = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)

    def run() -> None:
        with torch.inference_mode():
            F.conv2d(x, w, padding=1)

    return run, 2 * channels * channels * 9 * size * size


def conv_ceiling(dtype: torch.dtype) -> dict:
    """GFLOP/s of one large 3×3 convolution, the better of NCHW and channels-last memory layouts: what this
    machine's convolution kernels reach right now."""
    best = None
    for layout in ("nchw", "channels_last"):
        run, flops = ceiling_conv(dtype, layout)
        ms = timed(run, min_seconds=1.0)
        if best is None or ms < best[0]:
            best = (ms, layout)
    channels, size = CEILING_SHAPE
    return {"dtype": str(dtype).replace("torch.", ""), "gflops": flops / best[0] / 1e6, "ms": best[0],
            "layout": best[1], "shape": f"{channels}→{channels}, 3×3, {size}×{size}"}


def ceilings() -> dict[str, dict]:
    """:func:`conv_ceiling` in float32 and bfloat16, keyed by dtype name."""
    return {"float32": conv_ceiling(torch.float32), "bfloat16": conv_ceiling(torch.bfloat16)}


def calibrated_model(name: str, size: int, seed: int = 0) -> BilayerModel:
    """Random weights with well-conditioned BatchNorm statistics, as a trained model has (``randomize_buffers``);
    one small random batch would leave near-zero variances that amplify any rounding."""
    torch.manual_seed(seed)
    return randomize_buffers(BilayerModel(preset(name, size)), seed).eval()


def baked_avatar(name: str, size: int) -> tuple:
    """A calibrated random-weight ``name`` model's avatar, baked, with its source keypoints (1, 1, 136) and one
    nearby frame's keypoints (1, 136): the avatar the native and packing comparisons time."""
    model = calibrated_model(name, size)
    g = torch.Generator().manual_seed(1)
    kp = (torch.rand(1, 1, 136, generator=g) - 0.5) * 1.2
    with torch.no_grad():
        state = model.personalize(torch.rand(1, 1, 3, size, size, generator=g) * 2 - 1, kp,
                                  torch.ones(1, 1, 1, size, size))
    return bake(model, state), kp, kp[0] + 0.05 * torch.randn(1, 136, generator=g)


def bench_preset(name: str, size: int, backends: list[str]) -> dict:
    model = calibrated_model(name, size)
    macs = complexity(model.config)["macs_per_frame"]
    g = torch.Generator().manual_seed(1)
    src = torch.rand(1, 1, 3, size, size, generator=g) * 2 - 1
    kp = (torch.rand(1, 1, 136, generator=g) - 0.5) * 1.2
    masks = torch.ones(1, 1, 1, size, size)
    out: dict = {"preset": name, "image_size": size, "gmacs_per_frame": macs / 1e9, "backends": {}}
    with torch.no_grad():  # not inference_mode: the texture enhancer takes gradients internally
        out["init_ms"] = timed(lambda: model.personalize(src, kp, masks), min_seconds=1.0, min_runs=3, warmup=1)
        if model.texture_enhancer is not None:
            out["init_with_enhancer_ms"] = timed(lambda: model.enhance(model.personalize(src, kp, masks)),
                                                 min_seconds=1.0, min_runs=3, warmup=1)
        state = model.personalize(src, kp, masks)
    baked = bake(model, state)
    two_step = two_step_upsampling(baked)  # what the ONNX export writes by default
    executed = {"torch": executed_macs(baked), "onnx": executed_macs(two_step)}
    out["executed_gmacs_per_frame"] = {k: v / 1e9 for k, v in executed.items()}
    frame = kp[0] + 0.05 * torch.randn(1, 136, generator=g)
    with torch.inference_mode():
        reference = baked(frame)[0]
    # which layout reaches the ceiling here (the backends are then timed against that convolution, alternated)
    ceiling = ceilings()
    # the transposed-convolution fold on its own, eager fp32, timed in alternation with the two-step form
    folded_r, two_step_r = make_renderer(baked, "eager"), make_renderer(two_step, "eager")
    ab = interleaved({"folded": lambda: folded_r(frame), "two_step": lambda: two_step_r(frame)})
    out["fold_upsampling"] = {"folded_ms": ab["folded"], "two_step_ms": ab["two_step"],
                              "speedup": ab["two_step"] / ab["folded"]}
    print(f"  {name:<7}fold    {ab['folded']:8.2f} ms folded vs {ab['two_step']:.2f} ms two-step "
          f"(eager, alternated): {ab['two_step'] / ab['folded']:.2f}× faster", flush=True)
    out["tail"] = tail_comparison(baked, frame)
    tl = out["tail"]
    print(f"  {name:<7}tail    " + (f"{tl['native_ms']:8.2f} ms native one-pass vs {tl['pytorch_ms']:.2f} ms "
                                      f"oneDNN + PyTorch (block sum, heads and tail, alternated): "
                                      f"{tl['speedup']:.2f}× faster"
                                      if "error" not in tl else tl["error"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="bilayer-bench-") as tmp:
        for backend in backends:
            runs = executed["onnx" if backend == "onnx" else "torch"]
            entry = bench_backend(baked, backend, frame, reference, macs, runs, ceiling, Path(tmp) / f"{name}.onnx")
            out["backends"][backend] = entry
            shown = (f"{entry['ms']:8.2f} ms  {entry['fps']:7.1f} fps  {entry['gflops']:6.1f} GFLOP/s "
                     f"({100 * entry['fraction_of_ceiling']:5.1f} % of ceiling; executed "
                     f"{100 * entry['executed_fraction_of_ceiling']:5.1f} %)"
                     + (f"  PSNR vs fp32 {entry['psnr_vs_fp32']:.1f} dB" if entry.get("psnr_vs_fp32") else "")
                     if "ms" in entry else entry["error"])
            print(f"  {name:<7}{backend:<8}{shown}", flush=True)
    if "ms" in out["backends"].get("eager", {}) and "ms" in out["backends"].get("bf16", {}):
        # bf16 against eager, timed in alternation with each other (the speed-up target's figure)
        eager_r, bf16_r = make_renderer(baked, "eager"), make_renderer(baked, "bf16")
        ab = interleaved({"eager": lambda: eager_r(frame), "bf16": lambda: bf16_r(frame)}, seconds=6.0)
        out["bf16_vs_eager"] = {"eager_ms": ab["eager"], "bf16_ms": ab["bf16"], "speedup": ab["eager"] / ab["bf16"]}
        print(f"  {name:<7}bf16    {ab['bf16']:8.2f} ms vs eager {ab['eager']:.2f} ms (alternated): "
              f"{ab['eager'] / ab['bf16']:.2f}× faster", flush=True)
    out["layer_bound"] = conv_layer_bound(make_renderer(baked, "eager"), frame)
    lb = out["layer_bound"]
    print(f"  {name:<7}bound   {lb['conv_ms']:8.2f} ms for its {lb['layers']} convolutions alone, each timed in "
          f"isolation at its best: at most {lb['max_fps']:.0f} frames/s with these kernels"
          + (" (the heads run inside the native loop)" if lb["native_heads"] else ""), flush=True)
    out["stream"] = stream_throughput(make_renderer(baked, "eager"), frame)
    latency = {k: v["ms"] for k, v in out["backends"].items() if "ms" in v and k not in ("onnx", "eager")}
    if latency:  # the fastest PyTorch backend too: what `animate --backend … --workers 2` renders with
        fastest = min(latency, key=latency.get)
        renderer = make_renderer(baked, fastest, calibration=jittered_keypoints(frame[0]))  # as bench_backend's
        out["stream_fastest"] = {"backend": fastest, **stream_throughput(renderer, frame)}
    for key in ("stream", "stream_fastest"):
        if key in out:
            st = out[key]
            print(f"  {name:<7}stream  {st.get('backend', 'eager'):<8}{st['one_worker_fps']:6.1f} frames/s with one "
                  f"worker on {st['threads']} threads, {st['two_workers_fps']:.1f} with two workers on "
                  f"{st['threads_per_worker']} each (alternated): {st['speedup']:.2f}×", flush=True)
    return out


@contextlib.contextmanager
def native_withheld():
    """Backends made inside this block run without the native heads-and-tail loop, as on a machine without a C++
    compiler (oneDNN's heads convolution, PyTorch's or inductor's tail)."""
    real = native.available
    native.available = lambda: False
    try:
        yield
    finally:
        native.available = real


def tail_comparison(baked, frame: torch.Tensor) -> dict:
    """The per-frame work after the last residual block's convolutions (the sum of its two paths with the skip's
    nearest upsampling, activation, heads convolution, tanh, grid, bilinear warp, sum, sigmoid) on its own, on the
    block's real channels-last terms: the native one-pass loop (``runtime.native``, which the CPU backends use)
    against the eager backend's form without it (PyTorch's upsampling and add, the activation, oneDNN's
    convolution on a packed weight, PyTorch's operations), in alternating blocks."""
    if not native.available():
        return {"error": "native tail unavailable here (no C++ compiler): the backends use PyTorch's operations"}
    fast = make_renderer(baked, "eager").module  # channels-last, as the eager backend runs it
    with native_withheld():
        plain = make_renderer(baked, "eager").module  # the heads packed for oneDNN
    fast, plain = fast.renderer, plain.renderer  # the two wrapped, channels-last renderers
    with torch.inference_mode():
        h = fast.embed(frame).contiguous(memory_format=torch.channels_last)
        for block in fast.blocks[:-1]:
            h = block(h)
        main, skip = fast.blocks[-1].parts(h)
        ab = interleaved({"native": lambda: native.heads_tail(main, fast.heads.weight, fast.heads.bias, NEGATIVE_SLOPE,
                                                              fast.grid, fast.texture, skip),
                          "pytorch": lambda: plain.tail(plain.blocks[-1].join(main, skip))}, seconds=2.0)
    return {"native_ms": ab["native"], "pytorch_ms": ab["pytorch"], "speedup": ab["pytorch"] / ab["native"]}


def conv_layer_bound(renderer, frame: torch.Tensor, runs: int = 15) -> dict:
    """A lower bound on the frame time from the convolutions alone: each convolution (and transposed
    convolution) of the eager renderer is run on its own input of a real frame ``runs`` times, and its fastest
    run counted (warm caches, no other op between). Everything else a frame does (activations, adds,
    upsampling of the skips, the warp) only adds to it. Where the native loop runs the heads (``native_heads``),
    their convolution is part of that loop and not counted."""
    module = renderer.module
    convs = [m for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, PackedConv2d))]
    inputs: dict[int, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda m, args, i=i: inputs.setdefault(i, args[0]))
             for i, m in enumerate(convs)]
    try:
        renderer(frame)
    finally:
        for h in hooks:
            h.remove()
    total = 0.0
    convs = [(i, m) for i, m in enumerate(convs) if i in inputs]  # the ones a frame calls
    with torch.inference_mode():
        for i, m in convs:
            x = inputs[i]
            m(x)
            best = float("inf")
            for _ in range(runs):
                t0 = time.perf_counter()
                m(x)
                best = min(best, time.perf_counter() - t0)
            total += best
    return {"layers": len(convs), "conv_ms": 1000 * total, "max_fps": 1 / total,
            "native_heads": getattr(module, "tail_form", None) == "native"}


def stream_throughput(renderer, frame: torch.Tensor, seconds: float = 6.0, block: int = 12) -> dict:
    """Frames/s of a stream rendered by one worker on all of torch's threads and by two workers (Python threads;
    PyTorch releases the GIL) on half of them each, in alternating blocks of ``block`` frames; medians."""
    from concurrent.futures import ThreadPoolExecutor

    threads = torch.get_num_threads()
    half = max(1, threads // 2)
    fps: dict[int, list[float]] = {1: [], 2: []}
    try:
        with ThreadPoolExecutor(2) as pool:
            start = time.perf_counter()
            while min(len(v) for v in fps.values()) < 3 or time.perf_counter() - start < seconds * TIME_SCALE:
                for workers in (1, 2):
                    torch.set_num_threads(threads if workers == 1 else half)
                    renderer(frame)  # warm this thread count's kernels and caches
                    t0 = time.perf_counter()
                    if workers == 1:
                        for _ in range(block):
                            renderer(frame)
                    else:
                        list(pool.map(lambda _: renderer(frame), range(block)))
                    fps[workers].append(block / (time.perf_counter() - t0))
    finally:
        torch.set_num_threads(threads)
    one, two = statistics.median(fps[1]), statistics.median(fps[2])
    return {"threads": threads, "threads_per_worker": half, "one_worker_fps": one, "two_workers_fps": two,
            "speedup": two / one}


def bench_backend(baked, backend: str, frame: torch.Tensor, reference: torch.Tensor, macs: int, executed: int,
                  ceiling: dict[str, dict], onnx_path: Path) -> dict:
    """Warm-up time, median latency, frames/s, GFLOP/s and the fraction of the ceiling of one backend (effective:
    ``macs`` as trained; executed: ``executed``, what its graph runs; the ceiling convolution of ``ceiling``'s
    layout is timed in alternation with the backend), and its image's PSNR against the fp32 eager ``reference``;
    ``{"error": …}`` when the backend cannot run here."""
    entry: dict = {}
    try:
        # int8 calibrates on poses around the timed frame's (as Avatar.renderer does around the photo's); the
        # other backends ignore calibration keypoints
        renderer = make_renderer(baked, backend, onnx_path=onnx_path, calibration=jittered_keypoints(frame[0]))
        t0 = time.perf_counter()
        renderer.warmup(1)
        entry["warmup_s"] = time.perf_counter() - t0
        dtype = "bfloat16" if backend == "bf16" else "float32"
        conv, flops = ceiling_conv(getattr(torch, dtype), ceiling[dtype]["layout"])
        ab = interleaved({"net": lambda: renderer(frame), "ceiling": conv}, seconds=5.0)
        ms, peak = ab["net"], flops / ab["ceiling"] / 1e6
        image = renderer(frame)[0].float()
        gflops, executed_gflops = 2 * macs / ms / 1e6, 2 * executed / ms / 1e6
        entry.update(ms=ms, fps=1000.0 / ms, gflops=gflops, ceiling_gflops=peak, fraction_of_ceiling=gflops / peak,
                     executed_gflops=executed_gflops, executed_fraction_of_ceiling=executed_gflops / peak,
                     psnr_vs_fp32=float(psnr(image.clamp(-1, 1), reference.clamp(-1, 1)))
                     if backend != "eager" else None)
    except Exception as exc:  # a backend that cannot run here is reported, not fatal
        entry["error"] = f"{type(exc).__name__}: {exc}"
    return entry


def parse_common(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Add the options the speed benchmarks share (image size, threads, output folder, --quick), parse, and apply
    --threads and --quick."""
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--quick", action="store_true",
                        help="minimal timing windows: checks that the benchmark runs (tests), its figures mean little")
    args = parser.parse_args()
    global TIME_SCALE
    if args.quick:
        TIME_SCALE = 0.02
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["small", "medium", "large"])
    parser.add_argument("--backends", nargs="+", default=["eager", "bf16", "compile", "int8", "onnx"], choices=BACKENDS)
    args = parse_common(parser)
    backends = [b for b in args.backends if b != "fp16" or torch.cuda.is_available()]
    machine = cpu_info()
    native_bf16 = "yes" if machine["native_bfloat16"] else "no"
    print(f"threads: {torch.get_num_threads()}; CPU: {machine['cpu']} (of {', '.join(CPU_FEATURES)}: "
          f"{', '.join(machine['features']) or 'none'}); native bfloat16: {native_bf16}")
    before = ceilings()
    for c in before.values():
        print(f"ceiling {c['dtype']:<9} {c['gflops']:6.1f} GFLOP/s  ({c['shape']})", flush=True)
    results = [bench_preset(name, args.image_size, backends) for name in args.presets]
    # the ceiling again at the end: how much the machine's speed drifted during the run
    after = ceilings()
    by = {r["preset"]: r for r in results}
    targets = {}
    if "medium" in by:
        b = by["medium"]["backends"]
        fp32 = {k: v for k, v in b.items() if "ms" in v and k not in ("bf16", "int8")}
        if fp32:  # the fp32 backend closest to the ceiling (each timed against it, alternated)
            name = max(fp32, key=lambda k: fp32[k]["fraction_of_ceiling"])
            targets["medium_fp32_fraction_of_ceiling"] = {
                "value": fp32[name]["fraction_of_ceiling"], "target": 0.70, "backend": name,
                "executed": fp32[name]["executed_fraction_of_ceiling"],
                "all": {k: v["fraction_of_ceiling"] for k, v in fp32.items()}}
        if "bf16_vs_eager" in by["medium"]:  # the two timed in alternation with each other
            ab = by["medium"]["bf16_vs_eager"]
            targets["medium_bf16_speedup"] = {"value": ab["speedup"], "target": 1.6, "eager_ms": ab["eager_ms"],
                                              "bf16_ms": ab["bf16_ms"]}
            targets["medium_bf16_psnr_db"] = {"value": b["bf16"]["psnr_vs_fp32"], "target": 40.0}
        if fp32 and "ms" in b.get("int8", {}):  # no target: what the integer path adds on this CPU
            fastest = min(fp32, key=lambda k: fp32[k]["ms"])
            targets["medium_int8_speedup"] = {"value": fp32[fastest]["ms"] / b["int8"]["ms"], "over": fastest,
                                              "psnr_vs_fp32": b["int8"]["psnr_vs_fp32"]}
    if "small" in by:
        fps = [v["fps"] for v in by["small"]["backends"].values() if "fps" in v]
        if fps:
            # judged on one frame at a time (batch 1, all threads); a stream rendered by two workers is reported
            targets["small_best_fps"] = {"value": max(fps), "target": 100.0,
                                         "stream_two_workers_fps": by["small"]["stream"]["two_workers_fps"],
                                         "conv_bound_fps": by["small"]["layer_bound"]["max_fps"]}
            if "stream_fastest" in by["small"]:
                st = by["small"]["stream_fastest"]
                targets["small_best_fps"][f"stream_two_workers_fps_{st['backend']}"] = st["two_workers_fps"]
    for k, v in targets.items():
        if "target" in v:
            v["met"] = bool(v["value"] >= v["target"])
    report = {"threads": torch.get_num_threads(), "torch": torch.__version__, "machine": cpu_info(),
              "ceiling": before, "ceiling_after": after, "results": results, "targets": targets}
    for k, v in targets.items():
        print(f"{k:<36} {v}")
    print(f"wrote {write_json_atomic(args.out / 'render.json', report)}")


if __name__ == "__main__":
    main()
