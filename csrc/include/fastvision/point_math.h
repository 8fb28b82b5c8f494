// Per-element arithmetic of the point-cloud ops, called by both the CPU and the CUDA kernels, so
// that the CPU tests exercise the exact arithmetic the GPU runs.
//
// Distances are accumulated dimension by dimension in a fixed order without FMA contraction
// (CPU: -ffp-contract=off; CUDA: explicit round-to-nearest intrinsics), which makes the value of
// a distance bit-identical in the brute-force, spatial-index and CUDA code paths. Ties between
// equal distances are broken by the lower point index everywhere.
#pragma once
#include <cstdint>
#include <limits>

#include "fastvision/macros.h"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#endif

namespace fastvision {

template <typename T>
FV_HOST_DEVICE FV_INLINE T fv_mul(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == 8) {
    return __dmul_rn(a, b);
  } else {
    return __fmul_rn(a, b);
  }
#else
  return a * b;
#endif
}

template <typename T>
FV_HOST_DEVICE FV_INLINE T fv_add(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == 8) {
    return __dadd_rn(a, b);
  } else {
    return __fadd_rn(a, b);
  }
#else
  return a + b;
#endif
}

template <typename T>
FV_HOST_DEVICE FV_INLINE T fv_abs(T a) {
  return a < T(0) ? -a : a;
}

// The contribution of one coordinate difference to a distance: squared (norm 2) or absolute
// (norm 1). A distance is ((term(d0) + term(d1)) + term(d2)) + ..., in coordinate order.
template <int NORM, typename T>
FV_HOST_DEVICE FV_INLINE T dist_term(T diff) {
  static_assert(NORM == 1 || NORM == 2, "norm must be 1 or 2");
  if constexpr (NORM == 2) {
    return fv_mul(diff, diff);
  } else {
    return fv_abs(diff);
  }
}

// d dist / d a for a = query coordinate, diff = a - b.
template <int NORM, typename T>
FV_HOST_DEVICE FV_INLINE T dist_term_grad(T diff) {
  if constexpr (NORM == 2) {
    return T(2) * diff;
  } else {
    return diff > T(0) ? T(1) : (diff < T(0) ? T(-1) : T(0));
  }
}

// Distance between two points given as strided coordinate arrays, computed in type A. DS > 0 fixes
// the dimension at compile time (the D = 3 fast path); DS = 0 reads it from D.
template <int NORM, typename A, int DS = 0, typename T>
FV_HOST_DEVICE FV_INLINE A point_dist(const T* a, int64_t a_stride, const T* b, int64_t b_stride,
                                      int D) {
  const int dims = DS > 0 ? DS : D;
  A acc = dist_term<NORM>(static_cast<A>(a[0]) - static_cast<A>(b[0]));
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int d = 1; d < dims; ++d) {
    acc = fv_add(acc, dist_term<NORM>(static_cast<A>(a[d * a_stride]) -
                                      static_cast<A>(b[d * b_stride])));
  }
  return acc;
}

// One coordinate of point_dist: the first coordinate's term, or the running sum plus the next
// term. point_dist(a, b) is dist_step over d = 0, 1, ..., D - 1 in that order, so a kernel that
// holds many partial distances at once (nn_distance's register micro-tile, which walks the
// coordinates outermost) rounds every distance exactly as point_dist does.
template <int NORM, typename A>
FV_HOST_DEVICE FV_INLINE A dist_step(A acc, A a, A b, bool first) {
  const A term = dist_term<NORM>(a - b);
  return first ? term : fv_add(acc, term);
}

// (d1, i1) < (d2, i2) lexicographically; an index of -1 (an empty slot) sorts last.
template <typename T>
FV_HOST_DEVICE FV_INLINE bool neighbour_less(T d1, int64_t i1, T d2, int64_t i2) {
  return d1 < d2 || (d1 == d2 && static_cast<uint64_t>(i1) < static_cast<uint64_t>(i2));
}

// Inserts a candidate into an ascending top-K list held in a fixed-size array (registers on the
// GPU: every index is a compile-time constant after unrolling). No-op if the candidate is not
// smaller than the current K-th entry.
template <int K, typename T>
FV_HOST_DEVICE FV_INLINE void topk_insert_static(T (&dist)[K], int64_t (&idx)[K], T cand,
                                                 int64_t cand_idx) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int s = K - 1; s >= 0; --s) {
    const bool take_prev = s > 0 && neighbour_less(cand, cand_idx, dist[s > 0 ? s - 1 : 0],
                                                   idx[s > 0 ? s - 1 : 0]);
    const bool take_cand = !take_prev && neighbour_less(cand, cand_idx, dist[s], idx[s]);
    if (take_prev) {
      dist[s] = dist[s - 1];
      idx[s] = idx[s - 1];
    } else if (take_cand) {
      dist[s] = cand;
      idx[s] = cand_idx;
    }
  }
}

// The same for a runtime K over memory (CPU, and the CUDA path for large K).
template <typename T>
FV_HOST_DEVICE FV_INLINE void topk_insert_dynamic(T* dist, int64_t* idx, int K, T cand,
                                                  int64_t cand_idx) {
  if (!neighbour_less(cand, cand_idx, dist[K - 1], idx[K - 1])) {
    return;
  }
  int s = K - 1;
  for (; s > 0 && neighbour_less(cand, cand_idx, dist[s - 1], idx[s - 1]); --s) {
    dist[s] = dist[s - 1];
    idx[s] = idx[s - 1];
  }
  dist[s] = cand;
  idx[s] = cand_idx;
}

// Farthest point sampling picks the largest min-distance; among equal ones the lowest index.
template <typename T>
FV_HOST_DEVICE FV_INLINE bool fps_better(T d1, int64_t i1, T d2, int64_t i2) {
  return d1 > d2 || (d1 == d2 && static_cast<uint64_t>(i1) < static_cast<uint64_t>(i2));
}

template <typename T>
FV_HOST_DEVICE FV_INLINE T fv_infinity() {
  return std::numeric_limits<T>::infinity();
}

}  // namespace fastvision
