// Device code and launch planning of soft_project and its backward (torch-free: compiled by nvcc
// for the CUDA build and by g++ with the CUDA-on-CPU emulator for `pytest -m emulated`).
//
// Forward: one thread per query takes the k neighbour indices found by the knn_points CUDA search,
// recomputes their distances and forms the shifted softmax weights and the weighted sums of points
// and features (sp_forward_query, the function the CPU kernel calls).
//
// Backward: one thread per query recomputes the weights (sp_backward_query); dL/dquery and the
// per-query dL/dsigma are written directly, the neighbours' gradients are scattered into
// grad_points / grad_features with atomicAdd, so their summation order (and the float result)
// depends on the thread schedule: not deterministic.
//
// Storage type T (float, double, half, bfloat16) is read as such and computed in A = opmath_t<T>.
// Neighbour indices outside [0, N) are skipped (see soft_projection.h).
#pragma once

#include <cstdint>

#include "fastvision/cuda_compat.h"
#include "fastvision/soft_projection.h"

namespace fastvision::sampling {

constexpr int kSoftProjectThreads = 256;

template <typename T>
FV_GLOBAL void __launch_bounds__(kSoftProjectThreads)
    soft_project_kernel(const T* __restrict__ q, const T* __restrict__ p,
                        const T* __restrict__ feats, const int64_t* __restrict__ idx,
                        const opmath_t<T>* __restrict__ sigma, int64_t BM, int64_t M, int64_t N,
                        int64_t F, int k, bool hard, opmath_t<T>* __restrict__ out,
                        opmath_t<T>* __restrict__ out_f) {
  using A = opmath_t<T>;
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r >= BM) {
    return;
  }
  const int64_t b = r / M;
  A y[3];
  sp_forward_query<A>(q + r * 3, p + b * N * 3, N, feats + b * N * F, F, idx + r * k, k, sigma[b],
                      hard, y, out_f + r * F);
  out[r * 3 + 0] = y[0];
  out[r * 3 + 1] = y[1];
  out[r * 3 + 2] = y[2];
}

template <typename A>
struct AtomicScatter {
  A* gp;  // (N, 3) of one cloud
  A* gf;  // (N, F) of one cloud
  int64_t F;
  FV_DEVICE void point(int64_t j, int d, A v) { atomicAdd(gp + j * 3 + d, v); }
  FV_DEVICE void feature(int64_t j, int64_t c, A v) { atomicAdd(gf + j * F + c, v); }
};

template <typename T>
FV_GLOBAL void __launch_bounds__(kSoftProjectThreads)
    soft_project_backward_kernel(const opmath_t<T>* __restrict__ g,
                                 const opmath_t<T>* __restrict__ gF, const T* __restrict__ q,
                                 const T* __restrict__ p, const T* __restrict__ feats,
                                 const int64_t* __restrict__ idx,
                                 const opmath_t<T>* __restrict__ sigma, int64_t BM, int64_t M,
                                 int64_t N, int64_t F, int k, bool hard,
                                 opmath_t<T>* __restrict__ gq, opmath_t<T>* __restrict__ gp,
                                 opmath_t<T>* __restrict__ gf, opmath_t<T>* __restrict__ gsig) {
  using A = opmath_t<T>;
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r >= BM) {
    return;
  }
  const int64_t b = r / M;
  AtomicScatter<A> scatter{gp + b * N * 3, gf + b * N * F, F};
  A gqr[3];
  gsig[r] = sp_backward_query<A>(q + r * 3, p + b * N * 3, N, feats + b * N * F, F, idx + r * k,
                                 k, sigma[b], hard, g + r * 3, gF + r * F, gqr, scatter);
  gq[r * 3 + 0] = gqr[0];
  gq[r * 3 + 1] = gqr[1];
  gq[r * 3 + 2] = gqr[2];
}

inline cuda::LaunchConfig soft_project_launch_config(int64_t BM) {
  cuda::LaunchConfig cfg;
  cfg.grid = dim3(static_cast<unsigned>(ceil_div<int64_t>(BM, kSoftProjectThreads)));
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
  return cuda::launch(soft_project_kernel<T>, soft_project_launch_config(B * M), stream, q, p,
                      feats, idx, sigma, B * M, M, N, F, k, hard, out, out_f);
}

// Backward: g (B, M, 3), gF (B, M, F) incoming gradients in opmath_t<T>; gp (B, N, 3) and
// gf (B, N, F) must be zero on entry (they are accumulated into); gq (B, M, 3) and the per-query
// dL/dsigma gsig (B, M) are written. Requires B * M > 0. Returns the launch status.
template <typename T>
auto launch_soft_project_backward(const opmath_t<T>* g, const opmath_t<T>* gF, const T* q,
                                  const T* p, const T* feats, const int64_t* idx,
                                  const opmath_t<T>* sigma, int64_t B, int64_t M, int64_t N,
                                  int64_t F, int k, bool hard, opmath_t<T>* gq, opmath_t<T>* gp,
                                  opmath_t<T>* gf, opmath_t<T>* gsig, cuda::Stream stream) {
  return cuda::launch(soft_project_backward_kernel<T>, soft_project_launch_config(B * M), stream,
                      g, gF, q, p, feats, idx, sigma, B * M, M, N, F, k, hard, gq, gp, gf, gsig);
}

}  // namespace fastvision::sampling
