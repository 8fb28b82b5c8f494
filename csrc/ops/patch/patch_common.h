// Host-side argument checks and geometry of patch_conv2d and patch_inverted_residual, shared by
// their CPU and CUDA kernels (the arithmetic is in fastvision/patch_conv.h).
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <optional>
#include <utility>
#include <vector>

#include "fastvision/aten_opmath.h"
#include "fastvision/checks.h"
#include "fastvision/patch_conv.h"

namespace fastvision::patch {

inline const char* mode_name(int64_t mode) {
  return mode == kZeros ? "zeros" : mode == kReflect ? "reflect" : "replicate";
}

// Kernel sizes, strides, paddings, dilations and the dilated kernel's span are at most this, so
// that the geometry, held in int and multiplied in the kernels, cannot overflow.
constexpr int64_t kMaxConvArg = int64_t{1} << 20;

inline void check_pair(at::IntArrayRef v, const char* op, const char* name, int64_t minimum) {
  FV_CHECK_VALUE(v.size() == 2, op, name, " must have 2 entries, got ", v.size());
  FV_CHECK_VALUE(v[0] >= minimum && v[1] >= minimum, op, name, " must be at least ", minimum,
                 ", got ", v);
  FV_CHECK_VALUE(v[0] <= kMaxConvArg && v[1] <= kMaxConvArg, op, name, " must be at most ",
                 kMaxConvArg, " (2^20), got ", v);
}

inline void check_mode_and_padding(int64_t mode, int64_t pad, int64_t n, const char* op,
                                   const char* axis) {
  FV_CHECK_VALUE(mode == kZeros || mode == kReflect || mode == kReplicate, op,
                 "padding_mode must be 0 (zeros), 1 (reflect) or 2 (replicate), got ", mode);
  FV_CHECK_VALUE(mode != kReflect || pad < n, op, "reflect padding must be smaller than the input ",
                 axis, " (", n, "), got padding ", pad);
  // Replicating an empty axis has nothing to copy (it used to read out of bounds).
  FV_CHECK_VALUE(mode != kReplicate || pad == 0 || n > 0, op,
                 "replicate padding needs a non-empty input ", axis, ", got ", axis, " 0 with padding ",
                 pad);
}

// Checks x (B, Cin, H, W), weight (B, K, fh, fw), bias (Cout) and the conv arguments; returns the
// geometry. Errors name the argument, the expectation and the value.
inline ConvGeometry conv_geometry(const at::Tensor& x, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias,
                                  at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation,
                                  int64_t groups, int64_t mode) {
  const char* op = "patch_conv2d";
  FV_CHECK(x.dim() == 4, op, "x must have shape (B, C, H, W), got ", x.sizes());
  FV_CHECK(weight.dim() == 4, op, "weight must have shape (B, Cout*Cin/groups*kh*kw, fh, fw), got ",
           weight.sizes());
  check_floating(x, op, "x");
  check_same_dtype(weight, x, op, "weight", "x");
  check_same_device(weight, x, op, "weight", "x");
  check_pair(kernel_size, op, "kernel_size", 1);
  check_pair(stride, op, "stride", 1);
  check_pair(padding, op, "padding", 0);
  check_pair(dilation, op, "dilation", 1);
  ConvGeometry g{};
  g.B = x.size(0);
  g.Cin = x.size(1);
  g.H = x.size(2);
  g.W = x.size(3);
  g.kh = static_cast<int>(kernel_size[0]);
  g.kw = static_cast<int>(kernel_size[1]);
  g.sh = static_cast<int>(stride[0]);
  g.sw = static_cast<int>(stride[1]);
  g.ph = static_cast<int>(padding[0]);
  g.pw = static_cast<int>(padding[1]);
  g.dh = static_cast<int>(dilation[0]);
  g.dw = static_cast<int>(dilation[1]);
  g.mode = static_cast<int>(mode);
  g.groups = groups;
  g.fh = weight.size(2);
  g.fw = weight.size(3);
  FV_CHECK_VALUE(weight.size(0) == g.B, op, "weight must have the batch size of x (", g.B,
                 "), got ", weight.size(0));
  FV_CHECK_VALUE(g.Cin >= 1, op, "x must have at least one channel, got shape ", x.sizes());
  FV_CHECK_VALUE(groups >= 1 && g.Cin % groups == 0, op, "groups must be >= 1 and divide the ",
                 g.Cin, " input channels, got ", groups);
  g.cin_g = g.Cin / groups;
  const int64_t per_out = g.cin_g * g.kh * g.kw;
  FV_CHECK_VALUE(per_out > 0 && weight.size(1) % per_out == 0 && weight.size(1) > 0, op,
                 "weight.size(1) must be a positive multiple of Cin/groups*kh*kw = ", per_out,
                 " (Cout*", per_out, "), got ", weight.size(1));
  g.Cout = weight.size(1) / per_out;
  FV_CHECK_VALUE(g.Cout % groups == 0, op, "the output channels (weight.size(1) / ", per_out,
                 " = ", g.Cout, ") must be divisible by groups (", groups, ")");
  g.cout_g = g.Cout / groups;
  g.K = g.Cout * per_out;
  if (bias.has_value()) {
    const at::Tensor& b = *bias;
    FV_CHECK(b.dim() == 1 && b.size(0) == g.Cout, op, "bias must have shape (", g.Cout,
             "), got ", b.sizes());
    check_same_dtype(b, x, op, "bias", "x");
    check_same_device(b, x, op, "bias", "x");
  }
  check_mode_and_padding(mode, g.ph, g.H, op, "height");
  check_mode_and_padding(mode, g.pw, g.W, op, "width");
  const int64_t span_h = int64_t{g.dh} * (g.kh - 1) + 1, span_w = int64_t{g.dw} * (g.kw - 1) + 1;
  FV_CHECK_VALUE(span_h <= kMaxConvArg && span_w <= kMaxConvArg, op,
                 "the dilated kernel (dilation * (kernel_size - 1) + 1 = ", span_h, " x ", span_w,
                 ") must be at most ", kMaxConvArg, " (2^20) on each side");
  FV_CHECK_VALUE(g.H + 2 * g.ph >= span_h && g.W + 2 * g.pw >= span_w, op,
                 "the padded input (", g.H + 2 * g.ph, " x ", g.W + 2 * g.pw,
                 ") is smaller than the dilated kernel (", span_h, " x ", span_w, ")");
  g.Ho = (g.H + 2 * g.ph - span_h) / g.sh + 1;
  g.Wo = (g.W + 2 * g.pw - span_w) / g.sw + 1;
  FV_CHECK_VALUE(g.fh >= 1 && g.fw >= 1 && g.fh <= g.Ho && g.fw <= g.Wo, op,
                 "the patch grid of weight (fh x fw = ", g.fh, " x ", g.fw,
                 ") must be at least 1 x 1 and at most the output size (", g.Ho, " x ", g.Wo, ")");
  return g;
}

// The geometry of _patch_conv2d_backward's arguments: conv_geometry's checks plus grad_out's.
inline ConvGeometry backward_geometry(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
                                      at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                      int64_t mode) {
  const ConvGeometry g = conv_geometry(x, weight, std::nullopt, kernel_size, stride, padding, dilation,
                                       groups, mode);
  const char* op = "patch_conv2d_backward";
  FV_CHECK(grad_out.sizes() == at::IntArrayRef({g.B, g.Cout, g.Ho, g.Wo}), op, "grad_out must have shape (",
           g.B, ", ", g.Cout, ", ", g.Ho, ", ", g.Wo, "), got ", grad_out.sizes());
  check_same_device(grad_out, x, op, "grad_out", "x");
  return g;
}

// The input rows (or columns) that taps of output cell i can read, after border mapping:
// [lo, hi] of the mapped coordinates of [start * s - p, (end - 1) * s - p + d (k - 1)].
inline std::pair<int64_t, int64_t> cell_read_range(int64_t i, int64_t n_out, int64_t f, int64_t n_in,
                                                   int s, int p, int d, int k, int mode) {
  const int64_t a = cell_start(i, n_out, f) * s - p;
  const int64_t b = (cell_start(i + 1, n_out, f) - 1) * s - p + int64_t{d} * (k - 1);
  int64_t lo = n_in, hi = -1;
  auto visit = [&](int64_t c) {
    const int64_t m = map_coord(c, n_in, mode);
    if (m >= 0) {
      lo = std::min(lo, m);
      hi = std::max(hi, m);
    }
  };
  visit(a);
  visit(b);
  // The mapping is monotonic on (-inf, 0], [0, n - 1] and [n - 1, inf): extremes lie at the
  // interval's ends or at these two breakpoints.
  if (a <= 0 && 0 <= b) visit(0);
  if (a <= n_in - 1 && n_in - 1 <= b) visit(n_in - 1);
  return {lo, hi};
}

// The smallest c such that cells i and j with j - i a multiple of c never read (so, in the
// backward, never write) the same input rows: the CPU input-gradient scatter processes the cells
// of one residue class mod c in parallel and the classes one after another (deterministic).
inline int64_t independent_stride(int64_t n_out, int64_t f, int64_t n_in, int s, int p, int d, int k,
                                  int mode) {
  std::vector<std::pair<int64_t, int64_t>> r(f);
  for (int64_t i = 0; i < f; ++i) r[i] = cell_read_range(i, n_out, f, n_in, s, p, d, k, mode);
  for (int64_t c = 1; c < f; ++c) {
    bool ok = true;
    for (int64_t i = 0; i < f && ok; ++i) {
      for (int64_t j = i + c; j < f && ok; j += c) {
        if (r[i].second >= r[i].first && r[j].second >= r[j].first &&
            !(r[i].second < r[j].first || r[j].second < r[i].first)) {
          ok = false;
        }
      }
    }
    if (ok) return c;
  }
  return f;
}

// patch_inverted_residual: x (B, Cin, H, W), weight (B, Cin*hidden + hidden*k*k + hidden*Cout,
// fh, fw), six folded-BN vectors; stride 1, padding k / 2.
inline IrGeometry ir_geometry(const at::Tensor& x, const at::Tensor& weight,
                              const std::array<const at::Tensor*, 6>& bn, int64_t hidden,
                              int64_t kernel_size, int64_t mode, bool residual) {
  const char* op = "patch_inverted_residual";
  FV_CHECK(x.dim() == 4, op, "x must have shape (B, C, H, W), got ", x.sizes());
  FV_CHECK(weight.dim() == 4, op, "weight must have shape (B, K, fh, fw), got ", weight.sizes());
  check_floating(x, op, "x");
  check_same_dtype(weight, x, op, "weight", "x");
  check_same_device(weight, x, op, "weight", "x");
  FV_CHECK_VALUE(hidden >= 1, op, "hidden_channels must be at least 1, got ", hidden);
  FV_CHECK_VALUE(kernel_size >= 1 && kernel_size % 2 == 1 && kernel_size <= kMaxConvArg, op,
                 "kernel_size must be a positive odd number at most ", kMaxConvArg, " (2^20), got ",
                 kernel_size);
  static const char* names[6] = {"bn1_scale", "bn1_shift", "bn2_scale",
                                 "bn2_shift", "bn3_scale", "bn3_shift"};
  IrGeometry g{};
  g.B = x.size(0);
  g.Cin = x.size(1);
  g.H = x.size(2);
  g.W = x.size(3);
  g.hidden = hidden;
  g.k = static_cast<int>(kernel_size);
  g.mode = static_cast<int>(mode);
  g.residual = residual;
  g.Cout = bn[4]->dim() == 1 ? bn[4]->size(0) : -1;
  for (int i = 0; i < 6; ++i) {
    const int64_t want = i < 4 ? hidden : g.Cout;
    FV_CHECK(bn[i]->dim() == 1 && bn[i]->size(0) == want && want > 0, op, names[i],
             " must have shape (", want, "), got ", bn[i]->sizes());
    check_same_dtype(*bn[i], x, op, names[i], "x");
    check_same_device(*bn[i], x, op, names[i], "x");
  }
  g.fh = weight.size(2);
  g.fw = weight.size(3);
  g.K = g.Cin * hidden + hidden * g.k * g.k + hidden * g.Cout;
  FV_CHECK_VALUE(weight.size(0) == g.B, op, "weight must have the batch size of x (", g.B, "), got ",
                 weight.size(0));
  FV_CHECK_VALUE(weight.size(1) == g.K, op, "weight.size(1) must be Cin*hidden + hidden*k*k + ",
                 "hidden*Cout = ", g.K, ", got ", weight.size(1));
  FV_CHECK_VALUE(!residual || g.Cin == g.Cout, op,
                 "residual needs as many output as input channels, got Cin ", g.Cin, " and Cout ",
                 g.Cout);
  check_mode_and_padding(mode, g.k / 2, g.H, op, "height");
  check_mode_and_padding(mode, g.k / 2, g.W, op, "width");
  FV_CHECK_VALUE(g.fh >= 1 && g.fw >= 1 && g.fh <= g.H && g.fw <= g.W, op,
                 "the patch grid of weight (fh x fw = ", g.fh, " x ", g.fw,
                 ") must be at least 1 x 1 and at most the input size (", g.H, " x ", g.W, ")");
  return g;
}

}  // namespace fastvision::patch
