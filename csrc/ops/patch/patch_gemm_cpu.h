// The small dense products of the patch-wise CPU kernels: out (rows x n) = w (rows x red) . b
// (red x n), every sum over the reduction index in order from zero (so the result does not depend
// on the tiling). A register-tiled micro-kernel (4 rows x a vector-width strip of columns), built
// twice: for the baseline x86-64 ISA and, chosen at run time when the CPU has it, for AVX2 + FMA
// (float32: fused multiply-adds, one rounding per term; float64: AVX2 without FMA). Non-x86
// builds use the baseline only.
#pragma once
#include <cstdint>

#include "fastvision/cpu_simd.h"

namespace fastvision::patch {

namespace gemm_detail {

// R rows x (NV vectors of VB bytes) columns per tile, accumulators in registers (GCC vector
// extensions: the same source gives SSE2 code in the baseline build and AVX2 code inside a
// target("avx2") function).
template <typename A, int VB>
__attribute__((always_inline)) inline void gemm_nn_tiled(const A* w, const A* b, A* out, int64_t rows,
                                                         int64_t red, int64_t n) {
  typedef A V __attribute__((vector_size(VB)));
  constexpr int R = 4, NV = 2, L = VB / sizeof(A), T = NV * L;
  int64_t r = 0;
  for (; r + R <= rows; r += R) {
    int64_t t = 0;
    for (; t + T <= n; t += T) {
      V acc[R][NV];
      for (int rr = 0; rr < R; ++rr) {
        for (int v = 0; v < NV; ++v) acc[rr][v] = V{};
      }
      for (int64_t q = 0; q < red; ++q) {
        const A* bq = b + q * n + t;
        V bv[NV];
        for (int v = 0; v < NV; ++v) __builtin_memcpy(&bv[v], bq + v * L, sizeof(V));
        for (int rr = 0; rr < R; ++rr) {
          const A wv = w[(r + rr) * red + q];
          for (int v = 0; v < NV; ++v) acc[rr][v] += wv * bv[v];
        }
      }
      for (int rr = 0; rr < R; ++rr) {
        for (int v = 0; v < NV; ++v) __builtin_memcpy(out + (r + rr) * n + t + v * L, &acc[rr][v], sizeof(V));
      }
    }
    for (; t < n; ++t) {
      A acc[R] = {};
      for (int64_t q = 0; q < red; ++q) {
        for (int rr = 0; rr < R; ++rr) acc[rr] += w[(r + rr) * red + q] * b[q * n + t];
      }
      for (int rr = 0; rr < R; ++rr) out[(r + rr) * n + t] = acc[rr];
    }
  }
  for (; r < rows; ++r) {
    A* o = out + r * n;
    for (int64_t t = 0; t < n; ++t) o[t] = A(0);
    for (int64_t q = 0; q < red; ++q) {
      const A wv = w[r * red + q];
      const A* bq = b + q * n;
      for (int64_t t = 0; t < n; ++t) o[t] += wv * bq[t];
    }
  }
}

#if FV_X86_SIMD
// float32 on AVX2 + FMA: 4 rows x 16 columns of fused multiply-adds in eight ymm registers
// (one rounding per term instead of two: the same sums as the CUDA kernels, which contract too).
FV_TARGET_AVX2 inline void gemm_nn_avx2(const float* w, const float* b, float* out,
                                                            int64_t rows, int64_t red, int64_t n) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    int64_t t = 0;
    for (; t + 16 <= n; t += 16) {
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
      const float* w0 = w + r * red;
      for (int64_t q = 0; q < red; ++q) {
        const __m256 b0 = _mm256_loadu_ps(b + q * n + t), b1 = _mm256_loadu_ps(b + q * n + t + 8);
        __m256 wv = _mm256_broadcast_ss(w0 + q);
        a0 = _mm256_fmadd_ps(wv, b0, a0);
        a1 = _mm256_fmadd_ps(wv, b1, a1);
        wv = _mm256_broadcast_ss(w0 + red + q);
        a2 = _mm256_fmadd_ps(wv, b0, a2);
        a3 = _mm256_fmadd_ps(wv, b1, a3);
        wv = _mm256_broadcast_ss(w0 + 2 * red + q);
        a4 = _mm256_fmadd_ps(wv, b0, a4);
        a5 = _mm256_fmadd_ps(wv, b1, a5);
        wv = _mm256_broadcast_ss(w0 + 3 * red + q);
        a6 = _mm256_fmadd_ps(wv, b0, a6);
        a7 = _mm256_fmadd_ps(wv, b1, a7);
      }
      float* o = out + r * n + t;
      _mm256_storeu_ps(o, a0);
      _mm256_storeu_ps(o + 8, a1);
      _mm256_storeu_ps(o + n, a2);
      _mm256_storeu_ps(o + n + 8, a3);
      _mm256_storeu_ps(o + 2 * n, a4);
      _mm256_storeu_ps(o + 2 * n + 8, a5);
      _mm256_storeu_ps(o + 3 * n, a6);
      _mm256_storeu_ps(o + 3 * n + 8, a7);
    }
    for (; t + 8 <= n; t += 8) {
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      const float* w0 = w + r * red;
      for (int64_t q = 0; q < red; ++q) {
        const __m256 b0 = _mm256_loadu_ps(b + q * n + t);
        a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(w0 + q), b0, a0);
        a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(w0 + red + q), b0, a1);
        a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(w0 + 2 * red + q), b0, a2);
        a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(w0 + 3 * red + q), b0, a3);
      }
      float* o = out + r * n + t;
      _mm256_storeu_ps(o, a0);
      _mm256_storeu_ps(o + n, a1);
      _mm256_storeu_ps(o + 2 * n, a2);
      _mm256_storeu_ps(o + 3 * n, a3);
    }
    for (; t < n; ++t) {
      float acc[4] = {};
      for (int64_t q = 0; q < red; ++q) {
        for (int rr = 0; rr < 4; ++rr) acc[rr] = __builtin_fmaf(w[(r + rr) * red + q], b[q * n + t], acc[rr]);
      }
      for (int rr = 0; rr < 4; ++rr) out[(r + rr) * n + t] = acc[rr];
    }
  }
  for (; r < rows; ++r) {
    float* o = out + r * n;
    for (int64_t t = 0; t < n; ++t) o[t] = 0.0f;
    for (int64_t q = 0; q < red; ++q) {
      const __m256 wv = _mm256_broadcast_ss(w + r * red + q);
      const float* bq = b + q * n;
      int64_t t = 0;
      for (; t + 8 <= n; t += 8) _mm256_storeu_ps(o + t, _mm256_fmadd_ps(wv, _mm256_loadu_ps(bq + t), _mm256_loadu_ps(o + t)));
      for (; t < n; ++t) o[t] = __builtin_fmaf(w[r * red + q], bq[t], o[t]);
    }
  }
}
FV_TARGET_AVX2 inline void gemm_nn_avx2(const double* w, const double* b, double* out,
                                                        int64_t rows, int64_t red, int64_t n) {
  gemm_nn_tiled<double, 32>(w, b, out, rows, red, n);
}
#endif

}  // namespace gemm_detail

// out[r * n + t] = sum_q w[r * red + q] * b[q * n + t] (q in order), r < rows, t < n.
template <typename A>
void gemm_nn(const A* w, const A* b, A* out, int64_t rows, int64_t red, int64_t n) {
#if FV_X86_SIMD
  if (cpu_avx2_fma()) {
    gemm_detail::gemm_nn_avx2(w, b, out, rows, red, n);
    return;
  }
#endif
  gemm_detail::gemm_nn_tiled<A, 16>(w, b, out, rows, red, n);
}

}  // namespace fastvision::patch
