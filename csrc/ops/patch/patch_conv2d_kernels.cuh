// Device code and launch planning of patch_conv2d and its backward (torch-free: compiled by nvcc
// for the CUDA build and by g++ with the CUDA-on-CPU emulator for `pytest -m emulated`).
//
// Straightforward one-thread-per-output-element kernels on the arithmetic of
// fastvision/patch_conv.h (the CPU kernels' index mapping and sum order), deterministic by
// construction (no atomics, every output summed by one thread in a fixed order):
//   * forward: a thread per output element, conv_tap_sum over its cell's kernel, read from the
//     hypernetwork layout through strides, then the bias;
//   * grad_weight: a thread per (image, kernel entry, cell) sums over the cell's pixels;
//   * grad_input: a gather: a thread per input element enumerates the padded coordinates that map
//     to it (preimages: itself, its reflections, or the replicated border run) and the output
//     pixels and taps that read them;
//   * grad_bias: a block per output channel, a fixed-shape tree reduction in shared memory.
// Tiled shared-memory versions (a block per patch, the patch kernel in shared memory) are the
// next step once these have run on a GPU. A is the compute type (float or double; the glue
// converts half and bfloat16 to float).
#pragma once

#include <cstdint>

#include "fastvision/cuda_compat.h"
#include "fastvision/patch_conv.h"

namespace fastvision::patch {

constexpr int kPatchThreads = 256;

// Grid-stride launch over n elements: at most 2^20 blocks, each thread loops over the rest.
inline cuda::LaunchConfig patch_grid_stride_config(int64_t n) {
  cuda::LaunchConfig cfg;
  const int64_t blocks = ceil_div<int64_t>(n, kPatchThreads);
  cfg.grid = dim3(static_cast<unsigned>(blocks < (int64_t{1} << 20) ? blocks : int64_t{1} << 20));
  cfg.block = dim3(kPatchThreads);
  return cfg;
}

FV_DEVICE int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

FV_DEVICE int64_t clamp_lo(int64_t v) { return v < 0 ? 0 : v; }
FV_DEVICE int64_t clamp_hi(int64_t v, int64_t hi) { return v > hi ? hi : v; }

template <typename A>
FV_GLOBAL void patch_conv2d_forward_kernel(const A* __restrict__ x, Strides4 xs,
                                           const A* __restrict__ w, Strides4 ws,
                                           const A* __restrict__ bias, A* __restrict__ out,
                                           ConvGeometry g) {
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
FV_GLOBAL void patch_conv2d_grad_weight_kernel(const A* __restrict__ go, const A* __restrict__ x,
                                               Strides4 xs, A* __restrict__ gw, ConvGeometry g) {
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
FV_GLOBAL void patch_conv2d_grad_input_kernel(const A* __restrict__ go, const A* __restrict__ w,
                                              Strides4 ws, A* __restrict__ gx, ConvGeometry g,
                                              int64_t pad_hi_y, int64_t pad_hi_x) {
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
FV_GLOBAL void patch_conv2d_grad_bias_kernel(const A* __restrict__ go, A* __restrict__ gb,
                                             ConvGeometry g) {
  FV_SHARED(A[kPatchThreads], partial);
  const int64_t co = blockIdx.x;
  const int64_t plane = g.Ho * g.Wo;
  A s = A(0);
  for (int64_t b = 0; b < g.B; ++b) {
    const A* p = go + (b * g.Cout + co) * plane;
    for (int64_t t = threadIdx.x; t < plane; t += blockDim.x) s += p[t];
  }
  partial[threadIdx.x] = s;
  __syncthreads();
  for (unsigned half = kPatchThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) gb[co] = partial[0];
}

// Launch sequences. Every output is written (no zero-initialisation needed); each requires a
// non-empty output. They return the launch status.

// x (B, Cin, H, W) and weight (B, K, fh, fw) read through strides, bias (Cout) or null,
// out (B, Cout, Ho, Wo) contiguous.
template <typename A>
auto launch_patch_conv2d_forward(const A* x, Strides4 xs, const A* w, Strides4 ws, const A* bias,
                                 A* out, const ConvGeometry& g, cuda::Stream stream) {
  return cuda::launch(patch_conv2d_forward_kernel<A>, patch_grid_stride_config(g.B * g.Cout * g.Ho * g.Wo),
                      stream, x, xs, w, ws, bias, out, g);
}

// grad_out (B, Cout, Ho, Wo) contiguous, weight through strides, grad_x (B, Cin, H, W) contiguous.
template <typename A>
auto launch_patch_conv2d_grad_input(const A* go, const A* w, Strides4 ws, A* gx,
                                    const ConvGeometry& g, cuda::Stream stream) {
  // How far past the last input row / column the taps reach (the padding actually read there).
  const int64_t reach_y = (g.Ho - 1) * g.sh - g.ph + int64_t{g.dh} * (g.kh - 1) - (g.H - 1);
  const int64_t reach_x = (g.Wo - 1) * g.sw - g.pw + int64_t{g.dw} * (g.kw - 1) - (g.W - 1);
  return cuda::launch(patch_conv2d_grad_input_kernel<A>, patch_grid_stride_config(g.B * g.Cin * g.H * g.W),
                      stream, go, w, ws, gx, g, reach_y > 0 ? reach_y : int64_t{0},
                      reach_x > 0 ? reach_x : int64_t{0});
}

// grad_out contiguous, x through strides, grad_weight (B, K, fh, fw) contiguous.
template <typename A>
auto launch_patch_conv2d_grad_weight(const A* go, const A* x, Strides4 xs, A* gw,
                                     const ConvGeometry& g, cuda::Stream stream) {
  return cuda::launch(patch_conv2d_grad_weight_kernel<A>, patch_grid_stride_config(g.B * g.K * g.fh * g.fw),
                      stream, go, x, xs, gw, g);
}

// grad_out contiguous, grad_bias (Cout): one block per output channel.
template <typename A>
auto launch_patch_conv2d_grad_bias(const A* go, A* gb, const ConvGeometry& g, cuda::Stream stream) {
  cuda::LaunchConfig cfg;
  cfg.grid = dim3(static_cast<unsigned>(g.Cout));
  cfg.block = dim3(kPatchThreads);
  return cuda::launch(patch_conv2d_grad_bias_kernel<A>, cfg, stream, go, gb, g);
}

}  // namespace fastvision::patch
