// CPU kernels of patch_conv2d and its backward.
//
// Each patch is a small GEMM: out_p (Cout x pixels) = W_p (Cout x Cin*kh*kw) . cols_p, with an
// implicit im2col: the columns of a chunk of at most kChunk output pixels are gathered from the
// unpadded input (border mapping of fastvision/patch_conv.h) into a per-thread buffer, so nothing
// image-sized is padded, unfolded or copied. W_p is read straight from the hypernetwork layout
// (B, K, fh, fw) through strides. The sums run over (ci, ky, kx) in index order from zero, like
// conv_tap_sum (the CUDA kernel's), then the bias is added.
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

#include "patch_common.h"

namespace fastvision::patch {

namespace {

constexpr int64_t kChunk = 256;  // output pixels per im2col chunk
constexpr int kBlock = 4;        // output channels per register block of the GEMM

struct Strides {
  int64_t b, c, h, w;
};

inline Strides strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

// The pixels [q0, q1) of cell (i, j), row-major within the cell, as output coordinates.
struct Cell {
  int64_t y0, y1, x0, x1;
  int64_t width() const { return x1 - x0; }
  int64_t count() const { return (y1 - y0) * (x1 - x0); }
};

inline Cell cell(const ConvGeometry& g, int64_t i, int64_t j) {
  return {cell_start(i, g.Ho, g.fh), cell_start(i + 1, g.Ho, g.fh), cell_start(j, g.Wo, g.fw),
          cell_start(j + 1, g.Wo, g.fw)};
}

// cols[(ci * kh + ky) * kw + kx][t] = x(group channel ci, tap of pixel q0 + t), 0 off the image.
template <typename T, typename A>
void im2col(const T* x, const Strides& xs, const ConvGeometry& g, const Cell& c, int64_t q0,
            int64_t n, int64_t* oy, int64_t* ox, A* cols) {
  for (int64_t t = 0; t < n; ++t) {
    oy[t] = c.y0 + (q0 + t) / c.width();
    ox[t] = c.x0 + (q0 + t) % c.width();
  }
  int64_t k = 0;
  for (int64_t ci = 0; ci < g.cin_g; ++ci) {
    const T* xc = x + ci * xs.c;
    for (int ky = 0; ky < g.kh; ++ky) {
      for (int kx = 0; kx < g.kw; ++kx, ++k) {
        A* col = cols + k * n;
        for (int64_t t = 0; t < n; ++t) {
          const int64_t iy = map_coord(oy[t] * g.sh - g.ph + int64_t{ky} * g.dh, g.H, g.mode);
          const int64_t ix = map_coord(ox[t] * g.sw - g.pw + int64_t{kx} * g.dw, g.W, g.mode);
          col[t] = (iy >= 0 && ix >= 0) ? static_cast<A>(xc[iy * xs.h + ix * xs.w]) : A(0);
        }
      }
    }
  }
}

// acc[r][t] = sum_k w[(co0 + r) * KK + k] cols[k][t] for R output channels, k in order.
template <int R, typename A>
void gemm_block(const A* w, int64_t KK, const A* cols, int64_t n, A* acc) {
  for (int r = 0; r < R; ++r) std::fill(acc + r * n, acc + (r + 1) * n, A(0));
  for (int64_t k = 0; k < KK; ++k) {
    const A* col = cols + k * n;
    A wr[R];
    for (int r = 0; r < R; ++r) wr[r] = w[r * KK + k];
    for (int r = 0; r < R; ++r) {
      A* a = acc + r * n;
      const A wv = wr[r];
      for (int64_t t = 0; t < n; ++t) a[t] += wv * col[t];
    }
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
  at::parallel_for(0, g.B * g.fh * g.fw, 1, [&](int64_t w0, int64_t w1) {
    std::vector<A> wl(g.K), cols(KK * kChunk), acc(kBlock * kChunk);
    std::vector<int64_t> oy(kChunk), ox(kChunk);
    for (int64_t item = w0; item < w1; ++item) {
      const int64_t b = item / (g.fh * g.fw), i = item / g.fw % g.fh, j = item % g.fw;
      const T* wp = wd + b * ws.b + i * ws.h + j * ws.w;
      for (int64_t k = 0; k < g.K; ++k) wl[k] = static_cast<A>(wp[k * ws.c]);
      const Cell c = cell(g, i, j);
      for (int64_t q0 = 0; q0 < c.count(); q0 += kChunk) {
        const int64_t n = std::min(kChunk, c.count() - q0);
        for (int64_t grp = 0; grp < g.groups; ++grp) {
          im2col<T, A>(xd + b * xs.b + grp * g.cin_g * xs.c, xs, g, c, q0, n, oy.data(), ox.data(),
                       cols.data());
          for (int64_t co0 = 0; co0 < g.cout_g; co0 += kBlock) {
            const int64_t R = std::min<int64_t>(kBlock, g.cout_g - co0);
            const A* wblk = wl.data() + (grp * g.cout_g + co0) * KK;
            switch (R) {
              case 4: gemm_block<4, A>(wblk, KK, cols.data(), n, acc.data()); break;
              case 3: gemm_block<3, A>(wblk, KK, cols.data(), n, acc.data()); break;
              case 2: gemm_block<2, A>(wblk, KK, cols.data(), n, acc.data()); break;
              default: gemm_block<1, A>(wblk, KK, cols.data(), n, acc.data()); break;
            }
            for (int64_t r = 0; r < R; ++r) {
              const int64_t co = grp * g.cout_g + co0 + r;
              const A bv = bias ? static_cast<A>(bias[co]) : A(0);
              T* oc = od + (b * g.Cout + co) * g.Ho * g.Wo;
              for (int64_t t = 0; t < n; ++t) oc[oy[t] * g.Wo + ox[t]] = static_cast<T>(acc[r * n + t] + bv);
            }
          }
        }
      }
    }
  });
}

// The accumulation dtype of a storage dtype: double for double, float otherwise.
template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

at::Tensor as_compute(const at::Tensor& t) {
  return (t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16) ? t.to(at::kFloat) : t;
}

at::Tensor patch_conv2d_cpu(const at::Tensor& x_in, const at::Tensor& weight_in,
                            const std::optional<at::Tensor>& bias_in, at::IntArrayRef kernel_size,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                            int64_t groups, int64_t padding_mode) {
  const ConvGeometry g = conv_geometry(x_in, weight_in, bias_in, kernel_size, stride, padding,
                                       dilation, groups, padding_mode);
  // float16 / bfloat16 are computed in float32 on the CPU.
  const at::Tensor x = as_compute(x_in), weight = as_compute(weight_in);
  const std::optional<at::Tensor> bias =
      bias_in.has_value() ? std::optional<at::Tensor>(as_compute(*bias_in).contiguous()) : std::nullopt;
  at::Tensor out = at::empty({g.B, g.Cout, g.Ho, g.Wo}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "patch_conv2d_cpu", [&] {
    forward_impl<scalar_t, acc_t<scalar_t>>(x, weight, bias ? bias->const_data_ptr<scalar_t>() : nullptr,
                                            g, out);
  });
  return out.to(x_in.scalar_type());
}

template <typename T, typename A>
void grad_weight_impl(const at::Tensor& go, const at::Tensor& x, const ConvGeometry& g, at::Tensor& gw) {
  const Strides xs = strides_of(x);
  const T* xd = x.const_data_ptr<T>();
  const T* gd = go.const_data_ptr<T>();  // contiguous (B, Cout, Ho, Wo)
  T* gwd = gw.mutable_data_ptr<T>();     // contiguous (B, K, fh, fw)
  const int64_t KK = g.cin_g * g.kh * g.kw;
  at::parallel_for(0, g.B * g.fh * g.fw, 1, [&](int64_t w0, int64_t w1) {
    std::vector<A> dw(g.K), cols(KK * kChunk), gcol(g.cout_g * kChunk);
    std::vector<int64_t> oy(kChunk), ox(kChunk);
    for (int64_t item = w0; item < w1; ++item) {
      const int64_t b = item / (g.fh * g.fw), i = item / g.fw % g.fh, j = item % g.fw;
      std::fill(dw.begin(), dw.end(), A(0));
      const Cell c = cell(g, i, j);
      for (int64_t q0 = 0; q0 < c.count(); q0 += kChunk) {
        const int64_t n = std::min(kChunk, c.count() - q0);
        for (int64_t grp = 0; grp < g.groups; ++grp) {
          im2col<T, A>(xd + b * xs.b + grp * g.cin_g * xs.c, xs, g, c, q0, n, oy.data(), ox.data(),
                       cols.data());
          for (int64_t r = 0; r < g.cout_g; ++r) {
            const T* gc = gd + (b * g.Cout + grp * g.cout_g + r) * g.Ho * g.Wo;
            for (int64_t t = 0; t < n; ++t) gcol[r * n + t] = static_cast<A>(gc[oy[t] * g.Wo + ox[t]]);
          }
          for (int64_t r = 0; r < g.cout_g; ++r) {
            const A* gr = gcol.data() + r * n;
            A* dwr = dw.data() + (grp * g.cout_g + r) * KK;
            for (int64_t k = 0; k < KK; ++k) {
              const A* col = cols.data() + k * n;
              // Eight partial sums (vectorisable without reassociating one sum).
              A s[8] = {};
              int64_t t = 0;
              for (; t + 8 <= n; t += 8) {
                for (int l = 0; l < 8; ++l) s[l] += gr[t + l] * col[t + l];
              }
              for (; t < n; ++t) s[0] += gr[t] * col[t];
              dwr[k] += ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
            }
          }
        }
      }
      for (int64_t k = 0; k < g.K; ++k) gwd[((b * g.K + k) * g.fh + i) * g.fw + j] = static_cast<T>(dw[k]);
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
    // Work items: (batch, the rows of this class). Within an item the patch row's cells run left
    // to right, so horizontally neighbouring halos are summed in a fixed order too.
    at::parallel_for(0, g.B * rows_per_class, 1, [&](int64_t w0, int64_t w1) {
      std::vector<A> wl(g.K), gcol(g.cout_g * kChunk), dcol(KK * kChunk);
      std::vector<int64_t> oy(kChunk), ox(kChunk);
      for (int64_t item = w0; item < w1; ++item) {
        const int64_t b = item / rows_per_class, i = cls + (item % rows_per_class) * classes;
        if (i >= g.fh) continue;
        for (int64_t j = 0; j < g.fw; ++j) {
          const T* wp = wd + b * ws.b + i * ws.h + j * ws.w;
          for (int64_t k = 0; k < g.K; ++k) wl[k] = static_cast<A>(wp[k * ws.c]);
          const Cell c = cell(g, i, j);
          for (int64_t q0 = 0; q0 < c.count(); q0 += kChunk) {
            const int64_t n = std::min(kChunk, c.count() - q0);
            for (int64_t t = 0; t < n; ++t) {
              oy[t] = c.y0 + (q0 + t) / c.width();
              ox[t] = c.x0 + (q0 + t) % c.width();
            }
            for (int64_t grp = 0; grp < g.groups; ++grp) {
              for (int64_t r = 0; r < g.cout_g; ++r) {
                const T* gc = gd + (b * g.Cout + grp * g.cout_g + r) * g.Ho * g.Wo;
                for (int64_t t = 0; t < n; ++t) gcol[r * n + t] = static_cast<A>(gc[oy[t] * g.Wo + ox[t]]);
              }
              // dcol[k][t] = sum_r W_p[r][k] gcol[r][t], r in order.
              std::fill(dcol.begin(), dcol.begin() + KK * n, A(0));
              for (int64_t r = 0; r < g.cout_g; ++r) {
                const A* wr = wl.data() + (grp * g.cout_g + r) * KK;
                const A* gr = gcol.data() + r * n;
                for (int64_t k = 0; k < KK; ++k) {
                  const A wv = wr[k];
                  A* dc = dcol.data() + k * n;
                  for (int64_t t = 0; t < n; ++t) dc[t] += wv * gr[t];
                }
              }
              // col2im through the same border mapping as the forward.
              int64_t k = 0;
              for (int64_t ci = 0; ci < g.cin_g; ++ci) {
                A* gxc = gxd + (b * g.Cin + grp * g.cin_g + ci) * g.H * g.W;
                for (int ky = 0; ky < g.kh; ++ky) {
                  for (int kx = 0; kx < g.kw; ++kx, ++k) {
                    const A* dc = dcol.data() + k * n;
                    for (int64_t t = 0; t < n; ++t) {
                      const int64_t iy = map_coord(oy[t] * g.sh - g.ph + int64_t{ky} * g.dh, g.H, g.mode);
                      const int64_t ix = map_coord(ox[t] * g.sw - g.pw + int64_t{kx} * g.dw, g.W, g.mode);
                      if (iy >= 0 && ix >= 0) gxc[iy * g.W + ix] += dc[t];
                    }
                  }
                }
              }
            }
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
  const ConvGeometry g = conv_geometry(x_in, weight_in, std::nullopt, kernel_size, stride, padding,
                                       dilation, groups, padding_mode);
  FV_CHECK(grad_out_in.sizes() == at::IntArrayRef({g.B, g.Cout, g.Ho, g.Wo}), "patch_conv2d_backward",
           "grad_out must have shape (", g.B, ", ", g.Cout, ", ", g.Ho, ", ", g.Wo, "), got ",
           grad_out_in.sizes());
  const at::Tensor x = as_compute(x_in), weight = as_compute(weight_in);
  const at::Tensor go = as_compute(grad_out_in).to(x.scalar_type()).contiguous();
  at::Tensor gx, gw, gb;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "patch_conv2d_backward_cpu", [&] {
    using A = acc_t<scalar_t>;
    if (need_x) {
      at::Tensor acc = at::zeros({g.B, g.Cin, g.H, g.W}, x.options().dtype(c10::CppTypeToScalarType<A>::value));
      grad_input_impl<scalar_t, A>(go, weight, g, acc);
      gx = acc.to(x_in.scalar_type());
    }
    if (need_weight) {
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
  if (!gx.defined()) gx = at::zeros_like(x_in);
  if (!gw.defined()) gw = at::zeros_like(weight_in);
  if (!gb.defined()) gb = at::zeros({g.Cout}, x_in.options());
  return {gx, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastvision, CPU, m) {
  m.impl("patch_conv2d", &patch_conv2d_cpu);
  m.impl("_patch_conv2d_backward", &patch_conv2d_backward_cpu);
}

}  // namespace fastvision::patch
