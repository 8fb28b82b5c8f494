// ATen glue of soft_project and its backward on CUDA: checks, dtype dispatch, allocation, stream
// and guard. The kernels and their launch planning are in soft_project_kernels.cuh; the forward's
// k nearest neighbours come from the knn_points CUDA search (ties to the lower index, exactly the
// CPU's result). The backward scatters with atomicAdd, so under
// torch.use_deterministic_algorithms(True) it raises (alertNotDeterministic), as PyTorch's own
// scatter-add ops do.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>
#include <optional>
#include <tuple>

#include "../points/knn_cuda.cuh"
#include "../points/points_common.h"
#include "soft_project_common.h"
#include "soft_project_kernels.cuh"

namespace fastvision::sampling {

std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_project_cuda(
    const at::Tensor& query, const at::Tensor& points, const at::Tensor& temperature, int64_t k,
    const std::optional<at::Tensor>& features, std::optional<double> min_sigma, bool hard) {
  constexpr const char* op = "soft_project";
  check_soft_project_args(query, points, temperature, k, features, min_sigma, op);
  const c10::cuda::CUDAGuard guard(query.device());
  points::assert_coordinates_async(query, op, "query");
  points::assert_coordinates_async(points, op, "points");
  const int64_t B = query.size(0), M = query.size(1), N = points.size(1);
  const int64_t F = features.has_value() ? features->size(2) : 0;
  const at::ScalarType ct = opmath_dtype(query.scalar_type());
  const at::Tensor q = query.contiguous(), p = points.contiguous();
  const at::Tensor f =
      features.has_value() ? features->contiguous() : at::empty({B, N, 0}, q.options());
  // sigma values are checked by the Python wrapper (asynchronously, no host synchronisation).
  const at::Tensor sigma = soft_project_sigma(temperature, min_sigma, B, ct);
  at::Tensor out = at::empty({B, M, 3}, q.options().dtype(ct));
  at::Tensor out_f = at::empty({B, M, F}, q.options().dtype(ct));
  at::Tensor idx = at::empty({B, M, k}, q.options().dtype(at::kLong));
  if (B > 0 && M > 0) {
    TORCH_CHECK(k <= std::numeric_limits<int>::max(), op, ": k must fit in 32 bits, got ", k);
    const at::Tensor l1 = at::full({B}, M, q.options().dtype(at::kLong));
    const at::Tensor l2 = at::full({B}, N, q.options().dtype(at::kLong));
    at::Tensor dists = at::empty({B, M, k}, q.options());
    points::knn_cuda_forward(q, p, l1, l2, k, 2, std::numeric_limits<double>::infinity(), dists,
                             idx);
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "soft_project_cuda",
                                    [&] {
      using A = opmath_t<scalar_t>;
      C10_CUDA_CHECK(launch_soft_project_forward<scalar_t>(
          q.const_data_ptr<scalar_t>(), p.const_data_ptr<scalar_t>(),
          f.const_data_ptr<scalar_t>(), idx.const_data_ptr<int64_t>(), sigma.const_data_ptr<A>(),
          B, M, N, F, static_cast<int>(k), hard, out.mutable_data_ptr<A>(),
          out_f.mutable_data_ptr<A>(), stream));
    });
  }
  return {out.to(query.scalar_type()), out_f.to(query.scalar_type()), idx};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> soft_project_backward_cuda(
    const at::Tensor& grad_projected, const std::optional<at::Tensor>& grad_projected_features,
    const at::Tensor& query, const at::Tensor& points, const at::Tensor& temperature,
    const at::Tensor& idx, const std::optional<at::Tensor>& features,
    std::optional<double> min_sigma, bool hard) {
  constexpr const char* op = "_soft_project_backward";
  check_soft_project_backward_args(grad_projected, grad_projected_features, query, points,
                                   temperature, idx, features, min_sigma, op);
  at::globalContext().alertNotDeterministic(
      "_soft_project_backward (CUDA): grad_points and grad_features are accumulated with "
      "atomicAdd");
  const c10::cuda::CUDAGuard guard(query.device());
  const int64_t B = query.size(0), M = query.size(1), N = points.size(1);
  const int64_t F = features.has_value() ? features->size(2) : 0;
  const int64_t k = idx.size(2);
  const at::ScalarType ct = opmath_dtype(query.scalar_type());
  const at::Tensor q = query.contiguous(), p = points.contiguous(), ix = idx.contiguous();
  const at::Tensor f =
      features.has_value() ? features->contiguous() : at::empty({B, N, 0}, q.options());
  const at::Tensor g = grad_projected.to(ct).contiguous();
  const at::Tensor gF = grad_projected_features.has_value()
                            ? grad_projected_features->to(ct).contiguous()
                            : at::zeros({B, M, F}, q.options().dtype(ct));
  const at::Tensor sigma = soft_project_sigma(temperature, min_sigma, B, ct);
  at::Tensor gq = at::zeros({B, M, 3}, q.options().dtype(ct));
  at::Tensor gp = at::zeros({B, N, 3}, q.options().dtype(ct));
  at::Tensor gf = at::zeros({B, N, F}, q.options().dtype(ct));
  at::Tensor gsig = at::zeros({B, M}, q.options().dtype(ct));
  if (B > 0 && M > 0) {
    TORCH_CHECK(k <= std::numeric_limits<int>::max(), op, ": k must fit in 32 bits, got ", k);
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(),
                                    "soft_project_backward_cuda", [&] {
      using A = opmath_t<scalar_t>;
      C10_CUDA_CHECK(launch_soft_project_backward<scalar_t>(
          g.const_data_ptr<A>(), gF.const_data_ptr<A>(), q.const_data_ptr<scalar_t>(),
          p.const_data_ptr<scalar_t>(), f.const_data_ptr<scalar_t>(),
          ix.const_data_ptr<int64_t>(), sigma.const_data_ptr<A>(), B, M, N, F,
          static_cast<int>(k), hard, gq.mutable_data_ptr<A>(), gp.mutable_data_ptr<A>(),
          gf.mutable_data_ptr<A>(), gsig.mutable_data_ptr<A>(), stream));
    });
  }
  const at::Tensor gt = soft_project_temperature_grad(gsig, temperature, min_sigma);
  return {gq.to(query.scalar_type()), gp.to(points.scalar_type()), gt,
          gf.to(points.scalar_type())};
}

TORCH_LIBRARY_IMPL(fastvision, CUDA, m) {
  m.impl("soft_project", &soft_project_cuda);
  m.impl("_soft_project_backward", &soft_project_backward_cuda);
}

}  // namespace fastvision::sampling
