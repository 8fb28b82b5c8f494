// CUDA kernels of patch_conv2d (forward, backward) and patch_inverted_residual.
//
// Straightforward one-thread-per-output-element kernels on the arithmetic of
// fastvision/patch_conv.h (the CPU kernels' index mapping and sum order), deterministic by
// construction (no atomics):
//   * forward: a thread per output element, conv_tap_sum over its cell's kernel, read from the
//     hypernetwork layout through strides, then the bias;
//   * grad_weight: a thread per (image, kernel entry, cell) sums over the cell's pixels;
//   * grad_input: a gather: a thread per input element enumerates the padded coordinates that map
//     to it (preimages: itself, its reflections, or the replicated border run) and the output
//     pixels and taps that read them;
//   * grad_bias: a block per output channel, a fixed-shape tree reduction;
//   * patch_inverted_residual: a thread per output pixel computes the expand -> depthwise ->
//     project chain for it (the hidden values of its taps are recomputed per tap), accumulating
//     its output channels in the output tensor it owns.
// Tiled shared-memory versions (a block per patch, the patch kernel in shared memory) are the
// next step once these have run on a GPU. float16 / bfloat16 are computed in float32 (converted
// before and after). Not yet run on a GPU (the build machines have none).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <optional>
#include <tuple>

#include "patch_common.h"

namespace fastvision::patch {

namespace {

constexpr int kThreads = 256;

struct S4 {
  int64_t b, c, h, w;
};

inline S4 strides4(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

inline unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t{1} << 20));
}

__device__ FV_INLINE int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

__device__ FV_INLINE int64_t clamp_lo(int64_t v) { return v < 0 ? 0 : v; }
__device__ FV_INLINE int64_t clamp_hi(int64_t v, int64_t hi) { return v > hi ? hi : v; }

template <typename A>
__global__ void forward_kernel(const A* __restrict__ x, S4 xs, const A* __restrict__ w, S4 ws,
                               const A* __restrict__ bias, A* __restrict__ out, ConvGeometry g) {
  const int64_t total = g.B * g.Cout * g.Ho * g.Wo;
  const int64_t KK = g.cin_g * g.kh * g.kw;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < total;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t ox = e % g.Wo, oy = e / g.Wo % g.Ho, co = e / (g.Wo * g.Ho) % g.Cout,
                  b = e / (g.Wo * g.Ho * g.Cout);
    const int64_t i = cell_of(oy, g.Ho, g.fh), j = cell_of(ox, g.Wo, g.fw);
    const int64_t grp = co / g.cout_g;
    const A* wp = w + b * ws.b + co * KK * ws.c + i * ws.h + j * ws.w;
    const A* xp = x + b * xs.b + grp * g.cin_g * xs.c;
    A acc = conv_tap_sum<A>(xp, xs.c, xs.h, xs.w, g.H, g.W, wp, ws.c, g.cin_g, g.kh, g.kw,
                            oy * g.sh - g.ph, ox * g.sw - g.pw, g.dh, g.dw, g.mode);
    if (bias != nullptr) acc += bias[co];
    out[e] = acc;
  }
}

// grad_weight (B, K, fh, fw), contiguous; go contiguous (B, Cout, Ho, Wo).
template <typename A>
__global__ void grad_weight_kernel(const A* __restrict__ go, const A* __restrict__ x, S4 xs,
                                   A* __restrict__ gw, ConvGeometry g) {
  const int64_t total = g.B * g.K * g.fh * g.fw;
  const int64_t KK = g.cin_g * g.kh * g.kw;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < total;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t j = e % g.fw, i = e / g.fw % g.fh, k = e / (g.fw * g.fh) % g.K, b = e / (g.fw * g.fh * g.K);
    const int64_t co = k / KK, rem = k % KK;
    const int64_t ci = rem / (g.kh * g.kw);
    const int ky = static_cast<int>(rem / g.kw % g.kh), kx = static_cast<int>(rem % g.kw);
    const A* xc = x + b * xs.b + (co / g.cout_g * g.cin_g + ci) * xs.c;
    const A* gc = go + (b * g.Cout + co) * g.Ho * g.Wo;
    const int64_t y0 = cell_start(i, g.Ho, g.fh), y1 = cell_start(i + 1, g.Ho, g.fh);
    const int64_t x0 = cell_start(j, g.Wo, g.fw), x1 = cell_start(j + 1, g.Wo, g.fw);
    A acc = A(0);
    for (int64_t oy = y0; oy < y1; ++oy) {
      const int64_t iy = map_coord(oy * g.sh - g.ph + int64_t{ky} * g.dh, g.H, g.mode);
      if (iy < 0) continue;
      for (int64_t ox = x0; ox < x1; ++ox) {
        const int64_t ix = map_coord(ox * g.sw - g.pw + int64_t{kx} * g.dw, g.W, g.mode);
        if (ix >= 0) acc += gc[oy * g.Wo + ox] * xc[iy * xs.h + ix * xs.w];
      }
    }
    gw[e] = acc;
  }
}

// grad_input (B, Cin, H, W), contiguous: a gather over the output pixels and taps that read each
// input element.
template <typename A>
__global__ void grad_input_kernel(const A* __restrict__ go, const A* __restrict__ w, S4 ws,
                                  A* __restrict__ gx, ConvGeometry g, int64_t pad_hi_y, int64_t pad_hi_x) {
  const int64_t total = g.B * g.Cin * g.H * g.W;
  const int64_t KK = g.cin_g * g.kh * g.kw;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < total;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t ix = e % g.W, iy = e / g.W % g.H, c = e / (g.W * g.H) % g.Cin, b = e / (g.W * g.H * g.Cin);
    const int64_t grp = c / g.cin_g, ci = c % g.cin_g;
    int64_t ylo[3], yhi[3], xlo[3], xhi[3];
    const int ny = preimages(iy, g.H, g.ph, pad_hi_y, g.mode, ylo, yhi);
    const int nx = preimages(ix, g.W, g.pw, pad_hi_x, g.mode, xlo, xhi);
    A acc = A(0);
    for (int ky = 0; ky < g.kh; ++ky) {
      for (int ay = 0; ay < ny; ++ay) {
        // oy * sh - ph + ky * dh in [ylo, yhi]
        const int64_t off_y = g.ph - int64_t{ky} * g.dh;
        const int64_t oy0 = clamp_lo(floor_div(ylo[ay] + off_y + g.sh - 1, g.sh));
        const int64_t oy1 = clamp_hi(floor_div(yhi[ay] + off_y, g.sh), g.Ho - 1);
        for (int64_t oy = oy0; oy <= oy1; ++oy) {
          const int64_t pi = cell_of(oy, g.Ho, g.fh);
          for (int kx = 0; kx < g.kw; ++kx) {
            for (int ax = 0; ax < nx; ++ax) {
              const int64_t off_x = g.pw - int64_t{kx} * g.dw;
              const int64_t ox0 = clamp_lo(floor_div(xlo[ax] + off_x + g.sw - 1, g.sw));
              const int64_t ox1 = clamp_hi(floor_div(xhi[ax] + off_x, g.sw), g.Wo - 1);
              for (int64_t ox = ox0; ox <= ox1; ++ox) {
                const int64_t pj = cell_of(ox, g.Wo, g.fw);
                const A* wp = w + b * ws.b + pi * ws.h + pj * ws.w;
                const int64_t tap = (ci * g.kh + ky) * g.kw + kx;
                for (int64_t r = 0; r < g.cout_g; ++r) {
                  const int64_t co = grp * g.cout_g + r;
                  acc += wp[(co * KK + tap) * ws.c] * go[((b * g.Cout + co) * g.Ho + oy) * g.Wo + ox];
                }
              }
            }
          }
        }
      }
    }
    gx[e] = acc;
  }
}

// grad_bias: one block per output channel, a fixed-shape tree reduction (deterministic).
template <typename A>
__global__ void grad_bias_kernel(const A* __restrict__ go, A* __restrict__ gb, ConvGeometry g) {
  __shared__ A partial[kThreads];
  const int64_t co = blockIdx.x;
  const int64_t plane = g.Ho * g.Wo;
  A s = A(0);
  for (int64_t b = 0; b < g.B; ++b) {
    const A* p = go + (b * g.Cout + co) * plane;
    for (int64_t t = threadIdx.x; t < plane; t += blockDim.x) s += p[t];
  }
  partial[threadIdx.x] = s;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) gb[co] = partial[0];
}

template <typename A>
__global__ void inverted_residual_kernel(const A* __restrict__ x, S4 xs, const A* __restrict__ w, S4 ws,
                                         const A* __restrict__ s1, const A* __restrict__ b1,
                                         const A* __restrict__ s2, const A* __restrict__ b2,
                                         const A* __restrict__ s3, const A* __restrict__ b3,
                                         A* __restrict__ out, IrGeometry g) {
  const int64_t total = g.B * g.H * g.W;
  const int r = g.k / 2, kk = g.k * g.k;
  const int64_t n1 = g.Cin * g.hidden, n2 = g.hidden * kk;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < total;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t px = e % g.W, py = e / g.W % g.H, b = e / (g.W * g.H);
    const int64_t i = cell_of(py, g.H, g.fh), j = cell_of(px, g.W, g.fw);
    const A* wp = w + b * ws.b + i * ws.h + j * ws.w;
    const A* xb = x + b * xs.b;
    A* ob = out + b * g.Cout * g.H * g.W + py * g.W + px;
    const int64_t plane = g.H * g.W;
    for (int64_t co = 0; co < g.Cout; ++co) ob[co * plane] = A(0);
    for (int64_t h = 0; h < g.hidden; ++h) {
      A dsum = A(0);
      for (int ky = 0; ky < g.k; ++ky) {
        const int64_t iy = map_coord(py - r + ky, g.H, g.mode);
        for (int kx = 0; kx < g.k; ++kx) {
          const int64_t ix = map_coord(px - r + kx, g.W, g.mode);
          A hv = A(0);
          if (iy >= 0 && ix >= 0) {
            A esum = A(0);
            for (int64_t ci = 0; ci < g.Cin; ++ci) {
              esum += wp[(h * g.Cin + ci) * ws.c] * xb[ci * xs.c + iy * xs.h + ix * xs.w];
            }
            hv = relu6(affine(esum, s1[h], b1[h]));
          }
          dsum += wp[(n1 + h * kk + ky * g.k + kx) * ws.c] * hv;
        }
      }
      const A dv = relu6(affine(dsum, s2[h], b2[h]));
      for (int64_t co = 0; co < g.Cout; ++co) ob[co * plane] += wp[(n1 + n2 + co * g.hidden + h) * ws.c] * dv;
    }
    for (int64_t co = 0; co < g.Cout; ++co) {
      A v = affine(ob[co * plane], s3[co], b3[co]);
      if (g.residual) v += xb[co * xs.c + py * xs.h + px * xs.w];
      ob[co * plane] = v;
    }
  }
}

at::ScalarType compute_type(at::ScalarType t) {
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
}

at::Tensor patch_conv2d_cuda(const at::Tensor& x_in, const at::Tensor& weight_in,
                             const std::optional<at::Tensor>& bias_in, at::IntArrayRef kernel_size,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                             int64_t groups, int64_t padding_mode) {
  const ConvGeometry g = conv_geometry(x_in, weight_in, bias_in, kernel_size, stride, padding,
                                       dilation, groups, padding_mode);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::ScalarType ct = compute_type(x_in.scalar_type());
  const at::Tensor x = x_in.to(ct), weight = weight_in.to(ct);
  const std::optional<at::Tensor> bias =
      bias_in.has_value() ? std::optional<at::Tensor>(bias_in->to(ct).contiguous()) : std::nullopt;
  at::Tensor out = at::empty({g.B, g.Cout, g.Ho, g.Wo}, x.options());
  if (out.numel() > 0) {
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(ct, "patch_conv2d_cuda", [&] {
      forward_kernel<scalar_t><<<blocks_for(out.numel()), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), strides4(x), weight.const_data_ptr<scalar_t>(), strides4(weight),
          bias ? bias->const_data_ptr<scalar_t>() : nullptr, out.mutable_data_ptr<scalar_t>(), g);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
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
  const at::ScalarType ct = compute_type(x_in.scalar_type());
  const at::Tensor x = x_in.to(ct), weight = weight_in.to(ct), go = grad_out_in.to(ct).contiguous();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::Tensor gx = at::empty({0}, x_in.options()), gw = gx, gb = gx;
  AT_DISPATCH_FLOATING_TYPES(ct, "patch_conv2d_backward_cuda", [&] {
    if (need_x) {
      at::Tensor t = at::empty({g.B, g.Cin, g.H, g.W}, x.options());
      if (t.numel() > 0) {
        const int64_t pad_hi_y = std::max<int64_t>(0, (g.Ho - 1) * g.sh - g.ph + int64_t{g.dh} * (g.kh - 1) - (g.H - 1));
        const int64_t pad_hi_x = std::max<int64_t>(0, (g.Wo - 1) * g.sw - g.pw + int64_t{g.dw} * (g.kw - 1) - (g.W - 1));
        grad_input_kernel<scalar_t><<<blocks_for(t.numel()), kThreads, 0, stream>>>(
            go.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(), strides4(weight),
            t.mutable_data_ptr<scalar_t>(), g, pad_hi_y, pad_hi_x);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      gx = t.to(x_in.scalar_type());
    }
    if (need_weight) {
      at::Tensor t = at::empty({g.B, g.K, g.fh, g.fw}, x.options());
      if (t.numel() > 0) {
        grad_weight_kernel<scalar_t><<<blocks_for(t.numel()), kThreads, 0, stream>>>(
            go.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), strides4(x),
            t.mutable_data_ptr<scalar_t>(), g);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      gw = t.to(x_in.scalar_type());
    }
    if (need_bias) {
      at::Tensor t = at::empty({g.Cout}, x.options());
      if (g.Cout > 0) {
        grad_bias_kernel<scalar_t><<<static_cast<unsigned>(g.Cout), kThreads, 0, stream>>>(
            go.const_data_ptr<scalar_t>(), t.mutable_data_ptr<scalar_t>(), g);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
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
  const at::ScalarType ct = compute_type(x_in.scalar_type());
  const at::Tensor x = x_in.to(ct), weight = weight_in.to(ct);
  std::array<at::Tensor, 6> bn = {s1.to(ct).contiguous(), b1.to(ct).contiguous(), s2.to(ct).contiguous(),
                                  b2.to(ct).contiguous(), s3.to(ct).contiguous(), b3.to(ct).contiguous()};
  at::Tensor out = at::empty({g.B, g.Cout, g.H, g.W}, x.options());
  const int64_t pixels = g.B * g.H * g.W;
  if (pixels > 0) {
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(ct, "patch_inverted_residual_cuda", [&] {
      inverted_residual_kernel<scalar_t><<<blocks_for(pixels), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), strides4(x), weight.const_data_ptr<scalar_t>(), strides4(weight),
          bn[0].const_data_ptr<scalar_t>(), bn[1].const_data_ptr<scalar_t>(), bn[2].const_data_ptr<scalar_t>(),
          bn[3].const_data_ptr<scalar_t>(), bn[4].const_data_ptr<scalar_t>(), bn[5].const_data_ptr<scalar_t>(),
          out.mutable_data_ptr<scalar_t>(), g);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
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
