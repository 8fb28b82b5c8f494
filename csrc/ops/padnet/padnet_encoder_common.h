// Host-side argument handling of padnet_encoder, shared by its CPU and CUDA kernels (the layer
// specs and the buffer plan are torch-free, in fastvision/padnet_spec.h).
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <type_traits>

#include "fastvision/aten_opmath.h"
#include "fastvision/checks.h"
#include "fastvision/inverted_bottleneck.h"
#include "fastvision/padnet_spec.h"

namespace fastvision::padnet {

inline bool supported_width(int64_t width) { return width == 1 || width == 2 || width == 4; }

inline int64_t padnet_param_count(int64_t width) {
  switch (width) {
    case 1:
      return PadnetSpec<1>::kParams;
    case 2:
      return PadnetSpec<2>::kParams;
    default:
      return PadnetSpec<4>::kParams;
  }
}

// Calls f(std::integral_constant<int, WIDTH>{}) for a supported width.
template <typename F>
void dispatch_width(int64_t width, F&& f) {
  switch (width) {
    case 1:
      f(std::integral_constant<int, 1>{});
      break;
    case 2:
      f(std::integral_constant<int, 2>{});
      break;
    default:
      f(std::integral_constant<int, 4>{});
      break;
  }
}

// Channels of the three taps (the outputs of bnecks 2, 4 and 6).
inline std::array<int64_t, 3> tap_channels(int64_t width) {
  std::array<int64_t, 3> ch{};
  dispatch_width(width, [&](auto w) {
    using P = PadnetSpec<decltype(w)::value>;
    ch = {P::B2::COUT, P::B4::COUT, P::B6::COUT};
  });
  return ch;
}

// x (B, 1, H, W) floating point with H, W >= 1; params 1-D of padnet_param_count(width) entries,
// dtype and device of x; width 1, 2 or 4.
inline void check_padnet_encoder_args(const at::Tensor& x, const at::Tensor& params, int64_t width,
                                      const char* op) {
  FV_CHECK_VALUE(supported_width(width), op, "width must be 1, 2 or 4, got ", width);
  FV_CHECK(x.dim() == 4 && x.size(1) == 1, op, "x must have shape (B, 1, H, W), got ",
           x.sizes());
  FV_CHECK(x.size(2) >= 1 && x.size(3) >= 1, op,
           "x must have at least one row and one column, got shape ", x.sizes());
  check_floating(x, op, "x");
  check_same_device(params, x, op, "params", "x");
  check_same_dtype(params, x, op, "params", "x");
  const int64_t expected = padnet_param_count(width);
  FV_CHECK(params.dim() == 1 && params.size(0) == expected, op,
           "params must be a 1-D tensor of the ", expected,
           " folded parameters of a width-", width,
           " PAD-Net encoder (fastvision.ops.fold_padnet_encoder), got shape ", params.sizes());
}

}  // namespace fastvision::padnet
