// Host-side argument handling of soft_project, shared by its CPU and CUDA kernels.
#pragma once
#include <ATen/ATen.h>

#include <cmath>
#include <optional>

#include "fastvision/aten_opmath.h"
#include "fastvision/checks.h"

namespace fastvision::sampling {

// query (B, M, 3), points (B, N, 3), temperature () or (B,), features (B, N, F) or absent.
inline void check_soft_project_args(const at::Tensor& query, const at::Tensor& points,
                                    const at::Tensor& temperature, int64_t k,
                                    const std::optional<at::Tensor>& features,
                                    std::optional<double> min_sigma, const char* op) {
  FV_CHECK(query.dim() == 3 && query.size(2) == 3, op,
           "query must have shape (B, M, 3), got ", query.sizes());
  FV_CHECK(points.dim() == 3 && points.size(2) == 3, op,
           "points must have shape (B, N, 3), got ", points.sizes());
  check_floating(query, op, "query");
  check_same_device(points, query, op, "points", "query");
  check_same_dtype(points, query, op, "points", "query");
  FV_CHECK(points.size(0) == query.size(0), op,
           "query and points must hold the same number of clouds, got ", query.size(0), " and ",
           points.size(0));
  FV_CHECK_VALUE(k >= 1, op, "k must be at least 1, got ", k);
  FV_CHECK_VALUE(k <= points.size(1), op, "k = ", k,
                 " is larger than the number of points (N = ", points.size(1), ")");
  check_floating(temperature, op, "temperature");
  check_same_device(temperature, query, op, "temperature", "query");
  FV_CHECK(temperature.dim() == 0 || (temperature.dim() == 1 &&
                                      temperature.size(0) == query.size(0)),
           op, "temperature must be a scalar tensor or have shape (B,) = (", query.size(0),
           ",), got ", temperature.sizes());
  if (features.has_value()) {
    const at::Tensor& f = *features;
    FV_CHECK(f.dim() == 3 && f.size(0) == points.size(0) && f.size(1) == points.size(1), op,
             "features must have shape (B, N, F) = (", points.size(0), ", ", points.size(1),
             ", F), got ", f.sizes());
    check_same_device(f, query, op, "features", "query");
    check_same_dtype(f, query, op, "features", "query");
  }
  if (min_sigma.has_value()) {
    FV_CHECK_VALUE(std::isfinite(*min_sigma) && *min_sigma >= 0.0, op,
                   "min_sigma must be a finite number >= 0, got ", *min_sigma);
  }
}

// sigma = t^2, clamped below at min_sigma when given: a contiguous (B,) tensor of dtype ct.
inline at::Tensor soft_project_sigma(const at::Tensor& temperature, std::optional<double> min_sigma,
                                     int64_t B, at::ScalarType ct) {
  at::Tensor sigma = temperature.to(ct).square();
  if (min_sigma.has_value()) {
    sigma = at::clamp_min(sigma, *min_sigma);
  }
  return sigma.expand({B}).contiguous();
}

// CPU only (the values are on the host): every sigma finite and nonzero.
inline void check_sigma_values(const at::Tensor& sigma, const at::Tensor& temperature,
                               const char* op) {
  const at::Tensor s = sigma.to(at::kDouble).contiguous();
  const at::Tensor t = temperature.to(at::kDouble).contiguous().reshape({-1});
  const double* sv = s.const_data_ptr<double>();
  const double* tv = t.const_data_ptr<double>();
  for (int64_t b = 0; b < s.size(0); ++b) {
    const int64_t tb = t.size(0) == 1 ? 0 : b;
    FV_CHECK_VALUE(std::isfinite(sv[b]) && sv[b] > 0.0, op,
                   "temperature must give a finite, nonzero sigma = max(t^2, min_sigma), got t = ",
                   tv[tb], " (sigma = ", sv[b], ") for cloud ", b);
  }
}

// CPU only (the values are on the host): every saved neighbour index is -1 (no neighbour, as
// knn_points returns for neighbours at infinite distance) or in [0, N).
inline void check_soft_project_indices(const at::Tensor& idx, int64_t N, const char* op) {
  const int64_t* v = idx.const_data_ptr<int64_t>();
  for (int64_t e = 0; e < idx.numel(); ++e) {
    FV_CHECK_VALUE(v[e] >= -1 && v[e] < N, op, "idx must hold -1 or indices in [0, N = ", N,
                   "), got ", v[e], " at flat position ", e);
  }
}

// dL/dt from the per-query dL/dsigma (B, M): 2 t sum dL/dsigma over the queries of the clouds
// that t serves, where sigma = t^2 (zero where the min_sigma clamp is active: sigma does not
// depend on t there), in the dtype and shape of the temperature.
inline at::Tensor soft_project_temperature_grad(const at::Tensor& grad_sigma_q,
                                                const at::Tensor& temperature,
                                                std::optional<double> min_sigma) {
  const at::Tensor t = temperature.to(grad_sigma_q.scalar_type());
  at::Tensor gs = temperature.dim() == 0 ? grad_sigma_q.sum() : grad_sigma_q.sum(1);
  at::Tensor grad = 2 * t * gs;
  if (min_sigma.has_value()) {
    grad = at::where(t.square() > *min_sigma, grad, at::zeros_like(grad));
  }
  return grad.to(temperature.scalar_type());
}

// The arguments of _soft_project_backward: those of the forward, plus the saved indices and the
// incoming gradients (shapes and devices).
inline void check_soft_project_backward_args(
    const at::Tensor& grad_projected, const std::optional<at::Tensor>& grad_projected_features,
    const at::Tensor& query, const at::Tensor& points, const at::Tensor& temperature,
    const at::Tensor& idx, const std::optional<at::Tensor>& features,
    std::optional<double> min_sigma, const char* op) {
  const int64_t k = idx.dim() == 3 ? idx.size(2) : 0;
  check_soft_project_args(query, points, temperature, k, features, min_sigma, op);
  const int64_t B = query.size(0), M = query.size(1);
  const int64_t F = features.has_value() ? features->size(2) : 0;
  FV_CHECK(idx.dim() == 3 && idx.size(0) == B && idx.size(1) == M, op,
           "idx must have shape (B, M, k) = (", B, ", ", M, ", k), got ", idx.sizes());
  FV_CHECK(idx.scalar_type() == at::kLong, op, "idx must be int64, got ", idx.scalar_type());
  check_same_device(idx, query, op, "idx", "query");
  FV_CHECK(grad_projected.sizes() == query.sizes(), op, "grad_projected must have shape ",
           query.sizes(), ", got ", grad_projected.sizes());
  check_same_device(grad_projected, query, op, "grad_projected", "query");
  if (grad_projected_features.has_value()) {
    FV_CHECK(grad_projected_features->dim() == 3 && grad_projected_features->size(0) == B &&
                 grad_projected_features->size(1) == M && grad_projected_features->size(2) == F,
             op, "grad_projected_features must have shape (", B, ", ", M, ", ", F, "), got ",
             grad_projected_features->sizes());
    check_same_device(*grad_projected_features, query, op, "grad_projected_features", "query");
  }
}

}  // namespace fastvision::sampling
