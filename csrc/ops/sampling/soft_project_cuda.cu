// ATen glue of soft_project and its backward on CUDA: checks, dtype dispatch, allocation, stream
// and guard. The kernels and their launch planning are in soft_project_kernels.cuh; the forward's
// k nearest neighbours come from the knn_points CUDA search (ties to the lower index, exactly the
// CPU's result). The backward has no atomics: per-(query, neighbour) entries, sorted stably by
// neighbour per cloud (at::sort, at::searchsorted: deterministic), then summed per point in that
// order, so it is deterministic and needs no alertNotDeterministic.
#include <ATen/ATen.h>
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
  // With queries, the kernels write every element (N >= k >= 1); without, the gradients are 0.
  const bool work = B > 0 && M > 0;
  const auto alloc = [&](at::IntArrayRef shape) {
    return work ? at::empty(shape, q.options().dtype(ct)) : at::zeros(shape, q.options().dtype(ct));
  };
  at::Tensor gq = alloc({B, M, 3}), gp = alloc({B, N, 3}), gf = alloc({B, N, F});
  at::Tensor gsig = alloc({B, M});
  if (work) {
    TORCH_CHECK(k <= std::numeric_limits<int>::max(), op, ": k must fit in 32 bits, got ", k);
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    // Step 1: per query dL/dq and dL/dsigma, per (query, slot) entry its key, weight and point
    // gradient.
    at::Tensor keys = at::empty({B, M * k}, q.options().dtype(at::kLong));
    at::Tensor entry_w = at::empty({B, M * k}, q.options().dtype(ct));
    at::Tensor entry_gp = at::empty({B, M * k, 3}, q.options().dtype(ct));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(),
                                    "soft_project_backward_cuda", [&] {
      using A = opmath_t<scalar_t>;
      C10_CUDA_CHECK(launch_soft_project_backward_queries<scalar_t>(
          g.const_data_ptr<A>(), gF.const_data_ptr<A>(), q.const_data_ptr<scalar_t>(),
          p.const_data_ptr<scalar_t>(), f.const_data_ptr<scalar_t>(),
          ix.const_data_ptr<int64_t>(), sigma.const_data_ptr<A>(), B, M, N, F,
          static_cast<int>(k), hard, gq.mutable_data_ptr<A>(), gsig.mutable_data_ptr<A>(),
          EntryOut<A>{keys.mutable_data_ptr<int64_t>(), entry_w.mutable_data_ptr<A>(),
                      entry_gp.mutable_data_ptr<A>()},
          stream));
    });
    // Step 2: each cloud's entries in (neighbour, query, slot) order, and each point's segment.
    const auto [sorted_keys, order] = at::sort(keys, /*stable=*/true, /*dim=*/1);
    const at::Tensor points_ix =
        at::arange(N + 1, keys.options()).unsqueeze(0).expand({B, N + 1}).contiguous();
    const at::Tensor seg = at::searchsorted(sorted_keys, points_ix);
    // Step 3: per point, its entries summed in that order.
    AT_DISPATCH_FLOATING_TYPES(ct, "soft_project_backward_gather_cuda", [&] {
      C10_CUDA_CHECK(launch_soft_project_backward_gather<scalar_t>(
          gF.const_data_ptr<scalar_t>(), order.const_data_ptr<int64_t>(),
          seg.const_data_ptr<int64_t>(), entry_w.const_data_ptr<scalar_t>(),
          entry_gp.const_data_ptr<scalar_t>(), B, M, N, F, static_cast<int>(k),
          gp.mutable_data_ptr<scalar_t>(), gf.mutable_data_ptr<scalar_t>(), stream));
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
