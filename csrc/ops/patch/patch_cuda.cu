// ATen glue of patch_conv2d (forward, backward) and patch_inverted_residual on CUDA: checks,
// dtype dispatch, allocation, stream and guard. The kernels and their launch planning are in
// patch_conv2d_kernels.cuh and patch_inverted_residual_kernels.cuh. float16 / bfloat16 are
// computed in float32 (converted before and after). Not yet run on a GPU (the build machines have
// none); executed on the CPU by the emulated tests.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <array>
#include <cstdlib>
#include <optional>
#include <tuple>

#include "patch_common.h"
#include "patch_conv2d_kernels.cuh"
#include "patch_inverted_residual_kernels.cuh"

namespace fastvision::patch {

namespace {

Strides4 strides4(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

// FASTVISION_PATCH_CUDA_DIRECT=1 runs the direct (pre-tiling) forward, input-gradient,
// weight-gradient and inverted-residual kernels: the 'old' baseline of tools/gpu_kernel_driver.py's benchmark. Read at
// each call (host only), so one process can time both.
bool force_direct() {
  const char* v = std::getenv("FASTVISION_PATCH_CUDA_DIRECT");
  return v != nullptr && v[0] == '1';
}

at::Tensor patch_conv2d_cuda(const at::Tensor& x_in, const at::Tensor& weight_in,
                             const std::optional<at::Tensor>& bias_in, at::IntArrayRef kernel_size,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                             int64_t groups, int64_t padding_mode) {
  const ConvGeometry g = conv_geometry(x_in, weight_in, bias_in, kernel_size, stride, padding,
                                       dilation, groups, padding_mode);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::ScalarType ct = opmath_dtype(x_in.scalar_type());
  const at::Tensor x = x_in.to(ct), weight = weight_in.to(ct);
  const std::optional<at::Tensor> bias =
      bias_in.has_value() ? std::optional<at::Tensor>(bias_in->to(ct).contiguous()) : std::nullopt;
  at::Tensor out = at::empty({g.B, g.Cout, g.Ho, g.Wo}, x.options());
  if (out.numel() > 0) {
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(ct, "patch_conv2d_cuda", [&] {
      C10_CUDA_CHECK(launch_patch_conv2d_forward<scalar_t>(
          x.const_data_ptr<scalar_t>(), strides4(x), weight.const_data_ptr<scalar_t>(), strides4(weight),
          bias ? bias->const_data_ptr<scalar_t>() : nullptr, out.mutable_data_ptr<scalar_t>(), g, stream,
          force_direct()));
    });
  }
  return out.to(x_in.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> patch_conv2d_backward_cuda(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& weight_in,
    at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, int64_t padding_mode, bool need_x, bool need_weight,
    bool need_bias) {
  const ConvGeometry g = backward_geometry(grad_out_in, x_in, weight_in, kernel_size, stride, padding,
                                           dilation, groups, padding_mode);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::ScalarType ct = opmath_dtype(x_in.scalar_type());
  const at::Tensor x = x_in.to(ct), weight = weight_in.to(ct), go = grad_out_in.to(ct).contiguous();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::Tensor gx = at::empty({0}, x_in.options()), gw = gx, gb = gx;
  AT_DISPATCH_FLOATING_TYPES(ct, "patch_conv2d_backward_cuda", [&] {
    if (need_x) {
      at::Tensor t = at::empty({g.B, g.Cin, g.H, g.W}, x.options());
      if (t.numel() > 0) {
        C10_CUDA_CHECK(launch_patch_conv2d_grad_input<scalar_t>(
            go.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(), strides4(weight),
            t.mutable_data_ptr<scalar_t>(), g, stream, force_direct()));
      }
      gx = t.to(x_in.scalar_type());
    }
    if (need_weight) {
      at::Tensor t = at::empty({g.B, g.K, g.fh, g.fw}, x.options());
      if (t.numel() > 0) {
        C10_CUDA_CHECK(launch_patch_conv2d_grad_weight<scalar_t>(
            go.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), strides4(x),
            t.mutable_data_ptr<scalar_t>(), g, stream, force_direct()));
      }
      gw = t.to(x_in.scalar_type());
    }
    if (need_bias) {
      at::Tensor t = at::empty({g.Cout}, x.options());
      if (g.Cout > 0) {
        C10_CUDA_CHECK(launch_patch_conv2d_grad_bias<scalar_t>(
            go.const_data_ptr<scalar_t>(), t.mutable_data_ptr<scalar_t>(), g, stream));
      }
      gb = t.to(x_in.scalar_type());
    }
  });
  return {gx, gw, gb};
}

at::Tensor patch_inverted_residual_cuda(const at::Tensor& x_in, const at::Tensor& weight_in,
                                        const at::Tensor& s1, const at::Tensor& b1,
                                        const at::Tensor& s2, const at::Tensor& b2,
                                        const at::Tensor& s3, const at::Tensor& b3, int64_t hidden,
                                        int64_t kernel_size, int64_t padding_mode, bool residual) {
  const IrGeometry g = ir_geometry(x_in, weight_in, {&s1, &b1, &s2, &b2, &s3, &b3}, hidden,
                                   kernel_size, padding_mode, residual);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::ScalarType ct = opmath_dtype(x_in.scalar_type());
  const at::Tensor x = x_in.to(ct), weight = weight_in.to(ct);
  std::array<at::Tensor, 6> bn = {s1.to(ct).contiguous(), b1.to(ct).contiguous(), s2.to(ct).contiguous(),
                                  b2.to(ct).contiguous(), s3.to(ct).contiguous(), b3.to(ct).contiguous()};
  at::Tensor out = at::empty({g.B, g.Cout, g.H, g.W}, x.options());
  const int64_t pixels = g.B * g.H * g.W;
  if (pixels > 0) {
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(ct, "patch_inverted_residual_cuda", [&] {
      C10_CUDA_CHECK(launch_patch_inverted_residual<scalar_t>(
          x.const_data_ptr<scalar_t>(), strides4(x), weight.const_data_ptr<scalar_t>(), strides4(weight),
          bn[0].const_data_ptr<scalar_t>(), bn[1].const_data_ptr<scalar_t>(), bn[2].const_data_ptr<scalar_t>(),
          bn[3].const_data_ptr<scalar_t>(), bn[4].const_data_ptr<scalar_t>(), bn[5].const_data_ptr<scalar_t>(),
          out.mutable_data_ptr<scalar_t>(), g, stream, force_direct()));
    });
  }
  return out.to(x_in.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(fastvision, CUDA, m) {
  m.impl("patch_conv2d", &patch_conv2d_cuda);
  m.impl("_patch_conv2d_backward", &patch_conv2d_backward_cuda);
  m.impl("patch_inverted_residual", &patch_inverted_residual_cuda);
}

}  // namespace fastvision::patch
