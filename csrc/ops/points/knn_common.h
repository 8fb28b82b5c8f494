// Argument checks and method codes of knn_points, shared by the CPU and CUDA kernels.
#pragma once
#include <ATen/ATen.h>

#include "points_common.h"

namespace fastvision::points {

// knn_points(method=...): which CPU search to run. CUDA ignores it.
constexpr int64_t kKnnAuto = -1;
constexpr int64_t kKnnBruteForce = 0;
constexpr int64_t kKnnKdTree = 1;

inline void check_knn_args(const at::Tensor& p1, const at::Tensor& p2, int64_t K, int64_t norm,
                           int64_t method, const char* op) {
  check_cloud_pair(p1, p2, op);
  check_norm(norm, op);
  FV_CHECK_VALUE(K >= 1, op, "K must be at least 1, got ", K);
  FV_CHECK_VALUE(K <= p2.size(1), op, "K = ", K,
                 " is larger than the number of points in p2 (P2 = ", p2.size(1), ")");
  FV_CHECK_VALUE(method >= kKnnAuto && method <= kKnnKdTree, op,
                 "method must be -1 (auto), 0 (brute force) or 1 (k-d tree), got ", method);
}

inline void check_knn_backward_args(const at::Tensor& p1, const at::Tensor& p2,
                                    const at::Tensor& idx, const at::Tensor& grad_dists,
                                    int64_t norm, const char* op) {
  check_cloud_pair(p1, p2, op);
  check_norm(norm, op);
  FV_CHECK(idx.dim() == 3 && idx.size(0) == p1.size(0) && idx.size(1) == p1.size(1), op,
           "idx must have shape (B, P1, K) = (", p1.size(0), ", ", p1.size(1), ", K), got ",
           idx.sizes());
  FV_CHECK(idx.scalar_type() == at::kLong, op, "idx must be int64, got ", idx.scalar_type());
  FV_CHECK(grad_dists.sizes() == idx.sizes(), op, "grad_dists must have the shape of idx (",
           idx.sizes(), "), got ", grad_dists.sizes());
  check_same_device(idx, p1, op, "idx", "p1");
  check_same_device(grad_dists, p1, op, "grad_dists", "p1");
}

}  // namespace fastvision::points
