// Argument checks of farthest_point_sample, shared by the CPU and CUDA kernels.
#pragma once
#include <ATen/ATen.h>

#include "points_common.h"

namespace fastvision::points {

// farthest_point_sample(method=...): which CPU algorithm to run. CUDA ignores it.
constexpr int64_t kFpsAuto = -1;
constexpr int64_t kFpsScan = 0;     // the classic O(K * P) scan
constexpr int64_t kFpsBuckets = 1;  // k-d tree buckets with bounding-box pruning

inline void check_fps_args(const at::Tensor& points, int64_t K, const at::Tensor& start_idx,
                           int64_t method, const char* op) {
  check_cloud(points, op, "points");
  FV_CHECK_VALUE(K >= 0, op, "K must be non-negative, got ", K);
  FV_CHECK(start_idx.dim() == 2 && start_idx.size(0) == points.size(0), op,
           "start_idx must have shape (B, S) = (", points.size(0), ", S), got ",
           start_idx.sizes());
  FV_CHECK(start_idx.scalar_type() == at::kLong, op, "start_idx must be int64, got ",
           start_idx.scalar_type());
  check_same_device(start_idx, points, op, "start_idx", "points");
  FV_CHECK_VALUE(method >= kFpsAuto && method <= kFpsBuckets, op,
                 "method must be -1 (auto), 0 (scan) or 1 (buckets), got ", method);
}

}  // namespace fastvision::points
