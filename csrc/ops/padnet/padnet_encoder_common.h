// PAD-Net's encoder as compile-time layer specs, and the host-side argument handling of
// padnet_encoder, shared by its CPU and CUDA kernels.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <type_traits>

#include "fastvision/checks.h"
#include "fastvision/inverted_bottleneck.h"

namespace fastvision::padnet {

// Table 1 of the paper (python/fastvision/models/padnet.py `padnet_bnecks`), widths times WIDTH:
// stem conv 3x3 stride 1, 1 -> 2W channels, h-swish; six bnecks; taps after bnecks 2, 4, 6.
template <int WIDTH>
struct PadnetSpec {
  static constexpr int W = WIDTH;
  static constexpr int STEM = 2 * W;
  using B1 = ib::BneckSpec<3, 2 * W, 8 * W, 4 * W, true, ib::Act::kReLU, 1>;
  using B2 = ib::BneckSpec<3, 4 * W, 8 * W, 4 * W, false, ib::Act::kReLU, 1>;
  using B3 = ib::BneckSpec<3, 4 * W, 16 * W, 8 * W, true, ib::Act::kHardswish, 2>;
  using B4 = ib::BneckSpec<3, 8 * W, 16 * W, 8 * W, true, ib::Act::kHardswish, 1>;
  using B5 = ib::BneckSpec<3, 8 * W, 32 * W, 16 * W, true, ib::Act::kHardswish, 2>;
  using B6 = ib::BneckSpec<3, 16 * W, 32 * W, 16 * W, true, ib::Act::kHardswish, 1>;
  // Stem: weight (STEM, 3*3) then bias (STEM), then the bnecks in order.
  static constexpr int64_t kStemParams = int64_t{STEM} * 9 + STEM;
  static constexpr int64_t kParams = kStemParams + B1::kParams + B2::kParams + B3::kParams +
                                     B4::kParams + B5::kParams + B6::kParams;
  // The buffer plan (ScratchPlan) holds one shortcut buffer, for bneck 1.
  static_assert(B1::SHORTCUT_CONV && !B2::SHORTCUT_CONV && !B3::SHORTCUT_CONV &&
                !B4::SHORTCUT_CONV && !B5::SHORTCUT_CONV && !B6::SHORTCUT_CONV);
};

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

// Spatial sizes of the three taps: (H, W), then two stride-2 3x3 convs.
struct TapSizes {
  int64_t h[3], w[3];
};

inline TapSizes tap_sizes(int64_t H, int64_t W) {
  TapSizes s{};
  s.h[0] = H;
  s.w[0] = W;
  for (int i = 1; i < 3; ++i) {
    s.h[i] = ib::conv_out_size<3, 2>(s.h[i - 1]);
    s.w[i] = ib::conv_out_size<3, 2>(s.w[i - 1]);
  }
  return s;
}

// Per-image working memory of the encoder (elements), for the kernels' buffer plan:
//   a: stem output (STEM, H, W), later bneck 3's and bneck 5's outputs;  b: bneck 1's output;
//   e: a bneck's expanded input, expand_channels planes of it at a time (0: all EXP planes);
//   d: its depthwise output (EXP, ho, wo);  r: bneck 1's 1x1 shortcut (the only one).
// The taps (outputs of bnecks 2, 4, 6) are written straight into the output tensors.
struct ScratchPlan {
  int64_t a, b, e, d, r;
  int64_t total() const { return a + b + e + d + r; }
};

template <int WIDTH>
ScratchPlan scratch_plan(int64_t H, int64_t W, int64_t expand_channels) {
  using P = PadnetSpec<WIDTH>;
  const TapSizes s = tap_sizes(H, W);
  const int64_t px[3] = {s.h[0] * s.w[0], s.h[1] * s.w[1], s.h[2] * s.w[2]};
  const auto held = [expand_channels](int64_t exp) {
    return expand_channels > 0 ? std::min(exp, expand_channels) : exp;
  };
  ScratchPlan plan{};
  plan.a = std::max({int64_t{P::STEM} * px[0], int64_t{P::B3::COUT} * px[1],
                     int64_t{P::B5::COUT} * px[2]});
  plan.b = int64_t{P::B1::COUT} * px[0];
  plan.e = std::max({held(P::B1::EXP) * px[0], held(P::B2::EXP) * px[0],
                     held(P::B3::EXP) * px[0], held(P::B4::EXP) * px[1],
                     held(P::B5::EXP) * px[1], held(P::B6::EXP) * px[2]});
  plan.d = std::max({int64_t{P::B1::EXP} * px[0], int64_t{P::B2::EXP} * px[0],
                     int64_t{P::B3::EXP} * px[1], int64_t{P::B4::EXP} * px[1],
                     int64_t{P::B5::EXP} * px[2], int64_t{P::B6::EXP} * px[2]});
  plan.r = int64_t{P::B1::COUT} * px[0];
  return plan;
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
