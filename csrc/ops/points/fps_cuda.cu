// CUDA glue of farthest_point_sample: checks, dispatch, allocation, stream and device limits.
// The kernel and its launch planning are in fps_kernels.cuh.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <climits>
#include <limits>
#include <cstdlib>
#include <cstring>

#include "fps_common.h"
#include "fps_kernels.cuh"
#include "points_common.h"

namespace fastvision::points {

namespace {

// FASTVISION_FPS_SINGLE_BLOCK=1 forces one block per cloud (the design before the multi-block
// path, and PyTorch3D's / torch_cluster's), for benchmarks and diagnosis (tools/gpu-check).
bool single_block_forced() {
  const char* v = std::getenv("FASTVISION_FPS_SINGLE_BLOCK");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

}  // namespace

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
  limits.cooperative_launch = props->cooperativeLaunch != 0;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pts.scalar_type(),
                                  "farthest_point_sample_cuda", [&] {
    using A = opmath_t<scalar_t>;
    fps_device::FpsTuning tuning;
    if (single_block_forced()) {
      tuning.multi_block_min_points = std::numeric_limits<int64_t>::max();
    }
    const fps_device::FpsPlan plan =
        fps_device::plan_fps(B, P, D, sizeof(scalar_t), sizeof(A),
                             fps_device::static_smem_bytes<scalar_t>(), limits, tuning);
    const auto acc_options = pts.options().dtype(c10::CppTypeToScalarType<A>::value);
    at::Tensor scratch;
    if (plan.path == fps_device::FpsPath::kGlobalDistances) {
      scratch = at::empty({B, P}, acc_options);
    }
    // Multi-block path: the slots through which a cloud's blocks exchange their winners (written
    // before they are read at every step, so no initialisation).
    at::Tensor slot_d, slot_i, slot_c;
    fps_device::FpsSlots<scalar_t> slots;
    if (plan.multi_block()) {
      const int64_t blocks = B * plan.blocks_per_cloud;
      slot_d = at::empty({2, blocks}, acc_options);
      slot_i = at::empty({2, blocks}, pts.options().dtype(at::kLong));
      slot_c = at::empty({2, blocks, 3}, pts.options());
      slots = {slot_d.mutable_data_ptr<A>(), slot_i.mutable_data_ptr<int64_t>(),
               slot_c.mutable_data_ptr<scalar_t>()};
    }
    auto run = [&](auto ds_c) {
      constexpr int DS = decltype(ds_c)::value;
      const cudaError_t err = fps_device::launch_fps<scalar_t, DS>(
          plan, pts.const_data_ptr<scalar_t>(), len.const_data_ptr<int64_t>(),
          seeds.const_data_ptr<int64_t>(), B, P, static_cast<int>(D), K, seeds.size(1),
          scratch.defined() ? scratch.mutable_data_ptr<A>() : nullptr, slots,
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
