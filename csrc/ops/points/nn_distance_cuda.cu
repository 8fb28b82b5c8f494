// CUDA glue of nn_distance: checks, dispatch, scratch and stream. The kernels (one pass over the
// pairs for both directions, then a merge) and their launch planning are in
// nn_distance_kernels.cuh. Rows past a cloud's length get distance 0 and index -1; valid rows
// whose other cloud is empty get +inf and -1. Same results as the CPU kernel, bit for bit.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <climits>
#include <type_traits>

#include "nn_distance_common.h"
#include "nn_distance_kernels.cuh"
#include "points_common.h"

namespace fastvision::points {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> nn_distance_cuda(
    const at::Tensor& p1, const at::Tensor& p2, const std::optional<at::Tensor>& lengths1,
    const std::optional<at::Tensor>& lengths2, int64_t norm, int64_t method) {
  namespace nd = nn_distance_device;
  constexpr const char* op = "nn_distance";
  check_nn_distance_args(p1, p2, norm, method, op);  // `method` selects a CPU search only
  const c10::cuda::CUDAGuard guard(p1.device());
  assert_coordinates_async(p1, op, "p1");
  assert_coordinates_async(p2, op, "p2");
  // Length values are checked asynchronously by the Python wrapper; the kernels clamp them.
  const at::Tensor l1 = lengths_or_full(lengths1, p1, op, "lengths1");
  const at::Tensor l2 = lengths_or_full(lengths2, p2, op, "lengths2");
  const at::Tensor a = p1.contiguous(), b = p2.contiguous();
  const int64_t B = a.size(0), P1 = a.size(1), P2 = b.size(1), D = a.size(2);
  at::Tensor d12 = at::empty({B, P1}, a.options());
  at::Tensor i12 = at::empty({B, P1}, a.options().dtype(at::kLong));
  at::Tensor d21 = at::empty({B, P2}, a.options());
  at::Tensor i21 = at::empty({B, P2}, a.options().dtype(at::kLong));
  if (B * (P1 + P2) == 0) {
    return {d12, i12, d21, i21};
  }
  TORCH_CHECK(D <= INT_MAX, op, ": D must fit in 32 bits, got ", D);
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "nn_distance_cuda",
                                  [&] {
    using A = opmath_t<scalar_t>;
    constexpr bool direct = std::is_same_v<A, scalar_t>;
    const nd::NnDistancePlan plan = nd::plan_nn_distance(B, P1, P2, D, sizeof(A), sms);
    TORCH_CHECK(B * plan.row_groups <= INT_MAX, op, ": too many points (B * P1 = ", B * P1, ")");
    // Half and bfloat16 distances are computed and merged in float32, then rounded once.
    const at::TensorOptions acc = a.options().dtype(c10::CppTypeToScalarType<A>::value);
    at::Tensor out12 = direct ? d12 : at::empty(d12.sizes(), acc);
    at::Tensor out21 = direct ? d21 : at::empty(d21.sizes(), acc);
    // Partial minima, from the caching allocator; with one split (one row group) the row (column)
    // partials are the outputs themselves.
    at::Tensor row_d = out12, row_i = i12, col_d = out21, col_i = i21;
    if (plan.splits > 1) {
      row_d = at::empty({plan.splits, B, P1}, acc);
      row_i = at::empty({plan.splits, B, P1}, i12.options());
    }
    if (plan.row_groups > 1) {
      col_d = at::empty({B, plan.row_groups, P2}, acc);
      col_i = at::empty({B, plan.row_groups, P2}, i21.options());
    }
    C10_CUDA_CHECK(nd::launch_nn_distance<scalar_t>(
        plan, norm, a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(),
        l1.const_data_ptr<int64_t>(), l2.const_data_ptr<int64_t>(), B, P1, P2, D,
        row_d.mutable_data_ptr<A>(), row_i.mutable_data_ptr<int64_t>(),
        col_d.mutable_data_ptr<A>(), col_i.mutable_data_ptr<int64_t>(),
        out12.mutable_data_ptr<A>(), i12.mutable_data_ptr<int64_t>(),
        out21.mutable_data_ptr<A>(), i21.mutable_data_ptr<int64_t>(), stream));
    if constexpr (!direct) {
      d12.copy_(out12);
      d21.copy_(out21);
    }
  });
  return {d12, i12, d21, i21};
}

TORCH_LIBRARY_IMPL(fastvision, CUDA, m) { m.impl("nn_distance", &nn_distance_cuda); }

}  // namespace fastvision::points
