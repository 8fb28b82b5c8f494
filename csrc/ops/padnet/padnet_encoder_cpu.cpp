// CPU kernel of padnet_encoder: PAD-Net's whole encoder with BatchNorm folded, in one pass per
// image.
//
// Batches of at least as many images as threads: at::parallel_for over the batch, one image at a
// time per thread; the thread's scratch buffer (ScratchPlan, allocated once per thread and call)
// holds the image's intermediate activations, so nothing but the input and the three taps touches
// memory shared between threads. Smaller batches (batch 1): one image after the other, each
// layer's work split over the threads (expansion groups, pixel ranges, channels; one expansion
// buffer per thread), with the same values. Layers run one after the other on planar (C, H, W)
// activations; a bneck's expansion is made 16 channels at a time and fed straight to the
// depthwise conv, so the expanded tensor is never whole in memory.
//
// Two builds of the layers, chosen at run time (the library targets the x86-64 baseline):
// * baseline (any floating type; float32 on CPUs without AVX2 + FMA): the arithmetic of
//   fastvision/inverted_bottleneck.h, shared with the CUDA kernel; 1x1 convs in register tiles of
//   4 channels x 8 pixels;
// * float32 with AVX2 + FMA (namespace avx2): the same sums in the same order (bias first, then
//   the input channels / taps in index order) with fused multiply-adds, i.e. one rounding per
//   term instead of two (as CUDA, whose compiler contracts a*b+c): 1x1 convs in tiles of 4
//   channels x 24 pixels (twelve ymm accumulators), 3x3 depthwise / stem keeping 8 outputs of a
//   row in a register for all nine taps, SE means summed in double in 16 partial sums.
// float16 / bfloat16 inputs are computed in float32.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>
#include <type_traits>
#include <vector>

#include "fastvision/cpu_simd.h"
#include "fastvision/inverted_bottleneck.h"
#include "padnet_encoder_common.h"

namespace fastvision::padnet {

namespace {

using ib::Act;

// 1x1 convs in tiles of kOB output channels x kT pixels (8 float accumulators of 4 lanes).
constexpr int kOB = 4;
constexpr int kT = 8;
// Expanded channels made at a time, then fed to the depthwise conv while in cache.
constexpr int kExpandGroup = 16;

// NOUT output planes of a 1x1 conv over m pixels (in: CIN planes, out: NOUT planes, both with
// plane stride n). Pixel tiles outside, channel groups inside: a tile's inputs stay in L1 while
// every output channel reads them.
// The loop vectoriser is off here: it vectorises the loop over channel groups (transposing
// weights and inputs); the tiles' own straight-line code vectorises over the pixels (SLP).
template <int CIN, int NOUT, Act ACT, typename A>
__attribute__((optimize("no-tree-loop-vectorize"))) void conv1x1_planes(const A* in, const A* w,
                                                                        const A* b, int64_t n,
                                                                        int64_t m, A* out) {
  static_assert(NOUT % kOB == 0, "PAD-Net's widths are multiples of 4");
  int64_t i = 0;
  for (; i + kT <= m; i += kT) {
    for (int o = 0; o < NOUT; o += kOB) {
      ib::conv1x1_tile<CIN, kOB, kT, ACT>(in + i, n, w + o * CIN, b + o, out + o * n + i, n);
    }
  }
  for (; i < m; ++i) {
    for (int o = 0; o < NOUT; o += kOB) {
      ib::conv1x1_tile<CIN, kOB, 1, ACT>(in + i, n, w + o * CIN, b + o, out + o * n + i, n);
    }
  }
}

#if FV_X86_SIMD
// The float32 layers for CPUs with AVX2 + FMA (see the top of the file); the block ends are
// ib::gate_residual_span compiled for AVX2 (no contraction: -ffp-contract=off).
namespace avx2 {

inline bool available() { return cpu_avx2_fma(); }

// ib::activate on 8 lanes, NaN propagating: max/min return their second operand when either is
// NaN, and max(0, -0) = -0 as in ib::clamp_0_6.
template <Act ACT>
FV_TARGET_AVX2 __attribute__((always_inline)) inline __m256 activate8(__m256 x) {
  if constexpr (ACT == Act::kReLU) {
    return _mm256_max_ps(_mm256_setzero_ps(), x);
  } else if constexpr (ACT == Act::kHardswish) {
    const __m256 c = _mm256_min_ps(_mm256_set1_ps(6.0f),
                                   _mm256_max_ps(_mm256_setzero_ps(),
                                                 _mm256_add_ps(x, _mm256_set1_ps(3.0f))));
    return _mm256_div_ps(_mm256_mul_ps(x, c), _mm256_set1_ps(6.0f));
  } else {
    return x;
  }
}

// 4 output channels x 8 NV pixels: out[j * n + t] = act(b[j] + sum_c w[j * CIN + c] in[c * n + t]).
template <int CIN, int NV, Act ACT>
FV_TARGET_AVX2 __attribute__((always_inline)) inline void conv1x1_tile(
    const float* __restrict__ in, int64_t n, const float* __restrict__ w,
    const float* __restrict__ b, float* __restrict__ out) {
  __m256 acc[4][NV];
  for (int j = 0; j < 4; ++j) {
    for (int v = 0; v < NV; ++v) {
      acc[j][v] = _mm256_broadcast_ss(b + j);
    }
  }
  for (int c = 0; c < CIN; ++c) {
    __m256 x[NV];
    for (int v = 0; v < NV; ++v) {
      x[v] = _mm256_loadu_ps(in + c * n + 8 * v);
    }
    for (int j = 0; j < 4; ++j) {
      const __m256 wj = _mm256_broadcast_ss(w + j * CIN + c);
      for (int v = 0; v < NV; ++v) {
        acc[j][v] = _mm256_fmadd_ps(wj, x[v], acc[j][v]);
      }
    }
  }
  for (int j = 0; j < 4; ++j) {
    for (int v = 0; v < NV; ++v) {
      _mm256_storeu_ps(out + j * n + 8 * v, activate8<ACT>(acc[j][v]));
    }
  }
}

// conv1x1_planes with the tiles above (24, 16, then 8 pixels; scalar fused multiply-adds for the
// last m % 8 pixels).
template <int CIN, int NOUT, Act ACT>
FV_TARGET_AVX2 void conv1x1_planes(const float* in, const float* w,
                                                       const float* b, int64_t n, int64_t m,
                                                       float* out) {
  static_assert(NOUT % 4 == 0, "PAD-Net's widths are multiples of 4");
  int64_t i = 0;
  for (; i + 24 <= m; i += 24) {
    for (int o = 0; o < NOUT; o += 4) {
      conv1x1_tile<CIN, 3, ACT>(in + i, n, w + o * CIN, b + o, out + o * n + i);
    }
  }
  for (; i + 16 <= m; i += 16) {
    for (int o = 0; o < NOUT; o += 4) {
      conv1x1_tile<CIN, 2, ACT>(in + i, n, w + o * CIN, b + o, out + o * n + i);
    }
  }
  for (; i + 8 <= m; i += 8) {
    for (int o = 0; o < NOUT; o += 4) {
      conv1x1_tile<CIN, 1, ACT>(in + i, n, w + o * CIN, b + o, out + o * n + i);
    }
  }
  for (; i < m; ++i) {
    for (int o = 0; o < NOUT; ++o) {
      float acc = b[o];
      for (int c = 0; c < CIN; ++c) {
        acc = __builtin_fmaf(w[o * CIN + c], in[c * n + i], acc);
      }
      out[o * n + i] = ib::activate<ACT>(acc);
    }
  }
}

// De-interleaved lanes of 16 consecutive floats (lo: 0-7, hi: 8-15): evens 0, 2, ..., 14 and
// odds 1, 3, ..., 15.
FV_TARGET_AVX2 __attribute__((always_inline)) inline __m256 evens(__m256 lo, __m256 hi) {
  const __m256d pairs = _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(pairs, 0xD8));
}
FV_TARGET_AVX2 __attribute__((always_inline)) inline __m256 odds(__m256 lo, __m256 hi) {
  const __m256d pairs = _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0xDD));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(pairs, 0xD8));
}

// One output of a 3x3 stride-S conv with zero padding 1 (scalar, fused multiply-adds).
template <int S, Act ACT>
FV_TARGET_AVX2 inline float dw3_point(const float* in, int64_t H, int64_t W,
                                                          const float* w, float b, int64_t oy,
                                                          int64_t ox) {
  float acc = b;
  for (int ky = 0; ky < 3; ++ky) {
    const int64_t iy = oy * S - 1 + ky;
    if (iy < 0 || iy >= H) {
      continue;
    }
    for (int kx = 0; kx < 3; ++kx) {
      const int64_t ix = ox * S - 1 + kx;
      if (ix >= 0 && ix < W) {
        acc = __builtin_fmaf(w[ky * 3 + kx], in[iy * W + ix], acc);
      }
    }
  }
  return ib::activate<ACT>(acc);
}

// Outputs ox .. ox + 7 of a row (all their input columns inside the row; input rows iy0 + ky for
// ky in [ky0, ky1)) into o[ox ..].
template <int S, Act ACT>
FV_TARGET_AVX2 __attribute__((always_inline)) inline void dw3_vector(
    const float* in, int64_t W, const float* w, __m256 bv, int64_t iy0, int ky0, int ky1,
    int64_t ox, float* o) {
  __m256 acc = bv;
  for (int ky = ky0; ky < ky1; ++ky) {
    const float* row = in + (iy0 + ky) * W;
    const __m256 w0 = _mm256_broadcast_ss(w + ky * 3), w1 = _mm256_broadcast_ss(w + ky * 3 + 1),
                 w2 = _mm256_broadcast_ss(w + ky * 3 + 2);
    if constexpr (S == 1) {
      const float* base = row + ox - 1;
      acc = _mm256_fmadd_ps(w0, _mm256_loadu_ps(base), acc);
      acc = _mm256_fmadd_ps(w1, _mm256_loadu_ps(base + 1), acc);
      acc = _mm256_fmadd_ps(w2, _mm256_loadu_ps(base + 2), acc);
    } else {
      // Columns 2 ox - 1 + kx: base[0..16], read no further than the last tap.
      const float* base = row + 2 * ox - 1;
      const __m256 lo = _mm256_loadu_ps(base), hi = _mm256_loadu_ps(base + 8);
      const __m256 lo1 = _mm256_loadu_ps(base + 1), hi1 = _mm256_loadu_ps(base + 9);
      acc = _mm256_fmadd_ps(w0, evens(lo, hi), acc);
      acc = _mm256_fmadd_ps(w1, odds(lo, hi), acc);
      acc = _mm256_fmadd_ps(w2, odds(lo1, hi1), acc);
    }
  }
  _mm256_storeu_ps(o + ox, activate8<ACT>(acc));
}

// A 3x3 stride-S conv of one plane (H, W) -> (Ho, Wo), zero padding 1: ib::depthwise_span's sums
// (bias, then the valid taps in order) with fused multiply-adds, 8 outputs of a row in a register
// for all 9 taps. Columns whose taps are all inside the row in vectors (the last vector
// overlapping the previous one), the others one at a time.
template <int S, Act ACT>
FV_TARGET_AVX2 void depthwise3_plane(const float* in, int64_t H, int64_t W,
                                                         const float* w, float b, int64_t Ho,
                                                         int64_t Wo, float* out) {
  // Interior output columns [1, xhi]: input columns ox*S - 1 .. ox*S + 1 inside [0, W).
  const int64_t xhi = S == 1 ? W - 2 : (W - 2) / 2;
  const bool vec = xhi >= 8;
  const __m256 bv = _mm256_set1_ps(b);
  for (int64_t oy = 0; oy < Ho; ++oy) {
    float* o = out + oy * Wo;
    const int64_t iy0 = oy * S - 1;
    const int ky0 = iy0 < 0 ? 1 : 0;
    const int ky1 = iy0 + 2 < H ? 3 : static_cast<int>(H - iy0);
    if (vec) {
      o[0] = dw3_point<S, ACT>(in, H, W, w, b, oy, 0);
      int64_t ox = 1;
      for (; ox + 8 <= xhi + 1; ox += 8) {
        dw3_vector<S, ACT>(in, W, w, bv, iy0, ky0, ky1, ox, o);
      }
      if (ox <= xhi) {
        dw3_vector<S, ACT>(in, W, w, bv, iy0, ky0, ky1, xhi - 7, o);
      }
      for (ox = xhi + 1; ox < Wo; ++ox) {
        o[ox] = dw3_point<S, ACT>(in, H, W, w, b, oy, ox);
      }
    } else {
      for (int64_t ox = 0; ox < Wo; ++ox) {
        o[ox] = dw3_point<S, ACT>(in, H, W, w, b, oy, ox);
      }
    }
  }
}

// Sum of n floats in double: 16 partial sums (exact to far below float32 rounding either way).
FV_TARGET_AVX2 inline double plane_sum(const float* x, int64_t n) {
  __m256d s[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(),
                  _mm256_setzero_pd()};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int k = 0; k < 4; ++k) {
      s[k] = _mm256_add_pd(s[k], _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4 * k)));
    }
  }
  alignas(32) double lanes[16];
  for (int k = 0; k < 4; ++k) {
    _mm256_store_pd(lanes + 4 * k, s[k]);
  }
  double total = 0;
  for (double v : lanes) {
    total += v;
  }
  for (; i < n; ++i) {
    total += static_cast<double>(x[i]);
  }
  return total;
}

template <bool GATE>
FV_TARGET_AVX2 void gate_residual(float* y, float g, const float* res,
                                                      int64_t n) {
  ib::gate_residual_span<GATE>(y, g, res, n);
}

}  // namespace avx2
#endif

// The layer primitives of the baseline path (any floating type) and, with AVX2 set, of the
// AVX2 + FMA float path.
template <int K, int S, Act ACT, typename A>
void depthwise_plane(const A* in, int64_t H, int64_t W, const A* w, A b, int64_t Ho, int64_t Wo,
                     A* out) {
  for (int64_t oy = 0; oy < Ho; ++oy) {
    ib::depthwise_span<K, S, ACT>(in, H, W, w, b, oy, 0, Wo, out + oy * Wo);
  }
}

template <bool AVX2>
struct Layers {
  template <int CIN, int NOUT, Act ACT, typename A>
  static void conv1x1(const A* in, const A* w, const A* b, int64_t n, int64_t m, A* out) {
#if FV_X86_SIMD
    if constexpr (AVX2) {
      avx2::conv1x1_planes<CIN, NOUT, ACT>(in, w, b, n, m, out);
      return;
    }
#endif
    conv1x1_planes<CIN, NOUT, ACT>(in, w, b, n, m, out);
  }
  template <int K, int S, Act ACT, typename A>
  static void depthwise(const A* in, int64_t H, int64_t W, const A* w, A b, int64_t Ho,
                        int64_t Wo, A* out) {
#if FV_X86_SIMD
    if constexpr (AVX2) {
      static_assert(K == 3, "PAD-Net's convs are 3x3");
      avx2::depthwise3_plane<S, ACT>(in, H, W, w, b, Ho, Wo, out);
      return;
    }
#endif
    depthwise_plane<K, S, ACT>(in, H, W, w, b, Ho, Wo, out);
  }
  template <typename A>
  static double sum(const A* x, int64_t n) {
#if FV_X86_SIMD
    if constexpr (AVX2) {
      return avx2::plane_sum(x, n);
    }
#endif
    // In order: the mean of up to H*W terms stays exact to float32 rounding.
    double s = 0;
    for (int64_t i = 0; i < n; ++i) {
      s += static_cast<double>(x[i]);
    }
    return s;
  }
  template <bool GATE, typename A>
  static void gate_residual(A* y, A g, const A* res, int64_t n) {
#if FV_X86_SIMD
    if constexpr (AVX2) {
      avx2::gate_residual<GATE>(y, g, res, n);
      return;
    }
#endif
    ib::gate_residual_span<GATE>(y, g, res, n);
  }
};

// Runs f(begin, end) over [0, n): split over the threads (at::parallel_for, chunks of at least
// grain) when par, else in one call.
template <typename F>
void for_range(bool par, int64_t n, int64_t grain, const F& f) {
  if (par) {
    at::parallel_for(0, n, grain, f);
  } else {
    f(0, n);
  }
}

// 1x1 conv of NOUT planes over n pixels, split over the threads by pixel ranges when par (each
// output element is computed the same way whatever the split).
template <int CIN, int NOUT, Act ACT, class L, typename A>
void conv1x1_image(bool par, const A* in, const A* w, const A* b, int64_t n, A* out) {
  constexpr int64_t kChunk = 16;
  for_range(par, (n + kChunk - 1) / kChunk, 1, [&](int64_t t0, int64_t t1) {
    const int64_t i0 = t0 * kChunk, i1 = std::min(n, t1 * kChunk);
    L::template conv1x1<CIN, NOUT, ACT>(in + i0, w, b, n, i1 - i0, out + i0);
  });
}

// One bneck: in (CIN, H, W) -> out (COUT, Ho, Wo); e, d, r are scratch (ScratchPlan with
// kExpandGroup expanded planes held at a time; with par, one e of e_size elements per thread).
// par: the image's work split over the threads (expansion groups, pixel ranges, channels), for
// batches smaller than the thread count; the results do not depend on it.
template <class Spec, class L, typename A>
void bneck_cpu(bool par, const A* in, int64_t H, int64_t W, const A*& params, A* out, A* e,
               int64_t e_size, A* d, A* r) {
  constexpr int K = Spec::K, S = Spec::S, EXP = Spec::EXP, COUT = Spec::COUT;
  const ib::BneckWeights<A> wt = ib::bind_bneck<Spec>(params);
  const int64_t Ho = ib::conv_out_size<K, S>(H), Wo = ib::conv_out_size<K, S>(W);
  const int64_t HW = H * W, HWo = Ho * Wo;
  constexpr int G = EXP < kExpandGroup ? EXP : kExpandGroup;
  static_assert(EXP % G == 0);
  for_range(par, EXP / G, 1, [&](int64_t g0, int64_t g1) {
    A* et = e + (par ? at::get_thread_num() : 0) * e_size;
    for (int64_t g = g0; g < g1; ++g) {
      const int c0 = static_cast<int>(g) * G;
      L::template conv1x1<Spec::CIN, G, Spec::ACT>(in, wt.expand_w + c0 * Spec::CIN,
                                                   wt.expand_b + c0, HW, HW, et);
      for (int j = 0; j < G; ++j) {
        const int c = c0 + j;
        L::template depthwise<K, S, Spec::ACT>(et + j * HW, H, W, wt.dw_w + c * K * K,
                                               wt.dw_b[c], Ho, Wo, d + c * HWo);
      }
    }
  });
  conv1x1_image<EXP, COUT, Act::kIdentity, L>(par, d, wt.project_w, wt.project_b, HWo, out);
  A gate[COUT];
  if constexpr (Spec::SE) {
    A mean[COUT];
    for (int c = 0; c < COUT; ++c) {
      // double accumulation: the mean of up to H*W terms stays exact to float32 rounding.
      mean[c] = static_cast<A>(L::sum(out + c * HWo, HWo) / static_cast<double>(HWo));
    }
    A hidden[Spec::SQ];
    for (int j = 0; j < Spec::SQ; ++j) {
      hidden[j] = ib::se_squeeze<COUT>(mean, wt.se1_w + j * COUT, wt.se1_b[j]);
    }
    for (int c = 0; c < COUT; ++c) {
      gate[c] = ib::se_gate<Spec::SQ>(hidden, wt.se2_w + c * Spec::SQ, wt.se2_b[c]);
    }
  } else {
    std::fill(gate, gate + COUT, A(1));
  }
  const A* res = nullptr;
  if constexpr (Spec::SHORTCUT_CONV) {
    conv1x1_image<Spec::CIN, COUT, Act::kIdentity, L>(par, in, wt.shortcut_w, wt.shortcut_b, HW,
                                                      r);
    res = r;
  } else if constexpr (Spec::RESIDUAL) {
    res = in;
  }
  if (Spec::SE || res != nullptr) {
    for_range(par, COUT, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        L::template gate_residual<Spec::SE>(out + c * HWo, gate[c],
                                            res != nullptr ? res + c * HWo : nullptr, HWo);
      }
    });
  }
}

// The whole encoder for one image (H, W) into its three taps; par: see bneck_cpu (scratch then
// holds plan.e elements per thread for e after the other buffers).
template <int WIDTH, class L, typename A>
void encode_image(bool par, const A* img, int64_t H, int64_t W, const A* params,
                  const ScratchPlan& plan, A* scratch, A* t1, A* t2, A* t3) {
  using P = PadnetSpec<WIDTH>;
  A* a = scratch;
  A* b = a + plan.a;
  A* d = b + plan.b;
  A* r = d + plan.d;
  A* e = r + plan.r;
  const TapSizes s = tap_sizes(H, W);
  const A* p = params;
  const A* stem_w = ib::take_params(p, int64_t{P::STEM} * 9);
  const A* stem_b = ib::take_params(p, int64_t{P::STEM});
  for_range(par, P::STEM, 1, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      L::template depthwise<3, 1, Act::kHardswish>(img, H, W, stem_w + o * 9, stem_b[o], H, W,
                                                   a + o * H * W);
    }
  });
  bneck_cpu<typename P::B1, L>(par, a, s.h[0], s.w[0], p, b, e, plan.e, d, r);
  bneck_cpu<typename P::B2, L>(par, b, s.h[0], s.w[0], p, t1, e, plan.e, d, r);
  bneck_cpu<typename P::B3, L>(par, t1, s.h[0], s.w[0], p, a, e, plan.e, d, r);
  bneck_cpu<typename P::B4, L>(par, a, s.h[1], s.w[1], p, t2, e, plan.e, d, r);
  bneck_cpu<typename P::B5, L>(par, t2, s.h[1], s.w[1], p, a, e, plan.e, d, r);
  bneck_cpu<typename P::B6, L>(par, a, s.h[2], s.w[2], p, t3, e, plan.e, d, r);
}

// Batches of at least as many images as threads: one image at a time per thread, each thread with
// its own scratch. Smaller batches: one image after the other, each split over the threads.
template <int WIDTH, class L, typename A>
void encoder_impl(const at::Tensor& x, const at::Tensor& params, at::Tensor& t1, at::Tensor& t2,
                  at::Tensor& t3) {
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3);
  const ScratchPlan plan = scratch_plan<WIDTH>(H, W, kExpandGroup);
  const A* xd = x.const_data_ptr<A>();
  const A* pd = params.const_data_ptr<A>();
  A* o1 = t1.mutable_data_ptr<A>();
  A* o2 = t2.mutable_data_ptr<A>();
  A* o3 = t3.mutable_data_ptr<A>();
  const int64_t n1 = t1[0].numel(), n2 = t2[0].numel(), n3 = t3[0].numel();
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  if (B < threads) {
    std::vector<A> scratch(static_cast<size_t>(plan.total() + (threads - 1) * plan.e));
    for (int64_t b = 0; b < B; ++b) {
      encode_image<WIDTH, L, A>(true, xd + b * H * W, H, W, pd, plan, scratch.data(), o1 + b * n1,
                                o2 + b * n2, o3 + b * n3);
    }
    return;
  }
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<A> scratch(static_cast<size_t>(plan.total()));
    for (int64_t b = b0; b < b1; ++b) {
      encode_image<WIDTH, L, A>(false, xd + b * H * W, H, W, pd, plan, scratch.data(),
                                o1 + b * n1, o2 + b * n2, o3 + b * n3);
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> padnet_encoder_cpu(const at::Tensor& x,
                                                                  const at::Tensor& params,
                                                                  int64_t width) {
  constexpr const char* op = "padnet_encoder";
  check_padnet_encoder_args(x, params, width, op);
  const at::ScalarType ct = opmath_dtype(x.scalar_type());
  const at::Tensor xc = x.to(ct).contiguous(), pc = params.to(ct).contiguous();
  const int64_t B = x.size(0);
  const TapSizes s = tap_sizes(x.size(2), x.size(3));
  const std::array<int64_t, 3> ch = tap_channels(width);
  at::Tensor t1 = at::empty({B, ch[0], s.h[0], s.w[0]}, xc.options());
  at::Tensor t2 = at::empty({B, ch[1], s.h[1], s.w[1]}, xc.options());
  at::Tensor t3 = at::empty({B, ch[2], s.h[2], s.w[2]}, xc.options());
  if (B > 0) {
    AT_DISPATCH_FLOATING_TYPES(ct, "padnet_encoder_cpu", [&] {
      dispatch_width(width, [&](auto w) {
        constexpr int WIDTH = decltype(w)::value;
#if FV_X86_SIMD
        if constexpr (std::is_same_v<scalar_t, float>) {
          if (avx2::available()) {
            encoder_impl<WIDTH, Layers<true>, scalar_t>(xc, pc, t1, t2, t3);
            return;
          }
        }
#endif
        encoder_impl<WIDTH, Layers<false>, scalar_t>(xc, pc, t1, t2, t3);
      });
    });
  }
  return {t1.to(x.scalar_type()), t2.to(x.scalar_type()), t3.to(x.scalar_type())};
}

TORCH_LIBRARY_IMPL(fastvision, CPU, m) { m.impl("padnet_encoder", &padnet_encoder_cpu); }

}  // namespace fastvision::padnet
