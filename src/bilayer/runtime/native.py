"""The per-frame tail as one native CPU loop: heads output → (image, mask) in a single pass over the pixels.

After the heads convolution, a frame's remaining work is pointwise plus one bilinear lookup per pixel:

    Δuv, LF = tanh(heads[:5]) ;  uv = grid + Δuv ;  image = LF + bilinear(texture, uv) ;  mask = σ(heads[5])

PyTorch runs that as five to seven passes over full-resolution tensors (a layout copy, tanh, an add, grid_sample,
an add, a sigmoid), and inductor as two generated loops around PyTorch's grid_sample, which runs on one thread
for a single frame. On the small preset that tail took about a quarter of an int8 frame. Here it is one
OpenMP-parallel loop that reads each pixel's six head values once (channels-last, as the convolution writes them),
gathers its four texels and writes the image and mask planes.

The loop is C, compiled on first use with the C++ compiler that the compile and int8 backends need anyway
(``CXX``, else g++, else clang++), cached under ``~/.cache/bilayer/native`` (``$XDG_CACHE_HOME`` when set) by a
hash of source, compiler and flags, and called through ctypes; the compiled library links the OpenMP runtime
PyTorch has already loaded (same soname), so no second thread pool appears. It is wrapped as the custom operator
``bilayer::tail`` so that ``torch.compile`` and ``torch.export`` keep it as one opaque call. :func:`available`
says whether it could be built; callers fall back to the PyTorch forms when it could not.

Numerics follow ``F.grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)`` (SPEC §2.8):
source index ((u + 1)·W − 1)/2, the four corner weights in PyTorch's order, corners outside the texture
contributing zero. tanh and σ come from one polynomial expm1 (within 1.5e-7 of float64, also near zero, where
2σ(2x) − 1 would lose precision), so frames match the PyTorch tail within about 1e-5 (5e-5 at 256 px on a rough
texture, where PyTorch's own float32 is 3e-5 from float64).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path

import torch

from ..io import atomic_path, cache_home

log = logging.getLogger(__name__)

HEAD_CHANNELS = 6  # Δu, Δv, LF r, g, b, mask logit (BakedRenderer.heads)

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) - 1 for x in [-87, 88]: x = n·ln2 + r with |r| <= ln2/2, q = e^r - 1 by the degree-7 Taylor
   polynomial without its constant term (truncation < 6e-9), then 2^n·(1 + q) - 1 = 2^n·q + (2^n - 1), exact
   in the last step for n = 0, so small arguments keep full relative precision. Branch-free, so
   the pixel loop vectorises. */
static inline float expm1_poly(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);  /* compare-select: fminf/fmaxf block vectorising */
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693145751953125f - n * 1.428606765330187e-06f;
    float q = r * (1.0f + r * (0.5f + r * (0.16666667f + r * (0.041666668f + r * (0.008333334f
              + r * (0.0013888889f + r * 0.0001984127f))))));
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return scale * q + (scale - 1.0f);
}

static inline float sigmoid(float x) { return 1.0f / (2.0f + expm1_poly(-x)); }

/* tanh|x| = -m / (2 + m) with m = expm1(-2|x|): no cancellation near 0, unlike 2σ(2x) - 1 */
static inline float tanh_s(float x) {
    float m = expm1_poly(-2.0f * (x < 0.0f ? -x : x));
    float t = -m / (2.0f + m);
    return x < 0.0f ? -t : t;
}
#define CHUNK 64

static inline int32_t clampi(int32_t v, int32_t hi) { return v < 0 ? 0 : (v > hi ? hi : v); }

/* heads: (B, H, W, 6) pixel-major; grid: (H, W, 2), x then y; texture: (·, 3, th, tw) with element strides
   ts = {frame (0: one texture for all), channel, row, column}; image: (B, 3, H, W); mask: (B, 1, H, W). */
#ifdef __cplusplus
extern "C"
#endif
void bilayer_tail(const float* heads, const float* grid, const float* texture, const int64_t* ts,
                  float* image, float* mask, int64_t batch, int64_t height, int64_t width,
                  int64_t th, int64_t tw, int threads) {
    const int64_t plane = height * width;
    const int32_t sy = (int32_t)ts[2], sx = (int32_t)ts[3];
    const float fw = (float)tw, fh = (float)th;
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads)
    for (int64_t b = 0; b < batch; ++b) {
        for (int64_t y = 0; y < height; ++y) {
            const float* hp = heads + (b * height + y) * width * 6;
            const float* gp = grid + y * width * 2;
            const float* t0 = texture + b * ts[0];
            const float* t1 = t0 + ts[1];
            const float* t2 = t1 + ts[1];
            float* ip = image + b * 3 * plane + y * width;
            float* mp = mask + b * plane + y * width;
            /* the six head values of each pixel are interleaved; compilers do not vectorise a stride-6 access, so
               each chunk of pixels is first split into six planar runs */
            for (int64_t start = 0; start < width; start += CHUNK) {
                const int64_t n = width - start < CHUNK ? width - start : CHUNK;
                float hs[6][CHUNK];
                for (int64_t i = 0; i < n; ++i)
                    for (int k = 0; k < 6; ++k) hs[k][i] = hp[6 * (start + i) + k];
#pragma omp simd
                for (int64_t i = 0; i < n; ++i) {
                    const int64_t x = start + i;
                    float u = gp[2 * x] + tanh_s(hs[0][i]);
                    float v = gp[2 * x + 1] + tanh_s(hs[1][i]);
                    float ix = ((u + 1.0f) * fw - 1.0f) * 0.5f;
                    float iy = ((v + 1.0f) * fh - 1.0f) * 0.5f;
                    /* |u|, |v| <= 2, so these stay far inside int range */
                    float fx = floorf(ix), fy = floorf(iy);
                    float ex = fx + 1.0f - ix, wx = ix - fx, ey = fy + 1.0f - iy, wy = iy - fy;
                    int32_t x0 = (int32_t)fx, y0 = (int32_t)fy, x1 = x0 + 1, y1 = y0 + 1;
                    /* zero padding: a corner outside the texture gets weight 0 and reads a clamped, valid texel */
                    float vx0 = (x0 >= 0 && x0 < tw) ? 1.0f : 0.0f, vx1 = (x1 >= 0 && x1 < tw) ? 1.0f : 0.0f;
                    float vy0 = (y0 >= 0 && y0 < th) ? 1.0f : 0.0f, vy1 = (y1 >= 0 && y1 < th) ? 1.0f : 0.0f;
                    float nw = ex * ey * (vx0 * vy0), ne = wx * ey * (vx1 * vy0);
                    float sw = ex * wy * (vx0 * vy1), se = wx * wy * (vx1 * vy1);
                    int32_t cx0 = clampi(x0, (int32_t)tw - 1) * sx, cx1 = clampi(x1, (int32_t)tw - 1) * sx;
                    int32_t ry0 = clampi(y0, (int32_t)th - 1) * sy, ry1 = clampi(y1, (int32_t)th - 1) * sy;
                    int32_t a = ry0 + cx0, c = ry0 + cx1, d = ry1 + cx0, e = ry1 + cx1;
                    ip[x] = tanh_s(hs[2][i]) + (t0[a] * nw + t0[c] * ne + t0[d] * sw + t0[e] * se);
                    ip[plane + x] = tanh_s(hs[3][i]) + (t1[a] * nw + t1[c] * ne + t1[d] * sw + t1[e] * se);
                    ip[2 * plane + x] = tanh_s(hs[4][i]) + (t2[a] * nw + t2[c] * ne + t2[d] * sw + t2[e] * se);
                    mp[x] = sigmoid(hs[5][i]);
                }
            }
        }
    }
}
"""

_FLAG_SETS = (
    # 512-bit vectors where the CPU has them: 1.2-1.3× faster than gcc's default 256 on AVX-512 here
    ["-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"],
    ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"],
    ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"],  # compilers without -march=native
    ["-O3", "-fno-math-errno", "-fno-trapping-math"],  # no OpenMP (clang without libomp): one thread
)

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_failure: str | None = None


def compiler() -> str | None:
    """The C++ compiler the compile and int8 backends use: ``CXX``, else g++, else clang++."""
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")


def cache_dir() -> Path:
    """Where built libraries are kept: ``native`` in the project's cache folder (``io.cache_home``)."""
    return cache_home() / "native"


class _BuildFailed(Exception):
    pass


def _build() -> ctypes.CDLL:
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (set CXX, or install g++ or clang++)")
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    errors = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256("\0".join([_SOURCE, cxx, version, *flags]).encode()).hexdigest()[:16]
        target = cache_dir() / f"tail-{key}.so"
        if not target.exists():
            try:  # built under a temporary name, then renamed: a concurrent process sees the whole file or none
                with atomic_path(target) as tmp:
                    run = subprocess.run([cxx, *flags, "-shared", "-fPIC", "-x", "c++", "-", "-o", str(tmp)],
                                         input=_SOURCE, capture_output=True, text=True, timeout=300)
                    if run.returncode:
                        last = run.stderr.strip().splitlines()[-1:] or [f"exit status {run.returncode}"]
                        raise _BuildFailed(f"{cxx} {' '.join(flags)} failed ({last[0]})")
            except _BuildFailed as error:
                errors.append(str(error))
                continue
        try:
            lib = ctypes.CDLL(str(target))
        except OSError as error:  # e.g. built with OpenMP the loader cannot resolve
            errors.append(f"{' '.join(flags)}: {error}")
            continue
        fn = lib.bilayer_tail
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                       ctypes.c_int64, ctypes.c_int]
        return lib
    raise RuntimeError("; ".join(errors))


def library() -> ctypes.CDLL:
    """The compiled tail, built (or found in the cache) on first call; RuntimeError saying why when it cannot be."""
    global _library, _failure
    with _lock:
        if _library is None and _failure is None:
            try:
                _library = _build()
            except (OSError, RuntimeError, subprocess.SubprocessError) as error:
                _failure = str(error)
                # no compiler is an expected set-up (eager then runs PyTorch's tail); a failed build is not
                (log.info if compiler() is None else log.warning)("native tail unavailable, using PyTorch's "
                                                                   "operations: %s", _failure)
        if _library is None:
            raise RuntimeError(f"the native tail could not be built: {_failure}")
        return _library


def available() -> bool:
    """Whether the native tail is built (or could be built now) on this machine."""
    try:
        library()
    except RuntimeError:
        return False
    return True


def _check(heads: torch.Tensor, grid: torch.Tensor, texture: torch.Tensor) -> None:
    if heads.device.type != "cpu" or heads.dtype != torch.float32:
        raise ValueError(f"bilayer::tail runs on float32 CPU tensors, got {heads.dtype} on {heads.device}.")
    b, c, h, w = heads.shape
    if c != HEAD_CHANNELS:
        raise ValueError(f"bilayer::tail expects {HEAD_CHANNELS} head channels, got {c}.")
    if tuple(grid.shape) != (1, h, w, 2):
        raise ValueError(f"bilayer::tail expects a (1, {h}, {w}, 2) grid, got {tuple(grid.shape)}.")
    if texture.dim() != 4 or texture.shape[1] != 3 or texture.shape[0] not in (1, b):
        raise ValueError(f"bilayer::tail expects a (1 or {b}, 3, H, W) texture, got {tuple(texture.shape)}.")


@torch.library.custom_op("bilayer::tail", mutates_args=())
def fused_tail(heads: torch.Tensor, grid: torch.Tensor, texture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 6, H, W) heads output, (1, H, W, 2) identity grid, (1 or B, 3, th, tw) texture → image (B, 3, H, W),
    mask (B, 1, H, W); equal to BakedRenderer's PyTorch tail within about 1e-5."""
    _check(heads, grid, texture)
    fn = library().bilayer_tail
    b, _, h, w = heads.shape
    pixels = heads.permute(0, 2, 3, 1).contiguous()  # free when the convolution wrote channels-last
    grid = grid.contiguous()
    # any texture layout (a channels-last module converts its buffers): the loop takes its strides
    strides = (ctypes.c_int64 * 4)(0 if texture.shape[0] == 1 else texture.stride(0), *texture.stride()[1:])
    image = heads.new_empty((b, 3, h, w))
    mask = heads.new_empty((b, 1, h, w))
    fn(pixels.data_ptr(), grid.data_ptr(), texture.data_ptr(), strides, image.data_ptr(), mask.data_ptr(),
       b, h, w, texture.shape[2], texture.shape[3], torch.get_num_threads())
    return image, mask


@fused_tail.register_fake
def _(heads: torch.Tensor, grid: torch.Tensor, texture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b, _, h, w = heads.shape
    return heads.new_empty((b, 3, h, w)), heads.new_empty((b, 1, h, w))
