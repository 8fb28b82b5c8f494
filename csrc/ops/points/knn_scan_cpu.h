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

// float32, K <= 8, clouds of at most kFilterMaxPoints points: the same top-K as knn_scan_avx2_k8,
// found in three branch-free passes per query instead of one scan whose "any candidate in this
// step?" branch mispredicts (about 47 insertions per query at SampleNet's size, in random steps).
// 1. Distances to the whole padded cloud (lane_distances: the same expression, bit-identical)
//    into an L1-resident buffer, while two vectors keep lane-wise minima: 16 minima over 16
//    disjoint sets of points (lane l of vector v holds points j = 16 s + 8 v + l). The operand
//    order of min ignores a NaN distance.
// 2. threshold = the K-th smallest of those 16 minima: K different points lie at or below it, so
//    every point of the true top-K does too (+inf when fewer than K sets hold a finite distance).
//    The indices of the points with distance <= threshold (<=: a tie at the threshold may be in
//    the top-K) are left-packed into a candidate list, in ascending index, through a lookup table
//    of lane permutations; about 12 candidates per query at SampleNet's size.
// 3. The candidates are inserted into the register top-K list exactly as knn_scan_avx2_k8 does
//    (strict `<`, ascending index). The top-K under that rule depends only on the set of points
//    visited as long as it contains the true top-K, so the result is bit-identical, ties, +inf
//    (never inserted) and NaN (never a candidate, never inserted) included.
constexpr int64_t kFilterMaxPoints = 4096;  // 16 KiB of distances per query, in L1
// Below this, the threshold's sorts cost more than the single scan's branches (measured).
constexpr int64_t kFilterMinPoints = 16;

namespace scan_detail {

// All-ones lanes where x[l] <= threshold (a NaN gives zeros).
FV_TARGET_AVX2 inline __m256i at_most(const float* x, __m256 threshold) {
  return _mm256_castps_si256(_mm256_cmp_ps(_mm256_load_ps(x), threshold, _CMP_LE_OQ));
}

// Bit c of the result: x[c] <= threshold, for the 32 distances at x.
FV_TARGET_AVX2 inline uint32_t at_most_mask32(const float* x, __m256 threshold) {
  // Packing (saturating, within 128-bit halves) leaves the dwords in the order
  // x0-3 x8-11 x16-19 x24-27 | x4-7 x12-15 x20-23 x28-31; the permutation restores index order.
  const __m256i bytes =
      _mm256_packs_epi16(_mm256_packs_epi32(at_most(x, threshold), at_most(x + 8, threshold)),
                         _mm256_packs_epi32(at_most(x + 16, threshold), at_most(x + 24, threshold)));
  return static_cast<uint32_t>(
      _mm256_movemask_epi8(_mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))));
}

// Compare-exchanges of an ascending sort of 8 lanes: a (lo, hi) pair per lane set takes min at
// the lower lane and max at the upper one.
FV_TARGET_AVX2 inline __m256 sort_step(__m256 v, __m256i partner, int upper_lanes) {
  const __m256 other = _mm256_permutevar8x32_ps(v, partner);
  return _mm256_blend_ps(_mm256_min_ps(v, other), _mm256_max_ps(v, other), upper_lanes);
}

// The 8 lanes sorted ascending (a bitonic network: 6 steps). No lane holds NaN here.
FV_TARGET_AVX2 inline __m256 sort8(__m256 v) {
  v = sort_step(v, _mm256_setr_epi32(1, 0, 3, 2, 5, 4, 7, 6), 0b10101010);
  v = sort_step(v, _mm256_setr_epi32(3, 2, 1, 0, 7, 6, 5, 4), 0b11001100);
  v = sort_step(v, _mm256_setr_epi32(1, 0, 3, 2, 5, 4, 7, 6), 0b10101010);
  v = sort_step(v, _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0), 0b11110000);
  v = sort_step(v, _mm256_setr_epi32(2, 3, 0, 1, 6, 7, 4, 5), 0b11001100);
  return sort_step(v, _mm256_setr_epi32(1, 0, 3, 2, 5, 4, 7, 6), 0b10101010);
}

}  // namespace scan_detail

namespace scan_detail {

// Pass 1 of one query (coordinates broadcast in qv): the distances to points [0, n_pad) into
// dist, and the pass 2 threshold (broadcast).
template <int NORM, int DS>
FV_TARGET_AVX2 inline __m256 filter_distances(const __m256* qv, const float* soa, int64_t stride, int64_t n_pad,
                                              int dims, int K, float* dist) {
  using S = Avx2<float>;
  __m256 min0 = _mm256_set1_ps(fv_infinity<float>()), min1 = min0;
  for (int64_t j = 0; j < n_pad; j += kScanStep) {
    const __m256 d0 = lane_distances<NORM, DS, S>(qv, soa + j, stride, dims);
    const __m256 d1 = lane_distances<NORM, DS, S>(qv, soa + j + 8, stride, dims);
    _mm256_store_ps(dist + j, d0);
    _mm256_store_ps(dist + j + 8, d1);
    min0 = _mm256_min_ps(d0, min0);
    min1 = _mm256_min_ps(d1, min1);
  }
  // With min0 ascending and min1 descending, min(min0, min1) holds the 8 smallest of the 16
  // minima (a bitonic half-cleaner); the K-th smallest is lane K - 1 once that is sorted.
  const __m256i reversed = _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0);
  const __m256 lowest = sort8(_mm256_min_ps(sort8(min0), _mm256_permutevar8x32_ps(sort8(min1), reversed)));
  return _mm256_permutevar8x32_ps(lowest, _mm256_set1_epi32(K - 1));
}

// Passes 2 and 3 of one query: the top-K of the points [0, n2) whose distances are in dist
// (padded with +inf to a multiple of 64), ascending, into the first K lanes of top_d / top_i.
FV_TARGET_AVX2 inline void filter_top_k(const float* dist, int64_t n2, __m256 threshold, __m256& top_d,
                                        __m256i& top_i) {
  // The candidates' bit words (bit c of a word: point base + c), the nonzero ones only; pass 3
  // reads one entry past the last.
  uint64_t word_bits[kFilterMaxPoints / 64 + 1];
  int64_t word_base[kFilterMaxPoints / 64 + 1];
  const int64_t words = (n2 + 63) / 64;
  const uint64_t last_word_points = n2 % 64 == 0 ? ~uint64_t{0} : (uint64_t{1} << (n2 % 64)) - 1;
  int64_t nonzero = 0, count = 0;
  for (int64_t w = 0; w < words; ++w) {
    uint64_t bits = at_most_mask32(dist + 64 * w, threshold) |
                    uint64_t{at_most_mask32(dist + 64 * w + 32, threshold)} << 32;
    bits &= w == words - 1 ? last_word_points : ~uint64_t{0};  // never the padding
    word_bits[nonzero] = bits;
    word_base[nonzero] = 64 * w;
    nonzero += bits != 0;
    count += __builtin_popcountll(bits);
  }
  word_bits[nonzero] = 0;
  // Pass 3: the candidates in ascending index, moving to the next nonzero word without a branch.
  const __m256i from_previous_lane = _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6);
  top_d = _mm256_set1_ps(fv_infinity<float>());
  top_i = _mm256_set1_epi32(-1);
  int64_t word = 0;
  uint64_t bits = word_bits[0];
  for (int64_t c = 0; c < count; ++c) {
    const int32_t j = static_cast<int32_t>(word_base[word] + __builtin_ctzll(bits));
    bits &= bits - 1;
    const uint64_t next = word_bits[word + 1];
    word += bits == 0;
    bits = bits != 0 ? bits : next;
    // The insertion of knn_scan_avx2_k8.
    const __m256 d = _mm256_broadcast_ss(dist + j);
    const __m256 moves = _mm256_cmp_ps(top_d, d, _CMP_GT_OQ);
    const __m256 previous_moves =
        _mm256_blend_ps(_mm256_permutevar8x32_ps(moves, from_previous_lane), _mm256_setzero_ps(), 1);
    const __m256 new_d = _mm256_blendv_ps(d, _mm256_permutevar8x32_ps(top_d, from_previous_lane), previous_moves);
    const __m256 new_i =
        _mm256_blendv_ps(_mm256_castsi256_ps(_mm256_set1_epi32(j)),
                         _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(top_i, from_previous_lane)), previous_moves);
    top_d = _mm256_blendv_ps(top_d, new_d, moves);
    top_i = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(top_i), new_i, moves));
  }
}

}  // namespace scan_detail

template <int NORM, int DS>
FV_TARGET_AVX2 void knn_scan_avx2_k8_filtered(const float* q, int64_t i0, int64_t i1, const float* soa,
                                              int64_t stride, int64_t n2, int D, int K, float* out_d,
                                              int64_t* out_i) {
  const int dims = DS > 0 ? DS : D;
  const int64_t n_pad = (n2 + kScanStep - 1) / kScanStep * kScanStep;
  // Two distance buffers: query i + 1's pass 1 is issued before query i's passes 2 and 3, so that
  // the out-of-order core overlaps their latency chains (the threshold's sort, the insertions).
  alignas(32) float dist[2][kFilterMaxPoints];
  for (int64_t j = n_pad; j < (n2 + 63) / 64 * 64; ++j) dist[0][j] = dist[1][j] = fv_infinity<float>();
  __m256 qv[DS > 0 ? DS : kMaxScanDims];
  for (int d = 0; d < dims; ++d) qv[d] = _mm256_set1_ps(q[i0 * D + d]);
  __m256 threshold = scan_detail::filter_distances<NORM, DS>(qv, soa, stride, n_pad, dims, K, dist[0]);
  for (int64_t i = i0; i < i1; ++i) {
    const float* current = dist[(i - i0) & 1];
    __m256 next_threshold = threshold;
    if (i + 1 < i1) {
      for (int d = 0; d < dims; ++d) qv[d] = _mm256_set1_ps(q[(i + 1) * D + d]);
      next_threshold =
          scan_detail::filter_distances<NORM, DS>(qv, soa, stride, n_pad, dims, K, dist[(i + 1 - i0) & 1]);
    }
    __m256 top_d;
    __m256i top_i;
    scan_detail::filter_top_k(current, n2, threshold, top_d, top_i);
    threshold = next_threshold;
    alignas(32) float top_dist[8];
    alignas(32) int32_t top_index[8];
    _mm256_store_ps(top_dist, top_d);
    _mm256_store_si256(reinterpret_cast<__m256i*>(top_index), top_i);
    for (int k = 0; k < K; ++k) {
      out_d[i * K + k] = top_dist[k];
      out_i[i * K + k] = top_index[k];
    }
  }
}

// The rows x, y, z of a structure-of-arrays copy of n 3-D float32 points stored as (n, 3): eight
// points (three vectors) per step, each row gathered by two blends and put in order by one lane
// permutation; the tail one point at a time.
FV_TARGET_AVX2 inline void soa_rows_3d(const float* points, int64_t n, float* x, float* y, float* z) {
  const __m256i x_order = _mm256_setr_epi32(0, 3, 6, 1, 4, 7, 2, 5);
  const __m256i y_order = _mm256_setr_epi32(1, 4, 7, 2, 5, 0, 3, 6);
  const __m256i z_order = _mm256_setr_epi32(2, 5, 0, 3, 6, 1, 4, 7);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    // v0 = x0 y0 z0 x1 y1 z1 x2 y2, v1 = z2 x3 y3 z3 x4 y4 z4 x5, v2 = y5 z5 x6 y6 z6 x7 y7 z7.
    const __m256 v0 = _mm256_loadu_ps(points + 3 * j);
    const __m256 v1 = _mm256_loadu_ps(points + 3 * j + 8);
    const __m256 v2 = _mm256_loadu_ps(points + 3 * j + 16);
    // x0 x3 x6 x1 x4 x7 x2 x5, y5 y0 y3 y6 y1 y4 y7 y2, z2 z5 z0 z3 z6 z1 z4 z7.
    const __m256 xs = _mm256_blend_ps(_mm256_blend_ps(v0, v1, 0b10010010), v2, 0b00100100);
    const __m256 ys = _mm256_blend_ps(_mm256_blend_ps(v0, v1, 0b00100100), v2, 0b01001001);
    const __m256 zs = _mm256_blend_ps(_mm256_blend_ps(v0, v1, 0b01001001), v2, 0b10010010);
    _mm256_storeu_ps(x + j, _mm256_permutevar8x32_ps(xs, x_order));
    _mm256_storeu_ps(y + j, _mm256_permutevar8x32_ps(ys, y_order));
    _mm256_storeu_ps(z + j, _mm256_permutevar8x32_ps(zs, z_order));
  }
  for (; j < n; ++j) {
    x[j] = points[3 * j];
    y[j] = points[3 * j + 1];
    z[j] = points[3 * j + 2];
  }
}
#endif

}  // namespace fastvision::points
