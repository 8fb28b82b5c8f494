// CPU kernel of patch_inverted_residual: HyperSeg's decoder block (per-patch 1x1 expand, BN,
// ReLU6, per-patch depthwise kxk over the patch plus a halo of neighbouring pixels, BN, ReLU6,
// per-patch 1x1 project, BN, optional residual) with BatchNorm folded, for inference.
//
// One work item per (image, patch row, block of 16 patches). A band of a patch's output rows and
// its halo is a tile: the input tile is gathered once through the border mapping (no padded copy
// of the image), expanded with the patch's weights (halo pixels included: HyperSeg expands them
// with the weights of the patch that reads them), then the depthwise and the projection run on
// the tile in per-thread buffers; only the block's output is written. Sums run in the index order of the CUDA kernel
// (input channels, taps, hidden channels), from zero, then the folded BN affine. The per-item
// code is compiled twice, for the baseline x86-64 ISA and for AVX2 + FMA (float32, chosen at run
// time; -ffp-contract=off still keeps separate multiplies and adds outside the GEMM kernel).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <vector>

#include "fastvision/common.h"
#include "patch_common.h"
#include "patch_gemm_cpu.h"

namespace fastvision::patch {

namespace {

constexpr int64_t kBandPixels = 1024;  // output pixels per band (bounds the tile buffers)
constexpr int64_t kJBlock = 16;        // patch columns whose kernels are transposed together

template <typename T, typename A>
struct IrArgs {
  const IrGeometry& g;
  const T* xd;
  const T* wd;
  int64_t xsb, xsc, xsh, xsw, wsb, wsc, wsh, wsw;
  const std::array<std::vector<A>, 6>& v;
  T* od;
  int r, kk;
  int64_t n1, n2, jblocks;
};

// Work items [w0, w1): (image, patch row, block of kJBlock patches); the block's kernels are read
// together and transposed (neighbouring patches' entries share cache lines). Always inlined into
// the two entry points below, so the same source is compiled for the baseline ISA and for AVX2.
template <typename T, typename A>
__attribute__((always_inline)) inline void ir_items(const IrArgs<T, A>& args, int64_t w0, int64_t w1) {
  const IrGeometry& g = args.g;
  const T* xd = args.xd;
  const T* wd = args.wd;
  const int64_t xsb = args.xsb, xsc = args.xsc, xsh = args.xsh, xsw = args.xsw;
  const int64_t wsb = args.wsb, wsc = args.wsc, wsh = args.wsh, wsw = args.wsw;
  const std::array<std::vector<A>, 6>& v = args.v;
  T* od = args.od;
  const int r = args.r, kk = args.kk;
  const int64_t n1 = args.n1, n2 = args.n2, jblocks = args.jblocks;
  std::vector<A> wblock(kJBlock * g.K), xin, e, d, acc;
  std::vector<int64_t> tiy, tix;
  std::vector<char> valid;
  for (int64_t item = w0; item < w1; ++item) {
    const int64_t b = item / (g.fh * jblocks), i = item / jblocks % g.fh, j0 = item % jblocks * kJBlock;
    const int64_t nj = std::min(kJBlock, g.fw - j0);
    {
      const T* base = wd + b * wsb + i * wsh + j0 * wsw;
      for (int64_t k = 0; k < g.K; ++k) {
        for (int64_t jj = 0; jj < nj; ++jj) wblock[jj * g.K + k] = static_cast<A>(base[k * wsc + jj * wsw]);
      }
    }
    for (int64_t j = j0; j < j0 + nj; ++j) {
      const A* W1 = wblock.data() + (j - j0) * g.K;
      const A* W2 = W1 + n1;
      const A* W3 = W2 + n2;
      const int64_t y0 = cell_start(i, g.H, g.fh), y1 = cell_start(i + 1, g.H, g.fh);
      const int64_t x0 = cell_start(j, g.W, g.fw), x1 = cell_start(j + 1, g.W, g.fw);
      const int64_t pw = x1 - x0, tw = pw + 2 * r;
      const int64_t band = std::max<int64_t>(1, kBandPixels / pw);
      for (int64_t ya = y0; ya < y1; ya += band) {
        const int64_t yb = std::min(y1, ya + band), rows = yb - ya, th = rows + 2 * r;
        const int64_t nt = th * tw, nq = rows * pw;
        xin.resize(g.Cin * nt);
        e.resize(g.hidden * nt);
        d.resize(g.hidden * nq);
        acc.resize(g.Cout * nq);
        tiy.resize(nt);
        tix.resize(nt);
        valid.resize(nt);
        bool any_invalid = false;
        for (int64_t t = 0; t < nt; ++t) {
          tiy[t] = map_coord(ya - r + t / tw, g.H, g.mode);
          tix[t] = map_coord(x0 - r + t % tw, g.W, g.mode);
          valid[t] = tiy[t] >= 0 && tix[t] >= 0;
          any_invalid = any_invalid || !valid[t];
        }
        const T* xb = xd + b * xsb;
        for (int64_t ci = 0; ci < g.Cin; ++ci) {
          A* xc = xin.data() + ci * nt;
          for (int64_t t = 0; t < nt; ++t) {
            xc[t] = valid[t] ? static_cast<A>(xb[ci * xsc + tiy[t] * xsh + tix[t] * xsw]) : A(0);
          }
        }
        // Expand + BN + ReLU6 on the whole tile; zero padding pads the hidden map with zeros.
        gemm_nn(W1, xin.data(), e.data(), g.hidden, g.Cin, nt);
        for (int64_t h = 0; h < g.hidden; ++h) {
          A* eh = e.data() + h * nt;
          const A s = v[0][h], sh = v[1][h];
          for (int64_t t = 0; t < nt; ++t) eh[t] = relu6(affine(eh[t], s, sh));
          if (any_invalid) {
            for (int64_t t = 0; t < nt; ++t) eh[t] = valid[t] ? eh[t] : A(0);
          }
        }
        // Depthwise kxk + BN + ReLU6 on the band's pixels.
        for (int64_t h = 0; h < g.hidden; ++h) {
          const A* eh = e.data() + h * nt;
          A* dh = d.data() + h * nq;
          std::fill(dh, dh + nq, A(0));
          for (int ky = 0; ky < g.k; ++ky) {
            for (int kx = 0; kx < g.k; ++kx) {
              const A wv = W2[h * kk + ky * g.k + kx];
              for (int64_t qy = 0; qy < rows; ++qy) {
                const A* src = eh + (qy + ky) * tw + kx;
                A* dst = dh + qy * pw;
                for (int64_t qx = 0; qx < pw; ++qx) dst[qx] += wv * src[qx];
              }
            }
          }
          const A s = v[2][h], sh = v[3][h];
          for (int64_t q = 0; q < nq; ++q) dh[q] = relu6(affine(dh[q], s, sh));
        }
        // Project + BN (+ residual), written to the output.
        gemm_nn(W3, d.data(), acc.data(), g.Cout, g.hidden, nq);
        for (int64_t co = 0; co < g.Cout; ++co) {
          const A* ac = acc.data() + co * nq;
          const A s = v[4][co], sh = v[5][co];
          T* oc = od + ((b * g.Cout + co) * g.H + ya) * g.W + x0;
          for (int64_t qy = 0; qy < rows; ++qy) {
            for (int64_t qx = 0; qx < pw; ++qx) {
              A val = affine(ac[qy * pw + qx], s, sh);
              if (g.residual) val += static_cast<A>(xb[co * xsc + (ya + qy) * xsh + (x0 + qx) * xsw]);
              oc[qy * g.W + qx] = static_cast<T>(val);
            }
          }
        }
      }
    }
  }
}

template <typename T, typename A>
void ir_items_baseline(const IrArgs<T, A>& args, int64_t w0, int64_t w1) {
  ir_items<T, A>(args, w0, w1);
}

#if FV_X86_SIMD
FV_TARGET_AVX2 void ir_items_avx2(const IrArgs<float, float>& args, int64_t w0, int64_t w1) {
  ir_items<float, float>(args, w0, w1);
}
#endif

template <typename T, typename A>
void ir_impl(const at::Tensor& x, const at::Tensor& weight, const std::array<at::Tensor, 6>& bn,
             const IrGeometry& g, at::Tensor& out) {
  std::array<std::vector<A>, 6> v;
  for (int i = 0; i < 6; ++i) {
    const at::Tensor c = bn[i].contiguous();
    const T* p = c.const_data_ptr<T>();
    v[i].assign(p, p + c.numel());
  }
  const int r = g.k / 2, kk = g.k * g.k;
  const IrArgs<T, A> args{g, x.const_data_ptr<T>(), weight.const_data_ptr<T>(),
                          x.stride(0), x.stride(1), x.stride(2), x.stride(3),
                          weight.stride(0), weight.stride(1), weight.stride(2), weight.stride(3),
                          v, out.mutable_data_ptr<T>(), r, kk, g.Cin * g.hidden, g.hidden * kk,
                          (g.fw + kJBlock - 1) / kJBlock};
  at::parallel_for(0, g.B * g.fh * args.jblocks, 1, [&](int64_t w0, int64_t w1) {
#if FV_X86_SIMD
    if constexpr (std::is_same_v<T, float> && std::is_same_v<A, float>) {
      if (cpu_avx2_fma()) {
        ir_items_avx2(args, w0, w1);
        return;
      }
    }
#endif
    ir_items_baseline<T, A>(args, w0, w1);
  });
}

at::Tensor patch_inverted_residual_cpu(const at::Tensor& x_in, const at::Tensor& weight_in,
                                       const at::Tensor& s1, const at::Tensor& b1,
                                       const at::Tensor& s2, const at::Tensor& b2,
                                       const at::Tensor& s3, const at::Tensor& b3, int64_t hidden,
                                       int64_t kernel_size, int64_t padding_mode, bool residual) {
  const IrGeometry g = ir_geometry(x_in, weight_in, {&s1, &b1, &s2, &b2, &s3, &b3}, hidden,
                                   kernel_size, padding_mode, residual);
  const at::Tensor x = to_opmath(x_in), weight = to_opmath(weight_in);
  const std::array<at::Tensor, 6> bn = {to_opmath(s1), to_opmath(b1), to_opmath(s2),
                                        to_opmath(b2), to_opmath(s3), to_opmath(b3)};
  at::Tensor out = at::empty({g.B, g.Cout, g.H, g.W}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "patch_inverted_residual_cpu", [&] {
    ir_impl<scalar_t, opmath_t<scalar_t>>(x, weight, bn, g, out);
  });
  return out.to(x_in.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(fastvision, CPU, m) {
  m.impl("patch_inverted_residual", &patch_inverted_residual_cpu);
}

}  // namespace fastvision::patch
