// The 1x1 patch convolution of small cells (HyperSeg's decoder levels 0-2: 1x1, 2x2 and 4x4-pixel
// cells, groups 1, no padding), vectorised across the cells of a patch row instead of within a
// cell: a cell of 1-16 pixels is too small a GEMM, but the kernels of neighbouring cells are
// adjacent in the hypernetwork layout (B, K, fh, fw), so one vector holds one kernel entry of
// L neighbouring cells and is used as it is, without a per-cell transpose.
//
// A patch row's input is first gathered cell-major: xs[c][s][j] = x(channel c, pixel s of cell j)
// (s = row-major index inside the cell). Then, with W_k the hypernetwork row k:
//   forward      y[o][s][j]  = sum_r W[o * ostride + r * rstride][j] * xs[r][s][j]   (r in order)
//   grad input   the same with the roles of o and r exchanged (W^T)
//   grad weight  gW[co * Cin + ci][j] = sum_s g[co][s][j] * xs[ci][s][j]            (s in order)
// Each result is one vector per (channel, pixel) and L cells, register tiles of a few channels x
// pixels; the sums run in index order from zero (the same terms as the GEMM path: float32 on AVX2
// + FMA fuses the multiply-adds, as the GEMM path does; the portable build and float64 do not).
//
// One SIMD style (fastvision/cpu_simd.h): portable templates over GCC vector types of VB bytes
// (SSE2 here, NEON elsewhere), instantiated with 32-byte vectors in FV_TARGET_AVX2 functions; the
// cells past the last whole vector run the same template with one-lane "vectors" (plain T).
#pragma once
#include <cstdint>
#include <type_traits>

#include "fastvision/cpu_simd.h"

namespace fastvision::patch {

namespace pointwise_detail {

// Vectors move through __builtin_memcpy (unaligned, and no function takes or returns a 32-byte
// vector: that would change the baseline build's ABI).
// y[o][s][j..j+L) for o < n_out, s < S: y = sum_r W(o, r) * xs[r][s] over r < n_red. W(o, r) is
// row o * ostride + r * rstride of w (row stride wrow, cell j at w[... + j]); xs and y are
// [channel][s][cells] with row stride xcells / ycells. Tiles of RO outputs x RS pixels.
template <typename V, typename T, int RO, int RS>
__attribute__((always_inline)) inline void mix_tile(const T* w, int64_t wrow, int64_t ostride, int64_t rstride,
                                                    const T* xs, int64_t xcells, T* y, int64_t ycells, int64_t o0,
                                                    int64_t s0, int64_t S, int64_t n_red) {
  V acc[RO][RS];
  for (int a = 0; a < RO; ++a) {
    for (int b = 0; b < RS; ++b) acc[a][b] = V{};
  }
  for (int64_t r = 0; r < n_red; ++r) {
    V xv[RS];
    for (int b = 0; b < RS; ++b) __builtin_memcpy(&xv[b], xs + (r * S + s0 + b) * xcells, sizeof(V));
    for (int a = 0; a < RO; ++a) {
      V wv;
      __builtin_memcpy(&wv, w + ((o0 + a) * ostride + r * rstride) * wrow, sizeof(V));
      for (int b = 0; b < RS; ++b) acc[a][b] = acc[a][b] + wv * xv[b];
    }
  }
  for (int a = 0; a < RO; ++a) {
    for (int b = 0; b < RS; ++b) __builtin_memcpy(y + ((o0 + a) * S + s0 + b) * ycells, &acc[a][b], sizeof(V));
  }
}

template <typename V, typename T>
__attribute__((always_inline)) inline void mix_body(const T* w, int64_t wrow, int64_t ostride, int64_t rstride,
                                                    const T* xs, int64_t xcells, T* y, int64_t ycells, int64_t n_out,
                                                    int64_t S, int64_t n_red) {
  // Cells of 4 pixels or more: tiles of 2 outputs x 4 pixels; smaller cells: 4 outputs x 1 pixel.
  constexpr int RO = 2, RS = 4;
  int64_t o = 0;
  if (S >= RS) {
    for (; o + RO <= n_out; o += RO) {
      int64_t s = 0;
      for (; s + RS <= S; s += RS) {
        mix_tile<V, T, RO, RS>(w, wrow, ostride, rstride, xs, xcells, y, ycells, o, s, S, n_red);
      }
      for (; s < S; ++s) mix_tile<V, T, RO, 1>(w, wrow, ostride, rstride, xs, xcells, y, ycells, o, s, S, n_red);
    }
  } else {
    for (; o + 4 <= n_out; o += 4) {
      for (int64_t s = 0; s < S; ++s) {
        mix_tile<V, T, 4, 1>(w, wrow, ostride, rstride, xs, xcells, y, ycells, o, s, S, n_red);
      }
    }
  }
  for (; o < n_out; ++o) {
    for (int64_t s = 0; s < S; ++s) mix_tile<V, T, 1, 1>(w, wrow, ostride, rstride, xs, xcells, y, ycells, o, s, S, n_red);
  }
}

// gw[(co * n_in + ci) * wrow + j..] = sum_s g[co][s][j..] * xs[ci][s][j..], tiles of 4 inputs.
template <typename V, typename T>
__attribute__((always_inline)) inline void weight_grad_body(const T* g, int64_t gcells, const T* xs, int64_t xcells,
                                                            T* gw, int64_t wrow, int64_t n_out, int64_t n_in,
                                                            int64_t S) {
  for (int64_t co = 0; co < n_out; ++co) {
    int64_t ci = 0;
    for (; ci + 4 <= n_in; ci += 4) {
      V acc[4];
      for (int a = 0; a < 4; ++a) acc[a] = V{};
      for (int64_t s = 0; s < S; ++s) {
        V gv;
        __builtin_memcpy(&gv, g + (co * S + s) * gcells, sizeof(V));
        for (int a = 0; a < 4; ++a) {
          V xv;
          __builtin_memcpy(&xv, xs + ((ci + a) * S + s) * xcells, sizeof(V));
          acc[a] = acc[a] + gv * xv;
        }
      }
      for (int a = 0; a < 4; ++a) __builtin_memcpy(gw + (co * n_in + ci + a) * wrow, &acc[a], sizeof(V));
    }
    for (; ci < n_in; ++ci) {
      V acc = V{};
      for (int64_t s = 0; s < S; ++s) {
        V gv, xv;
        __builtin_memcpy(&gv, g + (co * S + s) * gcells, sizeof(V));
        __builtin_memcpy(&xv, xs + (ci * S + s) * xcells, sizeof(V));
        acc = acc + gv * xv;
      }
      __builtin_memcpy(gw + (co * n_in + ci) * wrow, &acc, sizeof(V));
    }
  }
}

// The whole cell range [0, cells): vectors of VB bytes, then one cell at a time.
template <typename T, int VB>
__attribute__((always_inline)) inline void mix_cells(const T* w, int64_t wrow, int64_t ostride, int64_t rstride,
                                                     const T* xs, int64_t xcells, T* y, int64_t ycells, int64_t n_out,
                                                     int64_t S, int64_t n_red, int64_t cells) {
  typedef T V __attribute__((vector_size(VB)));
  constexpr int64_t L = VB / sizeof(T);
  int64_t j = 0;
  for (; j + L <= cells; j += L) {
    mix_body<V, T>(w + j, wrow, ostride, rstride, xs + j, xcells, y + j, ycells, n_out, S, n_red);
  }
  for (; j < cells; ++j) {
    mix_body<T, T>(w + j, wrow, ostride, rstride, xs + j, xcells, y + j, ycells, n_out, S, n_red);
  }
}

template <typename T, int VB>
__attribute__((always_inline)) inline void weight_grad_cells(const T* g, int64_t gcells, const T* xs, int64_t xcells,
                                                             T* gw, int64_t wrow, int64_t n_out, int64_t n_in,
                                                             int64_t S, int64_t cells) {
  typedef T V __attribute__((vector_size(VB)));
  constexpr int64_t L = VB / sizeof(T);
  int64_t j = 0;
  for (; j + L <= cells; j += L) {
    weight_grad_body<V, T>(g + j, gcells, xs + j, xcells, gw + j, wrow, n_out, n_in, S);
  }
  for (; j < cells; ++j) {
    weight_grad_body<T, T>(g + j, gcells, xs + j, xcells, gw + j, wrow, n_out, n_in, S);
  }
}

#if FV_X86_SIMD
// float32 on AVX2 + FMA, spelled in intrinsics: the generic template's arrays of vectors end up on
// the stack (every multiply-add a load and a store), these stay in registers. One __m256 holds
// one kernel entry or pixel of 8 neighbouring cells; tiles of RO outputs x RS pixels accumulate
// in RO * RS registers over the reduction (in order, fused multiply-adds: one rounding per term,
// as the GEMM path and CUDA), the next weights prefetched (the kernel rows of a patch row lie
// fh * fw floats apart, too far for the hardware prefetcher to follow).
template <int RO, int RS>
FV_TARGET_AVX2 __attribute__((always_inline)) inline void mix_tile_f32(const float* w, int64_t wrow, int64_t ostride,
                                                                       int64_t rstride, const float* xs,
                                                                       int64_t xcells, float* y, int64_t ycells,
                                                                       int64_t o0, int64_t s0, int64_t S,
                                                                       int64_t n_red) {
  __m256 acc[RO][RS];
#pragma GCC unroll 8
  for (int a = 0; a < RO; ++a) {
#pragma GCC unroll 4
    for (int b = 0; b < RS; ++b) acc[a][b] = _mm256_setzero_ps();
  }
  const float* wo[RO];
#pragma GCC unroll 8
  for (int a = 0; a < RO; ++a) wo[a] = w + (o0 + a) * ostride * wrow;
  const int64_t wstep = rstride * wrow;
  for (int64_t r = 0; r < n_red; ++r) {
    const int64_t wr = r * wstep;
    if (s0 == 0) {
#pragma GCC unroll 8
      for (int a = 0; a < RO; ++a) _mm_prefetch(reinterpret_cast<const char*>(wo[a] + wr + 8 * wstep), _MM_HINT_T0);
    }
    __m256 xv[RS];
#pragma GCC unroll 4
    for (int b = 0; b < RS; ++b) xv[b] = _mm256_loadu_ps(xs + (r * S + s0 + b) * xcells);
#pragma GCC unroll 8
    for (int a = 0; a < RO; ++a) {
      const __m256 wv = _mm256_loadu_ps(wo[a] + wr);
#pragma GCC unroll 4
      for (int b = 0; b < RS; ++b) acc[a][b] = _mm256_fmadd_ps(wv, xv[b], acc[a][b]);
    }
  }
#pragma GCC unroll 8
  for (int a = 0; a < RO; ++a) {
#pragma GCC unroll 4
    for (int b = 0; b < RS; ++b) _mm256_storeu_ps(y + ((o0 + a) * S + s0 + b) * ycells, acc[a][b]);
  }
}

// Outputs [o, n_out) in tiles of RO, all S pixels (tiles of 3, then single pixels), the whole
// vectors of cells [0, cells8) innermost: a kernel row's cells are read one after another.
template <int RO>
FV_TARGET_AVX2 __attribute__((always_inline)) inline void mix_rows_f32(const float* w, int64_t wrow, int64_t ostride,
                                                                       int64_t rstride, const float* xs, float* y,
                                                                       int64_t cells, int64_t cells8, int64_t& o,
                                                                       int64_t n_out, int64_t S, int64_t n_red) {
  for (; o + RO <= n_out; o += RO) {
    int64_t s = 0;
    for (; s + 3 <= S; s += 3) {
      for (int64_t j = 0; j < cells8; j += 8) {
        mix_tile_f32<RO, 3>(w + j, wrow, ostride, rstride, xs + j, cells, y + j, cells, o, s, S, n_red);
      }
    }
    for (; s < S; ++s) {
      for (int64_t j = 0; j < cells8; j += 8) {
        mix_tile_f32<RO, 1>(w + j, wrow, ostride, rstride, xs + j, cells, y + j, cells, o, s, S, n_red);
      }
    }
  }
}

FV_TARGET_AVX2 inline void mix_cells_f32(const float* w, int64_t wrow, int64_t ostride, int64_t rstride,
                                         const float* xs, float* y, int64_t n_out, int64_t S, int64_t n_red,
                                         int64_t cells) {
  const int64_t cells8 = cells / 8 * 8;
  int64_t o = 0;
  if (S < 3) mix_rows_f32<8>(w, wrow, ostride, rstride, xs, y, cells, cells8, o, n_out, S, n_red);
  mix_rows_f32<4>(w, wrow, ostride, rstride, xs, y, cells, cells8, o, n_out, S, n_red);
  mix_rows_f32<1>(w, wrow, ostride, rstride, xs, y, cells, cells8, o, n_out, S, n_red);
  for (int64_t j = cells8; j < cells; ++j) {
    mix_body<float, float>(w + j, wrow, ostride, rstride, xs + j, cells, y + j, cells, n_out, S, n_red);
  }
}

// gw[(co * n_in + ci) * wrow + j..j+8] = sum_s g[co][s] * xs[ci][s] for a tile of CO x CI entries.
template <int CO, int CI>
FV_TARGET_AVX2 __attribute__((always_inline)) inline void weight_grad_tile_f32(const float* g, const float* xs,
                                                                               int64_t cells, float* gw,
                                                                               int64_t wrow, int64_t co0,
                                                                               int64_t ci0, int64_t n_in,
                                                                               int64_t S) {
  __m256 acc[CO][CI];
#pragma GCC unroll 4
  for (int a = 0; a < CO; ++a) {
#pragma GCC unroll 4
    for (int b = 0; b < CI; ++b) acc[a][b] = _mm256_setzero_ps();
  }
  for (int64_t s = 0; s < S; ++s) {
    __m256 xv[CI];
#pragma GCC unroll 4
    for (int b = 0; b < CI; ++b) xv[b] = _mm256_loadu_ps(xs + ((ci0 + b) * S + s) * cells);
#pragma GCC unroll 4
    for (int a = 0; a < CO; ++a) {
      const __m256 gv = _mm256_loadu_ps(g + ((co0 + a) * S + s) * cells);
#pragma GCC unroll 4
      for (int b = 0; b < CI; ++b) acc[a][b] = _mm256_fmadd_ps(gv, xv[b], acc[a][b]);
    }
  }
#pragma GCC unroll 4
  for (int a = 0; a < CO; ++a) {
#pragma GCC unroll 4
    for (int b = 0; b < CI; ++b) _mm256_storeu_ps(gw + ((co0 + a) * n_in + ci0 + b) * wrow, acc[a][b]);
  }
}

// Entries (co, ci) in tiles of CO x 4 (then CO x 1), the whole vectors of cells innermost: a
// gradient row's cells are written one after another (whole cache lines).
template <int CO>
FV_TARGET_AVX2 __attribute__((always_inline)) inline void weight_grad_rows_f32(const float* g, const float* xs,
                                                                               int64_t cells, int64_t cells8,
                                                                               float* gw, int64_t wrow, int64_t& co,
                                                                               int64_t n_out, int64_t n_in,
                                                                               int64_t S) {
  for (; co + CO <= n_out; co += CO) {
    int64_t ci = 0;
    for (; ci + 4 <= n_in; ci += 4) {
      for (int64_t j = 0; j < cells8; j += 8) {
        weight_grad_tile_f32<CO, 4>(g + j, xs + j, cells, gw + j, wrow, co, ci, n_in, S);
      }
    }
    for (; ci < n_in; ++ci) {
      for (int64_t j = 0; j < cells8; j += 8) {
        weight_grad_tile_f32<CO, 1>(g + j, xs + j, cells, gw + j, wrow, co, ci, n_in, S);
      }
    }
  }
}

FV_TARGET_AVX2 inline void weight_grad_cells_f32(const float* g, const float* xs, float* gw, int64_t wrow,
                                                 int64_t n_out, int64_t n_in, int64_t S, int64_t cells) {
  const int64_t cells8 = cells / 8 * 8;
  int64_t co = 0;
  weight_grad_rows_f32<3>(g, xs, cells, cells8, gw, wrow, co, n_out, n_in, S);
  weight_grad_rows_f32<1>(g, xs, cells, cells8, gw, wrow, co, n_out, n_in, S);
  for (int64_t j = cells8; j < cells; ++j) {
    weight_grad_body<float, float>(g + j, cells, xs + j, cells, gw + j, wrow, n_out, n_in, S);
  }
}

FV_TARGET_AVX2 inline void mix_cells_avx2(const double* w, int64_t wrow, int64_t os, int64_t rs, const double* xs,
                                          int64_t xc, double* y, int64_t yc, int64_t n_out, int64_t S, int64_t n_red,
                                          int64_t cells) {
  mix_cells<double, 32>(w, wrow, os, rs, xs, xc, y, yc, n_out, S, n_red, cells);
}
FV_TARGET_AVX2 inline void weight_grad_cells_avx2(const double* g, int64_t gc, const double* xs, int64_t xc,
                                                  double* gw, int64_t wrow, int64_t n_out, int64_t n_in, int64_t S,
                                                  int64_t cells) {
  weight_grad_cells<double, 32>(g, gc, xs, xc, gw, wrow, n_out, n_in, S, cells);
}
#endif

}  // namespace pointwise_detail

// y[o][s][j] = sum_{r < n_red} w[(o * ostride + r * rstride) * wrow + j] * xs[(r * S + s) * cells + j]
// for o < n_out, s < S, j < cells (y: [(o * S + s) * cells + j]).
template <typename T>
void pointwise_mix(const T* w, int64_t wrow, int64_t ostride, int64_t rstride, const T* xs, T* y, int64_t n_out,
                   int64_t S, int64_t n_red, int64_t cells) {
#if FV_X86_SIMD
  if (cpu_avx2_fma()) {
    if constexpr (std::is_same_v<T, float>) {
      pointwise_detail::mix_cells_f32(w, wrow, ostride, rstride, xs, y, n_out, S, n_red, cells);
    } else {
      pointwise_detail::mix_cells_avx2(w, wrow, ostride, rstride, xs, cells, y, cells, n_out, S, n_red, cells);
    }
    return;
  }
#endif
  pointwise_detail::mix_cells<T, 16>(w, wrow, ostride, rstride, xs, cells, y, cells, n_out, S, n_red, cells);
}

// gw[(co * n_in + ci) * wrow + j] = sum_{s < S} g[(co * S + s) * cells + j] * xs[(ci * S + s) * cells + j].
template <typename T>
void pointwise_weight_grad(const T* g, const T* xs, T* gw, int64_t wrow, int64_t n_out, int64_t n_in, int64_t S,
                           int64_t cells) {
#if FV_X86_SIMD
  if (cpu_avx2_fma()) {
    if constexpr (std::is_same_v<T, float>) {
      pointwise_detail::weight_grad_cells_f32(g, xs, gw, wrow, n_out, n_in, S, cells);
    } else {
      pointwise_detail::weight_grad_cells_avx2(g, cells, xs, cells, gw, wrow, n_out, n_in, S, cells);
    }
    return;
  }
#endif
  pointwise_detail::weight_grad_cells<T, 16>(g, cells, xs, cells, gw, wrow, n_out, n_in, S, cells);
}

}  // namespace fastvision::patch
