// CPU kernels of patch_conv2d and its backward.
//
// Each patch is a small GEMM: out_p (Cout x pixels) = W_p (Cout x Cin*kh*kw) . cols_p, with an
// implicit im2col: the columns of a chunk of whole cell rows (at most ~kChunk pixels) are
// gathered from the unpadded input (border mapping of fastvision/patch_conv.h; a plain copy
// between the borders) into a per-thread buffer, so nothing image-sized is padded, unfolded or
// copied. The kernels of kJBlock neighbouring patches are read from the hypernetwork layout
// (B, K, fh, fw) through strides and transposed together (neighbouring patches' entries share
// cache lines). Chunks of kSmall pixels or more sum over (ci, ky, kx) in index order from zero,
// like conv_tap_sum (the CUDA kernel's); smaller chunks (1x1 or 2x2 patches) use dot products
// with eight partial sums, so CPU and CUDA may differ there in the last bits. Then the bias.
// Two shapes have their own kernels: 1x1 patches of small cells (HyperSeg's 1x1 levels,
// patch_pointwise_cpu.h) and depthwise convolutions at stride 1 (its 3x3 layers, whole padded
// channel planes, patch_depthwise_cpu.h).
//
// Backward, deterministic, no atomics: grad_weight per patch (the work item that owns the patch
// reduces over its pixels); grad_bias per output channel; grad_input by scattering each patch's
// column gradients, the patch rows of one residue class mod `independent_stride` in parallel and
// the classes one after another, so no two threads touch the same input row and every pixel's
// sum runs in a fixed order.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

#include "fastvision/common.h"
#include "patch_common.h"
#include "patch_depthwise_cpu.h"
#include "patch_gemm_cpu.h"
#include "patch_pointwise_cpu.h"

namespace fastvision::patch {

namespace {

constexpr int64_t kChunk = 256;   // output pixels per im2col chunk (whole rows of a cell)
constexpr int64_t kSmall = 8;     // chunks of fewer pixels use dot products over the taps
constexpr int64_t kJBlock = 16;   // patch columns whose kernels are transposed together

struct Strides {
  int64_t b, c, h, w;
};

inline Strides strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

struct Cell {
  int64_t y0, y1, x0, x1;
  int64_t width() const { return x1 - x0; }
  int64_t height() const { return y1 - y0; }
};

inline Cell cell(const ConvGeometry& g, int64_t i, int64_t j) {
  return {cell_start(i, g.Ho, g.fh), cell_start(i + 1, g.Ho, g.fh), cell_start(j, g.Wo, g.fw),
          cell_start(j + 1, g.Wo, g.fw)};
}

// Calls f(r0, r1, n) for the chunks of cell c: rows [r0, r1), whole rows of at most ~kChunk
// pixels (at least one row), n = (r1 - r0) * width pixels.
template <typename F>
void for_each_chunk(const Cell& c, F&& f) {
  const int64_t step = std::max<int64_t>(1, kChunk / std::max<int64_t>(1, c.width()));
  for (int64_t r0 = 0; r0 < c.height(); r0 += step) {
    const int64_t r1 = std::min(c.height(), r0 + step);
    f(r0, r1, (r1 - r0) * c.width());
  }
}

// The columns lx of a cell row whose tap kx reads inside the image: [lo, hi).
struct Interior {
  int64_t base, lo, hi;
};

inline Interior interior(const ConvGeometry& g, const Cell& c, int kx) {
  const int64_t base = c.x0 * g.sw - g.pw + int64_t{kx} * g.dw;  // ix of lx = 0
  int64_t lo = base >= 0 ? 0 : (-base + g.sw - 1) / g.sw;
  int64_t hi = base > g.W - 1 ? 0 : (g.W - 1 - base) / g.sw + 1;
  lo = std::min(lo, c.width());
  hi = std::max(lo, std::min(hi, c.width()));
  return {base, lo, hi};
}

// The kernels of patches (i, j0 .. j0 + nj - 1) of image b, transposed to wl[(j - j0) * K + k]
// (the hypernetwork layout keeps a kernel entry of neighbouring patches adjacent).
template <typename T, typename A>
void load_kernels(const T* wd, const Strides& ws, int64_t b, int64_t i, int64_t j0, int64_t nj, int64_t K, A* wl) {
  const T* base = wd + b * ws.b + i * ws.h + j0 * ws.w;
  for (int64_t k = 0; k < K; ++k) {
    const T* src = base + k * ws.c;
    for (int64_t jj = 0; jj < nj; ++jj) wl[jj * K + k] = static_cast<A>(src[jj * ws.w]);
  }
}

// cols[(ci * kh + ky) * kw + kx][t] = x(group channel ci, tap of chunk pixel t), 0 off the image;
// the chunk is rows [r0, r1) of cell c, t = (row - r0) * width + lx.
template <typename T, typename A>
void im2col(const T* x, const Strides& xs, const ConvGeometry& g, const Cell& c, int64_t r0, int64_t r1,
            A* cols) {
  const int64_t width = c.width(), n = (r1 - r0) * width;
  int64_t k = 0;
  for (int64_t ci = 0; ci < g.cin_g; ++ci) {
    const T* xc = x + ci * xs.c;
    for (int ky = 0; ky < g.kh; ++ky) {
      for (int kx = 0; kx < g.kw; ++kx, ++k) {
        const Interior in = interior(g, c, kx);
        for (int64_t row = r0; row < r1; ++row) {
          A* dst = cols + k * n + (row - r0) * width;
          const int64_t iy = map_coord((c.y0 + row) * g.sh - g.ph + int64_t{ky} * g.dh, g.H, g.mode);
          if (iy < 0) {
            std::fill(dst, dst + width, A(0));
            continue;
          }
          const T* src = xc + iy * xs.h;
          auto border = [&](int64_t lx) {
            const int64_t ix = map_coord(in.base + lx * g.sw, g.W, g.mode);
            dst[lx] = ix >= 0 ? static_cast<A>(src[ix * xs.w]) : A(0);
          };
          for (int64_t lx = 0; lx < in.lo; ++lx) border(lx);
          if (g.sw == 1 && xs.w == 1) {
            const T* s = src + in.base;
            for (int64_t lx = in.lo; lx < in.hi; ++lx) dst[lx] = static_cast<A>(s[lx]);
          } else {
            for (int64_t lx = in.lo; lx < in.hi; ++lx) dst[lx] = static_cast<A>(src[(in.base + lx * g.sw) * xs.w]);
          }
          for (int64_t lx = in.hi; lx < width; ++lx) border(lx);
        }
      }
    }
  }
}

// dst[t * rows + k] = src[k * n + t]: the pixel-major copy the small-chunk paths use.
template <typename A>
void transpose(const A* src, int64_t rows, int64_t n, A* dst) {
  for (int64_t k = 0; k < rows; ++k) {
    for (int64_t t = 0; t < n; ++t) dst[t * rows + k] = src[k * n + t];
  }
}

// sum_k a[k] b[k] with eight partial sums (vectorisable without reassociating one sum).
template <typename A>
A dot(const A* a, const A* b, int64_t n) {
  A s[8] = {};
  int64_t t = 0;
  for (; t + 8 <= n; t += 8) {
    for (int l = 0; l < 8; ++l) s[l] += a[t + l] * b[t + l];
  }
  for (; t < n; ++t) s[0] += a[t] * b[t];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// Rows [r0, r1) of a cell, channel plane p (row stride W): dst[(row - r0) * width + lx] = p[...].
template <typename T, typename A>
void gather_rows(const T* p, int64_t W, const Cell& c, int64_t r0, int64_t r1, A* dst) {
  const int64_t width = c.width();
  for (int64_t row = r0; row < r1; ++row) {
    const T* s = p + (c.y0 + row) * W + c.x0;
    A* d = dst + (row - r0) * width;
    for (int64_t lx = 0; lx < width; ++lx) d[lx] = static_cast<A>(s[lx]);
  }
}

// HyperSeg's 1x1 levels (cells of 1-16 pixels): the cell-vectorised kernels of
// patch_pointwise_cpu.h. Larger cells keep the per-cell GEMM, whose FMA register tiles over the
// cell's pixels win once a cell fills them.
constexpr int64_t kPointwiseMaxCell = 16;

inline bool pointwise_cells(const ConvGeometry& g, const at::Tensor& weight) {
  return g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0 && g.groups == 1 &&
         g.fh > 0 && g.fw > 0 && g.Ho % g.fh == 0 && g.Wo % g.fw == 0 && (g.Ho / g.fh) * (g.Wo / g.fw) <= kPointwiseMaxCell &&
         weight.stride(3) == 1;
}

// One row of cells, CW pixels wide, contiguous: d[q * dstride + j] = row[j * CW + q]. A
// compile-time width lets the compiler vectorise the de-interleave (HyperSeg's 1x1, 2x2 and
// 4x4-pixel cells); ragged or strided rows take the generic loops below.
template <int CW, typename T>
void deinterleave_row(const T* row, int64_t fw, int64_t dstride, T* d) {
  for (int q = 0; q < CW; ++q) {
    T* dq = d + q * dstride;
    for (int64_t j = 0; j < fw; ++j) dq[j] = row[j * CW + q];
  }
}

// The inverse: row[j * CW + q] = s[q * sstride + j] + add.
template <int CW, typename T>
void interleave_row(const T* s, int64_t fw, int64_t sstride, T add, T* row) {
  for (int64_t j = 0; j < fw; ++j) {
    for (int q = 0; q < CW; ++q) row[j * CW + q] = s[q * sstride + j] + add;
  }
}

// dst[(c * S + r * cw + q) * fw + j] = plane c at (y0 + r, j * cw + q): the C channels of one patch
// row (cells ch x cw, S = ch * cw pixels) cell-major; src is one image, read through strides.
template <typename T>
void gather_cells(const T* src, int64_t cstride, int64_t hstride, int64_t wstride, int64_t C, int64_t y0,
                  int64_t ch, int64_t cw, int64_t fw, T* dst) {
  const int64_t S = ch * cw;
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t r = 0; r < ch; ++r) {
      const T* row = src + c * cstride + (y0 + r) * hstride;
      T* d = dst + (c * S + r * cw) * fw;
      if (wstride == 1 && cw == 1) {
        std::copy_n(row, fw, d);
      } else if (wstride == 1 && cw == 2) {
        deinterleave_row<2>(row, fw, fw, d);
      } else if (wstride == 1 && cw == 4) {
        deinterleave_row<4>(row, fw, fw, d);
      } else {
        for (int64_t q = 0; q < cw; ++q) {
          for (int64_t j = 0; j < fw; ++j) d[q * fw + j] = row[(j * cw + q) * wstride];
        }
      }
    }
  }
}

// The inverse of gather_cells into contiguous planes (H x W), plus a per-channel offset.
template <typename T>
void scatter_cells(const T* src, int64_t C, int64_t y0, int64_t ch, int64_t cw, int64_t fw, int64_t H, int64_t W,
                   const T* offset, T* dst) {
  const int64_t S = ch * cw;
  for (int64_t c = 0; c < C; ++c) {
    const T add = offset ? offset[c] : T(0);
    for (int64_t r = 0; r < ch; ++r) {
      T* row = dst + (c * H + y0 + r) * W;
      const T* s = src + (c * S + r * cw) * fw;
      if (cw == 1) {
        interleave_row<1>(s, fw, fw, add, row);
      } else if (cw == 2) {
        interleave_row<2>(s, fw, fw, add, row);
      } else if (cw == 4) {
        interleave_row<4>(s, fw, fw, add, row);
      } else {
        for (int64_t q = 0; q < cw; ++q) {
          for (int64_t j = 0; j < fw; ++j) row[j * cw + q] = s[q * fw + j] + add;
        }
      }
    }
  }
}

template <typename T>
void pointwise_forward(const at::Tensor& x, const at::Tensor& weight, const T* bias, const ConvGeometry& g,
                       at::Tensor& out) {
  const Strides xs = strides_of(x), ws = strides_of(weight);
  const T* xd = x.const_data_ptr<T>();
  const T* wd = weight.const_data_ptr<T>();
  T* od = out.mutable_data_ptr<T>();
  const int64_t ch = g.Ho / g.fh, cw = g.Wo / g.fw, S = ch * cw;
  at::parallel_for(0, g.B * g.fh, 1, [&](int64_t w0, int64_t w1) {
    std::vector<T> cells(g.Cin * S * g.fw), y(g.Cout * S * g.fw);
    for (int64_t item = w0; item < w1; ++item) {
      const int64_t b = item / g.fh, i = item % g.fh;
      gather_cells(xd + b * xs.b, xs.c, xs.h, xs.w, g.Cin, i * ch, ch, cw, g.fw, cells.data());
      // Kernel entry (co, ci) is hypernetwork row co * Cin + ci.
      pointwise_mix(wd + b * ws.b + i * ws.h, ws.c, g.Cin, 1, cells.data(), y.data(), g.Cout, S, g.Cin, g.fw);
      scatter_cells(y.data(), g.Cout, i * ch, ch, cw, g.fw, g.Ho, g.Wo, bias, od + b * g.Cout * g.Ho * g.Wo);
    }
  });
}

// grad_input and grad_weight of the cell-vectorised path, one patch row per work item (each item
// owns its pixels and its kernels: no two items write the same element).
template <typename T>
void pointwise_backward(const at::Tensor& go, const at::Tensor& x, const at::Tensor& weight, const ConvGeometry& g,
                        T* gx, T* gw) {
  const Strides xs = strides_of(x), ws = strides_of(weight);
  const T* xd = x.const_data_ptr<T>();
  const T* wd = weight.const_data_ptr<T>();
  const T* gd = go.const_data_ptr<T>();  // contiguous (B, Cout, Ho, Wo)
  const int64_t ch = g.Ho / g.fh, cw = g.Wo / g.fw, S = ch * cw;
  // The two gradients in two passes over the patch rows (each gathers the output gradient again,
  // a small copy): one streams the kernels in, the other the kernel gradient out. Measured no
  // different from one fused pass at level 0, where both together cost more than the sum of
  // either alone (the 10 MiB of kernels and of their gradient do not stay cached together).
  for (const bool input_pass : {true, false}) {
    if ((input_pass ? static_cast<void*>(gx) : static_cast<void*>(gw)) == nullptr) continue;
    at::parallel_for(0, g.B * g.fh, 1, [&](int64_t w0, int64_t w1) {
      std::vector<T> gcells(g.Cout * S * g.fw), cells(g.Cin * S * g.fw);
      for (int64_t item = w0; item < w1; ++item) {
        const int64_t b = item / g.fh, i = item % g.fh;
        gather_cells(gd + b * g.Cout * g.Ho * g.Wo, g.Ho * g.Wo, g.Wo, int64_t{1}, g.Cout, i * ch, ch, cw, g.fw,
                     gcells.data());
        if (input_pass) {
          // dL/dx(ci) = sum_co W(co, ci) g(co): rows co * Cin + ci, reduced over co.
          pointwise_mix(wd + b * ws.b + i * ws.h, ws.c, 1, g.Cin, gcells.data(), cells.data(), g.Cin, S, g.Cout,
                        g.fw);
          scatter_cells<T>(cells.data(), g.Cin, i * ch, ch, cw, g.fw, g.H, g.W, nullptr, gx + b * g.Cin * g.H * g.W);
        } else {
          gather_cells(xd + b * xs.b, xs.c, xs.h, xs.w, g.Cin, i * ch, ch, cw, g.fw, cells.data());
          pointwise_weight_grad(gcells.data(), cells.data(), gw + b * g.K * g.fh * g.fw + i * g.fw, g.fh * g.fw,
                                g.Cout, g.Cin, S, g.fw);
        }
      }
    });
  }
}

template <typename T, typename A>
void forward_impl(const at::Tensor& x, const at::Tensor& weight, const T* bias, const ConvGeometry& g,
                  at::Tensor& out) {
  const Strides xs = strides_of(x), ws = strides_of(weight);
  const T* xd = x.const_data_ptr<T>();
  const T* wd = weight.const_data_ptr<T>();
  T* od = out.mutable_data_ptr<T>();
  const int64_t KK = g.cin_g * g.kh * g.kw;
  const int64_t jblocks = (g.fw + kJBlock - 1) / kJBlock;
  at::parallel_for(0, g.B * g.fh * jblocks, 1, [&](int64_t w0, int64_t w1) {
    std::vector<A> wl(kJBlock * g.K), cols, colT, acc;
    for (int64_t item = w0; item < w1; ++item) {
      const int64_t b = item / (g.fh * jblocks), i = item / jblocks % g.fh, j0 = item % jblocks * kJBlock;
      const int64_t nj = std::min(kJBlock, g.fw - j0);
      load_kernels<T, A>(wd, ws, b, i, j0, nj, g.K, wl.data());
      for (int64_t j = j0; j < j0 + nj; ++j) {
        const Cell c = cell(g, i, j);
        for_each_chunk(c, [&](int64_t r0, int64_t r1, int64_t n) {
          cols.resize(KK * n);
          acc.resize(g.cout_g * n);
          for (int64_t grp = 0; grp < g.groups; ++grp) {
            const A* wgrp = wl.data() + (j - j0) * g.K + grp * g.cout_g * KK;
            auto store = [&](int64_t r, const A* a) {
              const int64_t co = grp * g.cout_g + r;
              const A bv = bias ? static_cast<A>(bias[co]) : A(0);
              T* oc = od + (b * g.Cout + co) * g.Ho * g.Wo;
              for (int64_t row = r0; row < r1; ++row) {
                T* o = oc + (c.y0 + row) * g.Wo + c.x0;
                const A* s = a + (row - r0) * c.width();
                for (int64_t lx = 0; lx < c.width(); ++lx) o[lx] = static_cast<T>(s[lx] + bv);
              }
            };
            im2col<T, A>(xd + b * xs.b + grp * g.cin_g * xs.c, xs, g, c, r0, r1, cols.data());
            if (n < kSmall) {
              colT.resize(KK * n);
              transpose(cols.data(), KK, n, colT.data());
              for (int64_t r = 0; r < g.cout_g; ++r) {
                for (int64_t t = 0; t < n; ++t) acc[t] = dot(wgrp + r * KK, colT.data() + t * KK, KK);
                store(r, acc.data());
              }
              continue;
            }
            gemm_nn(wgrp, cols.data(), acc.data(), g.cout_g, KK, n);
            for (int64_t r = 0; r < g.cout_g; ++r) store(r, acc.data() + r * n);
          }
        });
      }
    }
  });
}

at::Tensor patch_conv2d_cpu(const at::Tensor& x_in, const at::Tensor& weight_in,
                            const std::optional<at::Tensor>& bias_in, at::IntArrayRef kernel_size,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                            int64_t groups, int64_t padding_mode) {
  const ConvGeometry g = conv_geometry(x_in, weight_in, bias_in, kernel_size, stride, padding,
                                       dilation, groups, padding_mode);
  // float16 / bfloat16 are computed in float32 on the CPU.
  const at::Tensor x = to_opmath(x_in), weight = to_opmath(weight_in);
  const std::optional<at::Tensor> bias =
      bias_in.has_value() ? std::optional<at::Tensor>(to_opmath(*bias_in).contiguous()) : std::nullopt;
  at::Tensor out = at::empty({g.B, g.Cout, g.Ho, g.Wo}, x.options());
  const bool pointwise = pointwise_cells(g, weight);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "patch_conv2d_cpu", [&] {
    const scalar_t* b = bias ? bias->const_data_ptr<scalar_t>() : nullptr;
    if (pointwise) {
      pointwise_forward<scalar_t>(x, weight, b, g, out);
    } else if (depthwise_plane(g)) {
      depthwise_forward<scalar_t>(x, weight, b, g, out);
    } else {
      forward_impl<scalar_t, opmath_t<scalar_t>>(x, weight, b, g, out);
    }
  });
  return out.to(x_in.scalar_type());
}

// Adds one chunk's weight gradient of one group to dwg (cout_g x KK): x is read from xg (image b,
// the group's first input channel), the output gradient is gcol (cout_g x n, the chunk's pixels).
template <typename T, typename A>
void weight_grad_chunk(const T* xg, const Strides& xs, const ConvGeometry& g, const Cell& c, int64_t r0,
                       int64_t r1, const A* gcol, A* dwg, std::vector<A>& cols, std::vector<A>& colT,
                       std::vector<A>& part) {
  const int64_t KK = g.cin_g * g.kh * g.kw, n = (r1 - r0) * c.width();
  cols.resize(std::max(KK * n, int64_t{1}));
  im2col<T, A>(xg, xs, g, c, r0, r1, cols.data());
  if (n < kSmall) {
    // dW[r][k] += g[r][t] x[k][t], t in order, vectorised over k.
    colT.resize(KK * n);
    transpose(cols.data(), KK, n, colT.data());
    for (int64_t t = 0; t < n; ++t) {
      const A* ct = colT.data() + t * KK;
      for (int64_t r = 0; r < g.cout_g; ++r) {
        const A gv = gcol[r * n + t];
        A* dwr = dwg + r * KK;
        for (int64_t k = 0; k < KK; ++k) dwr[k] += gv * ct[k];
      }
    }
    return;
  }
  if (g.cout_g < 4) {
    // Few output channels (depthwise): one dot product per kernel entry.
    for (int64_t r = 0; r < g.cout_g; ++r) {
      A* dwr = dwg + r * KK;
      for (int64_t k = 0; k < KK; ++k) dwr[k] += dot(gcol + r * n, cols.data() + k * n, n);
    }
    return;
  }
  part.resize(g.cout_g * KK);
  if (KK % 16 <= g.cout_g % 16) {
    // dW_chunk (cout_g x KK) = g (cout_g x n) . cols^T (n x KK), then added.
    colT.resize(KK * n);
    transpose(cols.data(), KK, n, colT.data());
    gemm_nn(gcol, colT.data(), part.data(), g.cout_g, n, KK);
    for (int64_t q = 0; q < g.cout_g * KK; ++q) dwg[q] += part[q];
  } else {
    // The other orientation (fewer leftover columns): dW^T (KK x cout_g) = cols . g^T.
    colT.resize(g.cout_g * n);
    transpose(gcol, g.cout_g, n, colT.data());
    gemm_nn(cols.data(), colT.data(), part.data(), KK, n, g.cout_g);
    for (int64_t k = 0; k < KK; ++k) {
      for (int64_t r = 0; r < g.cout_g; ++r) dwg[r * KK + k] += part[k * g.cout_g + r];
    }
  }
}

// Writes the weight gradients dw[(j - j0) * K + k] of patches (i, j0 .. j0 + nj - 1) of image b
// to gw (contiguous (B, K, fh, fw)), a kernel entry's neighbouring patches side by side.
template <typename T, typename A>
void store_weight_block(const A* dw, const ConvGeometry& g, int64_t b, int64_t i, int64_t j0, int64_t nj, T* gwd) {
  T* dst = gwd + (b * g.K * g.fh + i) * g.fw + j0;
  for (int64_t k = 0; k < g.K; ++k) {
    for (int64_t jj = 0; jj < nj; ++jj) dst[k * g.fh * g.fw + jj] = static_cast<T>(dw[jj * g.K + k]);
  }
}

template <typename T, typename A>
void grad_weight_impl(const at::Tensor& go, const at::Tensor& x, const ConvGeometry& g, at::Tensor& gw) {
  const Strides xs = strides_of(x);
  const T* xd = x.const_data_ptr<T>();
  const T* gd = go.const_data_ptr<T>();  // contiguous (B, Cout, Ho, Wo)
  T* gwd = gw.mutable_data_ptr<T>();     // contiguous (B, K, fh, fw)
  const int64_t KK = g.cin_g * g.kh * g.kw;
  const int64_t jblocks = (g.fw + kJBlock - 1) / kJBlock;
  at::parallel_for(0, g.B * g.fh * jblocks, 1, [&](int64_t w0, int64_t w1) {
    std::vector<A> dw(kJBlock * g.K), cols, colT, gcol, part;
    for (int64_t item = w0; item < w1; ++item) {
      const int64_t b = item / (g.fh * jblocks), i = item / jblocks % g.fh, j0 = item % jblocks * kJBlock;
      const int64_t nj = std::min(kJBlock, g.fw - j0);
      std::fill(dw.begin(), dw.end(), A(0));
      for (int64_t j = j0; j < j0 + nj; ++j) {
        const Cell c = cell(g, i, j);
        for_each_chunk(c, [&](int64_t r0, int64_t r1, int64_t n) {
          gcol.resize(g.cout_g * n);
          for (int64_t grp = 0; grp < g.groups; ++grp) {
            for (int64_t r = 0; r < g.cout_g; ++r) {
              gather_rows<T, A>(gd + (b * g.Cout + grp * g.cout_g + r) * g.Ho * g.Wo, g.Wo, c, r0, r1,
                                gcol.data() + r * n);
            }
            weight_grad_chunk<T, A>(xd + b * xs.b + grp * g.cin_g * xs.c, xs, g, c, r0, r1, gcol.data(),
                                    dw.data() + (j - j0) * g.K + grp * g.cout_g * KK, cols, colT, part);
          }
        });
      }
      store_weight_block<T, A>(dw.data(), g, b, i, j0, nj, gwd);
    }
  });
}

template <typename T, typename A>
void grad_bias_impl(const at::Tensor& go, const ConvGeometry& g, at::Tensor& gb) {
  const T* gd = go.const_data_ptr<T>();
  T* gbd = gb.mutable_data_ptr<T>();
  const int64_t plane = g.Ho * g.Wo;
  at::parallel_for(0, g.Cout, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t co = c0; co < c1; ++co) {
      A s = 0;
      for (int64_t b = 0; b < g.B; ++b) {
        const T* p = gd + (b * g.Cout + co) * plane;
        for (int64_t t = 0; t < plane; ++t) s += static_cast<A>(p[t]);
      }
      gbd[co] = static_cast<T>(s);
    }
  });
}

// Adds the column gradients dcol[k][t] of chunk rows [r0, r1) of cell c to the input gradient
// (contiguous planes), through the forward's border mapping.
template <typename A>
void col2im(const A* dcol, const ConvGeometry& g, const Cell& c, int64_t r0, int64_t r1, A* gx) {
  const int64_t width = c.width(), n = (r1 - r0) * width;
  int64_t k = 0;
  for (int64_t ci = 0; ci < g.cin_g; ++ci) {
    A* gxc = gx + ci * g.H * g.W;
    for (int ky = 0; ky < g.kh; ++ky) {
      for (int kx = 0; kx < g.kw; ++kx, ++k) {
        const Interior in = interior(g, c, kx);
        for (int64_t row = r0; row < r1; ++row) {
          const A* src = dcol + k * n + (row - r0) * width;
          const int64_t iy = map_coord((c.y0 + row) * g.sh - g.ph + int64_t{ky} * g.dh, g.H, g.mode);
          if (iy < 0) continue;
          A* dst = gxc + iy * g.W;
          auto border = [&](int64_t lx) {
            const int64_t ix = map_coord(in.base + lx * g.sw, g.W, g.mode);
            if (ix >= 0) dst[ix] += src[lx];
          };
          for (int64_t lx = 0; lx < in.lo; ++lx) border(lx);
          if (g.sw == 1) {
            A* d = dst + in.base;
            for (int64_t lx = in.lo; lx < in.hi; ++lx) d[lx] += src[lx];
          } else {
            for (int64_t lx = in.lo; lx < in.hi; ++lx) dst[in.base + lx * g.sw] += src[lx];
          }
          for (int64_t lx = in.hi; lx < width; ++lx) border(lx);
        }
      }
    }
  }
}

template <typename T, typename A>
void grad_input_impl(const at::Tensor& go, const at::Tensor& weight, const ConvGeometry& g,
                     at::Tensor& gx_acc) {
  const Strides ws = strides_of(weight);
  const T* wd = weight.const_data_ptr<T>();
  const T* gd = go.const_data_ptr<T>();
  A* gxd = gx_acc.mutable_data_ptr<A>();  // contiguous (B, Cin, H, W), zero-initialised
  const int64_t KK = g.cin_g * g.kh * g.kw;
  const int64_t classes = independent_stride(g.Ho, g.fh, g.H, g.sh, g.ph, g.dh, g.kh, g.mode);
  const int64_t rows_per_class = (g.fh + classes - 1) / classes;
  for (int64_t cls = 0; cls < classes; ++cls) {
    // Work items: (batch, the patch rows of this class). Within an item the cells run left to
    // right, so horizontally neighbouring halos are summed in a fixed order too.
    at::parallel_for(0, g.B * rows_per_class, 1, [&](int64_t w0, int64_t w1) {
      std::vector<A> wl(kJBlock * g.K), gcol, dcol, dcolT, wT;
      for (int64_t item = w0; item < w1; ++item) {
        const int64_t b = item / rows_per_class, i = cls + (item % rows_per_class) * classes;
        if (i >= g.fh) continue;
        for (int64_t j0 = 0; j0 < g.fw; j0 += kJBlock) {
          const int64_t nj = std::min(kJBlock, g.fw - j0);
          load_kernels<T, A>(wd, ws, b, i, j0, nj, g.K, wl.data());
          for (int64_t j = j0; j < j0 + nj; ++j) {
            const Cell c = cell(g, i, j);
            for_each_chunk(c, [&](int64_t r0, int64_t r1, int64_t n) {
              gcol.resize(g.cout_g * n);
              dcol.resize(KK * n);
              for (int64_t grp = 0; grp < g.groups; ++grp) {
                for (int64_t r = 0; r < g.cout_g; ++r) {
                  gather_rows<T, A>(gd + (b * g.Cout + grp * g.cout_g + r) * g.Ho * g.Wo, g.Wo, c, r0, r1,
                                    gcol.data() + r * n);
                }
                const A* wgrp = wl.data() + (j - j0) * g.K + grp * g.cout_g * KK;
                if (n < kSmall) {
                  // dcol[t][k] = sum_r W[r][k] g[r][t], vectorised over k, then back to [k][t].
                  dcolT.assign(KK * n, A(0));
                  for (int64_t t = 0; t < n; ++t) {
                    A* dt = dcolT.data() + t * KK;
                    for (int64_t r = 0; r < g.cout_g; ++r) {
                      const A gv = gcol[r * n + t];
                      const A* wr = wgrp + r * KK;
                      for (int64_t k = 0; k < KK; ++k) dt[k] += wr[k] * gv;
                    }
                  }
                  transpose(dcolT.data(), n, KK, dcol.data());
                } else {
                  // dcol (KK x n) = W^T (KK x cout_g) . g (cout_g x n).
                  wT.resize(KK * g.cout_g);
                  transpose(wgrp, g.cout_g, KK, wT.data());
                  gemm_nn(wT.data(), gcol.data(), dcol.data(), KK, g.cout_g, n);
                }
                col2im<A>(dcol.data(), g, c, r0, r1, gxd + (b * g.Cin + grp * g.cin_g) * g.H * g.W);
              }
            });
          }
        }
      }
    });
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> patch_conv2d_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& weight_in,
    at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, int64_t padding_mode, bool need_x, bool need_weight,
    bool need_bias) {
  const ConvGeometry g = backward_geometry(grad_out_in, x_in, weight_in, kernel_size, stride, padding,
                                           dilation, groups, padding_mode);
  const at::Tensor x = to_opmath(x_in), weight = to_opmath(weight_in);
  const at::Tensor go = to_opmath(grad_out_in).to(x.scalar_type()).contiguous();
  at::Tensor gx, gw, gb;
  const bool pointwise = pointwise_cells(g, weight);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "patch_conv2d_backward_cpu", [&] {
    using A = opmath_t<scalar_t>;
    if (pointwise && (need_x || need_weight)) {
      // Every input pixel lies in one cell: grad_input is written once, no zero fill needed.
      if (need_x) gx = at::empty({g.B, g.Cin, g.H, g.W}, x.options());
      if (need_weight) gw = at::empty({g.B, g.K, g.fh, g.fw}, x.options());
      pointwise_backward<scalar_t>(go, x, weight, g, need_x ? gx.mutable_data_ptr<scalar_t>() : nullptr,
                                   need_weight ? gw.mutable_data_ptr<scalar_t>() : nullptr);
      if (need_x) gx = gx.to(x_in.scalar_type());
      if (need_weight) gw = gw.to(x_in.scalar_type());
    } else if (depthwise_plane(g) && (need_x || need_weight)) {
      // Each (image, channel) plane of grad_input is written whole by one work item: no zero fill.
      if (need_x) gx = at::empty({g.B, g.Cin, g.H, g.W}, x.options());
      if (need_weight) gw = at::empty({g.B, g.K, g.fh, g.fw}, x.options());
      depthwise_backward<scalar_t>(go, x, weight, g, need_x ? gx.mutable_data_ptr<scalar_t>() : nullptr,
                                   need_weight ? gw.mutable_data_ptr<scalar_t>() : nullptr);
      if (need_x) gx = gx.to(x_in.scalar_type());
      if (need_weight) gw = gw.to(x_in.scalar_type());
    }
    if (need_x && !gx.defined()) {
      at::Tensor acc = at::zeros({g.B, g.Cin, g.H, g.W}, x.options().dtype(c10::CppTypeToScalarType<A>::value));
      grad_input_impl<scalar_t, A>(go, weight, g, acc);
      gx = acc.to(x_in.scalar_type());
    }
    if (need_weight && !gw.defined()) {
      gw = at::empty({g.B, g.K, g.fh, g.fw}, x.options());
      grad_weight_impl<scalar_t, A>(go, x, g, gw);
      gw = gw.to(x_in.scalar_type());
    }
    if (need_bias) {
      gb = at::empty({g.Cout}, x.options());
      grad_bias_impl<scalar_t, A>(go, g, gb);
      gb = gb.to(x_in.scalar_type());
    }
  });
  // Gradients not asked for are returned empty (0 elements), not computed.
  if (!gx.defined()) gx = at::empty({0}, x_in.options());
  if (!gw.defined()) gw = at::empty({0}, x_in.options());
  if (!gb.defined()) gb = at::empty({0}, x_in.options());
  return {gx, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastvision, CPU, m) {
  m.impl("patch_conv2d", &patch_conv2d_cpu);
  m.impl("_patch_conv2d_backward", &patch_conv2d_backward_cpu);
}

}  // namespace fastvision::patch
