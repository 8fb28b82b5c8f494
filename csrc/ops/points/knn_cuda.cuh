// The CUDA k-nearest-neighbour search of knn_points, shared with soft_project's neighbour search.
// Defined in knn_cuda.cu.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace fastvision::points {

// Fills `dists` and `idx` (contiguous, B * P1 * K elements each; dists in the dtype of p1, idx
// int64) with the K nearest points of p2 for every point of p1, sorted by (distance, index).
// p1 (B, P1, D) and p2 (B, P2, D) are contiguous CUDA tensors of one floating dtype; lengths1 and
// lengths2 are contiguous int64 (B,) tensors on the same device (values are clamped to [0, P]).
// Queries past lengths1[b] get `invalid_query_dist` and index -1; missing neighbours (lengths2[b]
// < K) get +inf and -1. Runs on the current stream; needs a CUDAGuard set by the caller; never
// synchronises with the host.
void knn_cuda_forward(const at::Tensor& p1, const at::Tensor& p2, const at::Tensor& lengths1,
                      const at::Tensor& lengths2, int64_t K, int64_t norm,
                      double invalid_query_dist, at::Tensor& dists, at::Tensor& idx);

}  // namespace fastvision::points
