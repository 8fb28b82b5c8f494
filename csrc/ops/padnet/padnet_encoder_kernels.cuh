// Device code and launch planning of padnet_encoder: PAD-Net's whole encoder with BatchNorm
// folded, in one launch (torch-free: compiled by nvcc for the CUDA build and by g++ with the
// CUDA-on-CPU emulator for `pytest -m emulated`).
//
// One thread block per image (a grid of at most one block per SM, looping over the batch): the
// block runs the stem and the six bnecks layer by layer, a __syncthreads() between layers, each
// thread computing single output elements with the span functions of
// fastvision/inverted_bottleneck.h (n = 1), the arithmetic the CPU kernel runs. A bneck's
// expansion is made kPadnetExpandGroup channels at a time and fed to the depthwise conv, as on the
// CPU. The SE means are warp reductions into shared memory, the squeeze and gate values live in
// shared memory. Activations do not fit in shared memory (at 112x48, bneck 3's expanded input
// alone is 16w x 112 x 48 floats = 344 KB at width 1), so each block has its own slice of a
// global-memory scratch (ScratchPlan, ~0.4 MB per block at 112x48 width 1, ~1.9 MB at width 4),
// which stays mostly in L2; the input and the three taps are the only other global memory
// touched. The number of blocks is capped so that their scratch fits kPadnetScratchBudget (a
// large image runs fewer blocks, down to one): the scratch is bounded by max(budget, one image's
// plan), about 10x the image's own tap outputs. Row tiles with halos in shared memory would cut
// that traffic but need a second pass for SE's whole-plane means.
//
// A is the compute type (float or double; the glue converts half and bfloat16 to float).
#pragma once

#include <algorithm>
#include <cstdint>

#include "fastvision/cuda_compat.h"
#include "fastvision/inverted_bottleneck.h"
#include "fastvision/padnet_spec.h"

namespace fastvision::padnet {

using ib::Act;

constexpr int kPadnetThreads = 256;
constexpr int kPadnetWarps = kPadnetThreads / 32;
// Expanded channels made at a time, then fed to the depthwise conv (as the CPU kernel): a block's
// expansion buffer holds kPadnetExpandGroup planes instead of all of a bneck's.
constexpr int kPadnetExpandGroup = 16;
// Scratch memory (bytes) that the blocks may share: blocks beyond it are not launched (the others
// loop over more images); a single block always runs, with one image's plan.
constexpr int64_t kPadnetScratchBudget = int64_t{256} << 20;
constexpr int kMaxChannels = 64;  // widest block output (16 x width 4)
constexpr int kMaxSqueeze = kMaxChannels / 4;

struct SharedSE {
  double mean[kMaxChannels];
  double hidden[kMaxSqueeze];
  double gate[kMaxChannels];
};

// Block-wide: mean of each of the C planes (n elements each) of y into se.mean (warp per plane).
template <int C, typename A>
FV_DEVICE void plane_means(const A* y, int64_t n, SharedSE& se) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int c = warp; c < C; c += kPadnetWarps) {
    double s = 0;
    for (int64_t i = lane; i < n; i += 32) {
      s += static_cast<double>(y[c * n + i]);
    }
    for (int off = 16; off > 0; off /= 2) {
      s += __shfl_down_sync(0xffffffffu, s, off);
    }
    if (lane == 0) {
      se.mean[c] = s / static_cast<double>(n);
    }
  }
}

// One bneck: in (CIN, H, W) -> out (COUT, Ho, Wo); e (kPadnetExpandGroup planes), d, r are this
// block's scratch. Ends synced.
template <class Spec, typename A>
FV_DEVICE void bneck_block(const A* in, int64_t H, int64_t W, const A*& params, A* out, A* e,
                            A* d, A* r, SharedSE& se) {
  constexpr int K = Spec::K, S = Spec::S, CIN = Spec::CIN, EXP = Spec::EXP, COUT = Spec::COUT;
  static_assert(COUT <= kMaxChannels && Spec::SQ <= kMaxSqueeze);
  const ib::BneckWeights<A> wt = ib::bind_bneck<Spec>(params);
  const int64_t Ho = ib::conv_out_size<K, S>(H), Wo = ib::conv_out_size<K, S>(W);
  const int64_t HW = H * W, HWo = Ho * Wo;
  if constexpr (Spec::SHORTCUT_CONV) {
    for (int64_t idx = threadIdx.x; idx < COUT * HW; idx += kPadnetThreads) {
      const int64_t o = idx / HW, i = idx % HW;
      ib::conv1x1_tile<CIN, 1, 1, Act::kIdentity>(in + i, HW, wt.shortcut_w + o * CIN,
                                                  wt.shortcut_b + o, r + idx, 0);
    }
  }
  // Expansion groups of G channels: expand into e, then their depthwise outputs into d.
  constexpr int G = EXP < kPadnetExpandGroup ? EXP : kPadnetExpandGroup;
  static_assert(EXP % G == 0);
  for (int c0 = 0; c0 < EXP; c0 += G) {
    for (int64_t idx = threadIdx.x; idx < G * HW; idx += kPadnetThreads) {
      const int64_t o = c0 + idx / HW, i = idx % HW;
      ib::conv1x1_tile<CIN, 1, 1, Spec::ACT>(in + i, HW, wt.expand_w + o * CIN, wt.expand_b + o,
                                             e + idx, 0);
    }
    __syncthreads();
    for (int64_t idx = threadIdx.x; idx < G * HWo; idx += kPadnetThreads) {
      const int64_t c = c0 + idx / HWo, i = idx % HWo;
      ib::depthwise_span<K, S, Spec::ACT>(e + (c - c0) * HW, H, W, wt.dw_w + c * K * K,
                                          wt.dw_b[c], i / Wo, i % Wo, 1, d + c * HWo + i);
    }
    __syncthreads();  // e is overwritten by the next group
  }
  for (int64_t idx = threadIdx.x; idx < COUT * HWo; idx += kPadnetThreads) {
    const int64_t o = idx / HWo, i = idx % HWo;
    ib::conv1x1_tile<EXP, 1, 1, Act::kIdentity>(d + i, HWo, wt.project_w + o * EXP,
                                                wt.project_b + o, out + idx, 0);
  }
  __syncthreads();
  if constexpr (Spec::SE) {
    plane_means<COUT>(out, HWo, se);
    __syncthreads();
    if (threadIdx.x < Spec::SQ) {
      A mean[COUT];
      for (int c = 0; c < COUT; ++c) {
        mean[c] = static_cast<A>(se.mean[c]);
      }
      se.hidden[threadIdx.x] =
          ib::se_squeeze<COUT>(mean, wt.se1_w + threadIdx.x * COUT, wt.se1_b[threadIdx.x]);
    }
    __syncthreads();
    if (threadIdx.x < COUT) {
      A hidden[Spec::SQ];
      for (int j = 0; j < Spec::SQ; ++j) {
        hidden[j] = static_cast<A>(se.hidden[j]);
      }
      se.gate[threadIdx.x] =
          ib::se_gate<Spec::SQ>(hidden, wt.se2_w + threadIdx.x * Spec::SQ, wt.se2_b[threadIdx.x]);
    }
    __syncthreads();
  }
  if constexpr (Spec::SE || Spec::RESIDUAL) {
    for (int64_t idx = threadIdx.x; idx < COUT * HWo; idx += kPadnetThreads) {
      const A g = Spec::SE ? static_cast<A>(se.gate[idx / HWo]) : A(1);
      const A* res = Spec::SHORTCUT_CONV ? r + idx : (Spec::RESIDUAL ? in + idx : nullptr);
      ib::gate_residual_span<Spec::SE>(out + idx, g, res, 1);
    }
    __syncthreads();
  }
}

template <int WIDTH, typename A>
FV_GLOBAL void __launch_bounds__(kPadnetThreads)
    padnet_encoder_kernel(const A* __restrict__ x, const A* __restrict__ params, int64_t B,
                          int64_t H, int64_t W, ScratchPlan plan, A* __restrict__ scratch,
                          A* __restrict__ t1, A* __restrict__ t2, A* __restrict__ t3) {
  using P = PadnetSpec<WIDTH>;
  FV_SHARED(SharedSE, se);
  A* a = scratch + blockIdx.x * (plan.a + plan.b + plan.e + plan.d + plan.r);
  A* b = a + plan.a;
  A* e = b + plan.b;
  A* d = e + plan.e;
  A* r = d + plan.d;
  const int64_t H2 = ib::conv_out_size<3, 2>(H), W2 = ib::conv_out_size<3, 2>(W);
  const int64_t H4 = ib::conv_out_size<3, 2>(H2), W4 = ib::conv_out_size<3, 2>(W2);
  const int64_t HW = H * W;
  const int64_t n1 = P::B2::COUT * HW, n2 = P::B4::COUT * H2 * W2, n3 = P::B6::COUT * H4 * W4;
  for (int64_t img = blockIdx.x; img < B; img += gridDim.x) {
    const A* p = params;
    const A* stem_w = ib::take_params(p, int64_t{P::STEM} * 9);
    const A* stem_b = ib::take_params(p, int64_t{P::STEM});
    const A* xi = x + img * HW;
    for (int64_t idx = threadIdx.x; idx < P::STEM * HW; idx += kPadnetThreads) {
      const int64_t o = idx / HW, i = idx % HW;
      ib::depthwise_span<3, 1, Act::kHardswish>(xi, H, W, stem_w + o * 9, stem_b[o], i / W,
                                                i % W, 1, a + idx);
    }
    __syncthreads();
    bneck_block<typename P::B1>(a, H, W, p, b, e, d, r, se);
    bneck_block<typename P::B2>(b, H, W, p, t1 + img * n1, e, d, r, se);
    bneck_block<typename P::B3>(t1 + img * n1, H, W, p, a, e, d, r, se);
    bneck_block<typename P::B4>(a, H2, W2, p, t2 + img * n2, e, d, r, se);
    bneck_block<typename P::B5>(t2 + img * n2, H2, W2, p, a, e, d, r, se);
    bneck_block<typename P::B6>(a, H4, W4, p, t3 + img * n3, e, d, r, se);
  }
}


// The launch of one padnet_encoder call: the grid (one block per image, at most one per SM and
// at most as many as scratch_budget bytes hold, at least one) and the per-block buffer plan. The
// caller allocates scratch_elements() elements of scratch.
struct PadnetLaunchPlan {
  cuda::LaunchConfig config;
  ScratchPlan scratch;
  int64_t blocks;
  int64_t scratch_elements() const { return blocks * scratch.total(); }
};

template <int WIDTH, typename A>
PadnetLaunchPlan padnet_encoder_launch_plan(int64_t B, int64_t H, int64_t W,
                                            const cuda::DeviceLimits& limits,
                                            int64_t scratch_budget) {
  PadnetLaunchPlan plan{};
  plan.scratch = scratch_plan<WIDTH>(H, W, kPadnetExpandGroup);
  const int64_t per_block = plan.scratch.total() * static_cast<int64_t>(sizeof(A));
  const int64_t fitting = scratch_budget / per_block;
  plan.blocks = std::min({B, static_cast<int64_t>(limits.sm_count), std::max<int64_t>(fitting, 1)});
  plan.config.grid = dim3(static_cast<unsigned>(plan.blocks));
  plan.config.block = dim3(kPadnetThreads);
  return plan;
}

// x (B, 1, H, W) and params contiguous; scratch of plan.scratch_elements(); the taps t1, t2, t3
// contiguous. Requires B > 0. Returns the launch status.
template <int WIDTH, typename A>
auto launch_padnet_encoder(const PadnetLaunchPlan& plan, const A* x, const A* params, int64_t B,
                           int64_t H, int64_t W, A* scratch, A* t1, A* t2, A* t3,
                           cuda::Stream stream) {
  return cuda::launch(padnet_encoder_kernel<WIDTH, A>, plan.config, stream, x, params, B, H, W,
                      plan.scratch, scratch, t1, t2, t3);
}

}  // namespace fastvision::padnet
