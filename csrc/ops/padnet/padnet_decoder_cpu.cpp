// CPU kernel of padnet_decoder: PAD-Net's whole decoder (RefineDecoder with MDR chains) for
// inference, one image per thread, every intermediate in a per-thread scratch buffer.
//
// Why a fused decoder: the eager decoder runs ~60 small ops over (B, 4, H, W) tensors; at batch
// 256 each is a 22 MB pass through memory (the 5x5 max-pools, scanning 25 inputs per output,
// were 69% of its time). Here one image's decoder works on planes of at most 4-16 channels x
// 112 x 48 that stay in L1/L2, the 5x5 max-pool is separable (a row max then a column max over
// -inf padded rows, 10 comparisons instead of 25; max is exact, so the result is identical) and
// the 3x3 convolutions read zero-padded planes, so that every inner loop is a straight loop over
// a row that the compiler vectorises.
//
// The arithmetic, for decoder width C, per image (planar (C, H, W) activations):
//   x = project(deep)                                  1x1, no bias
//   chain(x): top = x; S times: top = pw(dw3x3(maxpool5(top))); x = x + top
//   fusion(coarse, fine) = relu6(merge3x3(cat(bilinear(coarse_1x1(coarse)), fine_1x1(fine))))
//   c1 = chain(project(deep)); c2 = chain(fusion1(c1, middle)); c3 = chain(fusion2(c2, fine))
//   logits = head(c3)                                  1x1 or 3x3 with bias, one channel
// Bilinear upsampling is PyTorch's align_corners=False (source index clamped at 0, the upper
// neighbour clamped to the last row / column). Sums run in a fixed order (bias, then input
// channels, then taps row by row), which differs from oneDNN's: equal to the eager decoder to
// float32 rounding, not bit for bit.
//
// Two builds, chosen at run time (fastvision/cpu_simd.h): the portable template, and for float32
// on CPUs with AVX2 + FMA the same template compiled for AVX2 (decode_images_avx2), whose helpers
// are inlined into it. No contraction either way (-ffp-contract=off): both builds round alike.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "fastvision/aten_opmath.h"
#include "fastvision/checks.h"
#include "fastvision/cpu_simd.h"

namespace fastvision::padnet {

namespace {

#define FV_INLINE __attribute__((always_inline)) inline

// Sizes of one decoder call. Level 0 is the fine tap's resolution, 1 the middle's, 2 the deep's.
struct DecoderGeometry {
  int64_t B = 0, C = 0, stages = 0, head_k = 1;
  int64_t cin[3] = {0, 0, 0};  // channels of the fine, middle and deep taps
  int64_t h[3] = {0, 0, 0}, w[3] = {0, 0, 0};

  int64_t param_count() const {
    const int64_t chain = stages * (C * 9 + C * C);
    const int64_t fusion_fixed = C * C + 2 * C * C * 9;
    return C * cin[2] + 3 * chain + 2 * fusion_fixed + C * cin[1] + C * cin[0] +
           head_k * head_k * C + 1;
  }
  // Elements of one thread's scratch (see Scratch).
  int64_t scratch_size() const {
    const int64_t hw = h[0] * w[0], padded = (h[0] + 4) * (w[0] + 4);
    return 5 * C * hw + 2 * C * padded + (w[0] + 4);
  }
};

// The packed parameters, in the order of RefineDecoder.parameters() (each weight row-major).
template <typename A>
struct DecoderWeights {
  const A* project;                   // (C, C_deep)
  const A* dw[3];                     // per chain: stages x (C, 3, 3)
  const A* pw[3];                     // per chain: stages x (C, C); interleaved with dw
  const A* coarse[2];                 // per fusion: (C, C)
  const A* fine[2];                   // per fusion: (C, C_tap)
  const A* merge[2];                  // per fusion: (C, 2C, 3, 3)
  const A* head_w;                    // (1, C, k, k)
  A head_b;
};

// Chains store dw and pw per stage one after the other (stage s: dw at s * (9C + C^2), pw 9C
// later), as the module's parameters() lists them.
template <typename A>
DecoderWeights<A> bind_weights(const A* p, const DecoderGeometry& g) {
  const int64_t C = g.C, chain = g.stages * (C * 9 + C * C);
  DecoderWeights<A> wt{};
  wt.project = p;
  p += C * g.cin[2];
  for (int i = 0; i < 3; ++i) {
    wt.dw[i] = p;
    wt.pw[i] = p + C * 9;
    p += chain;
    if (i < 2) {
      wt.coarse[i] = p;
      p += C * C;
      wt.fine[i] = p;
      p += C * g.cin[1 - i];
      wt.merge[i] = p;
      p += C * 2 * C * 9;
    }
  }
  wt.head_w = p;
  p += g.head_k * g.head_k * C;
  wt.head_b = *p;
  return wt;
}

// out[o] = sum_c w[o, c] in[c] over n pixels (planes of n elements).
template <typename A>
FV_INLINE void conv1x1(const A* __restrict__ in, int64_t cin, const A* __restrict__ w,
                       int64_t cout, int64_t n, A* __restrict__ out) {
  for (int64_t o = 0; o < cout; ++o) {
    A* __restrict__ y = out + o * n;
    const A w0 = w[o * cin];
    for (int64_t i = 0; i < n; ++i) y[i] = w0 * in[i];
    for (int64_t c = 1; c < cin; ++c) {
      const A wc = w[o * cin + c];
      const A* __restrict__ x = in + c * n;
      for (int64_t i = 0; i < n; ++i) y[i] += wc * x[i];
    }
  }
}

// Copies an (h, w) plane into the middle of an (h + 2p, w + 2p) plane filled with `fill`.
template <typename A>
FV_INLINE void pad_plane(const A* __restrict__ in, int64_t h, int64_t w, int64_t p, A fill,
                         A* __restrict__ out) {
  const int64_t pw = w + 2 * p;
  std::fill(out, out + p * pw, fill);
  for (int64_t y = 0; y < h; ++y) {
    A* row = out + (y + p) * pw;
    for (int64_t x = 0; x < p; ++x) row[x] = fill;
    std::copy(in + y * w, in + (y + 1) * w, row + p);
    for (int64_t x = p + w; x < pw; ++x) row[x] = fill;
  }
  std::fill(out + (h + p) * pw, out + (h + 2 * p) * pw, fill);
}

// max as PyTorch's max_pool2d takes it: a NaN anywhere in the window wins.
template <typename A>
FV_INLINE A max_nan(A m, A v) {
  return (v > m || v != v) ? v : m;
}

// 5x5 max-pool, stride 1, padding 2 (-inf), of one (h, w) plane. rows: (h + 4) x w scratch,
// line: w + 4 scratch. Row maxima of every row into rows (with two -inf rows above and below),
// then the column maxima of five rows.
template <typename A>
FV_INLINE void maxpool5(const A* __restrict__ in, int64_t h, int64_t w, A* __restrict__ rows,
                        A* __restrict__ line, A* __restrict__ out) {
  const A ninf = -std::numeric_limits<A>::infinity();
  std::fill(rows, rows + 2 * w, ninf);
  std::fill(rows + (h + 2) * w, rows + (h + 4) * w, ninf);
  line[0] = line[1] = line[w + 2] = line[w + 3] = ninf;
  for (int64_t y = 0; y < h; ++y) {
    std::copy(in + y * w, in + (y + 1) * w, line + 2);
    A* __restrict__ r = rows + (y + 2) * w;
    for (int64_t x = 0; x < w; ++x) {
      A m = line[x];
      m = max_nan(m, line[x + 1]);
      m = max_nan(m, line[x + 2]);
      m = max_nan(m, line[x + 3]);
      r[x] = max_nan(m, line[x + 4]);
    }
  }
  for (int64_t y = 0; y < h; ++y) {
    const A* __restrict__ r = rows + y * w;
    A* __restrict__ o = out + y * w;
    for (int64_t x = 0; x < w; ++x) {
      A m = r[x];
      m = max_nan(m, r[x + w]);
      m = max_nan(m, r[x + 2 * w]);
      m = max_nan(m, r[x + 3 * w]);
      o[x] = max_nan(m, r[x + 4 * w]);
    }
  }
}

// out (h, w) += the 3x3 taps k (row-major) over a zero-padded (h + 2, w + 2) plane.
template <typename A>
FV_INLINE void conv3x3_accumulate(const A* __restrict__ padded, int64_t h, int64_t w,
                                  const A* __restrict__ k, A* __restrict__ out) {
  const int64_t pw = w + 2;
  for (int64_t y = 0; y < h; ++y) {
    A* __restrict__ o = out + y * w;
    for (int ky = 0; ky < 3; ++ky) {
      const A* __restrict__ r = padded + (y + ky) * pw;
      const A k0 = k[ky * 3], k1 = k[ky * 3 + 1], k2 = k[ky * 3 + 2];
      for (int64_t x = 0; x < w; ++x) o[x] += k0 * r[x] + k1 * r[x + 1] + k2 * r[x + 2];
    }
  }
}

// Per-thread buffers, carved from one allocation of DecoderGeometry::scratch_size() elements
// (planes sized for the finest level; coarser levels use their beginning).
template <typename A>
struct Scratch {
  A* x;       // C planes: the chain's running sum (and the fusion output it starts from)
  A* top;     // C planes: the chain's top
  A* t1;      // C planes: pooled / projected coarse path
  A* t2;      // 2C planes: depthwise output / the concatenation of a fusion
  A* padded;  // 2C padded planes of (h + 4) x (w + 4): pool rows, zero-padded conv inputs
  A* line;    // w + 4: one -inf padded row

  Scratch(A* s, const DecoderGeometry& g) {
    const int64_t hw = g.h[0] * g.w[0], p = (g.h[0] + 4) * (g.w[0] + 4);
    x = s;
    top = x + g.C * hw;
    t1 = top + g.C * hw;
    t2 = t1 + g.C * hw;
    padded = t2 + 2 * g.C * hw;
    line = padded + 2 * g.C * p;
  }
};

// The chain on s.x (C planes of h x w): stages x (pool, depthwise 3x3, pointwise, add).
template <typename A>
FV_INLINE void chain(Scratch<A>& s, const DecoderGeometry& g, const A* dw, const A* pw, int64_t h,
                     int64_t w) {
  const int64_t C = g.C, hw = h * w, pplane = (h + 2) * (w + 2);
  std::copy(s.x, s.x + C * hw, s.top);
  for (int64_t st = 0; st < g.stages; ++st) {
    const A* dws = dw + st * (C * 9 + C * C);
    const A* pws = pw + st * (C * 9 + C * C);
    for (int64_t c = 0; c < C; ++c) {
      maxpool5(s.top + c * hw, h, w, s.padded, s.line, s.t1 + c * hw);
    }
    for (int64_t c = 0; c < C; ++c) {
      pad_plane(s.t1 + c * hw, h, w, int64_t{1}, A(0), s.padded + c * pplane);
      A* d = s.t2 + c * hw;
      std::fill(d, d + hw, A(0));
      conv3x3_accumulate(s.padded + c * pplane, h, w, dws + c * 9, d);
    }
    conv1x1(s.t2, C, pws, C, hw, s.top);
    for (int64_t i = 0; i < C * hw; ++i) s.x[i] += s.top[i];
  }
}

// PyTorch's align_corners=False source index of output index d (scale = in / out).
template <typename A>
FV_INLINE void linear_source(int64_t d, int64_t in, int64_t out, int64_t& i0, int64_t& i1,
                             A& l0, A& l1) {
  const A scale = static_cast<A>(in) / static_cast<A>(out);
  A src = scale * (static_cast<A>(d) + A(0.5)) - A(0.5);
  if (src < A(0)) src = A(0);
  i0 = static_cast<int64_t>(src);
  i1 = i0 + (i0 < in - 1 ? 1 : 0);
  l1 = std::min(std::max(src - static_cast<A>(i0), A(0)), A(1));
  l0 = A(1) - l1;
}

// Bilinear (align_corners=False) upsampling of C planes (hi, wi) -> (ho, wo); a copy when the
// sizes agree (fastvision.models.flops.Resize returns its input then).
template <typename A>
FV_INLINE void bilinear(const A* __restrict__ in, int64_t C, int64_t hi, int64_t wi, int64_t ho,
                        int64_t wo, A* __restrict__ out) {
  if (hi == ho && wi == wo) {
    std::copy(in, in + C * hi * wi, out);
    return;
  }
  for (int64_t y = 0; y < ho; ++y) {
    int64_t y0, y1;
    A ly0, ly1;
    linear_source<A>(y, hi, ho, y0, y1, ly0, ly1);
    for (int64_t x = 0; x < wo; ++x) {
      int64_t x0, x1;
      A lx0, lx1;
      linear_source<A>(x, wi, wo, x0, x1, lx0, lx1);
      for (int64_t c = 0; c < C; ++c) {
        const A* p = in + c * hi * wi;
        out[(c * ho + y) * wo + x] = ly0 * (lx0 * p[y0 * wi + x0] + lx1 * p[y0 * wi + x1]) +
                                     ly1 * (lx0 * p[y1 * wi + x0] + lx1 * p[y1 * wi + x1]);
      }
    }
  }
}

// Fusion of the chain output s.x (C planes at level l + 1) with a tap (cin planes at level l),
// result in s.x at level l.
template <typename A>
FV_INLINE void fusion(Scratch<A>& s, const DecoderGeometry& g, const DecoderWeights<A>& wt,
                      int i, const A* tap, int64_t cin, int64_t l) {
  const int64_t C = g.C, hc = g.h[l + 1], wc = g.w[l + 1], h = g.h[l], w = g.w[l];
  const int64_t hw = h * w, pplane = (h + 2) * (w + 2);
  conv1x1(s.x, C, wt.coarse[i], C, hc * wc, s.t1);
  bilinear(s.t1, C, hc, wc, h, w, s.t2);
  conv1x1(tap, cin, wt.fine[i], C, hw, s.t2 + C * hw);
  for (int64_t c = 0; c < 2 * C; ++c) {
    pad_plane(s.t2 + c * hw, h, w, int64_t{1}, A(0), s.padded + c * pplane);
  }
  const A* merge = wt.merge[i];
  for (int64_t o = 0; o < C; ++o) {
    A* y = s.x + o * hw;
    std::fill(y, y + hw, A(0));
    for (int64_t c = 0; c < 2 * C; ++c) {
      conv3x3_accumulate(s.padded + c * pplane, h, w, merge + (o * 2 * C + c) * 9, y);
    }
    // ReLU6 as F.hardtanh(0, 6): NaN stays NaN.
    for (int64_t k = 0; k < hw; ++k) {
      const A v = y[k];
      y[k] = v < A(0) ? A(0) : (v > A(6) ? A(6) : v);
    }
  }
}

// The decoder for one image: taps fine / middle / deep -> logits (h0, w0).
template <typename A>
FV_INLINE void decode_image(const DecoderGeometry& g, const DecoderWeights<A>& wt, const A* fine,
                            const A* middle, const A* deep, A* scratch, A* logits) {
  Scratch<A> s(scratch, g);
  const int64_t C = g.C;
  conv1x1(deep, g.cin[2], wt.project, C, g.h[2] * g.w[2], s.x);
  chain(s, g, wt.dw[0], wt.pw[0], g.h[2], g.w[2]);
  fusion(s, g, wt, 0, middle, g.cin[1], 1);
  chain(s, g, wt.dw[1], wt.pw[1], g.h[1], g.w[1]);
  fusion(s, g, wt, 1, fine, g.cin[0], 0);
  chain(s, g, wt.dw[2], wt.pw[2], g.h[0], g.w[0]);
  const int64_t h = g.h[0], w = g.w[0], hw = h * w;
  std::fill(logits, logits + hw, wt.head_b);
  if (g.head_k == 1) {
    for (int64_t c = 0; c < C; ++c) {
      const A wc = wt.head_w[c];
      const A* x = s.x + c * hw;
      for (int64_t i = 0; i < hw; ++i) logits[i] += wc * x[i];
    }
  } else {
    for (int64_t c = 0; c < C; ++c) {
      pad_plane(s.x + c * hw, h, w, int64_t{1}, A(0), s.padded);
      conv3x3_accumulate(s.padded, h, w, wt.head_w + c * 9, logits);
    }
  }
}

// Images [b0, b1) of the batch, each with the thread's scratch.
template <typename A>
void decode_images(const DecoderGeometry& g, const A* params, const A* fine, const A* middle,
                   const A* deep, A* logits, int64_t b0, int64_t b1) {
  const DecoderWeights<A> wt = bind_weights(params, g);
  std::vector<A> scratch(static_cast<size_t>(g.scratch_size()));
  const int64_t n0 = g.cin[0] * g.h[0] * g.w[0], n1 = g.cin[1] * g.h[1] * g.w[1],
                n2 = g.cin[2] * g.h[2] * g.w[2], n = g.h[0] * g.w[0];
  for (int64_t b = b0; b < b1; ++b) {
    decode_image(g, wt, fine + b * n0, middle + b * n1, deep + b * n2, scratch.data(),
                 logits + b * n);
  }
}

#if FV_X86_SIMD
FV_TARGET_AVX2 void decode_images_avx2(const DecoderGeometry& g, const float* params,
                                       const float* fine, const float* middle, const float* deep,
                                       float* logits, int64_t b0, int64_t b1) {
  const DecoderWeights<float> wt = bind_weights(params, g);
  std::vector<float> scratch(static_cast<size_t>(g.scratch_size()));
  const int64_t n0 = g.cin[0] * g.h[0] * g.w[0], n1 = g.cin[1] * g.h[1] * g.w[1],
                n2 = g.cin[2] * g.h[2] * g.w[2], n = g.h[0] * g.w[0];
  for (int64_t b = b0; b < b1; ++b) {
    decode_image<float>(g, wt, fine + b * n0, middle + b * n1, deep + b * n2, scratch.data(),
                        logits + b * n);
  }
}
#endif

#undef FV_INLINE

// Parallel over the batch, one image at a time per thread.
template <typename A>
void decoder_impl(const DecoderGeometry& g, const at::Tensor& params, const at::Tensor& fine,
                  const at::Tensor& middle, const at::Tensor& deep, at::Tensor& logits) {
  const A* pp = params.const_data_ptr<A>();
  const A* fp = fine.const_data_ptr<A>();
  const A* mp = middle.const_data_ptr<A>();
  const A* dp = deep.const_data_ptr<A>();
  A* out = logits.mutable_data_ptr<A>();
  at::parallel_for(0, g.B, 1, [&](int64_t b0, int64_t b1) {
#if FV_X86_SIMD
    if constexpr (std::is_same_v<A, float>) {
      if (cpu_avx2_fma()) {
        decode_images_avx2(g, pp, fp, mp, dp, out, b0, b1);
        return;
      }
    }
#endif
    decode_images<A>(g, pp, fp, mp, dp, out, b0, b1);
  });
}

}  // namespace

at::Tensor padnet_decoder_cpu(const at::Tensor& fine, const at::Tensor& middle,
                              const at::Tensor& deep, const at::Tensor& params, int64_t channels,
                              int64_t chain_stages, int64_t head_kernel) {
  constexpr const char* op = "padnet_decoder";
  FV_CHECK_VALUE(channels >= 1, op, "channels must be >= 1, got ", channels);
  FV_CHECK_VALUE(chain_stages >= 1, op, "chain_stages must be >= 1, got ", chain_stages);
  FV_CHECK_VALUE(head_kernel == 1 || head_kernel == 3, op, "head_kernel must be 1 or 3, got ",
                 head_kernel);
  const at::Tensor* taps[3] = {&fine, &middle, &deep};
  const char* names[3] = {"fine", "middle", "deep"};
  for (int i = 0; i < 3; ++i) {
    FV_CHECK(taps[i]->dim() == 4, op, names[i], " must have shape (B, C, H, W), got ",
             taps[i]->sizes());
    check_floating(*taps[i], op, names[i]);
    check_same_device(*taps[i], fine, op, names[i], "fine");
    check_same_dtype(*taps[i], fine, op, names[i], "fine");
    FV_CHECK(taps[i]->size(0) == fine.size(0), op, names[i], " must have the batch size of fine (",
             fine.size(0), "), got shape ", taps[i]->sizes());
    FV_CHECK(taps[i]->size(2) >= 1 && taps[i]->size(3) >= 1, op, names[i],
             " must have at least one row and one column, got shape ", taps[i]->sizes());
  }
  check_same_device(params, fine, op, "params", "fine");
  check_same_dtype(params, fine, op, "params", "fine");
  DecoderGeometry g;
  g.B = fine.size(0);
  g.C = channels;
  g.stages = chain_stages;
  g.head_k = head_kernel;
  for (int i = 0; i < 3; ++i) {
    g.cin[i] = taps[i]->size(1);
    g.h[i] = taps[i]->size(2);
    g.w[i] = taps[i]->size(3);
  }
  FV_CHECK(params.dim() == 1 && params.size(0) == g.param_count(), op,
           "params must be a 1-D tensor of the ", g.param_count(),
           " decoder parameters (fastvision.ops.pack_padnet_decoder) for these taps and channels=",
           channels, ", chain_stages=", chain_stages, ", head_kernel=", head_kernel,
           ", got shape ", params.sizes());
  const at::Tensor f = to_opmath(fine).contiguous(), m = to_opmath(middle).contiguous(),
                   d = to_opmath(deep).contiguous(), p = to_opmath(params).contiguous();
  at::Tensor logits = at::empty({g.B, 1, g.h[0], g.w[0]}, f.options());
  if (g.B > 0) {
    AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "padnet_decoder_cpu", [&] {
      decoder_impl<scalar_t>(g, p, f, m, d, logits);
    });
  }
  return logits.to(fine.scalar_type());
}

TORCH_LIBRARY_IMPL(fastvision, CPU, m) { m.impl("padnet_decoder", &padnet_decoder_cpu); }

}  // namespace fastvision::padnet
