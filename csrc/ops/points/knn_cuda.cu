// CUDA glue of knn_points and its backward: checks, dispatch, allocation, stream and device
// limits. The kernels and their launch planning are in knn_kernels.cuh.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <climits>
#include <limits>
#include <type_traits>

#include "knn_common.h"
#include "knn_cuda.cuh"
#include "knn_kernels.cuh"
#include "points_common.h"

namespace fastvision::points {

void knn_cuda_forward(const at::Tensor& p1, const at::Tensor& p2, const at::Tensor& lengths1,
                      const at::Tensor& lengths2, int64_t K, int64_t norm,
                      double invalid_query_dist, at::Tensor& dists, at::Tensor& idx) {
  const int64_t B = p1.size(0), P1 = p1.size(1), P2 = p2.size(1), D = p1.size(2);
  if (B == 0 || P1 == 0 || K == 0) {
    return;
  }
  TORCH_CHECK(K <= INT_MAX && D <= INT_MAX, "knn_points: K and D must fit in 32 bits, got K = ",
              K, ", D = ", D);
  const int kc = knn_device::register_capacity(K);
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p1.scalar_type(), "knn_points_cuda",
                                  [&] {
    using A = opmath_t<scalar_t>;
    constexpr bool direct = std::is_same_v<A, scalar_t>;
    const knn_device::KnnPlan plan =
        knn_device::plan_knn(B, P1, P2, D, K, kc, sizeof(scalar_t), sms);
    TORCH_CHECK(B * plan.qblocks <= INT_MAX, "knn_points: too many queries (B * P1 = ", B * P1,
                ")");
    // Half and bfloat16 results are computed and merged in float32, then rounded once.
    at::Tensor out_d = direct ? dists
                              : at::empty(dists.sizes(),
                                          dists.options().dtype(c10::CppTypeToScalarType<A>::value));
    at::Tensor part_d, part_i;
    if (plan.splits > 1) {
      part_d = at::empty({plan.splits, B, P1, K}, out_d.options());
      part_i = at::empty({plan.splits, B, P1, K}, idx.options());
    }
    C10_CUDA_CHECK(knn_device::launch_knn<scalar_t>(
        plan, norm, kc, p1.const_data_ptr<scalar_t>(), p2.const_data_ptr<scalar_t>(),
        lengths1.const_data_ptr<int64_t>(), lengths2.const_data_ptr<int64_t>(), B, P1, P2, D, K,
        static_cast<A>(invalid_query_dist),
        part_d.defined() ? part_d.mutable_data_ptr<A>() : nullptr,
        part_i.defined() ? part_i.mutable_data_ptr<int64_t>() : nullptr,
        out_d.mutable_data_ptr<A>(), idx.mutable_data_ptr<int64_t>(), stream));
    if constexpr (!direct) {
      dists.copy_(out_d);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> knn_points_cuda(const at::Tensor& p1, const at::Tensor& p2,
                                                   const std::optional<at::Tensor>& lengths1,
                                                   const std::optional<at::Tensor>& lengths2,
                                                   int64_t K, int64_t norm, bool return_sorted,
                                                   int64_t method) {
  (void)return_sorted;  // always sorted by (distance, index)
  constexpr const char* op = "knn_points";
  check_knn_args(p1, p2, K, norm, method, op);  // `method` selects a CPU search only
  const c10::cuda::CUDAGuard guard(p1.device());
  assert_coordinates_async(p1, op, "p1");
  assert_coordinates_async(p2, op, "p2");
  // Length values are checked asynchronously by the Python wrapper; the kernels clamp them.
  const at::Tensor l1 = lengths_or_full(lengths1, p1, op, "lengths1");
  const at::Tensor l2 = lengths_or_full(lengths2, p2, op, "lengths2");
  const at::Tensor a = p1.contiguous(), b = p2.contiguous();
  const int64_t B = a.size(0), P1 = a.size(1);
  at::Tensor dists = at::empty({B, P1, K}, a.options());
  at::Tensor idx = at::empty({B, P1, K}, a.options().dtype(at::kLong));
  knn_cuda_forward(a, b, l1, l2, K, norm, std::numeric_limits<double>::infinity(), dists, idx);
  return {dists, idx};
}

std::tuple<at::Tensor, at::Tensor> knn_points_backward_cuda(const at::Tensor& p1,
                                                            const at::Tensor& p2,
                                                            const at::Tensor& idx,
                                                            const at::Tensor& grad_dists,
                                                            int64_t norm) {
  constexpr const char* op = "_knn_points_backward";
  check_knn_backward_args(p1, p2, idx, grad_dists, norm, op);
  const c10::cuda::CUDAGuard guard(p1.device());
  const at::ScalarType ct = opmath_dtype(p1.scalar_type());  // float32 for half/bfloat16
  const at::Tensor a = p1.contiguous(), b = p2.contiguous(), ix = idx.contiguous();
  const at::Tensor g = grad_dists.to(ct).contiguous();
  const int64_t B = a.size(0), P1 = a.size(1), P2 = b.size(1), D = a.size(2), K = ix.size(2);
  at::Tensor g1 = at::empty(a.sizes(), a.options());
  at::Tensor g2acc = at::zeros(b.sizes(), b.options().dtype(ct));
  if (B * P1 > 0) {
    TORCH_CHECK(D <= INT_MAX, op, ": D must fit in 32 bits, got ", D);
    // grad_p2 is scattered with atomicAdd: its summation order varies from run to run.
    at::globalContext().alertNotDeterministic("_knn_points_backward (CUDA)");
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(),
                                    "knn_points_backward_cuda", [&] {
      using A = opmath_t<scalar_t>;
      C10_CUDA_CHECK(knn_device::launch_knn_backward<scalar_t>(
          norm, a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(),
          ix.const_data_ptr<int64_t>(), g.const_data_ptr<A>(), B, P1, P2, D, K,
          g1.mutable_data_ptr<scalar_t>(), g2acc.mutable_data_ptr<A>(), stream));
    });
  }
  at::Tensor g2 = ct == b.scalar_type() ? g2acc : g2acc.to(b.scalar_type());
  return {g1, g2};
}

TORCH_LIBRARY_IMPL(fastvision, CUDA, m) {
  m.impl("knn_points", &knn_points_cuda);
  m.impl("_knn_points_backward", &knn_points_backward_cuda);
}

}  // namespace fastvision::points
