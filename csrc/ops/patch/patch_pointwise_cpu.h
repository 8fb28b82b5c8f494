// The 1x1 patch convolution of small cells (HyperSeg's decoder levels 0-2: 1x1, 2x2 and 4x4-pixel
// cells, groups 1, no padding), vectorised across the cells of a patch row instead of within a
// cell: a cell of 1-16 pixels is too small a GEMM, but the kernels of neighbouring cells are
// adjacent in the hypernetwork layout (B, K, fh, fw), so one vector holds one kernel entry of
// L neighbouring cells and is used as it is, without a per-cell transpose.
//
// A patch row's input is first gathered cell-major: xs[c][s][j] = x(channel c, pixel s of cell j)
// (s = row-major index inside the cell; stored in blocks of cells, below). Then, with W_k the
// hypernetwork row k:
//   forward      y[o][s][j]  = sum_r W[o * ostride + r * rstride][j] * xs[r][s][j]   (r in order)
//   grad input   the same with the roles of o and r exchanged (W^T)
//   grad weight  gW[co * Cin + ci][j] = sum_s g[co][s][j] * xs[ci][s][j]            (s in order)
// Each result is one vector per (channel, pixel) and L cells, register tiles of a few channels x
// pixels; the sums run in index order from zero (the same terms as the GEMM path, without FMA).
//
// One SIMD style (fastvision/cpu_simd.h): portable templates over GCC vector types (SSE2 here,
// NEON elsewhere), instantiated in FV_TARGET_AVX2 functions; the last block of a row is padded
// with zero cells.
#pragma once
#include <cstdint>

#include "fastvision/cpu_simd.h"

namespace fastvision::patch {

// Cells are handled in blocks of kCellBlock neighbouring cells, one vector V of kCellBlock values
// (one 32-byte AVX2 register in float32; two or four SSE2 registers otherwise). The gathered maps
// are block-major, [block][channel][pixel][cell of the block], so every tile reads consecutive
// vectors; the weights of a block are packed the same way before use (the hypernetwork rows are
// fh * fw apart, a power-of-two stride at which the rows of one block fall into a few L1 sets).
constexpr int64_t kCellBlock = 8;

namespace pointwise_detail {

// Vectors move through __builtin_memcpy (no function takes or returns a wide vector: that would
// change the baseline build's ABI).

// y[o][s] = sum_r w[o][r] * xs[r][s] (r in order) for the outputs [o0, o0 + RO) x pixels
// [s0, s0 + RS) of one block; w, xs, y in vectors.
template <typename V, typename T, int RO, int RS>
__attribute__((always_inline)) inline void mix_tile(const T* w, const T* xs, T* y, int64_t o0, int64_t s0, int64_t S,
                                                    int64_t n_red) {
  constexpr int64_t L = kCellBlock;
  V acc[RO][RS];
  for (int a = 0; a < RO; ++a) {
    for (int b = 0; b < RS; ++b) acc[a][b] = V{};
  }
  for (int64_t r = 0; r < n_red; ++r) {
    V xv[RS];
    for (int b = 0; b < RS; ++b) __builtin_memcpy(&xv[b], xs + (r * S + s0 + b) * L, sizeof(V));
    for (int a = 0; a < RO; ++a) {
      V wv;
      __builtin_memcpy(&wv, w + ((o0 + a) * n_red + r) * L, sizeof(V));
      for (int b = 0; b < RS; ++b) acc[a][b] = acc[a][b] + wv * xv[b];
    }
  }
  for (int a = 0; a < RO; ++a) {
    for (int b = 0; b < RS; ++b) __builtin_memcpy(y + ((o0 + a) * S + s0 + b) * L, &acc[a][b], sizeof(V));
  }
}

template <typename V, typename T>
__attribute__((always_inline)) inline void mix_block(const T* w, const T* xs, T* y, int64_t n_out, int64_t S,
                                                     int64_t n_red) {
  // Cells of 4 pixels or more: tiles of 2 outputs x 4 pixels; smaller cells: 4 outputs x 1 pixel.
  constexpr int RO = 2, RS = 4;
  int64_t o = 0;
  if (S >= RS) {
    for (; o + RO <= n_out; o += RO) {
      int64_t s = 0;
      for (; s + RS <= S; s += RS) mix_tile<V, T, RO, RS>(w, xs, y, o, s, S, n_red);
      for (; s < S; ++s) mix_tile<V, T, RO, 1>(w, xs, y, o, s, S, n_red);
    }
  } else {
    for (; o + 4 <= n_out; o += 4) {
      for (int64_t s = 0; s < S; ++s) mix_tile<V, T, 4, 1>(w, xs, y, o, s, S, n_red);
    }
  }
  for (; o < n_out; ++o) {
    for (int64_t s = 0; s < S; ++s) mix_tile<V, T, 1, 1>(w, xs, y, o, s, S, n_red);
  }
}

// gw[co][ci] = sum_s g[co][s] * xs[ci][s] (s in order) for one block, in vectors.
template <typename V, typename T>
__attribute__((always_inline)) inline void weight_grad_block(const T* g, const T* xs, T* gw, int64_t n_out,
                                                             int64_t n_in, int64_t S) {
  constexpr int64_t L = kCellBlock;
  for (int64_t co = 0; co < n_out; ++co) {
    int64_t ci = 0;
    for (; ci + 4 <= n_in; ci += 4) {
      V acc[4];
      for (int a = 0; a < 4; ++a) acc[a] = V{};
      for (int64_t s = 0; s < S; ++s) {
        V gv;
        __builtin_memcpy(&gv, g + (co * S + s) * L, sizeof(V));
        for (int a = 0; a < 4; ++a) {
          V xv;
          __builtin_memcpy(&xv, xs + ((ci + a) * S + s) * L, sizeof(V));
          acc[a] = acc[a] + gv * xv;
        }
      }
      for (int a = 0; a < 4; ++a) __builtin_memcpy(gw + (co * n_in + ci + a) * L, &acc[a], sizeof(V));
    }
    for (; ci < n_in; ++ci) {
      V acc = V{};
      for (int64_t s = 0; s < S; ++s) {
        V gv, xv;
        __builtin_memcpy(&gv, g + (co * S + s) * L, sizeof(V));
        __builtin_memcpy(&xv, xs + (ci * S + s) * L, sizeof(V));
        acc = acc + gv * xv;
      }
      __builtin_memcpy(gw + (co * n_in + ci) * L, &acc, sizeof(V));
    }
  }
}

template <typename T>
__attribute__((always_inline)) inline void mix_block_t(const T* w, const T* xs, T* y, int64_t n_out, int64_t S,
                                                       int64_t n_red) {
  typedef T V __attribute__((vector_size(kCellBlock * sizeof(T))));
  mix_block<V, T>(w, xs, y, n_out, S, n_red);
}

template <typename T>
__attribute__((always_inline)) inline void weight_grad_block_t(const T* g, const T* xs, T* gw, int64_t n_out,
                                                               int64_t n_in, int64_t S) {
  typedef T V __attribute__((vector_size(kCellBlock * sizeof(T))));
  weight_grad_block<V, T>(g, xs, gw, n_out, n_in, S);
}

#if FV_X86_SIMD
FV_TARGET_AVX2 inline void mix_block_avx2(const float* w, const float* xs, float* y, int64_t n_out, int64_t S,
                                          int64_t n_red) {
  mix_block_t<float>(w, xs, y, n_out, S, n_red);
}
FV_TARGET_AVX2 inline void mix_block_avx2(const double* w, const double* xs, double* y, int64_t n_out, int64_t S,
                                          int64_t n_red) {
  mix_block_t<double>(w, xs, y, n_out, S, n_red);
}
FV_TARGET_AVX2 inline void weight_grad_block_avx2(const float* g, const float* xs, float* gw, int64_t n_out,
                                                  int64_t n_in, int64_t S) {
  weight_grad_block_t<float>(g, xs, gw, n_out, n_in, S);
}
FV_TARGET_AVX2 inline void weight_grad_block_avx2(const double* g, const double* xs, double* gw, int64_t n_out,
                                                  int64_t n_in, int64_t S) {
  weight_grad_block_t<double>(g, xs, gw, n_out, n_in, S);
}
#endif

}  // namespace pointwise_detail

// One block of cells: y[o][s] = sum_{r < n_red} w[o][r] * xs[r][s], all [..][..][kCellBlock]
// (o < n_out, s < S).
template <typename T>
void pointwise_mix_block(const T* w, const T* xs, T* y, int64_t n_out, int64_t S, int64_t n_red) {
#if FV_X86_SIMD
  if (cpu_avx2_fma()) {
    pointwise_detail::mix_block_avx2(w, xs, y, n_out, S, n_red);
    return;
  }
#endif
  pointwise_detail::mix_block_t<T>(w, xs, y, n_out, S, n_red);
}

// One block of cells: gw[co][ci] = sum_{s < S} g[co][s] * xs[ci][s], all [..][..][kCellBlock].
template <typename T>
void pointwise_weight_grad_block(const T* g, const T* xs, T* gw, int64_t n_out, int64_t n_in, int64_t S) {
#if FV_X86_SIMD
  if (cpu_avx2_fma()) {
    pointwise_detail::weight_grad_block_avx2(g, xs, gw, n_out, n_in, S);
    return;
  }
#endif
  pointwise_detail::weight_grad_block_t<T>(g, xs, gw, n_out, n_in, S);
}

}  // namespace fastvision::patch
