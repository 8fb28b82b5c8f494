// CPU-only distance helpers shared by the point-cloud kernels: distances from one point to a block
// of points stored as a structure of arrays, written so that the compiler vectorises them. Each
// element is the same expression as fastvision::point_dist (coordinate order, no contraction).
#pragma once
#include <cstdint>

#include "fastvision/point_math.h"

namespace fastvision::points {

// Distances from query q to points [j0, j0 + n) of a (D, stride) structure-of-arrays cloud.
template <int NORM, int DS, typename T>
inline void chunk_distances(const T* __restrict__ q, const T* __restrict__ soa, int64_t stride, int64_t j0, int64_t n,
                            int D, T* __restrict__ out) {
  if constexpr (DS == 3) {
    // One fused pass for 3-D points: no read-modify-write of `out` per coordinate.
    const T q0 = q[0], q1 = q[1], q2 = q[2];
    const T* x0 = soa + j0;
    const T* x1 = soa + stride + j0;
    const T* x2 = soa + 2 * stride + j0;
    for (int64_t c = 0; c < n; ++c) {
      out[c] = (dist_term<NORM>(q0 - x0[c]) + dist_term<NORM>(q1 - x1[c])) +
               dist_term<NORM>(q2 - x2[c]);
    }
    return;
  }
  const int dims = DS > 0 ? DS : D;
  const T q0 = q[0];
  const T* x0 = soa + j0;
  for (int64_t c = 0; c < n; ++c) {
    out[c] = dist_term<NORM>(q0 - x0[c]);
  }
  for (int d = 1; d < dims; ++d) {
    const T qd = q[d];
    const T* xd = soa + d * stride + j0;
    for (int64_t c = 0; c < n; ++c) {
      out[c] = out[c] + dist_term<NORM>(qd - xd[c]);
    }
  }
}

// Inserts (d, j) into an ascending top-K list during a scan in ascending index order, given
// d < dist[K - 1]. Every entry already in the list has a lower index than j, so on equal
// distances j goes after it: the same order as neighbour_less, with one comparison per step.
template <typename T>
inline void scan_insert(T* dist, int64_t* idx, int K, T d, int64_t j) {
  int s = K - 1;
  for (; s > 0 && d < dist[s - 1]; --s) {
    dist[s] = dist[s - 1];
    idx[s] = idx[s - 1];
  }
  dist[s] = d;
  idx[s] = j;
}

// Reductions written lane by lane: a plain `min` loop is a serial dependency chain that the
// compiler may not reorder (IEEE semantics), while independent lanes vectorise.
constexpr int64_t kLanes = 8;

template <typename T>
inline bool any_less(const T* x, int64_t n, T bound) {
  int hit = 0;
  for (int64_t c = 0; c < n; ++c) {
    hit |= x[c] < bound;
  }
  return hit != 0;
}

template <typename T>
inline bool any_equal(const T* x, int64_t n, T value) {
  int hit = 0;
  for (int64_t c = 0; c < n; ++c) {
    hit |= x[c] == value;
  }
  return hit != 0;
}

template <typename T>
inline T array_max(const T* x, int64_t n) {
  T lane[kLanes];
  const int64_t m = n < kLanes ? n : kLanes;
  for (int64_t l = 0; l < m; ++l) {
    lane[l] = x[l];
  }
  for (int64_t l = m; l < kLanes; ++l) {
    lane[l] = x[0];
  }
  int64_t c = kLanes;
  for (; c + kLanes <= n; c += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) {
      lane[l] = x[c + l] > lane[l] ? x[c + l] : lane[l];
    }
  }
  for (; c < n; ++c) {
    lane[0] = x[c] > lane[0] ? x[c] : lane[0];
  }
  T mx = lane[0];
  for (int64_t l = 1; l < kLanes; ++l) {
    mx = lane[l] > mx ? lane[l] : mx;
  }
  return mx;
}

}  // namespace fastvision::points
