// Per-layer arithmetic of a MobileNetV3-style inverted-bottleneck chain with BatchNorm folded into
// the convolutions (inference), called by both the CPU and the CUDA kernel of padnet_encoder so
// that the CPU tests exercise the arithmetic the GPU runs.
//
// Activations are planar (C, H, W) per image. The functions compute spans or tiles of outputs:
// the CPU kernel passes long spans / vector-sized tiles (the inner loops vectorise), a CUDA thread
// one output element. The sums run in a fixed order whatever the span (bias first, then the taps
// / input channels in index order), so CPU and CUDA round the same way.
//
// Conventions of the folded layers (all match torch's modules in eval mode):
//   1x1 conv:  out = act(b + sum_c w[c] in[c])
//   KxK depthwise (and the single-input-channel stem): zero padding K/2, stride S,
//              out(oy, ox) = act(b + sum_{ky,kx} w[ky K + kx] in(oy S - K/2 + ky, ox S - K/2 + kx))
//   SE (xiaolai-sqlai/mobilenetv3 layout, BN folded into both FCs):
//              h_j = relu(b1_j + sum_c w1[j, c] mean_c),  g_c = hardsigmoid(b2_c + sum_j w2[c, j] h_j)
//   block end: y = y * g + residual   (g = 1 without SE; residual absent at stride 2)
//   hardswish(x) = x * min(max(x + 3, 0), 6) / 6, hardsigmoid(x) = min(max(x + 3, 0), 6) / 6
//   (torch's formulas, in torch's order of operations).
#pragma once
#include <cstdint>

#include "fastvision/macros.h"

// Keeps GCC from unrolling a loop over input channels: unrolled, its SLP vectoriser packs
// weights of consecutive channels into vectors (shuffles) instead of vectorising over the pixels.
#if defined(__CUDACC__) || !defined(__GNUC__) || defined(__clang__)
#define FV_IB_KEEP_LOOP
#else
#define FV_IB_KEEP_LOOP _Pragma("GCC unroll 1")
#endif

namespace fastvision::ib {

enum class Act { kIdentity, kReLU, kHardswish };

// min(max(x, 0), 6), NaN propagating like torch's clamp.
template <typename A>
FV_HOST_DEVICE FV_INLINE A clamp_0_6(A x) {
  return x < A(0) ? A(0) : (x > A(6) ? A(6) : x);
}

template <typename A>
FV_HOST_DEVICE FV_INLINE A hardsigmoid(A x) {
  return clamp_0_6(x + A(3)) / A(6);
}

template <Act ACT, typename A>
FV_HOST_DEVICE FV_INLINE A activate(A x) {
  if constexpr (ACT == Act::kReLU) {
    return x < A(0) ? A(0) : x;
  } else if constexpr (ACT == Act::kHardswish) {
    return x * clamp_0_6(x + A(3)) / A(6);
  } else {
    return x;
  }
}

// A tile of a 1x1 conv: OB output channels x T pixels,
//   out[j * out_stride + t] = act(b[j] + sum_c w[j * CIN + c] in[c * in_stride + t]),
// summed in channel order (so every tile shape rounds alike). The CPU kernel takes 4 x 8 tiles
// (the accumulators stay in vector registers), a CUDA thread a 1 x 1 tile.
template <int CIN, int OB, int T, Act ACT, typename A>
FV_HOST_DEVICE FV_INLINE void conv1x1_tile(const A* __restrict__ in, int64_t in_stride,
                                           const A* __restrict__ w, const A* __restrict__ b,
                                           A* __restrict__ out, int64_t out_stride) {
  A acc[OB][T];
  for (int j = 0; j < OB; ++j) {
    for (int t = 0; t < T; ++t) {
      acc[j][t] = b[j];
    }
  }
  FV_IB_KEEP_LOOP
  for (int c = 0; c < CIN; ++c) {
    A v[T];
    for (int t = 0; t < T; ++t) {
      v[t] = in[c * in_stride + t];
    }
    for (int j = 0; j < OB; ++j) {
      const A wj = w[j * CIN + c];
      for (int t = 0; t < T; ++t) {
        acc[j][t] += wj * v[t];
      }
    }
  }
  for (int j = 0; j < OB; ++j) {
    for (int t = 0; t < T; ++t) {
      out[j * out_stride + t] = activate<ACT>(acc[j][t]);
    }
  }
}

// Output columns ox of row oy whose tap kx reads an input column inside [0, W): ox in [lo, hi).
template <int K, int S>
FV_HOST_DEVICE FV_INLINE void valid_columns(int kx, int64_t W, int64_t& lo, int64_t& hi) {
  constexpr int P = K / 2;
  // ox * S - P + kx >= 0  <=>  ox >= ceil((P - kx) / S)
  lo = P - kx <= 0 ? 0 : (P - kx + S - 1) / S;
  // ox * S - P + kx <= W - 1  <=>  ox <= floor((W - 1 + P - kx) / S)
  hi = W - 1 + P - kx < 0 ? 0 : (W - 1 + P - kx) / S + 1;
}

// Outputs ox0 .. ox0 + n - 1 of row oy of a KxK stride-S conv of one input plane (H, W) with one
// filter w (K*K), zero padding K/2: the depthwise conv per channel, and the stem per output channel.
template <int K, int S, Act ACT, typename A>
FV_HOST_DEVICE FV_INLINE void depthwise_span(const A* __restrict__ in, int64_t H, int64_t W,
                                             const A* __restrict__ w, A b, int64_t oy,
                                             int64_t ox0, int64_t n, A* __restrict__ out) {
  constexpr int P = K / 2;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = b;
  }
  for (int ky = 0; ky < K; ++ky) {
    const int64_t iy = oy * S - P + ky;
    if (iy < 0 || iy >= H) {
      continue;
    }
    const A* __restrict__ row = in + iy * W;
    for (int kx = 0; kx < K; ++kx) {
      const A wk = w[ky * K + kx];
      int64_t lo, hi;
      valid_columns<K, S>(kx, W, lo, hi);
      lo = lo > ox0 ? lo : ox0;
      hi = hi < ox0 + n ? hi : ox0 + n;
      for (int64_t ox = lo; ox < hi; ++ox) {
        out[ox - ox0] += wk * row[ox * S - P + kx];
      }
    }
  }
  if constexpr (ACT != Act::kIdentity) {
    for (int64_t i = 0; i < n; ++i) {
      out[i] = activate<ACT>(out[i]);
    }
  }
}

// One output (oy, ox) of depthwise_span (n = 1), read from a window of the input plane: win[r *
// win_stride + c] holds input (wy0 + r, wx0 + c), and the window covers every tap inside the
// image. Same taps in the same order as depthwise_span (taps outside [0, H) x [0, W) skipped), so
// the same rounding; used by the CUDA kernel, whose input tiles live in shared memory.
template <int K, int S, Act ACT, typename A>
FV_HOST_DEVICE FV_INLINE A depthwise_window_at(const A* __restrict__ win, int64_t win_stride,
                                               int64_t wy0, int64_t wx0, int64_t H, int64_t W,
                                               const A* __restrict__ w, A b, int64_t oy,
                                               int64_t ox) {
  constexpr int P = K / 2;
  A out = b;
  for (int ky = 0; ky < K; ++ky) {
    const int64_t iy = oy * S - P + ky;
    if (iy < 0 || iy >= H) {
      continue;
    }
    const A* __restrict__ row = win + (iy - wy0) * win_stride;
    for (int kx = 0; kx < K; ++kx) {
      const int64_t ix = ox * S - P + kx;
      if (ix >= 0 && ix < W) {
        out += w[ky * K + kx] * row[ix - wx0];
      }
    }
  }
  return activate<ACT>(out);
}

// Continues a 1x1 conv's sum over CN more input channels: acc + sum_c w[c] in[c * in_stride], in
// channel order (conv1x1_tile's order, so a sum split into channel groups rounds alike).
template <int CN, typename A>
FV_HOST_DEVICE FV_INLINE A conv1x1_accumulate(A acc, const A* __restrict__ in, int64_t in_stride,
                                              const A* __restrict__ w) {
  for (int c = 0; c < CN; ++c) {
    acc += w[c] * in[c * in_stride];
  }
  return acc;
}

// SE squeeze unit j: relu(b1 + sum_c w1row[c] mean[c]).
template <int C, typename A>
FV_HOST_DEVICE FV_INLINE A se_squeeze(const A* __restrict__ mean, const A* __restrict__ w1row,
                                      A b1) {
  A s = b1;
  for (int c = 0; c < C; ++c) {
    s += w1row[c] * mean[c];
  }
  return activate<Act::kReLU>(s);
}

// SE gate of channel c: hardsigmoid(b2 + sum_j w2row[j] hidden[j]).
template <int SQ, typename A>
FV_HOST_DEVICE FV_INLINE A se_gate(const A* __restrict__ hidden, const A* __restrict__ w2row,
                                   A b2) {
  A s = b2;
  for (int j = 0; j < SQ; ++j) {
    s += w2row[j] * hidden[j];
  }
  return hardsigmoid(s);
}

// Block end over n outputs of one channel: y = y * g (SE gate) + res (residual, may be null).
template <bool GATE, typename A>
FV_HOST_DEVICE FV_INLINE void gate_residual_span(A* __restrict__ y, A g,
                                                 const A* __restrict__ res, int64_t n) {
  if (res != nullptr) {
    for (int64_t i = 0; i < n; ++i) {
      y[i] = (GATE ? y[i] * g : y[i]) + res[i];
    }
  } else if (GATE) {
    for (int64_t i = 0; i < n; ++i) {
      y[i] = y[i] * g;
    }
  }
}

// Spatial size after a KxK conv with padding K/2 and stride S.
template <int K, int S>
FV_HOST_DEVICE FV_INLINE int64_t conv_out_size(int64_t n) {
  return (n + 2 * (K / 2) - K) / S + 1;
}

// One bneck with compile-time sizes: (kernel, in, expansion, out, SE, nonlinearity, stride), as
// PAD-Net's Table 1 lists them. SE reduction 4; a residual at stride 1, through a folded 1x1
// conv when the widths differ.
template <int K_, int CIN_, int EXP_, int COUT_, bool SE_, Act ACT_, int S_>
struct BneckSpec {
  static constexpr int K = K_, CIN = CIN_, EXP = EXP_, COUT = COUT_, S = S_;
  static constexpr bool SE = SE_;
  static constexpr Act ACT = ACT_;
  static constexpr int SQ = COUT / 4;
  static constexpr bool RESIDUAL = S == 1;
  static constexpr bool SHORTCUT_CONV = S == 1 && CIN != COUT;
  // Packed parameter count, in the order of BneckWeights.
  static constexpr int64_t kParams = int64_t{EXP} * CIN + EXP + int64_t{EXP} * K * K + EXP +
                                     int64_t{COUT} * EXP + COUT +
                                     (SE ? int64_t{SQ} * COUT + SQ + int64_t{COUT} * SQ + COUT : 0) +
                                     (SHORTCUT_CONV ? int64_t{COUT} * CIN + COUT : 0);
  static_assert(!SE || SQ >= 1, "SE needs at least 4 output channels");
};

// Pointers into the packed parameters of one bneck; row-major weights, each followed by its bias:
// expand (EXP, CIN), depthwise (EXP, K*K), project (COUT, EXP), [SE reduce (SQ, COUT),
// SE expand (COUT, SQ)], [shortcut (COUT, CIN)].
template <typename A>
struct BneckWeights {
  const A *expand_w, *expand_b, *dw_w, *dw_b, *project_w, *project_b;
  const A *se1_w, *se1_b, *se2_w, *se2_b, *shortcut_w, *shortcut_b;
};

// Returns p and advances it past count parameters.
template <typename A>
FV_HOST_DEVICE FV_INLINE const A* take_params(const A*& p, int64_t count) {
  const A* q = p;
  p += count;
  return q;
}

// The weights of one bneck at p; advances p past them.
template <class Spec, typename A>
FV_HOST_DEVICE FV_INLINE BneckWeights<A> bind_bneck(const A*& p) {
  BneckWeights<A> wt{};
  wt.expand_w = take_params(p, int64_t{Spec::EXP} * Spec::CIN);
  wt.expand_b = take_params(p, int64_t{Spec::EXP});
  wt.dw_w = take_params(p, int64_t{Spec::EXP} * Spec::K * Spec::K);
  wt.dw_b = take_params(p, int64_t{Spec::EXP});
  wt.project_w = take_params(p, int64_t{Spec::COUT} * Spec::EXP);
  wt.project_b = take_params(p, int64_t{Spec::COUT});
  if constexpr (Spec::SE) {
    wt.se1_w = take_params(p, int64_t{Spec::SQ} * Spec::COUT);
    wt.se1_b = take_params(p, int64_t{Spec::SQ});
    wt.se2_w = take_params(p, int64_t{Spec::COUT} * Spec::SQ);
    wt.se2_b = take_params(p, int64_t{Spec::COUT});
  }
  if constexpr (Spec::SHORTCUT_CONV) {
    wt.shortcut_w = take_params(p, int64_t{Spec::COUT} * Spec::CIN);
    wt.shortcut_b = take_params(p, int64_t{Spec::COUT});
  }
  return wt;
}

}  // namespace fastvision::ib
