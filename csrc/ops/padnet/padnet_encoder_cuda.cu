// ATen glue of padnet_encoder on CUDA: checks, dtype dispatch, allocation (the scratch the launch
// plan asks for), stream and guard. The kernel and its launch planning are in
// padnet_encoder_kernels.cuh. float16 / bfloat16 are computed in float32 (converted before and
// after the kernel). Not yet run on a GPU (the build machines have none); executed on the CPU by
// the emulated tests.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "padnet_encoder_common.h"
#include "padnet_encoder_kernels.cuh"

namespace fastvision::padnet {

std::tuple<at::Tensor, at::Tensor, at::Tensor> padnet_encoder_cuda(const at::Tensor& x,
                                                                   const at::Tensor& params,
                                                                   int64_t width) {
  constexpr const char* op = "padnet_encoder";
  check_padnet_encoder_args(x, params, width, op);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::ScalarType ct = opmath_dtype(x.scalar_type());
  const at::Tensor xc = x.to(ct).contiguous(), pc = params.to(ct).contiguous();
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3);
  const TapSizes s = tap_sizes(H, W);
  const std::array<int64_t, 3> ch = tap_channels(width);
  at::Tensor t1 = at::empty({B, ch[0], s.h[0], s.w[0]}, xc.options());
  at::Tensor t2 = at::empty({B, ch[1], s.h[1], s.w[1]}, xc.options());
  at::Tensor t3 = at::empty({B, ch[2], s.h[2], s.w[2]}, xc.options());
  if (B > 0) {
    cuda::DeviceLimits limits;
    limits.sm_count = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(ct, "padnet_encoder_cuda", [&] {
      dispatch_width(width, [&](auto w) {
        constexpr int WIDTH = decltype(w)::value;
        const PadnetLaunchPlan plan =
            padnet_encoder_launch_plan<WIDTH, scalar_t>(B, H, W, limits, kPadnetScratchBudget);
        at::Tensor scratch = at::empty({plan.scratch_elements()}, xc.options());
        const cudaError_t err = launch_padnet_encoder<WIDTH, scalar_t>(
            plan, xc.const_data_ptr<scalar_t>(), pc.const_data_ptr<scalar_t>(), B, H, W,
            scratch.mutable_data_ptr<scalar_t>(), t1.mutable_data_ptr<scalar_t>(),
            t2.mutable_data_ptr<scalar_t>(), t3.mutable_data_ptr<scalar_t>(), stream);
        C10_CUDA_CHECK(err);
      });
    });
  }
  return {t1.to(x.scalar_type()), t2.to(x.scalar_type()), t3.to(x.scalar_type())};
}

TORCH_LIBRARY_IMPL(fastvision, CUDA, m) { m.impl("padnet_encoder", &padnet_encoder_cuda); }

}  // namespace fastvision::padnet
