// PAD-Net's encoder as compile-time layer specs, and the per-image buffer plan of its kernels:
// torch-free, shared by the CPU kernel, the CUDA kernel's launch planning and the emulated tests.
#pragma once
#include <algorithm>
#include <cstdint>

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

}  // namespace fastvision::padnet
