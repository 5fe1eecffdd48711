"""Ways to run a baked avatar's per-frame network, behind one call: ``renderer(keypoints) -> (image, mask)``.

The baked module (``runtime/bake.py``) is the reference; every backend returns float32 tensors of the same
shapes, so a caller (the demo, a benchmark, an app) can switch backends by name:

    eager    the float32 module under ``torch.inference_mode`` (the reference); on CPU channels-last, its
             convolutions on weights laid out for oneDNN once (``forms.PackedConv2d``), each block's first
             activation fused.
    bf16     bfloat16 weights and activations for the convolutional body, float32 for the warp and the composition
             (``precision.low_precision``); on CPU packed like eager's, with a float32 MLP and the heads in
             float32 inside the native loop, which reads the body's bfloat16 output. For CPUs with native
             bfloat16 (AVX512-BF16 / AMX; ``hardware.native_bfloat16``) and GPUs; on other CPUs oneDNN emulates
             bfloat16 and it is slower than float32. About 60 dB PSNR against float32.
    fp16     the same split with float16; CUDA only (CPU float16 convolutions are far slower than float32).
    compile  ``torch.compile`` (inductor, with freezing: weights laid out for oneDNN, pointwise work fused, the C++
             wrapper) of the float32 module with the native or inductor tail (``runtime.forms``); the first call
             of each new batch size compiles.
    onnx     the module exported with ``runtime.export.export_baked`` and run by ONNX Runtime.
    int8     8-bit integer convolutions (oneDNN's VNNI kernels through inductor, quantized after training with
             torchao's x86 recipe and calibrated on keypoints near the avatar's own) for every convolution of
             the residual blocks, the upsampling ones as sub-pixel convolutions; the keypoint MLP and the heads
             stay float32. CPU (x86) only; about 45 dB PSNR against float32 on a trained avatar. Needs
             ``calibration`` keypoints and the ``int8`` extra (torchao).

Measured speeds per CPU: benchmarks/README.md.

``auto_backend(frames)`` chooses for a driver of that many frames (``bilayer animate``'s default; a video that
states no frame count is measured by its duration): bf16 on a CPU with native bfloat16; elsewhere int8 when the
driver is long enough to repay int8's set-up (``AUTO_INT8_FRAMES``) and this machine runs it, else eager.

On CPU, eager, bf16, compile and int8 run everything after the last residual block (activation, heads convolution,
tanh, grid, warp, sum, sigmoid) as one native loop, ``bilayer::heads_tail`` (``runtime/native.py``), when its
kernel can be built with the machine's C++ compiler (once, then cached); without one they keep PyTorch's
operations. Every backend works on a copy of the baked renderer (``runtime.bake``, the reference form) or wraps
one in the faster forms of ``runtime.forms``; the caller's renderer is never changed.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import math
import os
import platform
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from . import native
from ..hardware import native_bfloat16
from .bake import BakedRenderer, subpixel_upsampling
from .forms import FastRenderer, channels_last, packed
from .precision import low_precision

BACKENDS = ("eager", "bf16", "fp16", "compile", "onnx", "int8")

#: Driver length from which ``auto_backend`` picks int8: its 20–40 s of quantizing and compiling against ~20 ms
#: saved per frame end to end (medium, two workers: 33–39 against 19–23 frames/s,
#: benchmarks/results/animate_*_then_*.json) break even near 1500 frames, a minute of video at 25 frames/s.
AUTO_INT8_FRAMES = 1500

#: torchao's release whose x86 int8 recipe ``int8`` was built and measured with (the ``int8`` extra pins it)
TORCHAO_VERSION = "0.18.0"

Frame = tuple[torch.Tensor, torch.Tensor]


class BackendError(ValueError):
    """A backend cannot run here (unknown name, wrong device, missing tool); the message says what to use."""


class FrameRenderer:
    """One backend, ready to render: ``renderer(keypoints (B, 136)) -> (image (B, 3, H, W), mask (B, 1, H, W))``.

    Outputs are float32 on ``device``. ``warmup(batch)`` runs one frame batch so that one-time costs
    (compilation, memory planning, kernel selection) are paid before timing or serving. ``module``: what the
    backend runs (for eager and bf16 on CPU a ``forms.FastRenderer``; for compile and int8 a compiled callable;
    for onnx a function calling ONNX Runtime), for inspection.
    """

    def __init__(self, name: str, run: Callable[[torch.Tensor], Frame], device: torch.device, pose_dim: int) -> None:
        self.name = name
        self.device = device
        self.pose_dim = pose_dim
        self.module = run

    def __call__(self, keypoints: torch.Tensor) -> Frame:
        if keypoints.dim() != 2 or keypoints.shape[1] != self.pose_dim:
            raise ValueError(
                f"{self.name} renderer: keypoints have shape {tuple(keypoints.shape)}; expected (B, {self.pose_dim})."
            )
        with torch.inference_mode():
            # a copy made here is always an inference tensor: torch.compile guards on that, and an input made
            # outside inference mode once and inside it later (warm-up vs a render thread) would recompile
            image, mask = self.module(keypoints.to(self.device, torch.float32, copy=True))
        return image.to(self.device, torch.float32), mask.to(self.device, torch.float32)

    def warmup(self, batch: int = 1) -> "FrameRenderer":
        """Render one batch of neutral (all-zero) keypoints and discard it; returns ``self``."""
        self(torch.zeros(batch, self.pose_dim, device=self.device))
        return self

    def __repr__(self) -> str:
        return f"FrameRenderer({self.name!r}, device={str(self.device)!r})"


def int8_unavailable() -> str | None:
    """Why the int8 backend cannot run on this machine's CPU (one clause, which ``make_renderer``'s error and
    ``auto_backend``'s reason both use), or None when it can."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"int8 needs an x86-64 CPU (oneDNN's x86 kernels), not {platform.machine()}"
    if not native.compiler():
        return _no_compiler("int8")
    if importlib.util.find_spec("torchao") is None:
        return _NO_TORCHAO
    return None


def auto_backend(frames: int | None, *, estimated: bool = False) -> tuple[str, str]:
    """The CPU backend for rendering ``frames`` frames (None: unknown) end to end, and why, as one clause.

    On a CPU with native bfloat16 (``hardware.native_bfloat16``): bf16, whatever the length: it has no set-up,
    renders about twice as fast as eager, and when the driver is tracked with MediaPipe `animate` runs as fast with
    it as with int8, at ~60 dB against float32 where int8 gives ~45 (benchmarks/README.md).
    Elsewhere: int8 when the driver is long enough (``AUTO_INT8_FRAMES``) to repay its set-up and this machine
    runs it, else eager, which starts at once and gives the reference frames. ``estimated``: ``frames`` comes
    from the video's duration (``Driver.frames_estimate``), not a stated frame count; the reason says so."""
    if native_bfloat16():
        return "bf16", ("bf16: this CPU computes bfloat16 natively (AVX512-BF16 / AMX), so bf16 renders about "
                        "twice as fast as eager with no set-up, near int8's speed end to end (~60 dB PSNR against "
                        "float32)")
    if frames is None:
        return "eager", "eager: the driver's length is unknown (int8 repays its set-up only on long drivers)"
    count = f"about {frames} driver frames (from its duration)" if estimated else f"{frames} driver frames"
    if frames < AUTO_INT8_FRAMES:
        return "eager", (f"eager: {count}; int8 repays its 20–40 s of set-up from about "
                         f"{AUTO_INT8_FRAMES} frames")
    missing = int8_unavailable()
    if missing:
        return "eager", f"eager: {missing}"
    return "int8", (f"int8: {count}; from {AUTO_INT8_FRAMES} on, its 20–40 s of quantizing and compiling pay "
                    "off (~45 dB PSNR against float32)")


def make_renderer(
    renderer: BakedRenderer,
    backend: str = "eager",
    *,
    device: str | torch.device = "cpu",
    onnx_path: str | os.PathLike | None = None,
    calibration: torch.Tensor | None = None,
) -> FrameRenderer:
    """A ``FrameRenderer`` running ``renderer`` with ``backend`` (one of ``BACKENDS``) on ``device``.

    ``renderer`` is not modified (each backend works on a copy). ``onnx_path``: where the onnx backend writes its
    graph (kept for reuse); by default a temporary file, deleted once ONNX Runtime has loaded it.
    ``calibration``: int8 only (required there): (N, 136) keypoints like the ones the renderer will see, whose
    activations set the quantization ranges — e.g. ``jittered_keypoints(avatar.source_keypoints_normalized)``,
    which ``Avatar.renderer`` passes by itself.
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}.")
    if renderer.training:
        raise BackendError("make_renderer needs the baked renderer in eval mode; call renderer.eval() first.")
    device = torch.device(device)
    pose_dim = renderer.pose_dim
    if backend == "fp16" and device.type != "cuda":
        raise BackendError("fp16 needs a CUDA device; on CPU use bf16.")
    if backend == "eager":
        return FrameRenderer(backend, _fast(copy.deepcopy(renderer).eval().to(device), device), device, pose_dim)
    if backend in ("bf16", "fp16"):
        dtype = torch.bfloat16 if backend == "bf16" else torch.float16
        # on CPU: the native heads-and-tail loop (reading bfloat16 features, with float32 heads), packed bfloat16
        # convolutions, as eager's float32 ones, and a float32 MLP; 1.5–1.7× faster than the plain bfloat16 module
        # on the medium preset here
        tail = dtype == torch.bfloat16 and _native_here(device)
        module = low_precision(renderer, dtype, float32_heads=tail, float32_mlp=device.type == "cpu").to(device)
        return FrameRenderer(backend, _fast(module, device, native_tail=tail), device, pose_dim)
    if backend == "compile":
        return FrameRenderer(backend, _compiled(renderer, device), device, pose_dim)
    if backend == "int8":
        return FrameRenderer(backend, _int8(renderer, device, calibration), device, pose_dim)
    return FrameRenderer(backend, _onnx_runner(renderer, device, onnx_path), device, pose_dim)


def _native_here(device: torch.device) -> bool:
    """Whether the native heads-and-tail loop runs here: on CPU, when its kernel builds (it needs the C++ compiler;
    built once, then cached). On the small preset's frame it took 2.7 instead of 6.1 ms on 2 threads in slow
    minutes (benchmarks/render.py's ``tail`` line); whole frames gain 1.13–1.25× (benchmarks/native.py)."""
    return device.type == "cpu" and native.available()


def _fast(module: BakedRenderer, device: torch.device, native_tail: bool | None = None) -> torch.nn.Module:
    """The eager and low-precision backends' module: on CPU ``module`` channels-last with packed convolutions and
    the native tail where it builds (``runtime.forms``); elsewhere ``module`` as it is."""
    if device.type != "cpu":
        return module
    tail = _native_here(device) if native_tail is None else native_tail
    return packed(FastRenderer(channels_last(module), tail="native" if tail else "pytorch", channels_last=True))


def _compiled(renderer: BakedRenderer, device: torch.device) -> Callable[[torch.Tensor], Frame]:
    # Mode "default": inductor's fusions and generated kernels, but neither CUDA graphs ("reduce-overhead",
    # whose static output buffers the next frame would overwrite under the caller) nor max-autotune's
    # minutes of kernel benchmarking. Dynamic shapes are left automatic: a second batch size recompiles once
    # with a symbolic batch, which then serves every size.
    _need_compiler(device, "compile")
    module = _compile_forms(copy.deepcopy(renderer).eval().to(device), device)
    return _frozen(torch.compile(module, mode="default"))


def _compile_forms(module: BakedRenderer, device: torch.device) -> FastRenderer:
    """What the compile and int8 backends trace: on CPU ``module`` channels-last with the native heads-and-tail
    loop where it builds, else the tail in the forms inductor runs fast (``runtime.forms``)."""
    cpu = device.type == "cpu"
    return FastRenderer(channels_last(module) if cpu else module,
                        tail="native" if _native_here(device) else "inductor", channels_last=cpu)


def _no_compiler(backend: str) -> str:
    return f"{backend} on CPU needs a C++ compiler (g++ or clang++) on PATH"


_NO_TORCHAO = f"int8 needs torchao=={TORCHAO_VERSION} (pip install 'bilayer[int8]')"


def _need_compiler(device: torch.device, backend: str) -> None:
    if device.type == "cpu" and not native.compiler():
        raise BackendError(f"{_no_compiler(backend)}; use eager or onnx.")


def _frozen(compiled: Callable[[torch.Tensor], Frame]) -> Callable[[torch.Tensor], Frame]:
    from torch._inductor import config as inductor_config

    def run(keypoints: torch.Tensor) -> Frame:
        # Freezing: the baked weights become constants of the compiled graph, so inductor lays each convolution's
        # weight out for oneDNN once and fuses the pointwise work around the convolutions into generated loops
        # (without it compile is no faster than eager). The C++ wrapper: the compiled graph calls its kernels from
        # generated C++ instead of a Python function, which saves the interpreter's work per frame. Set per call,
        # because compilation happens at the first call of each batch size (and thread count).
        with inductor_config.patch(freezing=True, cpp_wrapper=True):
            return compiled(keypoints)

    return run


def jittered_keypoints(keypoints, count: int = 64, seed: int = 0) -> torch.Tensor:
    """(count, 136) keypoints around one normalised (136,) face: random similarity transforms about its centre
    (rotation ±12°, scale ±10 %, shift ±5 % of the crop) plus per-point noise (σ = 1 % of the crop), the first row
    unchanged. Calibration input for the int8 backend: head poses and small shape changes like those a driver
    brings, without needing the driver itself."""
    g = torch.Generator().manual_seed(seed)
    pts = torch.as_tensor(keypoints, dtype=torch.float32).reshape(1, -1, 2)
    centre = pts.mean(1, keepdim=True)
    angle = (torch.rand(count, generator=g) * 2 - 1) * math.radians(12)
    scale = 1 + (torch.rand(count, generator=g) * 2 - 1) * 0.1
    cos, sin = angle.cos() * scale, angle.sin() * scale
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (count, 2, 2)
    shift = (torch.rand(count, 1, 2, generator=g) * 2 - 1) * 0.1  # ±5 % of the crop's [-1, 1] width
    noise = torch.randn(count, pts.shape[1], 2, generator=g) * 0.02
    out = (pts - centre) @ rotation.transpose(1, 2) + centre + shift + noise
    out[0] = pts[0]
    return out.reshape(count, -1)


def _int8(renderer: BakedRenderer, device: torch.device, calibration: torch.Tensor | None
          ) -> Callable[[torch.Tensor], Frame]:
    """The baked module quantized after training (torchao's PT2E flow with its x86 inductor recipe: int8
    activations per tensor, int8 weights per output channel, calibrated on ``calibration``), then compiled with
    freezing, so that each quantized convolution runs as one oneDNN VNNI kernel.

    The upsampling convolutions are rewritten first as sub-pixel convolutions (``SubpixelUpsampleConv2d``), which
    the recipe quantizes; as transposed convolutions they stayed float32 (inductor has no int8 transposed
    convolution) and took 45 % of an int8 frame. With them in int8 as well: medium 36 against 47 ms per frame on
    one thread (and against 59 for compile), 44.5 against 49 dB PSNR on the trained synth-quick avatar.
    Small gains little: its 16–32-channel layers are bound by memory, not arithmetic.
    """
    if device.type != "cpu":
        raise BackendError("int8 runs on CPU (oneDNN's x86 kernels); on a GPU use fp16.")
    _need_compiler(device, "int8")  # its own advice: compile needs the compiler too
    missing = int8_unavailable()
    if missing:
        raise BackendError(f"{missing}; use compile or eager.")
    if calibration is None:
        raise BackendError("int8 needs calibration keypoints (N, 136), e.g. "
                           "jittered_keypoints(avatar.source_keypoints_normalized); Avatar.renderer passes them.")
    calibration = torch.as_tensor(calibration, dtype=torch.float32)
    if calibration.numel() == 0 or calibration.numel() % renderer.pose_dim:
        raise BackendError(f"int8 calibration keypoints have shape {tuple(calibration.shape)}; expected "
                           f"(N, {renderer.pose_dim}) with N ≥ 1.")
    calibration = calibration.reshape(-1, renderer.pose_dim).to(device)
    prepare_pt2e, convert_pt2e, quantizer = _torchao_int8()
    # float32 stays: the keypoint MLP's small linear layers (quantizing them gains nothing) and the heads (Δuv,
    # LF, mask logits), whose quantization put visible noise on the output; keeping both in float32 took the
    # trained synth-quick avatar from 37 to 49 dB PSNR against float32 at no measurable cost
    for name in [f"renderer.mlp.{i}" for i in range(len(renderer.mlp))] + ["renderer.heads"]:
        quantizer.set_module_name_qconfig(name, None)  # matched exactly: the MLP's ModuleList is never called
    # sub-pixel upsampling: plain 2×2 convolutions, which the recipe quantizes (transposed ones it does not)
    module = _compile_forms(subpixel_upsampling(renderer).eval().to(device), device)
    # an example batch of 2 with a symbolic batch size: one graph serves every batch size (a size-1 example
    # would be specialised to 1)
    example = calibration[:2] if len(calibration) >= 2 else calibration.repeat(2, 1)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchao's own tensor-construction notices
        exported = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        prepared = prepare_pt2e(exported.module(), quantizer)
        for chunk in calibration.split(16):
            prepared(chunk)
        quantized = convert_pt2e(prepared)
    return _frozen(torch.compile(quantized, mode="default"))


def _torchao_int8():
    """torchao's PT2E entry points and a fresh x86 inductor quantizer with its default (static, per-channel)
    configuration; ``BackendError`` when torchao is missing. Its import logs that its CUDA kernels cannot load on
    a CPU-only torch, which says nothing about this use: those notices are silenced."""
    quiet = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [log.level for log in quiet]
    for log in quiet:
        log.setLevel(logging.ERROR)
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    except ImportError as exc:
        raise BackendError(f"{_NO_TORCHAO}; use compile or eager.") from exc  # found but broken
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)
    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    return prepare_pt2e, convert_pt2e, quantizer


def _onnx_runner(
    renderer: BakedRenderer, device: torch.device, onnx_path: str | os.PathLike | None
) -> Callable[[torch.Tensor], Frame]:
    from .export import export_baked, onnx_session  # optional dependency: only this backend needs onnx

    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise BackendError("the onnx backend on CUDA needs onnxruntime-gpu (CUDAExecutionProvider); use compile.")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if onnx_path is not None:
        session = onnx_session(export_baked(renderer, onnx_path), providers=providers)
    else:
        with tempfile.TemporaryDirectory(prefix="bilayer-onnx-") as folder:
            session = onnx_session(export_baked(renderer, Path(folder) / "baked.onnx"), providers=providers)

    def run(keypoints: torch.Tensor) -> Frame:
        image, mask = session.run(["image", "mask"], {"keypoints": keypoints.cpu().numpy()})
        return torch.from_numpy(image), torch.from_numpy(mask)

    return run
