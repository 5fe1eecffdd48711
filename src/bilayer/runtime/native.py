"""The end of every frame as one native CPU loop: the last block's features → heads convolution → (image, mask).

After the last residual block, a frame's remaining work is one small convolution and pointwise work with one
bilinear lookup per pixel:

    heads = conv3x3(LeakyReLU(features)) ;  Δuv, LF = tanh(heads[:5]) ;  uv = grid + Δuv
    image = LF + bilinear(texture, uv) ;  mask = σ(heads[5])

PyTorch runs that as an activation pass, a oneDNN convolution (which pads the six output channels to a full
vector width, so most of its arithmetic is wasted) and five to seven passes over full-resolution tensors (a layout
copy, tanh, an add, grid_sample on one thread for a single frame, an add, a sigmoid); inductor fuses the
pointwise part into two generated loops around PyTorch's grid_sample. On the small preset that was about 4 ms of
a 10–14-ms int8 frame. Here it is one OpenMP-parallel pass over output rows:

- each thread takes a band of rows and keeps the three feature rows the current output row needs as planar,
  zero-bordered rows, activated as they are read (channels-last features are transposed 16 × 16 in registers);
  the features can be handed over as the last block's two terms, summed as they are read (conv2's output, or
  its sub-pixel phases before their interleave, plus the skip path at half resolution), so that the block's
  output is never written out;
- the convolution runs on contiguous vectors of 64 output pixels, six outputs each, with no padded lanes;
- the tail reads the six head rows just computed, gathers four texels per pixel and writes the image and mask.

The features may be float32 or bfloat16 (the bf16 backend's blocks, widened as they are read, with everything
after in float32; one template instantiation each).

The loop is C-style C++ (templated only on the features' element type) in ``bilayer/csrc/heads_tail.cpp``, which
also registers it as the operator ``bilayer::heads_tail`` (so ``torch.compile`` and ``torch.export`` keep it as one
opaque call; its shape function is registered here). It is built on first use with PyTorch's extension tooling
(``torch.utils.cpp_extension.load``) and the C++ compiler that the compile and int8 backends need anyway (``CXX``,
else g++, else clang++), and cached under ``~/.cache/bilayer/native`` (``$XDG_CACHE_HOME`` when set) in a folder
named by a hash of the source, the compiler and its version, the flags, the torch version, and this CPU's model and
instruction-set flags: the build uses ``-march=native``, so a cache shared by two machines never hands one of them
code built for the other. It is built in a temporary folder and moved into place whole, so an interrupted build
leaves nothing a later one would load. The library links the OpenMP runtime PyTorch has already loaded (same
soname), so no second thread pool appears. :func:`available` says whether it could be built; callers fall back
to the PyTorch forms when it could not.

Numerics: the convolution sums in float32 like oneDNN does (in another order, so results differ by float
rounding). The warp follows ``F.grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)``
(reference §2.8): source index ((u + 1)·W − 1)/2, the four corner weights in PyTorch's order, corners outside the
texture contributing zero. tanh and σ come from one polynomial expm1 (within 1.5e-7 of float64, also near zero,
where 2σ(2x) − 1 would lose precision). Frames stay within twice PyTorch's own float32 distance from float64
(tests/test_native.py); the warp multiplies a rounding difference in Δuv by the texture's gradient times half the
texture width, so that distance is ~1e-5 on smooth textures and ~1e-4 on rough random ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from ..io import cache_home, make_folder

log = logging.getLogger(__name__)

HEAD_CHANNELS = 6  # Δu, Δv, LF r, g, b, mask logit (BakedRenderer.heads)
SOURCE = Path(__file__).resolve().parent.parent / "csrc" / "heads_tail.cpp"
NAMESPACE = "bilayer"

_COMMON = ["-O3", "-fno-math-errno", "-fno-trapping-math"]
FLAG_SETS = (
    # 512-bit vectors where the CPU has them: 1.2-1.3× faster than gcc's default 256 on AVX-512 here
    ["-march=native", "-mprefer-vector-width=512", "-fopenmp", *_COMMON],
    ["-march=native", "-fopenmp", *_COMMON],
    ["-fopenmp", *_COMMON],  # compilers without -march=native
    _COMMON,  # no OpenMP (clang without libomp): one thread
)

_lock = threading.Lock()
_op = None  # torch.ops.bilayer.heads_tail once loaded
_failure: str | None = None


def compiler() -> str | None:
    """The C++ compiler the compile and int8 backends use: ``CXX``, else g++, else clang++."""
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")


def cache_dir() -> Path:
    """Where built libraries are kept: ``native`` in the project's cache folder (``io.cache_home``)."""
    return cache_home() / "native"


def cpu_signature() -> str:
    """This CPU's architecture, model name and instruction-set flags (``/proc/cpuinfo`` where there is one): what
    ``-march=native`` compiles for."""
    parts = [platform.machine(), platform.processor()]
    with contextlib.suppress(OSError):
        fields = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        parts += [fields.get("model name", ""), fields.get("flags", fields.get("Features", ""))]
    return "\n".join(parts)


def build_key(cxx: str, version: str, cflags: list[str]) -> str:
    """The cache key of a build: a hash of the source, the compiler and its version, the flags, the torch version and
    ``cpu_signature()``."""
    parts = [SOURCE.read_text(), cxx, version, torch.__version__, cpu_signature(), *cflags]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


class _BuildFailed(Exception):
    pass


@contextlib.contextmanager
def _build_environment(cxx: str):
    """PyTorch's extension builder reads the compiler from ``CXX`` and runs ``ninja`` from PATH; the ninja of the
    ``ninja`` package is used when PATH has none."""
    saved = {k: os.environ.get(k) for k in ("CXX", "PATH")}
    os.environ["CXX"] = cxx
    if shutil.which("ninja") is None:
        with contextlib.suppress(ImportError):
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def build(flag_sets=FLAG_SETS, namespace: str = NAMESPACE) -> Path:
    """Build (or find in the cache) the library with the first of ``flag_sets`` that compiles and loads, load it
    into this process (its operator is ``torch.ops.NAMESPACE.heads_tail``) and return its path. A namespace can be
    loaded once per process: tests load other builds under other names."""
    from torch.utils import cpp_extension

    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (set CXX, or install g++ or clang++)")
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    errors = []
    for flags in flag_sets:
        cflags = [*flags, f"-DBILAYER_NAMESPACE={namespace}"]
        key = build_key(cxx, version, cflags)
        name = f"{namespace}_heads_tail_{key}"
        target = cache_dir() / f"tail-{key}" / f"{name}.so"
        try:
            if target.exists():
                torch.ops.load_library(str(target))
                return target
            make_folder(cache_dir())
            with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=f".tail-{key}-") as tmp, _build_environment(cxx):
                try:
                    cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=cflags,
                                       extra_ldflags=["-fopenmp"] if "-fopenmp" in flags else [],
                                       build_directory=tmp, is_python_module=False, verbose=False)
                except (RuntimeError, subprocess.SubprocessError) as error:
                    last = str(error).strip().splitlines()[-1:] or ["failed"]
                    raise _BuildFailed(f"{cxx} {' '.join(flags)}: {last[0]}") from None
                # loaded from the temporary folder (the mapping outlives the name); moved into place whole
                staging = Path(tmp) / "built"
                staging.mkdir()
                os.replace(Path(tmp) / f"{name}.so", staging / target.name)
                try:
                    os.replace(staging, target.parent)
                except OSError:  # another process put the same build in place first
                    pass
            return target
        except _BuildFailed as error:
            errors.append(str(error))
        except OSError as error:  # e.g. built with an OpenMP runtime the loader cannot resolve
            errors.append(f"{' '.join(flags)}: {error}")
    raise RuntimeError("; ".join(errors))


def operator():
    """``torch.ops.bilayer.heads_tail``, built (or found in the cache) and loaded on first call; RuntimeError
    saying why when it cannot be."""
    global _op, _failure
    with _lock:
        if _op is None and _failure is None:
            try:
                build()
                _op = getattr(torch.ops, NAMESPACE).heads_tail
                register_fake(NAMESPACE)
            except (OSError, RuntimeError, subprocess.SubprocessError) as error:
                _failure = str(error)
                # no compiler is an expected set-up (eager then runs PyTorch's tail); a failed build is not
                (log.info if compiler() is None else log.warning)("native tail unavailable, using PyTorch's "
                                                                   "operations: %s", _failure)
        if _op is None:
            raise RuntimeError(f"the native tail could not be built: {_failure}")
        return _op


def available() -> bool:
    """Whether the native tail is built (or could be built now) on this machine."""
    try:
        operator()
    except RuntimeError:
        return False
    return True


def register_fake(namespace: str) -> None:
    """The operator's output shapes for tracing (``torch.compile``, ``torch.export``)."""

    @torch.library.register_fake(f"{namespace}::heads_tail")
    def _(features, weight, bias, negative_slope, grid, texture, skip=None):
        b, (h, w) = features.shape[0], grid.shape[1:3]
        return (features.new_empty((b, 3, h, w), dtype=torch.float32),
                features.new_empty((b, 1, h, w), dtype=torch.float32))


def heads_tail(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, negative_slope: float,
               grid: torch.Tensor, texture: torch.Tensor, skip: torch.Tensor | None = None, *, op=None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``BakedRenderer``'s heads and tail in one pass: the last block's output through LeakyReLU
    (``negative_slope``), the 3×3 heads convolution (``weight`` (6, C, 3, 3) in any layout, ``bias`` (6,),
    padding 1), then tanh / warp of ``texture`` (1 or B, 3, th, tw; any layout) by the (1, H, W, 2) ``grid`` plus
    Δuv / sum / sigmoid → image (B, 3, H, W), mask (B, 1, H, W). Equal to the PyTorch form within float32
    rounding (see the module docstring).

    The block's output is ``features`` plus, when given, ``skip`` (B, C, H, W) or (B, C, H/2, W/2), the latter
    upsampled by nearest neighbour; its ``features`` are (B, C, H, W) or a sub-pixel convolution's phases
    (B, C, H/2 + 1, 2, W/2 + 1, 2) (``SubpixelUpsampleConv2d.phases``), whose rows 2i + p and columns 2j + q
    form an (H + 2) × (W + 2) image cropped by one pixel on each side. Any layout (the loop takes the strides;
    channels-last, as the blocks write it, reads fastest), so neither the sum nor the interleave is ever written
    out at full resolution. ``features`` and ``skip`` may be bfloat16 (the bf16 backend's blocks): they are
    widened to float32 as they are read, and everything after runs in float32 as for float32 features; the
    weight, bias, grid and texture are float32, and so are the image and mask. ``op``: another build's
    operator (tests)."""
    _check(features, weight, bias, grid, texture, skip)
    return (op or operator())(features, weight, bias, negative_slope, grid, texture, skip)


def _check(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, grid: torch.Tensor,
           texture: torch.Tensor, skip: torch.Tensor | None) -> None:
    tensors = {"features": features, "weight": weight, "bias": bias, "grid": grid, "texture": texture, "skip": skip}
    for name, tensor in tensors.items():
        if tensor is not None and tensor.device.type != "cpu":
            raise ValueError(f"bilayer::heads_tail runs on CPU tensors; its {name} is on {tensor.device}.")
    if features.dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"bilayer::heads_tail reads float32 or bfloat16 features, not {features.dtype}.")
    if skip is not None and skip.dtype != features.dtype:
        raise ValueError(f"bilayer::heads_tail needs the skip in the features' dtype ({features.dtype}), not "
                         f"{skip.dtype}.")
    for name in ("weight", "bias", "grid", "texture"):
        if tensors[name].dtype != torch.float32:
            raise ValueError(f"bilayer::heads_tail needs a float32 {name}, not {tensors[name].dtype}.")
    if grid.dim() != 4 or grid.shape[0] != 1 or grid.shape[3] != 2:
        raise ValueError(f"bilayer::heads_tail expects a (1, H, W, 2) grid, got {tuple(grid.shape)}.")
    h, w = grid.shape[1:3]
    shape = tuple(features.shape)
    if features.dim() not in (4, 6):
        raise ValueError(f"bilayer::heads_tail expects (B, C, H, W) or sub-pixel (B, C, H/2 + 1, 2, W/2 + 1, 2) "
                         f"features, got {shape}.")
    b, c = shape[:2]
    if features.dim() == 4 and shape[2:] != (h, w):
        raise ValueError(f"bilayer::heads_tail expects (B, C, {h}, {w}) features for the grid's {h} × {w} frame, "
                         f"got {shape}.")
    if features.dim() == 6 and (shape[2:] != (h // 2 + 1, 2, w // 2 + 1, 2) or h % 2 or w % 2):
        raise ValueError(f"bilayer::heads_tail expects sub-pixel features (B, C, {h // 2 + 1}, 2, {w // 2 + 1}, 2) "
                         f"for the grid's {h} × {w} frame, got {shape}.")
    half = (h // 2, w // 2) if h % 2 == 0 and w % 2 == 0 else None
    if skip is not None and (skip.dim() != 4 or tuple(skip.shape[:2]) != (b, c)
                             or tuple(skip.shape[2:]) not in ((h, w), half)):
        raise ValueError(f"bilayer::heads_tail expects a ({b}, {c}, {h}, {w}) skip or one of half that size, got "
                         f"{tuple(skip.shape)}.")
    if tuple(weight.shape) != (HEAD_CHANNELS, c, 3, 3) or tuple(bias.shape) != (HEAD_CHANNELS,):
        raise ValueError(f"bilayer::heads_tail expects a ({HEAD_CHANNELS}, {c}, 3, 3) weight and a "
                         f"({HEAD_CHANNELS},) bias for {c} feature channels, got {tuple(weight.shape)} and "
                         f"{tuple(bias.shape)}.")
    if texture.dim() != 4 or texture.shape[1] != 3 or texture.shape[0] not in (1, b):
        raise ValueError(f"bilayer::heads_tail expects a (1 or {b}, 3, H, W) texture, got "
                         f"{tuple(texture.shape)}.")
