// CPU kernels of soft_project and its backward.
//
// Forward: the k nearest points of every query come from the knn_points CPU search (blocked
// vectorised scan or k-d tree, ties to the lower index); then, in parallel over (cloud, block of
// queries), the shifted softmax weights and the weighted sums of points and features
// (sp_forward_query, shared with CUDA). Only the (B, M, k) indices are kept for backward.
//
// Backward: recomputes the weights from the indices (sp_backward_query); one cloud per work item,
// so the scatter into grad_points / grad_features is sequential and deterministic.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "../points/knn_cpu.h"
#include "../points/points_common.h"
#include "fastvision/soft_projection.h"
#include "soft_project_common.h"

namespace fastvision::sampling {

namespace {

constexpr int64_t kQueryGrain = 32;  // queries per parallel work item

template <typename T>
void forward_impl(const at::Tensor& q, const at::Tensor& p, const at::Tensor& feats,
                  const at::Tensor& idx, const at::Tensor& sigma, bool hard, at::Tensor& out,
                  at::Tensor& out_f) {
  const int64_t B = q.size(0), M = q.size(1), N = p.size(1), F = feats.size(2);
  const int k = static_cast<int>(idx.size(2));
  const T* qd = q.const_data_ptr<T>();
  const T* pd = p.const_data_ptr<T>();
  const T* fd = feats.const_data_ptr<T>();
  const int64_t* ix = idx.const_data_ptr<int64_t>();
  const T* sg = sigma.const_data_ptr<T>();
  T* od = out.mutable_data_ptr<T>();
  T* ofd = out_f.mutable_data_ptr<T>();
  const int64_t chunks = (M + kQueryGrain - 1) / kQueryGrain;
  at::parallel_for(0, B * chunks, 1, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t b = w / chunks, c = w % chunks;
      const int64_t i1 = std::min(M, (c + 1) * kQueryGrain);
      for (int64_t i = c * kQueryGrain; i < i1; ++i) {
        const int64_t r = b * M + i;
        sp_forward_query<T>(qd + r * 3, pd + b * N * 3, N, fd + b * N * F, F, ix + r * k, k,
                            sg[b], hard, od + r * 3, ofd + r * F);
      }
    }
  });
}

template <typename T>
struct CpuScatter {
  T* gp;  // (N, 3) of one cloud
  T* gf;  // (N, F) of one cloud
  int64_t F;
  void point(int64_t j, int d, T v) { gp[j * 3 + d] += v; }
  void feature(int64_t j, int64_t c, T v) { gf[j * F + c] += v; }
};

template <typename T>
void backward_impl(const at::Tensor& g, const at::Tensor& gF, const at::Tensor& q,
                   const at::Tensor& p, const at::Tensor& feats, const at::Tensor& idx,
                   const at::Tensor& sigma, bool hard, at::Tensor& gq, at::Tensor& gp,
                   at::Tensor& gf, at::Tensor& gsig) {
  const int64_t B = q.size(0), M = q.size(1), N = p.size(1), F = feats.size(2);
  const int k = static_cast<int>(idx.size(2));
  const T* gd = g.const_data_ptr<T>();
  const T* gFd = gF.const_data_ptr<T>();
  const T* qd = q.const_data_ptr<T>();
  const T* pd = p.const_data_ptr<T>();
  const T* fd = feats.const_data_ptr<T>();
  const int64_t* ix = idx.const_data_ptr<int64_t>();
  const T* sg = sigma.const_data_ptr<T>();
  T* gqd = gq.mutable_data_ptr<T>();
  T* gpd = gp.mutable_data_ptr<T>();
  T* gfd = gf.mutable_data_ptr<T>();
  T* gsd = gsig.mutable_data_ptr<T>();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      CpuScatter<T> scatter{gpd + b * N * 3, gfd + b * N * F, F};
      for (int64_t i = 0; i < M; ++i) {
        const int64_t r = b * M + i;
        gsd[r] = sp_backward_query<T>(qd + r * 3, pd + b * N * 3, N, fd + b * N * F, F,
                                      ix + r * k, k, sg[b], hard, gd + r * 3, gFd + r * F,
                                      gqd + r * 3, scatter);
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_project_cpu(
    const at::Tensor& query, const at::Tensor& points, const at::Tensor& temperature, int64_t k,
    const std::optional<at::Tensor>& features, std::optional<double> min_sigma, bool hard) {
  constexpr const char* op = "soft_project";
  check_soft_project_args(query, points, temperature, k, features, min_sigma, op);
  const int64_t B = query.size(0), M = query.size(1), N = points.size(1);
  const int64_t F = features.has_value() ? features->size(2) : 0;
  const at::ScalarType ct = opmath_dtype(query.scalar_type());
  const at::Tensor q = query.to(ct).contiguous(), p = points.to(ct).contiguous();
  points::check_coordinates_cpu(q, op, "query");
  points::check_coordinates_cpu(p, op, "points");
  const at::Tensor f =
      features.has_value() ? features->to(ct).contiguous() : at::empty({B, N, 0}, q.options());
  const at::Tensor sigma = soft_project_sigma(temperature, min_sigma, B, ct);
  check_sigma_values(sigma, temperature, op);
  at::Tensor out = at::empty({B, M, 3}, q.options());
  at::Tensor out_f = at::empty({B, M, F}, q.options());
  at::Tensor idx;
  if (B > 0 && M > 0) {
    idx = std::get<1>(points::knn_points_cpu(q, p, std::nullopt, std::nullopt, k, 2, true, -1));
    AT_DISPATCH_FLOATING_TYPES(ct, "soft_project_cpu",
                               [&] { forward_impl<scalar_t>(q, p, f, idx, sigma, hard, out, out_f); });
  } else {
    idx = at::empty({B, M, k}, q.options().dtype(at::kLong));
  }
  return {out.to(query.scalar_type()), out_f.to(query.scalar_type()), idx};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> soft_project_backward_cpu(
    const at::Tensor& grad_projected, const std::optional<at::Tensor>& grad_projected_features,
    const at::Tensor& query, const at::Tensor& points, const at::Tensor& temperature,
    const at::Tensor& idx, const std::optional<at::Tensor>& features,
    std::optional<double> min_sigma, bool hard) {
  constexpr const char* op = "_soft_project_backward";
  check_soft_project_backward_args(grad_projected, grad_projected_features, query, points,
                                   temperature, idx, features, min_sigma, op);
  const int64_t B = query.size(0), M = query.size(1), N = points.size(1);
  const int64_t F = features.has_value() ? features->size(2) : 0;
  const at::ScalarType ct = opmath_dtype(query.scalar_type());
  const at::Tensor q = query.to(ct).contiguous(), p = points.to(ct).contiguous();
  const at::Tensor f =
      features.has_value() ? features->to(ct).contiguous() : at::empty({B, N, 0}, q.options());
  const at::Tensor g = grad_projected.to(ct).contiguous();
  const at::Tensor gF = grad_projected_features.has_value()
                            ? grad_projected_features->to(ct).contiguous()
                            : at::zeros({B, M, F}, q.options());
  const at::Tensor ix = idx.contiguous();
  check_soft_project_indices(ix, N, op);
  const at::Tensor sigma = soft_project_sigma(temperature, min_sigma, B, ct);
  check_sigma_values(sigma, temperature, op);
  at::Tensor gq = at::zeros_like(q), gp = at::zeros_like(p), gf = at::zeros_like(f);
  at::Tensor gsig = at::zeros({B, M}, q.options());
  if (B > 0 && M > 0) {
    AT_DISPATCH_FLOATING_TYPES(ct, "soft_project_backward_cpu", [&] {
      backward_impl<scalar_t>(g, gF, q, p, f, ix, sigma, hard, gq, gp, gf, gsig);
    });
  }
  const at::Tensor gt = soft_project_temperature_grad(gsig, temperature, min_sigma);
  return {gq.to(query.scalar_type()), gp.to(points.scalar_type()), gt,
          gf.to(points.scalar_type())};
}

TORCH_LIBRARY_IMPL(fastvision, CPU, m) {
  m.impl("soft_project", &soft_project_cpu);
  m.impl("_soft_project_backward", &soft_project_backward_cpu);
}

}  // namespace fastvision::sampling
