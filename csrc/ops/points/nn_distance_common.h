// Argument checks of nn_distance, shared by the CPU and CUDA kernels.
#pragma once
#include <ATen/ATen.h>

#include "knn_common.h"

namespace fastvision::points {

inline void check_nn_distance_args(const at::Tensor& p1, const at::Tensor& p2, int64_t norm,
                                   int64_t method, const char* op) {
  check_cloud_pair(p1, p2, op);
  check_norm(norm, op);
  FV_CHECK_VALUE(method >= kKnnAuto && method <= kKnnKdTree, op,
                 "method must be -1 (auto), 0 (one-pass brute force) or 1 (k-d tree), got ",
                 method);
}

}  // namespace fastvision::points
