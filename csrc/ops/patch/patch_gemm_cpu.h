// The small dense products of the patch-wise CPU kernels: out (rows x n) = w (rows x red) . b
// (red x n), every sum over the reduction index in order from zero (so the result does not depend
// on the tiling). A register-tiled micro-kernel (4 rows x a vector-width strip of columns), built
// twice: for the baseline x86-64 ISA and, chosen at run time when the CPU has it, for AVX2
// (wider vectors; no FMA, so both round alike). Non-x86 builds use the baseline only.
#pragma once
#include <cstdint>

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

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2"))) inline void gemm_nn_avx2(const float* w, const float* b, float* out,
                                                        int64_t rows, int64_t red, int64_t n) {
  gemm_nn_tiled<float, 32>(w, b, out, rows, red, n);
}
__attribute__((target("avx2"))) inline void gemm_nn_avx2(const double* w, const double* b, double* out,
                                                        int64_t rows, int64_t red, int64_t n) {
  gemm_nn_tiled<double, 32>(w, b, out, rows, red, n);
}
inline bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#endif

}  // namespace gemm_detail

// out[r * n + t] = sum_q w[r * red + q] * b[q * n + t] (q in order), r < rows, t < n.
template <typename A>
void gemm_nn(const A* w, const A* b, A* out, int64_t rows, int64_t red, int64_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (gemm_detail::cpu_has_avx2()) {
    gemm_detail::gemm_nn_avx2(w, b, out, rows, red, n);
    return;
  }
#endif
  gemm_detail::gemm_nn_tiled<A, 16>(w, b, out, rows, red, n);
}

}  // namespace fastvision::patch
