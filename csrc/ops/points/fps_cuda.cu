// CUDA glue of farthest_point_sample: checks, dispatch, allocation, stream and device limits.
// The kernel and its launch planning are in fps_kernels.cuh.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <climits>

#include "fps_common.h"
#include "fps_kernels.cuh"
#include "points_common.h"

namespace fastvision::points {

std::tuple<at::Tensor, at::Tensor> farthest_point_sample_cuda(
    const at::Tensor& points, const std::optional<at::Tensor>& lengths, int64_t K,
    const at::Tensor& start_idx, int64_t method) {
  constexpr const char* op = "farthest_point_sample";
  check_fps_args(points, K, start_idx, method, op);  // `method` selects a CPU algorithm only
  const c10::cuda::CUDAGuard guard(points.device());
  assert_coordinates_async(points, op, "points");
  // Length and seed values are checked asynchronously by the Python wrapper.
  const at::Tensor len = lengths_or_full(lengths, points, op, "lengths");
  const at::Tensor pts = points.contiguous();
  const at::Tensor seeds = start_idx.contiguous();
  const int64_t B = pts.size(0), P = pts.size(1), D = pts.size(2);
  at::Tensor out_i = at::empty({B, K}, pts.options().dtype(at::kLong));
  at::Tensor out_d = at::empty({B, K}, pts.options());
  if (B == 0 || K == 0) {
    return {out_i, out_d};
  }
  TORCH_CHECK(D <= INT_MAX && B <= INT_MAX, op, ": B and D must fit in 32 bits, got B = ", B,
              ", D = ", D);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const auto* props = at::cuda::getCurrentDeviceProperties();
  cuda::DeviceLimits limits;
  limits.sm_count = props->multiProcessorCount;
  limits.smem_per_block_default = props->sharedMemPerBlock;
  limits.smem_per_block_optin = props->sharedMemPerBlockOptin;
  limits.max_threads_per_block = props->maxThreadsPerBlock;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pts.scalar_type(),
                                  "farthest_point_sample_cuda", [&] {
    using A = opmath_t<scalar_t>;
    const fps_device::FpsPlan plan =
        fps_device::plan_fps(B, P, D, sizeof(scalar_t), sizeof(A),
                             fps_device::static_smem_bytes<A>(), limits);
    at::Tensor scratch;
    if (plan.path == fps_device::FpsPath::kGlobalDistances) {
      scratch = at::empty({B, P}, pts.options().dtype(c10::CppTypeToScalarType<A>::value));
    }
    auto run = [&](auto ds_c) {
      constexpr int DS = decltype(ds_c)::value;
      const cudaError_t err = fps_device::launch_fps<scalar_t, DS>(
          plan, pts.const_data_ptr<scalar_t>(), len.const_data_ptr<int64_t>(),
          seeds.const_data_ptr<int64_t>(), P, static_cast<int>(D), K, seeds.size(1),
          scratch.defined() ? scratch.mutable_data_ptr<A>() : nullptr,
          out_i.mutable_data_ptr<int64_t>(), out_d.mutable_data_ptr<scalar_t>(), stream);
      C10_CUDA_CHECK(err);
    };
    if (D == 3) {
      run(std::integral_constant<int, 3>{});
    } else {
      run(std::integral_constant<int, 0>{});
    }
  });
  return {out_i, out_d};
}

TORCH_LIBRARY_IMPL(fastvision, CUDA, m) {
  m.impl("farthest_point_sample", &farthest_point_sample_cuda);
}

}  // namespace fastvision::points
