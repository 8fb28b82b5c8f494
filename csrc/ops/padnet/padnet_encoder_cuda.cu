// CUDA kernel of padnet_encoder: PAD-Net's whole encoder with BatchNorm folded, in one launch.
//
// One thread block per image (a grid of at most one block per SM, looping over the batch): the
// block runs the stem and the six bnecks layer by layer, a __syncthreads() between layers, each
// thread computing single output elements with the span functions of
// fastvision/inverted_bottleneck.h (n = 1), the arithmetic the CPU kernel runs. The SE means are
// warp reductions into shared memory, the squeeze and gate values live in shared memory.
// Activations do not fit in shared memory (at 112x48, bneck 3's expanded input alone is
// 16w x 112 x 48 floats = 344 KB at width 1), so each block has its own slice of a global-memory
// scratch (ScratchPlan, ~0.7 MB per block at width 1, ~2.9 MB at width 4), which stays mostly in
// L2; the input and the three taps are the only other global memory touched. Row tiles with halos
// in shared memory would cut that traffic but need a second pass for SE's whole-plane means.
//
// float16 / bfloat16 are computed in float32 (converted before and after the kernel).
// Not yet run on a GPU (the build machines have none): compiled for sm_80 / sm_90 only.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>

#include "fastvision/inverted_bottleneck.h"
#include "padnet_encoder_common.h"

namespace fastvision::padnet {

namespace {

using ib::Act;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxChannels = 64;  // widest block output (16 x width 4)
constexpr int kMaxSqueeze = kMaxChannels / 4;

struct SharedSE {
  double mean[kMaxChannels];
  double hidden[kMaxSqueeze];
  double gate[kMaxChannels];
};

// Block-wide: mean of each of the C planes (n elements each) of y into se.mean (warp per plane).
template <int C, typename A>
__device__ void plane_means(const A* y, int64_t n, SharedSE& se) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int c = warp; c < C; c += kWarps) {
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

// One bneck: in (CIN, H, W) -> out (COUT, Ho, Wo); e, d, r are this block's scratch. Ends synced.
template <class Spec, typename A>
__device__ void bneck_block(const A* in, int64_t H, int64_t W, const A*& params, A* out, A* e,
                            A* d, A* r, SharedSE& se) {
  constexpr int K = Spec::K, S = Spec::S, CIN = Spec::CIN, EXP = Spec::EXP, COUT = Spec::COUT;
  static_assert(COUT <= kMaxChannels && Spec::SQ <= kMaxSqueeze);
  const ib::BneckWeights<A> wt = ib::bind_bneck<Spec>(params);
  const int64_t Ho = ib::conv_out_size<K, S>(H), Wo = ib::conv_out_size<K, S>(W);
  const int64_t HW = H * W, HWo = Ho * Wo;
  for (int64_t idx = threadIdx.x; idx < EXP * HW; idx += kThreads) {
    const int64_t o = idx / HW, i = idx % HW;
    ib::conv1x1_tile<CIN, 1, 1, Spec::ACT>(in + i, HW, wt.expand_w + o * CIN, wt.expand_b + o,
                                           e + idx, 0);
  }
  if constexpr (Spec::SHORTCUT_CONV) {
    for (int64_t idx = threadIdx.x; idx < COUT * HW; idx += kThreads) {
      const int64_t o = idx / HW, i = idx % HW;
      ib::conv1x1_tile<CIN, 1, 1, Act::kIdentity>(in + i, HW, wt.shortcut_w + o * CIN,
                                                  wt.shortcut_b + o, r + idx, 0);
    }
  }
  __syncthreads();
  for (int64_t idx = threadIdx.x; idx < EXP * HWo; idx += kThreads) {
    const int64_t c = idx / HWo, i = idx % HWo;
    ib::depthwise_span<K, S, Spec::ACT>(e + c * HW, H, W, wt.dw_w + c * K * K, wt.dw_b[c],
                                        i / Wo, i % Wo, 1, d + idx);
  }
  __syncthreads();
  for (int64_t idx = threadIdx.x; idx < COUT * HWo; idx += kThreads) {
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
    for (int64_t idx = threadIdx.x; idx < COUT * HWo; idx += kThreads) {
      const A g = Spec::SE ? static_cast<A>(se.gate[idx / HWo]) : A(1);
      const A* res = Spec::SHORTCUT_CONV ? r + idx : (Spec::RESIDUAL ? in + idx : nullptr);
      ib::gate_residual_span<Spec::SE>(out + idx, g, res, 1);
    }
    __syncthreads();
  }
}

template <int WIDTH, typename A>
__global__ void __launch_bounds__(kThreads)
    padnet_encoder_kernel(const A* __restrict__ x, const A* __restrict__ params, int64_t B,
                          int64_t H, int64_t W, ScratchPlan plan, A* __restrict__ scratch,
                          A* __restrict__ t1, A* __restrict__ t2, A* __restrict__ t3) {
  using P = PadnetSpec<WIDTH>;
  __shared__ SharedSE se;
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
    for (int64_t idx = threadIdx.x; idx < P::STEM * HW; idx += kThreads) {
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

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> padnet_encoder_cuda(const at::Tensor& x,
                                                                   const at::Tensor& params,
                                                                   int64_t width) {
  constexpr const char* op = "padnet_encoder";
  check_padnet_encoder_args(x, params, width, op);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::ScalarType ct =
      (x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16) ? at::kFloat
                                                                         : x.scalar_type();
  const at::Tensor xc = x.to(ct).contiguous(), pc = params.to(ct).contiguous();
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3);
  const TapSizes s = tap_sizes(H, W);
  const std::array<int64_t, 3> ch = tap_channels(width);
  at::Tensor t1 = at::empty({B, ch[0], s.h[0], s.w[0]}, xc.options());
  at::Tensor t2 = at::empty({B, ch[1], s.h[1], s.w[1]}, xc.options());
  at::Tensor t3 = at::empty({B, ch[2], s.h[2], s.w[2]}, xc.options());
  if (B > 0) {
    const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
    const int64_t blocks = std::min<int64_t>(B, sms);
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(ct, "padnet_encoder_cuda", [&] {
      dispatch_width(width, [&](auto w) {
        constexpr int WIDTH = decltype(w)::value;
        const ScratchPlan plan = scratch_plan<WIDTH>(H, W, 0);
        at::Tensor scratch = at::empty({blocks * plan.total()}, xc.options());
        padnet_encoder_kernel<WIDTH, scalar_t><<<static_cast<unsigned>(blocks), kThreads, 0,
                                                 stream>>>(
            xc.const_data_ptr<scalar_t>(), pc.const_data_ptr<scalar_t>(), B, H, W, plan,
            scratch.mutable_data_ptr<scalar_t>(), t1.mutable_data_ptr<scalar_t>(),
            t2.mutable_data_ptr<scalar_t>(), t3.mutable_data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
  return {t1.to(x.scalar_type()), t2.to(x.scalar_type()), t3.to(x.scalar_type())};
}

TORCH_LIBRARY_IMPL(fastvision, CUDA, m) { m.impl("padnet_encoder", &padnet_encoder_cuda); }

}  // namespace fastvision::padnet
