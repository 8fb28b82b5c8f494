// CPU-only distance helpers shared by the point-cloud kernels: distances from one point to a block
// of points stored as a structure of arrays, written so that the compiler vectorises them. Each
// element is the same expression as fastvision::point_dist (coordinate order, no contraction).
#pragma once
#include <cstdint>

#include "fastvision/point_math.h"

namespace fastvision::points {

// Distances from query q to points [j0, j0 + n) of a (D, stride) structure-of-arrays cloud.
template <int NORM, int DS, typename T>
inline void chunk_distances(const T* q, const T* soa, int64_t stride, int64_t j0, int64_t n,
                            int D, T* out) {
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

}  // namespace fastvision::points
