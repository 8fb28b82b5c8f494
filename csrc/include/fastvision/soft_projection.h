// Per-query arithmetic of soft_project (SampleNet's soft projection), called by both the CPU and
// the CUDA kernels, so that the CPU tests exercise the arithmetic the GPU runs.
//
// For a query q with neighbours p_0..p_{k-1} (sorted by ascending squared distance d_j, ties by
// index) and sigma > 0:
//   w_j = softmax_j(-d_j / sigma) = e_j / s,  e_j = exp(-(d_j - d_min) / sigma),  s = sum_j e_j,
//   y = sum_j w_j p_j  (and yF = sum_j w_j f_j for features).
// The shift by d_min keeps e_j in (0, 1] with e_min = 1, so the weights stay finite for any
// sigma > 0 (an unshifted exp underflows to 0/0 from sigma ~ 1e-4 on). `hard` gives the one-hot
// weights of the nearest neighbour (j = 0).
//
// Backward, with g = dL/dy, gF = dL/dyF and l_j = -d_j / sigma:
//   dL/dl_j   = w_j (g.(p_j - y) + gF.(f_j - yF))          (= w_j (a_j - abar), a_j = g.p_j + gF.f_j)
//   c_j       = 2 dL/dl_j / sigma
//   dL/dq     = sum_j c_j (p_j - q)
//   dL/dp_j  += w_j g - c_j (p_j - q)
//   dL/df_j  += w_j gF
//   dL/dsigma = sum_j dL/dl_j d_j / sigma^2 = sum_j dL/dl_j (d_j - d_min) / sigma^2
// (the last equality because sum_j dL/dl_j = 0; the shifted form keeps it finite for tiny sigma).
// Nothing per neighbour is stored between forward and backward: each recomputes the distances
// from the gathered points (once per query for the first kSpCachedNeighbours neighbours).
//
// A neighbour index outside [0, N) is "no neighbour": knn_points returns -1 for neighbours at
// +inf distance (squared distances overflow float32 for finite coordinates near 2e19), whose
// softmax weight is exactly 0, so they are skipped. A query without any neighbour at finite
// distance has an empty softmax: its outputs are NaN (as 0/0), its gradients 0. The CPU backward
// rejects indices >= N or < -1 before calling these functions; on CUDA they are skipped.
#pragma once
#include <cmath>
#include <cstdint>

#include "fastvision/macros.h"
#include "fastvision/point_math.h"

namespace fastvision {

template <typename A>
FV_HOST_DEVICE FV_INLINE A sp_exp(A x) {
  if constexpr (sizeof(A) == 4) {
    return expf(x);
  } else {
    return exp(x);
  }
}

// Unnormalised softmax weight exp(-(d - d_min) / sigma) in (0, 1].
template <typename A>
FV_HOST_DEVICE FV_INLINE A sp_unnormalised_weight(A d, A d_min, A sigma) {
  return sp_exp(-(d - d_min) / sigma);
}

// Squared distance between a query and a neighbour (the knn_points expression, see point_math.h).
template <typename A, typename T>
FV_HOST_DEVICE FV_INLINE A sp_dist(const T* q, const T* p) {
  return point_dist<2, A, 3>(q, 1, p, 1, 3);
}

FV_HOST_DEVICE FV_INLINE bool sp_is_neighbour(int64_t j, int64_t N) { return j >= 0 && j < N; }

// The first kSpCachedNeighbours neighbours' distances and unnormalised weights are computed once
// per query and reused by the later passes (the same values, so the same results as recomputing
// them); neighbours past it, for large k, are recomputed.
constexpr int kSpCachedNeighbours = 16;

// The smallest distance over the query's k neighbours (idx[0] for sorted neighbours, recomputed to
// be safe; +inf when it has none), and the distances of the cached ones into dist (+inf for "no
// neighbour").
template <typename A, typename T>
FV_HOST_DEVICE FV_INLINE A sp_cache_distances(const T* q, const T* cloud, int64_t N, const int64_t* idx, int k,
                                              A* dist) {
  A d_min = A(INFINITY);
  for (int j = 0; j < k; ++j) {
    A d = A(INFINITY);
    if (sp_is_neighbour(idx[j], N)) {
      d = sp_dist<A>(q, cloud + idx[j] * 3);
      d_min = d < d_min ? d : d_min;
    }
    if (j < kSpCachedNeighbours) {
      dist[j] = d;
    }
  }
  return d_min;
}

// Neighbour j's distance (its neighbour index is valid): cached or recomputed.
template <typename A, typename T>
FV_HOST_DEVICE FV_INLINE A sp_neighbour_dist(const T* q, const T* p, int j, const A* dist) {
  return j < kSpCachedNeighbours ? dist[j] : sp_dist<A>(q, p);
}

// Forward of one query: y (3 values) and, when F > 0, yF (F values), both written in type A.
// cloud is (N, 3), feats (N, F) of the query's cloud; idx holds the k neighbour indices.
template <typename A, typename T>
FV_HOST_DEVICE FV_INLINE void sp_forward_query(const T* q, const T* cloud, int64_t N,
                                               const T* feats, int64_t F, const int64_t* idx,
                                               int k, A sigma, bool hard, A* y, A* yF) {
  const int n = hard ? 1 : k;  // hard: the nearest neighbour with weight 1
  A dist[kSpCachedNeighbours];
  const A d_min = hard ? A(0) : sp_cache_distances<A>(q, cloud, N, idx, k, dist);
  A s = A(0), y0 = A(0), y1 = A(0), y2 = A(0);
  for (int64_t c = 0; c < F; ++c) {
    yF[c] = A(0);
  }
  for (int j = 0; j < n; ++j) {
    if (!sp_is_neighbour(idx[j], N)) {
      continue;
    }
    const T* p = cloud + idx[j] * 3;
    const A e = hard ? A(1) : sp_unnormalised_weight(sp_neighbour_dist<A>(q, p, j, dist), d_min, sigma);
    s = s + e;
    y0 = y0 + e * static_cast<A>(p[0]);
    y1 = y1 + e * static_cast<A>(p[1]);
    y2 = y2 + e * static_cast<A>(p[2]);
    const T* f = feats + idx[j] * F;
    for (int64_t c = 0; c < F; ++c) {
      yF[c] = yF[c] + e * static_cast<A>(f[c]);
    }
  }
  const A inv = A(1) / s;
  y[0] = y0 * inv;
  y[1] = y1 * inv;
  y[2] = y2 * inv;
  for (int64_t c = 0; c < F; ++c) {
    yF[c] = yF[c] * inv;
  }
}

// Backward of one query. g: dL/dy (3), gF: dL/dyF (F, unused when F = 0). Writes dL/dq to gq (3)
// and returns this query's dL/dsigma; the neighbours' gradients go through
// scatter.point(j, d, value) and scatter.feature(j, c, value) (plain adds on the CPU, atomics on
// the GPU).
template <typename A, typename T, typename Scatter>
FV_HOST_DEVICE FV_INLINE A sp_backward_query(const T* q, const T* cloud, int64_t N,
                                             const T* feats, int64_t F, const int64_t* idx, int k,
                                             A sigma, bool hard, const A* g, const A* gF, A* gq,
                                             Scatter& scatter) {
  gq[0] = A(0);
  gq[1] = A(0);
  gq[2] = A(0);
  if (hard) {  // y = p_0, yF = f_0: only the nearest neighbour receives a gradient
    const int64_t j = idx[0];
    if (!sp_is_neighbour(j, N)) {
      return A(0);
    }
    for (int d = 0; d < 3; ++d) {
      scatter.point(j, d, g[d]);
    }
    for (int64_t c = 0; c < F; ++c) {
      scatter.feature(j, c, gF[c]);
    }
    return A(0);
  }
  const A q0 = static_cast<A>(q[0]), q1 = static_cast<A>(q[1]), q2 = static_cast<A>(q[2]);
  A dist[kSpCachedNeighbours], weight[kSpCachedNeighbours];
  const A d_min = sp_cache_distances<A>(q, cloud, N, idx, k, dist);
  // Pass 1: normaliser, y and gF.yF.
  A s = A(0), y0 = A(0), y1 = A(0), y2 = A(0), gfy = A(0);
  for (int j = 0; j < k; ++j) {
    if (!sp_is_neighbour(idx[j], N)) {
      continue;
    }
    const T* p = cloud + idx[j] * 3;
    const A e = sp_unnormalised_weight(sp_neighbour_dist<A>(q, p, j, dist), d_min, sigma);
    if (j < kSpCachedNeighbours) {
      weight[j] = e;
    }
    s = s + e;
    y0 = y0 + e * static_cast<A>(p[0]);
    y1 = y1 + e * static_cast<A>(p[1]);
    y2 = y2 + e * static_cast<A>(p[2]);
    if (F > 0) {
      const T* f = feats + idx[j] * F;
      A gf = A(0);
      for (int64_t c = 0; c < F; ++c) {
        gf = gf + gF[c] * static_cast<A>(f[c]);
      }
      gfy = gfy + e * gf;
    }
  }
  const A inv = A(1) / s;
  y0 = y0 * inv;
  y1 = y1 * inv;
  y2 = y2 * inv;
  gfy = gfy * inv;
  // Pass 2: per-neighbour gradients.
  A gsigma = A(0);
  for (int j = 0; j < k; ++j) {
    const int64_t jj = idx[j];
    if (!sp_is_neighbour(jj, N)) {
      continue;
    }
    const T* p = cloud + jj * 3;
    const A p0 = static_cast<A>(p[0]), p1 = static_cast<A>(p[1]), p2 = static_cast<A>(p[2]);
    const A d = sp_neighbour_dist<A>(q, p, j, dist);
    const A w = (j < kSpCachedNeighbours ? weight[j] : sp_unnormalised_weight(d, d_min, sigma)) * inv;
    A a = (g[0] * (p0 - y0) + g[1] * (p1 - y1)) + g[2] * (p2 - y2);
    if (F > 0) {
      const T* f = feats + jj * F;
      A gf = A(0);
      for (int64_t c = 0; c < F; ++c) {
        gf = gf + gF[c] * static_cast<A>(f[c]);
      }
      a = a + (gf - gfy);
    }
    const A dl = w * a;                 // dL/dl_j
    const A coef = A(2) * dl / sigma;   // c_j
    const A x0 = p0 - q0, x1 = p1 - q1, x2 = p2 - q2;
    gq[0] = gq[0] + coef * x0;
    gq[1] = gq[1] + coef * x1;
    gq[2] = gq[2] + coef * x2;
    scatter.point(jj, 0, w * g[0] - coef * x0);
    scatter.point(jj, 1, w * g[1] - coef * x1);
    scatter.point(jj, 2, w * g[2] - coef * x2);
    for (int64_t c = 0; c < F; ++c) {
      scatter.feature(jj, c, w * gF[c]);
    }
    // A zero weight (underflowed exp) contributes nothing; skipping it also avoids 0 * inf
    // when (d - d_min) / sigma^2 overflows for extremely small sigma.
    if (dl != A(0)) {
      gsigma = gsigma + dl * ((d - d_min) / sigma) / sigma;
    }
  }
  return gsigma;
}

}  // namespace fastvision
