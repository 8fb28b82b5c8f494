// CPU kernel of padnet_encoder: PAD-Net's whole encoder with BatchNorm folded, in one pass per
// image.
//
// at::parallel_for over the batch, one image at a time per thread: the thread's scratch buffer
// (ScratchPlan, allocated once per thread and call) holds the image's intermediate activations,
// so nothing but the input and the three taps touches memory shared between threads. Layers run
// one after the other on planar (C, H, W) activations; 1x1 convs in register tiles of 4 channels
// x 8 pixels; a bneck's expansion is made 16 channels at a time and fed straight to the depthwise
// conv, so the expanded tensor is never whole in memory. The arithmetic is that of fastvision/inverted_bottleneck.h, shared with the CUDA kernel.
// float16 / bfloat16 inputs are computed in float32.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>
#include <vector>

#include "fastvision/inverted_bottleneck.h"
#include "padnet_encoder_common.h"

namespace fastvision::padnet {

namespace {

using ib::Act;

// 1x1 convs in tiles of kOB output channels x kT pixels (8 float accumulators of 4 lanes).
constexpr int kOB = 4;
constexpr int kT = 8;
// Expanded channels made at a time, then fed to the depthwise conv while in cache.
constexpr int kExpandGroup = 16;

// NOUT output planes of a 1x1 conv over n pixels (in: CIN planes, out: NOUT planes, both with
// plane stride n). Pixel tiles outside, channel groups inside: a tile's inputs stay in L1 while
// every output channel reads them.
// The loop vectoriser is off here: it vectorises the loop over channel groups (transposing
// weights and inputs); the tiles' own straight-line code vectorises over the pixels (SLP).
template <int CIN, int NOUT, Act ACT, typename A>
__attribute__((optimize("no-tree-loop-vectorize"))) void conv1x1_planes(const A* in, const A* w, const A* b, int64_t n, A* out) {
  static_assert(NOUT % kOB == 0, "PAD-Net's widths are multiples of 4");
  int64_t i = 0;
  for (; i + kT <= n; i += kT) {
    for (int o = 0; o < NOUT; o += kOB) {
      ib::conv1x1_tile<CIN, kOB, kT, ACT>(in + i, n, w + o * CIN, b + o, out + o * n + i, n);
    }
  }
  for (; i < n; ++i) {
    for (int o = 0; o < NOUT; o += kOB) {
      ib::conv1x1_tile<CIN, kOB, 1, ACT>(in + i, n, w + o * CIN, b + o, out + o * n + i, n);
    }
  }
}

// One bneck: in (CIN, H, W) -> out (COUT, Ho, Wo); e, d, r are scratch (ScratchPlan with
// kExpandGroup expanded planes held at a time).
template <class Spec, typename A>
void bneck_cpu(const A* in, int64_t H, int64_t W, const A*& params, A* out, A* e, A* d, A* r) {
  constexpr int K = Spec::K, S = Spec::S, EXP = Spec::EXP, COUT = Spec::COUT;
  const ib::BneckWeights<A> wt = ib::bind_bneck<Spec>(params);
  const int64_t Ho = ib::conv_out_size<K, S>(H), Wo = ib::conv_out_size<K, S>(W);
  const int64_t HW = H * W, HWo = Ho * Wo;
  constexpr int G = EXP < kExpandGroup ? EXP : kExpandGroup;
  static_assert(EXP % G == 0);
  for (int c0 = 0; c0 < EXP; c0 += G) {
    conv1x1_planes<Spec::CIN, G, Spec::ACT>(in, wt.expand_w + c0 * Spec::CIN, wt.expand_b + c0,
                                            HW, e);
    for (int j = 0; j < G; ++j) {
      const int c = c0 + j;
      for (int64_t oy = 0; oy < Ho; ++oy) {
        ib::depthwise_span<K, S, Spec::ACT>(e + j * HW, H, W, wt.dw_w + c * K * K, wt.dw_b[c],
                                            oy, 0, Wo, d + c * HWo + oy * Wo);
      }
    }
  }
  conv1x1_planes<EXP, COUT, Act::kIdentity>(d, wt.project_w, wt.project_b, HWo, out);
  A gate[COUT];
  if constexpr (Spec::SE) {
    A mean[COUT];
    for (int c = 0; c < COUT; ++c) {
      // double accumulation: the mean of up to H*W terms stays exact to float32 rounding.
      double s = 0;
      for (int64_t i = 0; i < HWo; ++i) {
        s += static_cast<double>(out[c * HWo + i]);
      }
      mean[c] = static_cast<A>(s / static_cast<double>(HWo));
    }
    A hidden[Spec::SQ];
    for (int j = 0; j < Spec::SQ; ++j) {
      hidden[j] = ib::se_squeeze<COUT>(mean, wt.se1_w + j * COUT, wt.se1_b[j]);
    }
    for (int c = 0; c < COUT; ++c) {
      gate[c] = ib::se_gate<Spec::SQ>(hidden, wt.se2_w + c * Spec::SQ, wt.se2_b[c]);
    }
  } else {
    std::fill(gate, gate + COUT, A(1));
  }
  const A* res = nullptr;
  if constexpr (Spec::SHORTCUT_CONV) {
    conv1x1_planes<Spec::CIN, COUT, Act::kIdentity>(in, wt.shortcut_w, wt.shortcut_b, HW, r);
    res = r;
  } else if constexpr (Spec::RESIDUAL) {
    res = in;
  }
  for (int c = 0; c < COUT; ++c) {
    ib::gate_residual_span<Spec::SE>(out + c * HWo, gate[c],
                                     res != nullptr ? res + c * HWo : nullptr, HWo);
  }
}

// The whole encoder for one image (H, W) into its three taps.
template <int WIDTH, typename A>
void encode_image(const A* img, int64_t H, int64_t W, const A* params, const ScratchPlan& plan,
                  A* scratch, A* t1, A* t2, A* t3) {
  using P = PadnetSpec<WIDTH>;
  A* a = scratch;
  A* b = a + plan.a;
  A* e = b + plan.b;
  A* d = e + plan.e;
  A* r = d + plan.d;
  const TapSizes s = tap_sizes(H, W);
  const A* p = params;
  const A* stem_w = ib::take_params(p, int64_t{P::STEM} * 9);
  const A* stem_b = ib::take_params(p, int64_t{P::STEM});
  for (int o = 0; o < P::STEM; ++o) {
    for (int64_t oy = 0; oy < H; ++oy) {
      ib::depthwise_span<3, 1, Act::kHardswish>(img, H, W, stem_w + o * 9, stem_b[o], oy, 0, W,
                                                a + o * H * W + oy * W);
    }
  }
  bneck_cpu<typename P::B1>(a, s.h[0], s.w[0], p, b, e, d, r);
  bneck_cpu<typename P::B2>(b, s.h[0], s.w[0], p, t1, e, d, r);
  bneck_cpu<typename P::B3>(t1, s.h[0], s.w[0], p, a, e, d, r);
  bneck_cpu<typename P::B4>(a, s.h[1], s.w[1], p, t2, e, d, r);
  bneck_cpu<typename P::B5>(t2, s.h[1], s.w[1], p, a, e, d, r);
  bneck_cpu<typename P::B6>(a, s.h[2], s.w[2], p, t3, e, d, r);
}

template <int WIDTH, typename A>
void encoder_impl(const at::Tensor& x, const at::Tensor& params, at::Tensor& t1, at::Tensor& t2,
                  at::Tensor& t3) {
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3);
  const ScratchPlan plan = scratch_plan<WIDTH>(H, W, kExpandGroup);
  const A* xd = x.const_data_ptr<A>();
  const A* pd = params.const_data_ptr<A>();
  A* o1 = t1.mutable_data_ptr<A>();
  A* o2 = t2.mutable_data_ptr<A>();
  A* o3 = t3.mutable_data_ptr<A>();
  const int64_t n1 = t1[0].numel(), n2 = t2[0].numel(), n3 = t3[0].numel();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<A> scratch(static_cast<size_t>(plan.total()));
    for (int64_t b = b0; b < b1; ++b) {
      encode_image<WIDTH, A>(xd + b * H * W, H, W, pd, plan, scratch.data(), o1 + b * n1,
                             o2 + b * n2, o3 + b * n3);
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> padnet_encoder_cpu(const at::Tensor& x,
                                                                  const at::Tensor& params,
                                                                  int64_t width) {
  constexpr const char* op = "padnet_encoder";
  check_padnet_encoder_args(x, params, width, op);
  const at::ScalarType ct =
      (x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16) ? at::kFloat
                                                                         : x.scalar_type();
  const at::Tensor xc = x.to(ct).contiguous(), pc = params.to(ct).contiguous();
  const int64_t B = x.size(0);
  const TapSizes s = tap_sizes(x.size(2), x.size(3));
  const std::array<int64_t, 3> ch = tap_channels(width);
  at::Tensor t1 = at::empty({B, ch[0], s.h[0], s.w[0]}, xc.options());
  at::Tensor t2 = at::empty({B, ch[1], s.h[1], s.w[1]}, xc.options());
  at::Tensor t3 = at::empty({B, ch[2], s.h[2], s.w[2]}, xc.options());
  if (B > 0) {
    AT_DISPATCH_FLOATING_TYPES(ct, "padnet_encoder_cpu", [&] {
      dispatch_width(width, [&](auto w) {
        encoder_impl<decltype(w)::value, scalar_t>(xc, pc, t1, t2, t3);
      });
    });
  }
  return {t1.to(x.scalar_type()), t2.to(x.scalar_type()), t3.to(x.scalar_type())};
}

TORCH_LIBRARY_IMPL(fastvision, CPU, m) { m.impl("padnet_encoder", &padnet_encoder_cpu); }

}  // namespace fastvision::padnet
