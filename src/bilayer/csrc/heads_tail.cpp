// bilayer::heads_tail — the end of every frame as one native CPU loop (see bilayer/runtime/native.py):
// the last block's features → LeakyReLU → 3×3 heads convolution → tanh / grid + Δuv / bilinear warp of the
// texture / sum / sigmoid → (image, mask). Built with PyTorch's extension tooling on first use and registered as
// the operator bilayer::heads_tail; bilayer/runtime/native.py holds its checks and its shape function.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

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

namespace {

// The operator: tensors are held by the caller's references for the whole call; every pointer below is read
// while they are alive. Shapes and dtypes are checked in Python (native.heads_tail) before the call.
std::tuple<at::Tensor, at::Tensor> heads_tail_cpu(const at::Tensor& features, const at::Tensor& weight,
                                                  const at::Tensor& bias, double negative_slope,
                                                  const at::Tensor& grid, const at::Tensor& texture,
                                                  const std::optional<at::Tensor>& skip) {
    TORCH_CHECK(features.device().is_cpu(), "bilayer::heads_tail runs on CPU tensors");
    TORCH_CHECK(weight.dim() == 4 && weight.size(0) == 6, "bilayer::heads_tail expects a (6, C, 3, 3) weight");
    const int64_t b = features.size(0), c = features.size(1), h = grid.size(1), w = grid.size(2);
    const auto s = features.strides();
    // the loop's row y + crop = 2i + p: plain features split their row stride in two, sub-pixel phases have it
    // split already
    int64_t fs[6];
    int64_t crop = 0;
    if (features.dim() == 4) {
        const int64_t plain[6] = {s[0], s[1], 2 * s[2], s[2], 2 * s[3], s[3]};
        for (int k = 0; k < 6; ++k) fs[k] = plain[k];
    } else {
        for (int k = 0; k < 6; ++k) fs[k] = s[k];
        crop = 1;
    }
    int64_t ss[4] = {0, 0, 0, 0};
    int shift = 0;
    if (skip.has_value()) {
        for (int k = 0; k < 4; ++k) ss[k] = skip->stride(k);
        shift = skip->size(2) == h ? 0 : 1;
    }
    const int64_t ws[4] = {weight.stride(0), weight.stride(1), weight.stride(2), weight.stride(3)};
    // one texture for every frame: frame stride 0
    const int64_t ts[4] = {texture.size(0) == 1 ? 0 : texture.stride(0), texture.stride(1), texture.stride(2),
                           texture.stride(3)};
    const at::Tensor bias_c = bias.contiguous(), grid_c = grid.contiguous();
    auto options = features.options().dtype(at::kFloat).memory_format(at::MemoryFormat::Contiguous);
    at::Tensor image = at::empty({b, 3, h, w}, options), mask = at::empty({b, 1, h, w}, options);
    const int threads = at::get_num_threads();
    int status;
    if (features.scalar_type() == at::kBFloat16) {
        const at::BFloat16* skip_p = skip.has_value() ? skip->const_data_ptr<at::BFloat16>() : nullptr;
        const features_t<uint16_t> f = {reinterpret_cast<const uint16_t*>(features.const_data_ptr<at::BFloat16>()),
                                        fs, crop, reinterpret_cast<const uint16_t*>(skip_p), ss, shift};
        status = heads_tail(f, c, weight.const_data_ptr<float>(), ws, bias_c.const_data_ptr<float>(),
                            (float)negative_slope, grid_c.const_data_ptr<float>(), texture.const_data_ptr<float>(),
                            ts, image.data_ptr<float>(), mask.data_ptr<float>(), b, h, w, texture.size(2),
                            texture.size(3), threads);
    } else {
        TORCH_CHECK(features.scalar_type() == at::kFloat, "bilayer::heads_tail reads float32 or bfloat16 features");
        const features_t<float> f = {features.const_data_ptr<float>(), fs, crop,
                                     skip.has_value() ? skip->const_data_ptr<float>() : nullptr, ss, shift};
        status = heads_tail(f, c, weight.const_data_ptr<float>(), ws, bias_c.const_data_ptr<float>(),
                            (float)negative_slope, grid_c.const_data_ptr<float>(), texture.const_data_ptr<float>(),
                            ts, image.data_ptr<float>(), mask.data_ptr<float>(), b, h, w, texture.size(2),
                            texture.size(3), threads);
    }
    TORCH_CHECK(status == 0, "bilayer::heads_tail could not allocate its row buffers");
    return {image, mask};
}

}  // namespace

// flexible_layout: the loop reads its inputs through their strides, so inductor hands them over in whatever
// layout their producers wrote (the default, the strides of the traced graph, would cost a copy)
// The namespace is a build setting (BILAYER_NAMESPACE, default bilayer) so that tests can load a second build
// beside the first; the indirection lets the macro expand before TORCH_LIBRARY_FRAGMENT pastes it into its names
// (a fragment: the Python side defines bilayer::warp in the same namespace).
#ifndef BILAYER_NAMESPACE
#define BILAYER_NAMESPACE bilayer
#endif
#define BILAYER_LIBRARY(ns, m) TORCH_LIBRARY_FRAGMENT(ns, m)
#define BILAYER_LIBRARY_IMPL(ns, key, m) TORCH_LIBRARY_IMPL(ns, key, m)

BILAYER_LIBRARY(BILAYER_NAMESPACE, m) {
    m.def("heads_tail(Tensor features, Tensor weight, Tensor bias, float negative_slope, Tensor grid, "
          "Tensor texture, Tensor? skip=None) -> (Tensor, Tensor)",
          {at::Tag::flexible_layout});
}

BILAYER_LIBRARY_IMPL(BILAYER_NAMESPACE, CPU, m) { m.impl("heads_tail", heads_tail_cpu); }
