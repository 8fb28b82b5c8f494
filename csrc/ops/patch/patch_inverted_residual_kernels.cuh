// Device code and launch planning of patch_inverted_residual (torch-free: compiled by nvcc for
// the CUDA build and by g++ with the CUDA-on-CPU emulator for `pytest -m emulated`).
//
// A thread per output pixel computes the expand -> depthwise -> project chain for it (the hidden
// values of its taps are recomputed per tap), accumulating its output channels in the output
// tensor it owns; no atomics, no shared memory. A is the compute type (float or double).
#pragma once

#include <cstdint>

#include "fastvision/cuda_compat.h"
#include "fastvision/patch_conv.h"
#include "patch_conv2d_kernels.cuh"

namespace fastvision::patch {

template <typename A>
FV_GLOBAL void patch_inverted_residual_kernel(const A* __restrict__ x, Strides4 xs,
                                              const A* __restrict__ w, Strides4 ws,
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

// x (B, Cin, H, W) and weight (B, K, fh, fw) through strides; the six folded-BN vectors
// contiguous; out (B, Cout, H, W) contiguous. Requires B * H * W > 0. Returns the launch status.
template <typename A>
auto launch_patch_inverted_residual(const A* x, Strides4 xs, const A* w, Strides4 ws, const A* s1,
                                    const A* b1, const A* s2, const A* b2, const A* s3,
                                    const A* b3, A* out, const IrGeometry& g,
                                    cuda::Stream stream) {
  return cuda::launch(patch_inverted_residual_kernel<A>, patch_grid_stride_config(g.B * g.H * g.W),
                      stream, x, xs, w, ws, s1, b1, s2, b2, s3, b3, out, g);
}

}  // namespace fastvision::patch
