// The AVX2 build of the brute-force kNN scan (knn_cpu.cpp's portable build is knn_brute): few
// queries against one cloud, the case of SampleNet's soft projection (64 queries, 1024 points).
//
// The cloud is a padded structure of arrays (D, stride): stride is a multiple of kScanStep and the
// slots past the cloud's length hold +inf, which is never strictly below a threshold, so the scan
// runs whole vectors without a tail. One query at a time keeps its coordinates and its running
// K-th distance broadcast in registers; the cloud is streamed in blocks of kScanBlock points (a
// block stays in L1/L2 while every query of the work item scans it). Per step, two vectors of
// distances are compared with the threshold and one movemask says whether any may enter the
// top-K: the common case is no branch taken. Candidates are then inserted in ascending index with a
// strict `<` against the current K-th distance, as knn_brute does, and the threshold register is
// refreshed.
//
// Bit-identical to the portable build: each distance is the same expression as point_dist
// (diff = q - x, terms in coordinate order, separate multiply and add: no FMA), and the same
// insertion rule visits the same candidates in the same order.
#pragma once
#include <cstdint>

#include "cpu_distance.h"
#include "fastvision/cpu_simd.h"

namespace fastvision::points {

constexpr int64_t kScanStep = 16;     // points per step: two float32 / four float64 vectors
constexpr int64_t kScanBlock = 2048;  // points per cache block (24 KiB of 3-D float32)

#if FV_X86_SIMD
namespace scan_detail {

// The handful of AVX2 operations the scan needs, per element type.
template <typename T>
struct Avx2;

template <>
struct Avx2<float> {
  using V = __m256;
  static constexpr int kLanes = 8;
  FV_TARGET_AVX2 static V set1(float v) { return _mm256_set1_ps(v); }
  FV_TARGET_AVX2 static V load(const float* p) { return _mm256_loadu_ps(p); }
  FV_TARGET_AVX2 static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  FV_TARGET_AVX2 static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  FV_TARGET_AVX2 static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  FV_TARGET_AVX2 static V add(V a, V b) { return _mm256_add_ps(a, b); }
  // fv_abs(d) = d < 0 ? -d : d, -0.0 kept as -0.0: max returns its second operand on equal zeros.
  FV_TARGET_AVX2 static V abs(V d) { return _mm256_max_ps(_mm256_xor_ps(d, _mm256_set1_ps(-0.0f)), d); }
  FV_TARGET_AVX2 static unsigned less_mask(V a, V b) {
    return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_LT_OQ)));
  }
};

template <>
struct Avx2<double> {
  using V = __m256d;
  static constexpr int kLanes = 4;
  FV_TARGET_AVX2 static V set1(double v) { return _mm256_set1_pd(v); }
  FV_TARGET_AVX2 static V load(const double* p) { return _mm256_loadu_pd(p); }
  FV_TARGET_AVX2 static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  FV_TARGET_AVX2 static V sub(V a, V b) { return _mm256_sub_pd(a, b); }
  FV_TARGET_AVX2 static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  FV_TARGET_AVX2 static V add(V a, V b) { return _mm256_add_pd(a, b); }
  FV_TARGET_AVX2 static V abs(V d) { return _mm256_max_pd(_mm256_xor_pd(d, _mm256_set1_pd(-0.0)), d); }
  FV_TARGET_AVX2 static unsigned less_mask(V a, V b) {
    return static_cast<unsigned>(_mm256_movemask_pd(_mm256_cmp_pd(a, b, _CMP_LT_OQ)));
  }
};

template <int NORM, typename S>
FV_TARGET_AVX2 inline typename S::V term(typename S::V diff) {
  if constexpr (NORM == 2) {
    return S::mul(diff, diff);
  } else {
    return S::abs(diff);
  }
}

// Distances from the query (coordinates broadcast in qv) to the lanes at x (SoA, row stride).
template <int NORM, int DS, typename S, typename T>
FV_TARGET_AVX2 inline typename S::V lane_distances(const typename S::V* qv, const T* x, int64_t stride,
                                                   int dims) {
  typename S::V acc = term<NORM, S>(S::sub(qv[0], S::load(x)));
  for (int d = 1; d < (DS > 0 ? DS : dims); ++d) {
    acc = S::add(acc, term<NORM, S>(S::sub(qv[d], S::load(x + d * stride))));
  }
  return acc;
}

}  // namespace scan_detail

// Top-K of queries [i0, i1) (rows of q, D coordinates each) against points [0, n2) of one padded
// SoA cloud; out_d / out_i rows hold +inf / -1 on entry (n2 is rounded up to kScanStep: the
// padding is +inf). D = DS when DS > 0 (at most kMaxScanDims otherwise).
constexpr int kMaxScanDims = 16;

template <int NORM, int DS, typename T>
FV_TARGET_AVX2 void knn_scan_avx2(const T* q, int64_t i0, int64_t i1, const T* soa, int64_t stride, int64_t n2,
                                  int D, int K, T* out_d, int64_t* out_i) {
  using S = scan_detail::Avx2<T>;
  using V = typename S::V;
  constexpr int L = S::kLanes, kVectors = kScanStep / L;
  const int dims = DS > 0 ? DS : D;
  const int64_t n_pad = (n2 + kScanStep - 1) / kScanStep * kScanStep;
  alignas(32) T buf[kScanStep];
  V qv[DS > 0 ? DS : kMaxScanDims];
  for (int64_t b0 = 0; b0 < n_pad; b0 += kScanBlock) {
    const int64_t b1 = b0 + kScanBlock < n_pad ? b0 + kScanBlock : n_pad;
    for (int64_t i = i0; i < i1; ++i) {
      T* dd = out_d + i * K;
      int64_t* ii = out_i + i * K;
      for (int d = 0; d < dims; ++d) qv[d] = S::set1(q[i * D + d]);
      V threshold = S::set1(dd[K - 1]);
      for (int64_t j = b0; j < b1; j += kScanStep) {
        V dist[kVectors];
        unsigned mask = 0;
        for (int v = 0; v < kVectors; ++v) {
          dist[v] = scan_detail::lane_distances<NORM, DS, S>(qv, soa + j + v * L, stride, dims);
          mask |= S::less_mask(dist[v], threshold) << (v * L);
        }
        if (mask == 0) continue;
        for (int v = 0; v < kVectors; ++v) S::store(buf + v * L, dist[v]);
        while (mask != 0) {
          const int c = __builtin_ctz(mask);
          mask &= mask - 1;
          if (buf[c] < dd[K - 1]) scan_insert(dd, ii, K, buf[c], j + c);
        }
        threshold = S::set1(dd[K - 1]);
      }
    }
  }
}

// float32, K <= 8: the same scan with the top-K list itself in registers (distances and int32
// indices, ascending) instead of a sorted array in memory. A candidate d is inserted without a
// branch: the lanes holding a distance > d move up by one lane, d (and its index) takes the first
// of them, the last entry falls out; a d not below the K-th distance moves no lane < K. Entries of
// equal distance stay in front of d (lower indices: the order of scan_insert). Each query's list
// and threshold live in registers while it scans a cache block; between blocks they are parked in
// `state`. Measured on SampleNet's size (64 queries, 1024 points, K = 8): the array insertions'
// branches were most of the scan's time (about 47 insertions per query, K (1 + ln(N / K))).
constexpr int64_t kScanQueries = 32;  // queries whose register state is parked per pass

template <int NORM, int DS>
FV_TARGET_AVX2 void knn_scan_avx2_k8(const float* q, int64_t i0, int64_t i1, const float* soa, int64_t stride,
                                     int64_t n2, int D, int K, float* out_d, int64_t* out_i) {
  using S = scan_detail::Avx2<float>;
  const int dims = DS > 0 ? DS : D;
  const int64_t n_pad = (n2 + kScanStep - 1) / kScanStep * kScanStep;
  const __m256i from_previous_lane = _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6);
  const __m256i kth_lane = _mm256_set1_epi32(K - 1);
  alignas(32) float buf[kScanStep];
  alignas(32) float state_d[kScanQueries * 8];
  alignas(32) int32_t state_i[kScanQueries * 8];
  __m256 qv[DS > 0 ? DS : kMaxScanDims];
  for (int64_t g0 = i0; g0 < i1; g0 += kScanQueries) {
    const int64_t g1 = g0 + kScanQueries < i1 ? g0 + kScanQueries : i1;
    for (int64_t s = 0; s < (g1 - g0) * 8; ++s) {
      state_d[s] = fv_infinity<float>();
      state_i[s] = -1;
    }
    for (int64_t b0 = 0; b0 < n_pad; b0 += kScanBlock) {
      const int64_t b1 = b0 + kScanBlock < n_pad ? b0 + kScanBlock : n_pad;
      for (int64_t i = g0; i < g1; ++i) {
        for (int d = 0; d < dims; ++d) qv[d] = S::set1(q[i * D + d]);
        __m256 top_d = _mm256_load_ps(state_d + (i - g0) * 8);
        __m256i top_i = _mm256_load_si256(reinterpret_cast<const __m256i*>(state_i + (i - g0) * 8));
        __m256 threshold = _mm256_permutevar8x32_ps(top_d, kth_lane);
        for (int64_t j = b0; j < b1; j += kScanStep) {
          const __m256 d0 = scan_detail::lane_distances<NORM, DS, S>(qv, soa + j, stride, dims);
          const __m256 d1 = scan_detail::lane_distances<NORM, DS, S>(qv, soa + j + 8, stride, dims);
          unsigned mask = S::less_mask(d0, threshold) | S::less_mask(d1, threshold) << 8;
          if (mask == 0) continue;
          _mm256_store_ps(buf, d0);
          _mm256_store_ps(buf + 8, d1);
          while (mask != 0) {
            const int c = __builtin_ctz(mask);
            mask &= mask - 1;
            const __m256 d = _mm256_broadcast_ss(buf + c);
            const __m256 moves = _mm256_cmp_ps(top_d, d, _CMP_GT_OQ);
            // Lane l takes lane l - 1's entry if that one moves too, else the new entry.
            const __m256 previous_moves =
                _mm256_blend_ps(_mm256_permutevar8x32_ps(moves, from_previous_lane), _mm256_setzero_ps(), 1);
            const __m256 new_d =
                _mm256_blendv_ps(d, _mm256_permutevar8x32_ps(top_d, from_previous_lane), previous_moves);
            const __m256 new_i = _mm256_blendv_ps(
                _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int32_t>(j + c))),
                _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(top_i, from_previous_lane)), previous_moves);
            top_d = _mm256_blendv_ps(top_d, new_d, moves);
            top_i = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(top_i), new_i, moves));
          }
          threshold = _mm256_permutevar8x32_ps(top_d, kth_lane);
        }
        _mm256_store_ps(state_d + (i - g0) * 8, top_d);
        _mm256_store_si256(reinterpret_cast<__m256i*>(state_i + (i - g0) * 8), top_i);
      }
    }
    for (int64_t i = g0; i < g1; ++i) {
      for (int k = 0; k < K; ++k) {
        out_d[i * K + k] = state_d[(i - g0) * 8 + k];
        out_i[i * K + k] = state_i[(i - g0) * 8 + k];
      }
    }
  }
}
#endif

}  // namespace fastvision::points
