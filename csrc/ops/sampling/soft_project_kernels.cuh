// Device code and launch planning of soft_project and its backward (torch-free: compiled by nvcc
// for the CUDA build and by g++ with the CUDA-on-CPU emulator for `pytest -m emulated`).
//
// A group of G lanes (G = 4, 8, 16 or 32, chosen from k and F by soft_project_group_size) serves
// one query; 128 / G queries per block. Within a group:
// * neighbour-parallel steps: lane l takes neighbours l, l + G, ... (distance, weight, index);
// * the sums run over the neighbours in index order j = 0, 1, ... in every lane, each neighbour's
//   values broadcast from its lane with __shfl_sync: the CPU's summation order, so the results are
//   bit-exact with the CPU kernel wherever g++ and nvcc round alike (the emulator);
// * feature-parallel steps: lane l takes channels l, l + G, ... of a feature row, so the G lanes
//   read and write consecutive addresses (coalesced rows), kFeatureRegs channels per lane and pass.
//
// Forward (soft_project_kernel): d_min (group min), then per pass over the feature channels one
// sweep over the neighbours: s and y (first pass) and kFeatureRegs x G channels of yF.
//
// Backward, without atomics (bit-exact with the CPU and deterministic, so it needs no
// alertNotDeterministic):
// 1. soft_project_backward_query_kernel (group per query) recomputes the weights as the forward
//    and writes dL/dquery, the per-query dL/dsigma and, per (query, neighbour slot) entry, the
//    neighbour's weight w, its point gradient w g - c (p - q) and its key (the neighbour index, -1
//    for an entry that contributes nothing). The dot products gF . f_j of the neighbours' feature
//    rows are summed in channel order per neighbour: the rows are read coalesced into a per-warp
//    shared tile (32 x 33, conflict-free) and each lane sums its neighbour's row from there.
// 2. The glue sorts each cloud's keys stably (at::sort; the driver: std::stable_sort) and finds
//    each point's segment of entries (at::searchsorted).
// 3. soft_project_backward_gather_kernel (group per point) sums its segment in order into
//    dL/dpoints (3 values) and dL/dfeatures (w gF of the entry's query, lanes over channels:
//    coalesced reads of gF rows and writes of the point's row). The stable sort orders a point's
//    entries by (query, slot): the order in which the CPU kernel scatters them.
//
// Storage type T (float, double, half, bfloat16) is read as such and computed in A = opmath_t<T>.
// Neighbour indices outside [0, N) are skipped (see soft_projection.h). Inactive groups (past the
// last query or point) run the loops on a clamped copy and write nothing, so every lane of a warp
// meets every shuffle.
#pragma once

#include <cstdint>

#include "fastvision/cuda_compat.h"
#include "fastvision/soft_projection.h"

namespace fastvision::sampling {

constexpr int kSoftProjectThreads = 128;
constexpr int kSoftProjectWarps = kSoftProjectThreads / 32;
constexpr int kFeatureRegs = 4;  // feature channels per lane and pass (accumulators)
constexpr unsigned kFullMask = 0xffffffffu;

// G: the smallest power of two >= max(k, F), within [4, 32].
inline int soft_project_group_size(int64_t k, int64_t F) {
  const int64_t need = k > F ? k : F;
  int g = 4;
  while (g < 32 && g < need) {
    g *= 2;
  }
  return g;
}

// The group's smallest neighbour distance (+inf when it has none); every lane gets it.
template <typename A, typename T>
FV_DEVICE A group_min_dist(const T* q, const T* cloud, int64_t N, const int64_t* ix, int k,
                           int lane, int G) {
  A d_min = A(INFINITY);
  for (int j = lane; j < k; j += G) {
    if (sp_is_neighbour(ix[j], N)) {
      const A d = sp_dist<A>(q, cloud + ix[j] * 3);
      d_min = d < d_min ? d : d_min;
    }
  }
  for (int off = G / 2; off > 0; off /= 2) {
    const A o = __shfl_xor_sync(kFullMask, d_min, off, G);
    d_min = o < d_min ? o : d_min;
  }
  return d_min;
}

template <typename T>
FV_GLOBAL void __launch_bounds__(kSoftProjectThreads)
    soft_project_kernel(const T* __restrict__ q, const T* __restrict__ p,
                        const T* __restrict__ feats, const int64_t* __restrict__ idx,
                        const opmath_t<T>* __restrict__ sigma, int64_t BM, int64_t M, int64_t N,
                        int64_t F, int k, int G, bool hard, opmath_t<T>* __restrict__ out,
                        opmath_t<T>* __restrict__ out_f) {
  using A = opmath_t<T>;
  const int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / G;
  const int lane = static_cast<int>(threadIdx.x % G);
  const bool active = r < BM;
  const int64_t rq = active ? r : BM - 1;
  const int64_t b = rq / M;
  const T* qr = q + rq * 3;
  const T* cloud = p + b * N * 3;
  const T* fc = feats + b * N * F;
  const int64_t* ix = idx + rq * k;
  const A sg = sigma[b];
  const int n = hard ? 1 : k;  // hard: the nearest neighbour with weight 1
  const A d_min = hard ? A(0) : group_min_dist<A>(qr, cloud, N, ix, k, lane, G);
  A s = A(0), y0 = A(0), y1 = A(0), y2 = A(0), inv = A(0);
  const int64_t pass_width = int64_t{G} * kFeatureRegs;
  for (int64_t c0 = 0; c0 < (F > 0 ? F : 1); c0 += pass_width) {
    A acc[kFeatureRegs];
    for (int i = 0; i < kFeatureRegs; ++i) {
      acc[i] = A(0);
    }
    for (int j0 = 0; j0 < n; j0 += G) {
      const int j = j0 + lane;
      int64_t my_id = -1;
      A my_e = A(0);
      if (j < n && sp_is_neighbour(ix[j], N)) {
        my_id = ix[j];
        my_e = hard ? A(1) : sp_unnormalised_weight(sp_dist<A>(qr, cloud + my_id * 3), d_min, sg);
      }
      const int count = n - j0 < G ? n - j0 : G;
      for (int jj = 0; jj < count; ++jj) {
        const A e = __shfl_sync(kFullMask, my_e, jj, G);
        const int64_t id = __shfl_sync(kFullMask, my_id, jj, G);
        if (id < 0) {
          continue;
        }
        if (c0 == 0) {
          const T* pj = cloud + id * 3;
          s = s + e;
          y0 = y0 + e * static_cast<A>(pj[0]);
          y1 = y1 + e * static_cast<A>(pj[1]);
          y2 = y2 + e * static_cast<A>(pj[2]);
        }
        const T* fj = fc + id * F;
        for (int i = 0; i < kFeatureRegs; ++i) {
          const int64_t c = c0 + int64_t{i} * G + lane;
          if (c < F) {
            acc[i] = acc[i] + e * static_cast<A>(fj[c]);
          }
        }
      }
    }
    if (c0 == 0) {
      inv = A(1) / s;
    }
    if (active) {
      for (int i = 0; i < kFeatureRegs; ++i) {
        const int64_t c = c0 + int64_t{i} * G + lane;
        if (c < F) {
          out_f[r * F + c] = acc[i] * inv;
        }
      }
    }
  }
  if (active && lane < 3) {
    out[r * 3 + lane] = (lane == 0 ? y0 : (lane == 1 ? y1 : y2)) * inv;
  }
}

// Lane's dot product gF . f_{id} over the F channels, summed in channel order (the CPU's), id < 0
// giving 0; every lane of the warp takes part. The group's G rows are read coalesced into the
// warp's shared tile (rows: the warp's lanes, G columns a step), then each lane sums its row.
template <typename A, typename T>
FV_DEVICE A group_feature_dot(const T* fc, int64_t F, const A* gFr, int64_t my_id, int lane,
                              int G, A (&tile)[32][33]) {
  const int group_base = static_cast<int>(threadIdx.x % 32) - lane;  // group's first lane in warp
  A dot = A(0);
  for (int64_t c0 = 0; c0 < F; c0 += G) {
    const bool in_row = c0 + lane < F;
    const A gFv = in_row ? gFr[c0 + lane] : A(0);
    for (int row = 0; row < G; ++row) {
      const int64_t id = __shfl_sync(kFullMask, my_id, row, G);
      tile[group_base + row][lane] = (id >= 0 && in_row) ? static_cast<A>(fc[id * F + c0 + lane])
                                                         : A(0);
    }
    __syncwarp();
    const int width = F - c0 < G ? static_cast<int>(F - c0) : G;
    for (int c = 0; c < width; ++c) {
      const A gFc = __shfl_sync(kFullMask, gFv, c, G);
      if (my_id >= 0) {
        dot = dot + gFc * tile[threadIdx.x % 32][c];
      }
    }
    __syncwarp();  // the tile is refilled by the next step
  }
  return dot;
}

// One entry (query, neighbour slot) of the backward: what the gather kernel sums per point.
template <typename A>
struct EntryOut {
  int64_t* key;  // (B, M * k): neighbour index, -1 when the entry contributes nothing
  A* w;          // (B, M * k): the neighbour's normalised weight (dL/dyF -> dL/df factor)
  A* gp;         // (B, M * k, 3): the neighbour's point gradient
};

template <typename T>
FV_GLOBAL void __launch_bounds__(kSoftProjectThreads)
    soft_project_backward_query_kernel(const opmath_t<T>* __restrict__ g,
                                       const opmath_t<T>* __restrict__ gF, const T* __restrict__ q,
                                       const T* __restrict__ p, const T* __restrict__ feats,
                                       const int64_t* __restrict__ idx,
                                       const opmath_t<T>* __restrict__ sigma, int64_t BM,
                                       int64_t M, int64_t N, int64_t F, int k, int G, bool hard,
                                       opmath_t<T>* __restrict__ gq, opmath_t<T>* __restrict__ gsig,
                                       EntryOut<opmath_t<T>> entries) {
  using A = opmath_t<T>;
  FV_SHARED(A[kSoftProjectWarps][32][33], tiles);
  A(&tile)[32][33] = tiles[threadIdx.x / 32];
  const int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / G;
  const int lane = static_cast<int>(threadIdx.x % G);
  const bool active = r < BM;
  const int64_t rq = active ? r : BM - 1;
  const int64_t b = rq / M;
  const T* qr = q + rq * 3;
  const T* cloud = p + b * N * 3;
  const T* fc = feats + b * N * F;
  const int64_t* ix = idx + rq * k;
  const A* gr = g + rq * 3;
  const A* gFr = gF + rq * F;
  const A sg = sigma[b];
  int64_t* key = entries.key + rq * k;
  A* ew = entries.w + rq * k;
  A* egp = entries.gp + rq * k * 3;
  if (hard) {  // y = p_0, yF = f_0: only the nearest neighbour receives a gradient
    if (active) {
      for (int j = lane; j < k; j += G) {
        key[j] = (j == 0 && sp_is_neighbour(ix[0], N)) ? ix[0] : -1;
        ew[j] = A(1);
        for (int d = 0; d < 3; ++d) {
          egp[j * 3 + d] = gr[d];
        }
      }
      if (lane < 3) {
        gq[r * 3 + lane] = A(0);
      }
      if (lane == 0) {
        gsig[r] = A(0);
      }
    }
    return;  // uniform in the block: hard is a kernel argument
  }
  const A q0 = static_cast<A>(qr[0]), q1 = static_cast<A>(qr[1]), q2 = static_cast<A>(qr[2]);
  const A d_min = group_min_dist<A>(qr, cloud, N, ix, k, lane, G);
  // Pass 1: normaliser, y and gF.yF.
  A s = A(0), y0 = A(0), y1 = A(0), y2 = A(0), gfy = A(0);
  for (int j0 = 0; j0 < k; j0 += G) {
    const int j = j0 + lane;
    const int64_t my_id = j < k && sp_is_neighbour(ix[j], N) ? ix[j] : -1;
    const A my_e =
        my_id >= 0 ? sp_unnormalised_weight(sp_dist<A>(qr, cloud + my_id * 3), d_min, sg) : A(0);
    const A my_dot = F > 0 ? group_feature_dot<A>(fc, F, gFr, my_id, lane, G, tile) : A(0);
    const int count = k - j0 < G ? k - j0 : G;
    for (int jj = 0; jj < count; ++jj) {
      const A e = __shfl_sync(kFullMask, my_e, jj, G);
      const A dot = __shfl_sync(kFullMask, my_dot, jj, G);
      const int64_t id = __shfl_sync(kFullMask, my_id, jj, G);
      if (id < 0) {
        continue;
      }
      const T* pj = cloud + id * 3;
      s = s + e;
      y0 = y0 + e * static_cast<A>(pj[0]);
      y1 = y1 + e * static_cast<A>(pj[1]);
      y2 = y2 + e * static_cast<A>(pj[2]);
      if (F > 0) {
        gfy = gfy + e * dot;
      }
    }
  }
  const A inv = A(1) / s;
  y0 = y0 * inv;
  y1 = y1 * inv;
  y2 = y2 * inv;
  gfy = gfy * inv;
  // Pass 2: per-neighbour gradients (lane-parallel), then dL/dq and dL/dsigma in neighbour order.
  A gq0 = A(0), gq1 = A(0), gq2 = A(0), gsigma = A(0);
  for (int j0 = 0; j0 < k; j0 += G) {
    const int j = j0 + lane;
    const int64_t my_id = j < k && sp_is_neighbour(ix[j], N) ? ix[j] : -1;
    A my_dl = A(0), my_coef = A(0), x0 = A(0), x1 = A(0), x2 = A(0), my_dist = A(0);
    const A my_dot = F > 0 ? group_feature_dot<A>(fc, F, gFr, my_id, lane, G, tile) : A(0);
    if (my_id >= 0) {
      const T* pj = cloud + my_id * 3;
      const A p0 = static_cast<A>(pj[0]), p1 = static_cast<A>(pj[1]), p2 = static_cast<A>(pj[2]);
      my_dist = sp_dist<A>(qr, pj);
      const A w = sp_unnormalised_weight(my_dist, d_min, sg) * inv;
      A a = (gr[0] * (p0 - y0) + gr[1] * (p1 - y1)) + gr[2] * (p2 - y2);
      if (F > 0) {
        a = a + (my_dot - gfy);
      }
      my_dl = w * a;                    // dL/dl_j
      my_coef = A(2) * my_dl / sg;      // c_j
      x0 = p0 - q0;
      x1 = p1 - q1;
      x2 = p2 - q2;
      if (active) {
        ew[j] = w;
        egp[j * 3 + 0] = w * gr[0] - my_coef * x0;
        egp[j * 3 + 1] = w * gr[1] - my_coef * x1;
        egp[j * 3 + 2] = w * gr[2] - my_coef * x2;
      }
    }
    if (active && j < k) {
      key[j] = my_id;
    }
    const int count = k - j0 < G ? k - j0 : G;
    for (int jj = 0; jj < count; ++jj) {
      const int64_t id = __shfl_sync(kFullMask, my_id, jj, G);
      const A dl = __shfl_sync(kFullMask, my_dl, jj, G);
      const A coef = __shfl_sync(kFullMask, my_coef, jj, G);
      const A e0 = __shfl_sync(kFullMask, x0, jj, G);
      const A e1 = __shfl_sync(kFullMask, x1, jj, G);
      const A e2 = __shfl_sync(kFullMask, x2, jj, G);
      const A dist = __shfl_sync(kFullMask, my_dist, jj, G);
      if (id < 0) {
        continue;
      }
      gq0 = gq0 + coef * e0;
      gq1 = gq1 + coef * e1;
      gq2 = gq2 + coef * e2;
      // A zero weight (underflowed exp) contributes nothing; skipping it also avoids 0 * inf
      // when (d - d_min) / sigma^2 overflows for extremely small sigma (as soft_projection.h).
      if (dl != A(0)) {
        gsigma = gsigma + dl * ((dist - d_min) / sg) / sg;
      }
    }
  }
  if (active && lane < 3) {
    gq[r * 3 + lane] = lane == 0 ? gq0 : (lane == 1 ? gq1 : gq2);
  }
  if (active && lane == 0) {
    gsig[r] = gsigma;
  }
}

// Per point (group of G lanes): the sum of its entries, in sorted order. order (B, M * k): the
// entry positions sorted stably by key per cloud; seg (B, N + 1): the first sorted position of
// each point (and the end). gp (B, N, 3) and gf (B, N, F) are written.
template <typename A>
FV_GLOBAL void __launch_bounds__(kSoftProjectThreads)
    soft_project_backward_gather_kernel(const A* __restrict__ gF, const int64_t* __restrict__ order,
                                        const int64_t* __restrict__ seg,
                                        const A* __restrict__ entry_w,
                                        const A* __restrict__ entry_gp, int64_t BN, int64_t M,
                                        int64_t N, int64_t F, int k, int G, A* __restrict__ gp,
                                        A* __restrict__ gf) {
  const int64_t pt = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / G;
  const int lane = static_cast<int>(threadIdx.x % G);
  if (pt >= BN) {
    return;  // no warp-level operations below
  }
  const int64_t b = pt / N, j = pt % N;
  const int64_t MK = M * k;
  const int64_t beg = seg[b * (N + 1) + j], end = seg[b * (N + 1) + j + 1];
  const int64_t* ord = order + b * MK;
  const A* w = entry_w + b * MK;
  const A* egp = entry_gp + b * MK * 3;
  const A* gFc = gF + b * M * F;
  if (lane < 3) {
    A acc = A(0);
    for (int64_t e = beg; e < end; ++e) {
      acc = acc + egp[ord[e] * 3 + lane];
    }
    gp[pt * 3 + lane] = acc;
  }
  for (int64_t c0 = 0; c0 < F; c0 += int64_t{G} * kFeatureRegs) {
    A acc[kFeatureRegs];
    for (int i = 0; i < kFeatureRegs; ++i) {
      acc[i] = A(0);
    }
    for (int64_t e = beg; e < end; ++e) {
      const int64_t ent = ord[e];
      const A we = w[ent];
      const A* gFm = gFc + (ent / k) * F;
      for (int i = 0; i < kFeatureRegs; ++i) {
        const int64_t c = c0 + int64_t{i} * G + lane;
        if (c < F) {
          acc[i] = acc[i] + we * gFm[c];
        }
      }
    }
    for (int i = 0; i < kFeatureRegs; ++i) {
      const int64_t c = c0 + int64_t{i} * G + lane;
      if (c < F) {
        gf[pt * F + c] = acc[i];
      }
    }
  }
}

inline cuda::LaunchConfig soft_project_launch_config(int64_t items, int G) {
  cuda::LaunchConfig cfg;
  const int64_t per_block = kSoftProjectThreads / G;
  cfg.grid = dim3(static_cast<unsigned>(ceil_div<int64_t>(items, per_block)));
  cfg.block = dim3(kSoftProjectThreads);
  return cfg;
}

// Forward over B clouds of M queries, N points, F feature channels, k neighbours (idx (B, M, k)
// from knn_points); sigma (B,); out (B, M, 3) and out_f (B, M, F) in opmath_t<T>. Requires
// B * M > 0. Returns the launch status.
template <typename T>
auto launch_soft_project_forward(const T* q, const T* p, const T* feats, const int64_t* idx,
                                 const opmath_t<T>* sigma, int64_t B, int64_t M, int64_t N,
                                 int64_t F, int k, bool hard, opmath_t<T>* out,
                                 opmath_t<T>* out_f, cuda::Stream stream) {
  const int G = soft_project_group_size(hard ? 1 : k, F);
  return cuda::launch(soft_project_kernel<T>, soft_project_launch_config(B * M, G), stream, q, p,
                      feats, idx, sigma, B * M, M, N, F, k, G, hard, out, out_f);
}

// Backward, step 1: g (B, M, 3), gF (B, M, F) incoming gradients in opmath_t<T>; writes gq
// (B, M, 3), the per-query dL/dsigma gsig (B, M) and the entries (B, M * k each). Requires
// B * M > 0. Returns the launch status.
template <typename T>
auto launch_soft_project_backward_queries(const opmath_t<T>* g, const opmath_t<T>* gF, const T* q,
                                          const T* p, const T* feats, const int64_t* idx,
                                          const opmath_t<T>* sigma, int64_t B, int64_t M,
                                          int64_t N, int64_t F, int k, bool hard,
                                          opmath_t<T>* gq, opmath_t<T>* gsig,
                                          EntryOut<opmath_t<T>> entries, cuda::Stream stream) {
  const int G = soft_project_group_size(k, F);
  return cuda::launch(soft_project_backward_query_kernel<T>, soft_project_launch_config(B * M, G),
                      stream, g, gF, q, p, feats, idx, sigma, B * M, M, N, F, k, G, hard, gq,
                      gsig, entries);
}

// Backward, step 3 (after the stable sort of the entry keys per cloud: order, and the segments
// seg (B, N + 1)): writes gp (B, N, 3) and gf (B, N, F). Requires B * N > 0.
template <typename A>
auto launch_soft_project_backward_gather(const A* gF, const int64_t* order, const int64_t* seg,
                                         const A* entry_w, const A* entry_gp, int64_t B,
                                         int64_t M, int64_t N, int64_t F, int k, A* gp, A* gf,
                                         cuda::Stream stream) {
  const int G = soft_project_group_size(3, F);
  return cuda::launch(soft_project_backward_gather_kernel<A>, soft_project_launch_config(B * N, G),
                      stream, gF, order, seg, entry_w, entry_gp, B * N, M, N, F, k, G, gp, gf);
}

}  // namespace fastvision::sampling
