// The CPU kernel of knn_points as a C++ function, for ops that search neighbours themselves
// (soft_project). Defined in knn_cpu.cpp; arguments and results as the knn_points schema.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace fastvision::points {

std::tuple<at::Tensor, at::Tensor> knn_points_cpu(const at::Tensor& p1, const at::Tensor& p2,
                                                  const std::optional<at::Tensor>& lengths1,
                                                  const std::optional<at::Tensor>& lengths2,
                                                  int64_t K, int64_t norm, bool return_sorted,
                                                  int64_t method);

}  // namespace fastvision::points
