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

The loop is C-style C++ (templated only on the features' element type), compiled on first use with the C++
compiler that the compile and int8 backends need anyway (``CXX``, else g++, else clang++), cached under
``~/.cache/bilayer/native`` (``$XDG_CACHE_HOME`` when set) by a hash of source, compiler and flags, and called
through ctypes; the compiled library links the OpenMP runtime PyTorch has already loaded (same soname), so no second
thread pool appears. It is wrapped as the custom operator ``bilayer::heads_tail`` so that ``torch.compile`` and
``torch.export`` keep it as one opaque call. :func:`available` says whether it could be built; callers fall back to
the PyTorch forms when it could not.

Numerics: the convolution sums in float32 like oneDNN does (in another order, so results differ by float
rounding). The warp follows ``F.grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)``
(reference §2.8): source index ((u + 1)·W − 1)/2, the four corner weights in PyTorch's order, corners outside the
texture contributing zero. tanh and σ come from one polynomial expm1 (within 1.5e-7 of float64, also near zero,
where 2σ(2x) − 1 would lose precision). Frames stay within twice PyTorch's own float32 distance from float64
(tests/test_native.py); the warp multiplies a rounding difference in Δuv by the texture's gradient times half the
texture width, so that distance is ~1e-5 on smooth textures and ~1e-4 on rough random ones.
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
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __AVX512F__
#include <immintrin.h>
#endif

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
static inline int32_t clampi(int32_t v, int32_t hi) { return v < 0 ? 0 : (v > hi ? hi : v); }

/* The tail of n pixels of one row: h[k] are the six head values' planar runs, gp the grid's (x, y) pairs of the
   same pixels, t0..t2 the texture's three channel planes (row stride sy, column stride sx), ip the image's first
   plane at these pixels (planes `plane` apart), mp the mask. */
static inline void tail_pixels(const float* const* h, const float* gp, const float* t0, const float* t1,
                               const float* t2, int32_t sy, int32_t sx, int64_t th, int64_t tw, float* ip,
                               int64_t plane, float* mp, int64_t n) {
    const float fw = (float)tw, fh = (float)th;
    const float *h0 = h[0], *h1 = h[1], *h2 = h[2], *h3 = h[3], *h4 = h[4], *h5 = h[5];
#pragma omp simd
    for (int64_t x = 0; x < n; ++x) {
        float u = gp[2 * x] + tanh_s(h0[x]);
        float v = gp[2 * x + 1] + tanh_s(h1[x]);
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
        ip[x] = tanh_s(h2[x]) + (t0[a] * nw + t0[c] * ne + t0[d] * sw + t0[e] * se);
        ip[plane + x] = tanh_s(h3[x]) + (t1[a] * nw + t1[c] * ne + t1[d] * sw + t1[e] * se);
        ip[2 * plane + x] = tanh_s(h4[x]) + (t2[a] * nw + t2[c] * ne + t2[d] * sw + t2[e] * se);
        mp[x] = sigmoid(h5[x]);
    }
}

/* The heads and the tail, one output row at a time: a 3×3 convolution from C channels to the six heads on
   features activated by LeakyReLU(slope) as they are read, then tail_pixels. Each thread takes a band of rows
   and keeps the three input rows the current output row needs as planar, zero-bordered rows, so that the
   convolution runs on contiguous vectors of output pixels whatever the features' layout; each input row is
   re-laid out once per band. */
typedef float vf __attribute__((vector_size(64)));
#define NV 4 /* vectors per step: 24 accumulators, 4 inputs and a weight fit AVX-512's 32 registers */
#define VL 16
#define XB (NV * VL)

static inline vf ldv(const float* p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline vf bcast(float w) { return (vf){w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w}; }
static inline void stv(float* p, vf v) { memcpy(p, &v, sizeof v); }

/* The features' element (b, c, y, x) is at feat + b·fs[0] + c·fs[1] + Y(y)·... with the row and column each split
   into a pair and its phase: row y + crop = 2i + p is at i·fs[2] + p·fs[3], column x + crop = 2j + q at
   j·fs[4] + q·fs[5]. Plain (B, C, H, W) features are fs = {b, c, 2·row, row, 2·column, column} with crop 0; the
   sub-pixel form (B, C, H/2 + 1, 2, W/2 + 1, 2) is its own strides with crop 1. skip (or NULL): (B, C, H >> s,
   W >> s) with strides ss, added to the features (nearest upsampling by 2^s) before the activation. */
template <typename T>
struct features_t {
    const T* feat;
    const int64_t* fs;
    int64_t crop;
    const T* skip;
    const int64_t* ss;
    int shift;
};

/* T: float, or uint16_t holding bfloat16 (the upper half of a float32, so widening is a 16-bit shift) */
static inline float widen(float v) { return v; }
static inline float widen(uint16_t v) {
    const uint32_t u = (uint32_t)v << 16;
    float w;
    memcpy(&w, &u, sizeof w);
    return w;
}
#ifdef __AVX512F__
static inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
static inline __m512 load16(const uint16_t* p) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
#endif

template <typename T>
static inline int64_t feat_col(const features_t<T>* f, int64_t x) {
    const int64_t q = x + f->crop;
    return (q >> 1) * f->fs[4] + (q & 1) * f->fs[5];
}

/* row y of frame b into dst: C planar rows of pw floats, feature column x at 1 + x, zeros around */
template <typename T>
static void load_row(float* dst, const features_t<T>* f, int64_t C, int64_t b, int64_t y, int64_t height,
                     int64_t width, int64_t pw, float slope) {
    if (y < 0 || y >= height) {
        memset(dst, 0, sizeof(float) * C * pw);
        return;
    }
    for (int64_t c = 0; c < C; ++c) {  /* the borders: column 0 and everything after the last feature column */
        dst[c * pw] = 0.0f;
        memset(dst + c * pw + 1 + width, 0, sizeof(float) * (pw - 1 - width));
    }
    const int64_t* fs = f->fs;
    const int64_t p = y + f->crop;
    const T* src = f->feat + b * fs[0] + (p >> 1) * fs[2] + (p & 1) * fs[3];
    const T* sk = f->skip ? f->skip + b * f->ss[0] + (y >> f->shift) * f->ss[2] : NULL;
    const int64_t sx = f->skip ? f->ss[3] : 0, sc = f->skip ? f->ss[1] : 0;
    const int shift = f->shift;
    if (fs[1] == 1 && (sk == NULL || sc == 1)) {  /* channels-last: one pixel's channels are contiguous */
        int64_t x = 0;
#ifdef __AVX512F__
        /* 16 pixels × 16 channels at a time, transposed in registers */
        if (C % 16 == 0) {
            const __m512 zero = _mm512_setzero_ps(), k = _mm512_set1_ps(slope);
            for (; x + 16 <= width; x += 16)
                for (int64_t c0 = 0; c0 < C; c0 += 16) {
                    __m512 r[16], t[16];
                    for (int i = 0; i < 16; ++i) {
                        __m512 v = load16(src + feat_col(f, x + i) + c0);
                        if (sk) v = _mm512_add_ps(v, load16(sk + ((x + i) >> shift) * sx + c0));
                        __mmask16 neg = _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ);
                        r[i] = _mm512_mask_mul_ps(v, neg, v, k);
                    }
                    for (int i = 0; i < 16; i += 2) {
                        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
                        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
                    }
                    for (int i = 0; i < 16; i += 4) {
                        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
                        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
                        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
                        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
                    }
                    for (int i = 0; i < 4; ++i) {
                        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
                        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
                        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
                        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
                    }
                    for (int i = 0; i < 4; ++i) {
                        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
                        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
                        r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
                        r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
                    }
                    for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + (c0 + i) * pw + 1 + x, r[i]);
                }
        }
#endif
        for (; x < width; ++x) {
            const T* px = src + feat_col(f, x);
            const T* ps = sk ? sk + (x >> shift) * sx : NULL;
            for (int64_t c = 0; c < C; ++c) {
                float v = ps ? widen(px[c]) + widen(ps[c]) : widen(px[c]);
                dst[c * pw + 1 + x] = v < 0.0f ? v * slope : v;
            }
        }
    } else {
        for (int64_t c = 0; c < C; ++c)
            for (int64_t x = 0; x < width; ++x) {
                float v = widen(src[c * fs[1] + feat_col(f, x)]);
                if (sk) v += widen(sk[c * sc + (x >> shift) * sx]);
                dst[c * pw + 1 + x] = v < 0.0f ? v * slope : v;
            }
    }
}

/* one output row's six head rows (each `wr` wide, a multiple of XB) from the three input rows: XB pixels at a
   time, NV vectors of VL, 6·NV accumulators; per kernel tap, NV input vectors and six broadcast weights feed 6·NV
   multiply-adds. taps: the weight as (C, 3, 3, 6), a tap's six weights side by side. */
static void conv_row(float* out, const float* const* rows, const float* taps, const float* bias, int64_t C,
                     int64_t pw, int64_t wr) {
    for (int64_t x0 = 0; x0 < wr; x0 += XB) {
        vf acc[6][NV];
#pragma GCC unroll 8
        for (int o = 0; o < 6; ++o)
#pragma GCC unroll 8
            for (int v = 0; v < NV; ++v) acc[o][v] = bcast(bias[o]);
        for (int64_t c = 0; c < C; ++c)
            for (int ky = 0; ky < 3; ++ky)
#pragma GCC unroll 3
                for (int kx = 0; kx < 3; ++kx) {
                    const float* r = rows[ky] + c * pw + x0 + kx;
                    const float* w = taps + ((c * 3 + ky) * 3 + kx) * 6;
                    vf in[NV];
#pragma GCC unroll 8
                    for (int v = 0; v < NV; ++v) in[v] = ldv(r + v * VL);
#pragma GCC unroll 8
                    for (int o = 0; o < 6; ++o) {
                        const vf wv = bcast(w[o]);
#pragma GCC unroll 8
                        for (int v = 0; v < NV; ++v) acc[o][v] += in[v] * wv;
                    }
                }
#pragma GCC unroll 8
        for (int o = 0; o < 6; ++o)
#pragma GCC unroll 8
            for (int v = 0; v < NV; ++v) stv(out + o * wr + x0 + v * VL, acc[o][v]);
    }
}

/* feat, fs, crop, skip, ss, shift: the features as in features_t (the output is H × W); weight: (6, C, 3, 3) with
   element strides ws = {output, input, row, column}; bias: (6); grid: (H, W, 2), x then y; texture: (·, 3, th,
   tw) with element strides ts = {frame (0: one texture for all), channel, row, column}; image: (B, 3, H, W);
   mask: (B, 1, H, W). Returns 0, or -1 when a buffer could not be allocated. */
template <typename T>
static int heads_tail(const features_t<T> f, int64_t C, const float* weight, const int64_t* ws, const float* bias,
                      float slope, const float* grid, const float* texture, const int64_t* ts, float* image,
                      float* mask, int64_t batch, int64_t height, int64_t width, int64_t th, int64_t tw,
                      int threads) {
    const int64_t plane = height * width, total = batch * height;
    const int64_t wr = (width + XB - 1) / XB * XB, pw = wr + XB;  /* reads reach wr + 1 */
    float* taps = (float*)malloc(sizeof(float) * 54 * C);
    if (taps == NULL) return -1;
    for (int64_t c = 0; c < C; ++c)
        for (int k = 0; k < 9; ++k)
            for (int o = 0; o < 6; ++o)
                taps[(c * 9 + k) * 6 + o] = weight[o * ws[0] + c * ws[1] + (k / 3) * ws[2] + (k % 3) * ws[3]];
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        int64_t part = 0, parts = 1;
#ifdef _OPENMP
        part = omp_get_thread_num();
        parts = omp_get_num_threads();
#endif
        const int64_t first = total * part / parts, last = total * (part + 1) / parts;
        float* buffer = (float*)malloc(sizeof(float) * (3 * C * pw + 6 * wr));
        if (buffer == NULL) {
            failed = 1;
        } else {
            float* slot[3] = {buffer, buffer + C * pw, buffer + 2 * C * pw};
            float* out = buffer + 3 * C * pw;
            const float* h[6];
            for (int k = 0; k < 6; ++k) h[k] = out + k * wr;
            for (int64_t r = first; r < last; ++r) {
                const int64_t b = r / height, y = r % height;
                if (r == first || y == 0) {  /* a band's or a frame's first row: all three input rows */
                    for (int k = 0; k < 3; ++k) load_row(slot[k], &f, C, b, y - 1 + k, height, width, pw, slope);
                } else {  /* slide down one row: reuse two, read one */
                    float* oldest = slot[0];
                    slot[0] = slot[1];
                    slot[1] = slot[2];
                    slot[2] = oldest;
                    load_row(slot[2], &f, C, b, y + 1, height, width, pw, slope);
                }
                const float* rows[3] = {slot[0], slot[1], slot[2]};
                conv_row(out, rows, taps, bias, C, pw, wr);
                const float* t0 = texture + b * ts[0];
                tail_pixels(h, grid + y * width * 2, t0, t0 + ts[1], t0 + 2 * ts[1], (int32_t)ts[2], (int32_t)ts[3],
                            th, tw, image + b * 3 * plane + y * width, plane, mask + b * plane + y * width, width);
            }
            free(buffer);
        }
    }
    free(taps);
    return failed ? -1 : 0;
}

/* bf16: feat and skip hold bfloat16 (as uint16_t), else float */
extern "C" int bilayer_heads_tail(const void* feat, const int64_t* fs, int64_t crop, const void* skip,
                                  const int64_t* ss, int shift, int64_t C, const float* weight, const int64_t* ws,
                                  const float* bias, float slope, const float* grid, const float* texture,
                                  const int64_t* ts, float* image, float* mask, int64_t batch, int64_t height,
                                  int64_t width, int64_t th, int64_t tw, int threads, int bf16) {
    if (bf16) {
        const features_t<uint16_t> f = {(const uint16_t*)feat, fs, crop, (const uint16_t*)skip, ss, shift};
        return heads_tail(f, C, weight, ws, bias, slope, grid, texture, ts, image, mask, batch, height, width, th,
                          tw, threads);
    }
    const features_t<float> f = {(const float*)feat, fs, crop, (const float*)skip, ss, shift};
    return heads_tail(f, C, weight, ws, bias, slope, grid, texture, ts, image, mask, batch, height, width, th, tw,
                      threads);
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


def _build(flag_sets=_FLAG_SETS) -> ctypes.CDLL:
    """The library built with the first of ``flag_sets`` that compiles and loads (or found in the cache)."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (set CXX, or install g++ or clang++)")
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    errors = []
    for flags in flag_sets:
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
        fn = lib.bilayer_heads_tail
        fn.restype = ctypes.c_int
        pointer, size = ctypes.c_void_p, ctypes.c_int64
        fn.argtypes = [pointer, pointer, size, pointer, pointer, ctypes.c_int, size, pointer, pointer, pointer,
                       ctypes.c_float, pointer, pointer, pointer, pointer, pointer, size, size, size, size, size,
                       ctypes.c_int, ctypes.c_int]
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


# flexible_layout: the loop reads its inputs through their strides, so inductor hands them over in whatever layout
# their producers wrote (the default, the strides of the traced graph, cost the int8 graph a copy of the skip
# into the exported graph's planar layout)
@torch.library.custom_op("bilayer::heads_tail", mutates_args=(), tags=(torch.Tag.flexible_layout,))
def heads_tail(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, negative_slope: float,
               grid: torch.Tensor, texture: torch.Tensor, skip: torch.Tensor | None = None
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
    weight, bias, grid and texture are float32, and so are the image and mask."""
    _check(features, weight, bias, grid, texture, skip)
    fn = library().bilayer_heads_tail
    b, c = features.shape[:2]
    h, w = grid.shape[1:3]
    s = features.stride()
    # the loop's row y + crop = 2i + p: plain features split their row stride in two, phases have it split already
    fs, crop = ((s[0], s[1], 2 * s[2], s[2], 2 * s[3], s[3]), 0) if features.dim() == 4 else (s, 1)
    ss, shift = (skip.stride(), 0 if skip.shape[2] == h else 1) if skip is not None else ((0, 0, 0, 0), 0)

    def int64s(values) -> ctypes.Array:
        return (ctypes.c_int64 * len(values))(*values)

    image = features.new_empty((b, 3, h, w), dtype=torch.float32)
    mask = features.new_empty((b, 1, h, w), dtype=torch.float32)
    # features, skip, weight and texture in any layout (the loop takes their strides; a channels-last module has
    # channels-last weights and texture); one texture for every frame: frame stride 0
    ts = (0 if texture.shape[0] == 1 else texture.stride(0), *texture.stride()[1:])
    status = fn(features.data_ptr(), int64s(fs), crop, skip.data_ptr() if skip is not None else None, int64s(ss),
                shift, c, weight.data_ptr(), int64s(weight.stride()), bias.contiguous().data_ptr(), negative_slope,
                grid.contiguous().data_ptr(), texture.data_ptr(), int64s(ts), image.data_ptr(), mask.data_ptr(),
                b, h, w, texture.shape[2], texture.shape[3], torch.get_num_threads(), features.dtype == torch.bfloat16)
    if status:
        raise MemoryError("bilayer::heads_tail could not allocate its row buffers.")
    return image, mask


@heads_tail.register_fake
def _(features, weight, bias, negative_slope, grid, texture, skip=None):
    b, (h, w) = features.shape[0], grid.shape[1:3]
    return (features.new_empty((b, 3, h, w), dtype=torch.float32),
            features.new_empty((b, 1, h, w), dtype=torch.float32))


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
