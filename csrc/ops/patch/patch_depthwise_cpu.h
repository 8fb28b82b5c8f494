// The depthwise patch convolution at stride 1 (one input and one output channel per group:
// HyperSeg's 3x3 layers with a neighbour halo), forward and backward, one (image, channel) plane
// per work item. A per-cell direct convolution spends its time on the cell's edges (a 3x3 tap over
// an 8x8 cell is 8-pixel rows: loop and border overhead, not arithmetic), so the plane is handled
// in whole rows instead:
//   * the channel's input is copied once into a padded plane Xp ((H + 2 ph) x (W + 2 pw), the
//     border mapped by the padding mode), so every tap reads a plain shifted row;
//   * for each patch row, each tap's kernel entry is expanded along the row (wexp[t][x] = the
//     entry of the cell that output column x lies in; ragged cells need nothing special);
//   * forward:      out[y][x] = sum_t wexp[t][x] * Xp[y + ky dh][x + kx dw] (t in order, from
//                   zero; then the bias), vectorised over x;
//   * grad weight:  colsum[t][x] = sum_y g[y][x] * Xp[y + ky dh][x + kx dw] over the patch row's
//                   output rows (y in order), then each cell's columns summed in order;
//   * grad input:   dXp[y + ky dh][x + kx dw] += wexp[t][x] * g[y][x] (y, then t, in order), then
//                   dXp folded back through the padding mode into the channel's gradient plane,
//                   which only this work item writes (deterministic, no atomics, no zero fill of
//                   the input gradient).
// Multiplies and adds round separately (no FMA), so the portable and AVX2 builds agree bit for bit.
// Per thread: two padded planes and two (kh kw x Wo) rows of scratch.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "fastvision/cpu_simd.h"
#include "fastvision/patch_conv.h"

namespace fastvision::patch {

namespace depthwise_detail {

// Vectors of VB bytes move through __builtin_memcpy (unaligned; no function takes or returns a
// vector by value, which would change the baseline build's ABI). Columns past the last whole
// vector run the same body with one-lane "vectors" (plain T).

// Columns [x, n) in steps of NU values of U (a vector of lanes T, or T itself), each with its own
// accumulator (independent add chains: one chain would wait on the add latency); x is advanced.
// out[x] = bias + sum_t w[t * ws + x] * xp[off[t] + x].
template <typename U, int NU, typename T>
__attribute__((always_inline)) inline void forward_cols(const T* w, int64_t ws, const T* xp, const int64_t* off,
                                                        int taps, T bias, T* out, int64_t& x, int64_t n) {
  constexpr int64_t lanes = sizeof(U) / sizeof(T);
  for (; x + NU * lanes <= n; x += NU * lanes) {
    U acc[NU];
    for (int u = 0; u < NU; ++u) acc[u] = U{};
    for (int t = 0; t < taps; ++t) {
      const T* wt = w + t * ws + x;
      const T* xt = xp + off[t] + x;
      for (int u = 0; u < NU; ++u) {
        U wv, xv;
        __builtin_memcpy(&wv, wt + u * lanes, sizeof(U));
        __builtin_memcpy(&xv, xt + u * lanes, sizeof(U));
        acc[u] = acc[u] + wv * xv;
      }
    }
    for (int u = 0; u < NU; ++u) {
      acc[u] = acc[u] + bias;
      __builtin_memcpy(out + x + u * lanes, &acc[u], sizeof(U));
    }
  }
}

// colsum[x] = sum_{r < rows} g[r * gs + x] * xt[r * xs + x] (r in order); NU accumulators.
template <typename U, int NU, typename T>
__attribute__((always_inline)) inline void colsum_cols(const T* g, int64_t gs, const T* xt, int64_t xs, int64_t rows,
                                                       T* colsum, int64_t& x, int64_t n) {
  constexpr int64_t lanes = sizeof(U) / sizeof(T);
  for (; x + NU * lanes <= n; x += NU * lanes) {
    U acc[NU];
    for (int u = 0; u < NU; ++u) acc[u] = U{};
    for (int64_t r = 0; r < rows; ++r) {
      for (int u = 0; u < NU; ++u) {
        U gv, xv;
        __builtin_memcpy(&gv, g + r * gs + x + u * lanes, sizeof(U));
        __builtin_memcpy(&xv, xt + r * xs + x + u * lanes, sizeof(U));
        acc[u] = acc[u] + gv * xv;
      }
    }
    for (int u = 0; u < NU; ++u) __builtin_memcpy(colsum + x + u * lanes, &acc[u], sizeof(U));
  }
}

// d[x] += wt[x] * g[x].
template <typename U, typename T>
__attribute__((always_inline)) inline void axpy_cols(const T* wt, const T* g, T* d, int64_t& x, int64_t n) {
  constexpr int64_t lanes = sizeof(U) / sizeof(T);
  for (; x + lanes <= n; x += lanes) {
    U dv, wv, gv;
    __builtin_memcpy(&dv, d + x, sizeof(U));
    __builtin_memcpy(&wv, wt + x, sizeof(U));
    __builtin_memcpy(&gv, g + x, sizeof(U));
    dv = dv + wv * gv;
    __builtin_memcpy(d + x, &dv, sizeof(U));
  }
}

// out[x] = bias + sum_t w[t * ws + x] * xp[off[t] + x] (t in order, from zero), x < n.
template <typename T, int VB>
__attribute__((always_inline)) inline void forward_row(const T* w, int64_t ws, const T* xp, const int64_t* off,
                                                       int taps, T bias, T* out, int64_t n) {
  typedef T V __attribute__((vector_size(VB)));
  int64_t x = 0;
  forward_cols<V, 4, T>(w, ws, xp, off, taps, bias, out, x, n);
  forward_cols<V, 1, T>(w, ws, xp, off, taps, bias, out, x, n);
  forward_cols<T, 1, T>(w, ws, xp, off, taps, bias, out, x, n);
}

// colsum[t * n + x] = sum_{r < rows} g[r * gs + x] * xp[r * xs + off[t] + x] (r in order), x < n.
template <typename T, int VB>
__attribute__((always_inline)) inline void weight_colsum(const T* g, int64_t gs, const T* xp, int64_t xs,
                                                         const int64_t* off, int taps, int64_t rows, T* colsum,
                                                         int64_t n) {
  typedef T V __attribute__((vector_size(VB)));
  for (int t = 0; t < taps; ++t) {
    int64_t x = 0;
    colsum_cols<V, 4, T>(g, gs, xp + off[t], xs, rows, colsum + t * n, x, n);
    colsum_cols<V, 1, T>(g, gs, xp + off[t], xs, rows, colsum + t * n, x, n);
    colsum_cols<T, 1, T>(g, gs, xp + off[t], xs, rows, colsum + t * n, x, n);
  }
}

// dxp[off[t] + x] += w[t * ws + x] * g[x] for t in order, x < n. One tap at a time over the whole
// row: the taps' shifted rows overlap, and a store followed by an overlapping unaligned load would
// stall store forwarding.
template <typename T, int VB>
__attribute__((always_inline)) inline void input_grad_row(const T* w, int64_t ws, const T* g, const int64_t* off,
                                                          int taps, T* dxp, int64_t n) {
  typedef T V __attribute__((vector_size(VB)));
  for (int t = 0; t < taps; ++t) {
    int64_t x = 0;
    axpy_cols<V, T>(w + t * ws, g, dxp + off[t], x, n);
    axpy_cols<T, T>(w + t * ws, g, dxp + off[t], x, n);
  }
}

#if FV_X86_SIMD
template <typename T>
FV_TARGET_AVX2 void forward_row_avx2(const T* w, int64_t ws, const T* xp, const int64_t* off, int taps, T bias,
                                     T* out, int64_t n) {
  forward_row<T, 32>(w, ws, xp, off, taps, bias, out, n);
}
template <typename T>
FV_TARGET_AVX2 void weight_colsum_avx2(const T* g, int64_t gs, const T* xp, int64_t xs, const int64_t* off,
                                       int taps, int64_t rows, T* colsum, int64_t n) {
  weight_colsum<T, 32>(g, gs, xp, xs, off, taps, rows, colsum, n);
}
template <typename T>
FV_TARGET_AVX2 void input_grad_row_avx2(const T* w, int64_t ws, const T* g, const int64_t* off, int taps, T* dxp,
                                        int64_t n) {
  input_grad_row<T, 32>(w, ws, g, off, taps, dxp, n);
}
#endif

template <typename T>
void run_forward_row(const T* w, int64_t ws, const T* xp, const int64_t* off, int taps, T bias, T* out, int64_t n) {
#if FV_X86_SIMD
  if (cpu_avx2_fma()) return forward_row_avx2<T>(w, ws, xp, off, taps, bias, out, n);
#endif
  forward_row<T, 16>(w, ws, xp, off, taps, bias, out, n);
}

template <typename T>
void run_weight_colsum(const T* g, int64_t gs, const T* xp, int64_t xs, const int64_t* off, int taps, int64_t rows,
                       T* colsum, int64_t n) {
#if FV_X86_SIMD
  if (cpu_avx2_fma()) return weight_colsum_avx2<T>(g, gs, xp, xs, off, taps, rows, colsum, n);
#endif
  weight_colsum<T, 16>(g, gs, xp, xs, off, taps, rows, colsum, n);
}

template <typename T>
void run_input_grad_row(const T* w, int64_t ws, const T* g, const int64_t* off, int taps, T* dxp, int64_t n) {
#if FV_X86_SIMD
  if (cpu_avx2_fma()) return input_grad_row_avx2<T>(w, ws, g, off, taps, dxp, n);
#endif
  input_grad_row<T, 16>(w, ws, g, off, taps, dxp, n);
}

// The padded plane of one channel: xp[py * Wp + px] = x(map(py - ph), map(px - pw)), 0 off the
// image (zeros mode). x is read through strides (sh: row, sw: column).
template <typename T>
void pad_plane(const T* x, int64_t sh, int64_t sw, const ConvGeometry& g, int64_t Hp, int64_t Wp, T* xp) {
  for (int64_t py = 0; py < Hp; ++py) {
    T* dst = xp + py * Wp;
    const int64_t iy = map_coord(py - g.ph, g.H, g.mode);
    if (iy < 0) {
      std::fill(dst, dst + Wp, T(0));
      continue;
    }
    const T* src = x + iy * sh;
    auto border = [&](int64_t px) {
      const int64_t ix = map_coord(px - g.pw, g.W, g.mode);
      dst[px] = ix >= 0 ? src[ix * sw] : T(0);
    };
    for (int64_t px = 0; px < g.pw; ++px) border(px);
    if (sw == 1) {
      std::copy_n(src, g.W, dst + g.pw);
    } else {
      for (int64_t ix = 0; ix < g.W; ++ix) dst[g.pw + ix] = src[ix * sw];
    }
    for (int64_t px = g.pw + g.W; px < Wp; ++px) border(px);
  }
}

// The inverse of pad_plane for gradients: gx[iy * W + ix] = the sum of dxp over the padded
// positions that map to (iy, ix): the interior copied first, then the border added in order.
template <typename T>
void fold_plane(const T* dxp, const ConvGeometry& g, int64_t Hp, int64_t Wp, T* gx) {
  for (int64_t iy = 0; iy < g.H; ++iy) std::copy_n(dxp + (iy + g.ph) * Wp + g.pw, g.W, gx + iy * g.W);
  for (int64_t py = 0; py < Hp; ++py) {
    const int64_t iy = map_coord(py - g.ph, g.H, g.mode);
    if (iy < 0) continue;
    const bool interior_row = py >= g.ph && py < g.ph + g.H;
    const T* src = dxp + py * Wp;
    T* dst = gx + iy * g.W;
    for (int64_t px = 0; px < Wp; ++px) {
      if (interior_row && px >= g.pw && px < g.pw + g.W) {
        px = g.pw + g.W - 1;  // the interior was copied
        continue;
      }
      const int64_t ix = map_coord(px - g.pw, g.W, g.mode);
      if (ix >= 0) dst[ix] += src[px];
    }
  }
}

// wexp[t * Wo + x] = weight(b, channel * taps + t, i, cell of x): patch row i's kernels along a
// row; cols[j] = cell_start(j, Wo, fw) (fw + 1 entries).
template <typename T>
void expand_kernels(const T* w, const Strides4& ws, const ConvGeometry& g, const int64_t* cols, int64_t b,
                    int64_t channel, int64_t i, int taps, T* wexp) {
  for (int t = 0; t < taps; ++t) {
    const T* src = w + b * ws.b + (channel * taps + t) * ws.c + i * ws.h;
    T* dst = wexp + t * g.Wo;
    for (int64_t j = 0; j < g.fw; ++j) {
      const T v = src[j * ws.w];
      for (int64_t x = cols[j]; x < cols[j + 1]; ++x) dst[x] = v;
    }
  }
}

inline std::vector<int64_t> cell_bounds(int64_t n, int64_t f) {
  std::vector<int64_t> bounds(f + 1);
  for (int64_t j = 0; j <= f; ++j) bounds[j] = cell_start(j, n, f);
  return bounds;
}

// off[t]: where tap t = ky * kw + kx reads in a padded plane of row stride Wp.
inline std::vector<int64_t> tap_offsets(const ConvGeometry& g, int64_t Wp) {
  std::vector<int64_t> off(g.kh * g.kw);
  for (int ky = 0; ky < g.kh; ++ky) {
    for (int kx = 0; kx < g.kw; ++kx) off[ky * g.kw + kx] = int64_t{ky} * g.dh * Wp + int64_t{kx} * g.dw;
  }
  return off;
}

inline Strides4 strides4(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

}  // namespace depthwise_detail

// One input and one output channel per group at stride 1: the only shapes this path handles.
inline bool depthwise_plane(const ConvGeometry& g) {
  return g.cin_g == 1 && g.cout_g == 1 && g.sh == 1 && g.sw == 1;
}

// out (contiguous (B, C, Ho, Wo)) = the depthwise patch convolution of x with weight (+ bias).
template <typename T>
void depthwise_forward(const at::Tensor& x, const at::Tensor& weight, const T* bias, const ConvGeometry& g,
                       at::Tensor& out) {
  using namespace depthwise_detail;
  const Strides4 xs = strides4(x), ws = strides4(weight);
  const T* xd = x.const_data_ptr<T>();
  const T* wd = weight.const_data_ptr<T>();
  T* od = out.mutable_data_ptr<T>();
  const int64_t Hp = g.H + 2 * int64_t{g.ph}, Wp = g.W + 2 * int64_t{g.pw};
  const int taps = g.kh * g.kw;
  const std::vector<int64_t> off = tap_offsets(g, Wp), rows = cell_bounds(g.Ho, g.fh), cols = cell_bounds(g.Wo, g.fw);
  at::parallel_for(0, g.B * g.Cin, 1, [&](int64_t p0, int64_t p1) {
    std::vector<T> xp(Hp * Wp), wexp(taps * g.Wo);
    for (int64_t item = p0; item < p1; ++item) {
      const int64_t b = item / g.Cin, c = item % g.Cin;
      pad_plane(xd + b * xs.b + c * xs.c, xs.h, xs.w, g, Hp, Wp, xp.data());
      T* oc = od + item * g.Ho * g.Wo;
      const T bv = bias ? bias[c] : T(0);
      for (int64_t i = 0; i < g.fh; ++i) {
        expand_kernels(wd, ws, g, cols.data(), b, c, i, taps, wexp.data());
        for (int64_t y = rows[i]; y < rows[i + 1]; ++y) {
          run_forward_row(wexp.data(), g.Wo, xp.data() + y * Wp, off.data(), taps, bv, oc + y * g.Wo, g.Wo);
        }
      }
    }
  });
}

// The input gradient gx (contiguous (B, C, H, W), every element written) and / or the weight
// gradient gw (contiguous (B, C * kh * kw, fh, fw)) for the output gradient go (contiguous).
template <typename T>
void depthwise_backward(const at::Tensor& go, const at::Tensor& x, const at::Tensor& weight, const ConvGeometry& g,
                        T* gx, T* gw) {
  using namespace depthwise_detail;
  const Strides4 xs = strides4(x), ws = strides4(weight);
  const T* xd = x.const_data_ptr<T>();
  const T* wd = weight.const_data_ptr<T>();
  const T* gd = go.const_data_ptr<T>();
  const int64_t Hp = g.H + 2 * int64_t{g.ph}, Wp = g.W + 2 * int64_t{g.pw};
  const int taps = g.kh * g.kw;
  const std::vector<int64_t> off = tap_offsets(g, Wp), rows = cell_bounds(g.Ho, g.fh), cols = cell_bounds(g.Wo, g.fw);
  at::parallel_for(0, g.B * g.Cin, 1, [&](int64_t p0, int64_t p1) {
    std::vector<T> xp(gw ? Hp * Wp : 0), dxp(gx ? Hp * Wp : 0), wexp(gx ? taps * g.Wo : 0),
        colsum(gw ? taps * g.Wo : 0);
    for (int64_t item = p0; item < p1; ++item) {
      const int64_t b = item / g.Cin, c = item % g.Cin;
      const T* gc = gd + item * g.Ho * g.Wo;
      if (gw) pad_plane(xd + b * xs.b + c * xs.c, xs.h, xs.w, g, Hp, Wp, xp.data());
      if (gx) std::fill(dxp.begin(), dxp.end(), T(0));
      for (int64_t i = 0; i < g.fh; ++i) {
        const int64_t y0 = rows[i], y1 = rows[i + 1];
        if (gw) {
          run_weight_colsum(gc + y0 * g.Wo, g.Wo, xp.data() + y0 * Wp, Wp, off.data(), taps, y1 - y0,
                            colsum.data(), g.Wo);
          T* dst = gw + ((b * g.Cin + c) * taps * g.fh + i) * g.fw;
          for (int t = 0; t < taps; ++t) {
            const T* cs = colsum.data() + t * g.Wo;
            for (int64_t j = 0; j < g.fw; ++j) {
              T s = T(0);
              for (int64_t xx = cols[j]; xx < cols[j + 1]; ++xx) s += cs[xx];
              dst[t * g.fh * g.fw + j] = s;
            }
          }
        }
        if (gx) {
          expand_kernels(wd, ws, g, cols.data(), b, c, i, taps, wexp.data());
          for (int64_t y = y0; y < y1; ++y) {
            run_input_grad_row(wexp.data(), g.Wo, gc + y * g.Wo, off.data(), taps, dxp.data() + y * Wp, g.Wo);
          }
        }
      }
      if (gx) fold_plane(dxp.data(), g, Hp, Wp, gx + item * g.H * g.W);
    }
  });
}

}  // namespace fastvision::patch
