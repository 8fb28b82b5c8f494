// Device code and launch planning of padnet_encoder: PAD-Net's whole encoder with BatchNorm
// folded (torch-free: compiled by nvcc for the CUDA build and by g++ with the CUDA-on-CPU emulator
// for `pytest -m emulated`).
//
// One kernel per bneck, each a grid of (output tile, image) blocks, plus one elementwise kernel
// that finishes the last bneck: seven launches per chunk of images. A block computes one tile of
// th x tw output pixels of one image, all channels:
//   1. its input window (the tile's pixels and their 3x3 halo, all CIN channels) into shared
//      memory: bneck 1 computes the stem there from the image; the others read the previous
//      bneck's output and finish it on the fly (SE gate from the previous bneck's per-tile sums,
//      then the residual), the deferred end of that bneck;
//   2. for each group of kPadnetExpandGroup expanded channels: the expansion of the window into
//      shared memory, its depthwise conv (the tile's pixels) into shared memory, and the projection
//      sums of those channels accumulated into the tile's COUT x th x tw outputs in shared memory:
//      the expanded tensor never leaves the SM (it was 80% of the old kernel's global traffic);
//   3. the raw block output (before the SE gate), its residual (the 1x1 shortcut of bneck 1, the
//      input itself for the other stride-1 bnecks) and, per output channel, the tile's sum in
//      double (the SE mean's share of the tile) to global memory. A bneck without SE (bneck 2)
//      adds its residual here and writes its final output.
// SE needs the mean of a whole plane before any of its outputs can be gated, which in one launch
// needs a grid-wide barrier (the old kernel's one block per image, 12.5% occupancy and one SM at
// batch 1); deferring the gate to the next bneck's input load costs one launch per bneck and no
// extra pass over memory. Tiles are chosen per bneck (PadnetLaunchPlan) so that a block's shared
// memory stays within kPadnetSmemBudget and the grid has at least two blocks per SM when the
// image allows (batch 1 at 112x48 runs 28 to 336 blocks per bneck instead of one block).
// Global memory: per image of the chunk, two activation buffers and one residual buffer (about
// 10 x width x H x W elements) and the SE sums; the chunk is the number of images whose scratch
// fits kPadnetScratchBudget (at least one), so scratch is bounded by max(budget, one image).
// The taps are written once, final: t1 by bneck 2, t2 by bneck 5's input load (bneck 4's finished
// output), t3 by the finishing kernel.
// The arithmetic is fastvision/inverted_bottleneck.h's, in its order (bias first, then channels /
// taps in index order), so float64 agrees with the CPU's baseline path to rounding of the SE means
// (summed per tile, then over tiles).
//
// A is the compute type (float or double; the glue converts half and bfloat16 to float).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "fastvision/cuda_compat.h"
#include "fastvision/inverted_bottleneck.h"
#include "fastvision/padnet_spec.h"

namespace fastvision::padnet {

using ib::Act;

constexpr int kPadnetThreads = 128;
constexpr int kPadnetWarps = kPadnetThreads / 32;
// Expanded channels made at a time, then fed to the depthwise conv and the projection.
constexpr int kPadnetExpandGroup = 16;
// Global scratch (bytes) of the images of one chunk; a chunk always holds at least one image.
constexpr int64_t kPadnetScratchBudget = int64_t{256} << 20;
// Dynamic shared memory of a bneck block. 24 KiB lets 6 (A100) to 9 (H100) blocks of 4 warps
// share an SM (occupancy 37-56%, the registers allowing); bigger tiles would cut the halo's
// recomputation but not the traffic, which is the bound.
constexpr std::size_t kPadnetSmemBudget = 24 * 1024;
constexpr int kMaxChannels = 64;  // widest block output (16 x width 4)
constexpr int kMaxSqueeze = kMaxChannels / 4;

template <typename A>
struct SharedGate {
  A mean[kMaxChannels];
  A hidden[kMaxSqueeze];
  A gate[kMaxChannels];
};

// Block-wide: the SE gate of a bneck (Spec) of C = Spec::COUT channels from its per-tile sums
// (tiles x C doubles of one image, n pixels per plane) into sh.gate. Ends synced.
template <class Spec, typename A>
FV_DEVICE void gate_from_sums(const double* sums, int64_t tiles, int64_t n,
                              const ib::BneckWeights<A>& wt, SharedGate<A>& sh) {
  constexpr int C = Spec::COUT, SQ = Spec::SQ;
  static_assert(C <= kMaxChannels && SQ <= kMaxSqueeze);
  for (int c = threadIdx.x; c < C; c += kPadnetThreads) {
    double s = 0;
    for (int64_t t = 0; t < tiles; ++t) {
      s += sums[t * C + c];
    }
    sh.mean[c] = static_cast<A>(s / static_cast<double>(n));
  }
  __syncthreads();
  for (int j = threadIdx.x; j < SQ; j += kPadnetThreads) {
    sh.hidden[j] = ib::se_squeeze<C>(sh.mean, wt.se1_w + j * C, wt.se1_b[j]);
  }
  __syncthreads();
  for (int c = threadIdx.x; c < C; c += kPadnetThreads) {
    sh.gate[c] = ib::se_gate<SQ>(sh.hidden, wt.se2_w + c * SQ, wt.se2_b[c]);
  }
  __syncthreads();
}

// The buffers and geometry of one bneck launch (pointers at the chunk's first image).
template <typename A>
struct BneckIO {
  const A* image;        // (chunk, 1, H, W): the input of the stem (bneck 1 only)
  const A* stem_params;  // stem weights (STEM, 9) then biases (bneck 1 only)
  const A* in;           // previous bneck's output (chunk, CIN, H, W); raw when in_sums is set
  const A* in_res;       // its residual, added after the gate (nullptr: none)
  const double* in_sums; // its SE tile sums (chunk, in_tiles, CIN) (nullptr: no gate)
  int64_t in_tiles;
  const A* prev_params;  // previous bneck's packed parameters (its SE weights)
  A* in_final;           // the finished input, written for the tile's own pixels (nullptr: not kept)
  const A* params;       // this bneck's packed parameters
  A* out;                // (chunk, COUT, Ho, Wo): final without SE, else before the gate
  A* out_res;            // (chunk, COUT, Ho, Wo): its residual (SE bnecks with a residual)
  double* out_sums;      // (chunk, tiles, COUT): per tile and channel, the sum of out
  int64_t H, W;          // input size
  int th, tw;            // output tile
  int64_t tiles_x, tiles;
};

// Window geometry of a tile: input rows / columns [w0, w0 + (n - 1) S + K).
template <int K, int S>
FV_HOST_DEVICE FV_INLINE int64_t window_extent(int64_t n) {
  return (n - 1) * S + K;
}

// Shared memory (elements of A) of a bneck block with a th x tw output tile: input window xs
// (CIN planes), expansion group es (G planes of the window), depthwise group ds (G x tile) and
// projection sums acc (COUT x tile).
template <class Spec>
FV_HOST_DEVICE FV_INLINE int64_t bneck_smem_elements(int64_t th, int64_t tw) {
  constexpr int G = Spec::EXP < kPadnetExpandGroup ? Spec::EXP : kPadnetExpandGroup;
  const int64_t win = window_extent<Spec::K, Spec::S>(th) * window_extent<Spec::K, Spec::S>(tw);
  return (Spec::CIN + G) * win + (G + Spec::COUT) * th * tw;
}

// Prev: the bneck whose output is the input (void: the stem, computed from the image).
template <class Spec, class Prev, typename A>
FV_GLOBAL void __launch_bounds__(kPadnetThreads) bneck_tile_kernel(BneckIO<A> io) {
  constexpr int K = Spec::K, S = Spec::S, CIN = Spec::CIN, EXP = Spec::EXP, COUT = Spec::COUT;
  constexpr int G = EXP < kPadnetExpandGroup ? EXP : kPadnetExpandGroup;
  static_assert(EXP % G == 0);
  constexpr bool kStemInput = std::is_void_v<Prev>;
  FV_SHARED(SharedGate<A>, sh);
  FV_DYNAMIC_SHARED(A, smem);
  const int64_t img = blockIdx.y, tile = blockIdx.x;
  const int64_t H = io.H, W = io.W, HW = H * W;
  const int64_t Ho = ib::conv_out_size<K, S>(H), Wo = ib::conv_out_size<K, S>(W), HWo = Ho * Wo;
  const int64_t oy0 = (tile / io.tiles_x) * io.th, ox0 = (tile % io.tiles_x) * io.tw;
  const int64_t nh = std::min<int64_t>(io.th, Ho - oy0), nw = std::min<int64_t>(io.tw, Wo - ox0);
  const int64_t np = nh * nw, P = int64_t{io.th} * io.tw;
  const int64_t wy0 = oy0 * S - K / 2, wx0 = ox0 * S - K / 2;
  const int64_t inC = window_extent<K, S>(nw), win = window_extent<K, S>(nh) * inC;
  const int64_t win_cap = window_extent<K, S>(io.th) * window_extent<K, S>(io.tw);
  A* xs = smem;                 // CIN x win_cap
  A* es = xs + CIN * win_cap;   // G x win_cap
  A* ds = es + G * win_cap;     // G x P
  A* acc = ds + G * P;          // COUT x P
  const ib::BneckWeights<A> wt = [&] {
    const A* p = io.params;
    return ib::bind_bneck<Spec>(p);
  }();

  // 1. The input window, finished (gate, residual) or computed (stem); 0 outside the image.
  bool gated = false;
  if constexpr (!kStemInput) {
    if constexpr (Prev::SE) {
      if (io.in_sums != nullptr) {
        const A* p = io.prev_params;
        const ib::BneckWeights<A> pw = ib::bind_bneck<Prev>(p);
        gate_from_sums<Prev>(io.in_sums + img * io.in_tiles * CIN, io.in_tiles, HW, pw, sh);
        gated = true;
      }
    }
  }
  for (int64_t idx = threadIdx.x; idx < CIN * win; idx += kPadnetThreads) {
    const int64_t c = idx / win, l = idx % win;
    const int64_t iy = wy0 + l / inC, ix = wx0 + l % inC;
    A v = A(0);
    if (iy >= 0 && iy < H && ix >= 0 && ix < W) {
      const int64_t at = c * HW + iy * W + ix;
      if constexpr (kStemInput) {
        ib::depthwise_span<3, 1, Act::kHardswish>(io.image + img * HW, H, W,
                                                  io.stem_params + c * 9,
                                                  io.stem_params[CIN * 9 + c], iy, ix, 1, &v);
      } else {
        v = io.in[img * CIN * HW + at];
        if (gated) {
          v = v * sh.gate[c];
        }
        if (io.in_res != nullptr) {
          v = v + io.in_res[img * CIN * HW + at];
        }
        const bool own = iy >= oy0 * S && iy < (oy0 + nh) * S && ix >= ox0 * S &&
                         ix < (ox0 + nw) * S;
        if (io.in_final != nullptr && own) {
          io.in_final[img * CIN * HW + at] = v;
        }
      }
    }
    xs[c * win_cap + l] = v;
  }
  __syncthreads();

  // 2. Expansion groups: expand the window, depthwise the tile, accumulate the projection.
  for (int c0 = 0; c0 < EXP; c0 += G) {
    for (int64_t idx = threadIdx.x; idx < G * win; idx += kPadnetThreads) {
      const int64_t g = idx / win, l = idx % win;
      const int64_t iy = wy0 + l / inC, ix = wx0 + l % inC;
      if (iy >= 0 && iy < H && ix >= 0 && ix < W) {
        ib::conv1x1_tile<CIN, 1, 1, Spec::ACT>(xs + l, win_cap, wt.expand_w + (c0 + g) * CIN,
                                               wt.expand_b + c0 + g, es + g * win_cap + l, 0);
      } else {
        es[g * win_cap + l] = A(0);  // the depthwise conv's zero padding (never read)
      }
    }
    __syncthreads();
    for (int64_t idx = threadIdx.x; idx < G * np; idx += kPadnetThreads) {
      const int64_t g = idx / np, pp = idx % np;
      ds[g * P + pp] = ib::depthwise_window_at<K, S, Spec::ACT>(
          es + g * win_cap, inC, wy0, wx0, H, W, wt.dw_w + (c0 + g) * K * K, wt.dw_b[c0 + g],
          oy0 + pp / nw, ox0 + pp % nw);
    }
    __syncthreads();
    for (int64_t idx = threadIdx.x; idx < COUT * np; idx += kPadnetThreads) {
      const int64_t o = idx / np, pp = idx % np;
      const A start = c0 == 0 ? wt.project_b[o] : acc[o * P + pp];
      acc[o * P + pp] = ib::conv1x1_accumulate<G>(start, ds + pp, P, wt.project_w + o * EXP + c0);
    }
    // The next group's expansion writes es only: ds is rewritten after the barrier below it.
  }
  __syncthreads();

  // 3. Outputs: final (no SE) or raw + residual + per-tile channel sums.
  A* out = io.out + img * COUT * HWo;
  for (int64_t idx = threadIdx.x; idx < COUT * np; idx += kPadnetThreads) {
    const int64_t o = idx / np, pp = idx % np;
    const int64_t ly = pp / nw, lx = pp % nw;
    const int64_t at = o * HWo + (oy0 + ly) * Wo + ox0 + lx;
    A y = acc[o * P + pp];
    if constexpr (Spec::RESIDUAL) {
      const int64_t centre = (ly * S + K / 2) * inC + lx * S + K / 2;  // S = 1 here
      A res;
      if constexpr (Spec::SHORTCUT_CONV) {
        ib::conv1x1_tile<CIN, 1, 1, Act::kIdentity>(xs + centre, win_cap, wt.shortcut_w + o * CIN,
                                                    wt.shortcut_b + o, &res, 0);
      } else {
        res = xs[o * win_cap + centre];
      }
      if constexpr (Spec::SE) {
        io.out_res[img * COUT * HWo + at] = res;
      } else {
        ib::gate_residual_span<false>(&y, A(1), &res, 1);
      }
    }
    out[at] = y;
  }
  if constexpr (Spec::SE) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int o = warp; o < COUT; o += kPadnetWarps) {
      double s = 0;
      for (int64_t pp = lane; pp < np; pp += 32) {
        s += static_cast<double>(acc[o * P + pp]);
      }
      for (int off = 16; off > 0; off /= 2) {
        s += __shfl_down_sync(0xffffffffu, s, off);
      }
      if (lane == 0) {
        io.out_sums[(img * io.tiles + tile) * COUT + o] = s;
      }
    }
  }
}

// The end of the last bneck (Spec, with SE and a residual): out = y * gate + res, per image
// (blockIdx.y), the blocks of an image striding over its C x HW elements.
template <class Spec, typename A>
FV_GLOBAL void __launch_bounds__(kPadnetThreads)
    se_finish_kernel(const A* __restrict__ y, const A* __restrict__ res,
                     const double* __restrict__ sums, int64_t tiles, const A* __restrict__ params,
                     int64_t HW, A* __restrict__ out) {
  static_assert(Spec::SE && Spec::RESIDUAL);
  constexpr int C = Spec::COUT;
  FV_SHARED(SharedGate<A>, sh);
  const int64_t img = blockIdx.y;
  const A* p = params;
  const ib::BneckWeights<A> wt = ib::bind_bneck<Spec>(p);
  gate_from_sums<Spec>(sums + img * tiles * C, tiles, HW, wt, sh);
  const int64_t n = C * HW, base = img * n;
  for (int64_t i = blockIdx.x * int64_t{kPadnetThreads} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * kPadnetThreads) {
    A v = y[base + i];
    ib::gate_residual_span<true>(&v, sh.gate[i / HW], res + base + i, 1);
    out[base + i] = v;
  }
}

// Tiling of one bneck launch.
struct BneckTiling {
  int th = 1, tw = 1;
  int64_t tiles_x = 1, tiles = 1;
  std::size_t smem = 0;  // dynamic shared memory, bytes
};

// The launches of one padnet_encoder call: images in chunks of `chunk`, per chunk the six bneck
// launches (tiling[i]) and the finishing one (finish_blocks per image). Per image of a chunk the
// scratch holds y_a, r_a, y_b elements of A and sums_a, sums_b doubles; the caller allocates
// scratch_elements() elements of A (the sums first, so the doubles stay aligned).
struct PadnetLaunchPlan {
  int64_t chunk = 1;
  BneckTiling tiling[6];
  int64_t finish_blocks = 1;
  int64_t y_a = 0, r_a = 0, y_b = 0, sums_a = 0, sums_b = 0;
  int64_t sums_elements = 0;  // the sums' region in elements of A (whole chunk)
  int64_t scratch_elements() const { return sums_elements + chunk * (y_a + r_a + y_b); }
};

// The biggest tile (from a fixed list) whose shared memory fits and that gives the launch at
// least two blocks per SM; if none does, the fitting one with the most tiles. Tiles under 16
// pixels (mostly halo: a 1 x 1 tile expands 9 input pixels per output) only when nothing bigger
// fits or the image is that small.
template <class Spec, typename A>
BneckTiling choose_tiling(int64_t H, int64_t W, int64_t images, const cuda::DeviceLimits& limits) {
  constexpr int kCandidates[][2] = {{8, 32}, {8, 16}, {4, 16}, {4, 8}, {2, 8}, {2, 4},
                                    {1, 4},  {1, 2},  {1, 1}};
  const int64_t Ho = ib::conv_out_size<Spec::K, Spec::S>(H);
  const int64_t Wo = ib::conv_out_size<Spec::K, Spec::S>(W);
  const int64_t min_pixels = std::min<int64_t>(16, Ho * Wo);
  BneckTiling chosen{};
  bool have = false;
  for (const auto& c : kCandidates) {
    BneckTiling t;
    t.th = static_cast<int>(std::min<int64_t>(c[0], Ho));
    t.tw = static_cast<int>(std::min<int64_t>(c[1], Wo));
    t.tiles_x = ceil_div<int64_t>(Wo, t.tw);
    t.tiles = ceil_div<int64_t>(Ho, t.th) * t.tiles_x;
    t.smem = static_cast<std::size_t>(bneck_smem_elements<Spec>(t.th, t.tw)) * sizeof(A);
    if (t.smem > kPadnetSmemBudget || (have && t.th * t.tw < min_pixels)) {
      continue;
    }
    if (!have || t.tiles > chosen.tiles) {
      chosen = t;
      have = true;
    }
    if (images * t.tiles >= 2 * int64_t{limits.sm_count} && t.th * t.tw >= min_pixels) {
      break;
    }
  }
  return chosen;  // the 1 x 1 tile always fits PAD-Net's widths
}

template <int WIDTH, typename A>
PadnetLaunchPlan padnet_encoder_launch_plan(int64_t B, int64_t H, int64_t W,
                                            const cuda::DeviceLimits& limits,
                                            int64_t scratch_budget) {
  using P = PadnetSpec<WIDTH>;
  const TapSizes s = tap_sizes(H, W);
  const int64_t px0 = s.h[0] * s.w[0], px1 = s.h[1] * s.w[1], px2 = s.h[2] * s.w[2];
  PadnetLaunchPlan plan;
  plan.y_a = std::max({int64_t{P::B1::COUT} * px0, int64_t{P::B4::COUT} * px1,
                       int64_t{P::B6::COUT} * px2});
  plan.r_a = plan.y_a;
  plan.y_b = std::max(int64_t{P::B3::COUT} * px1, int64_t{P::B5::COUT} * px2);
  const int64_t act_bytes = (plan.y_a + plan.r_a + plan.y_b) * static_cast<int64_t>(sizeof(A));
  const int64_t chunk0 = std::clamp<int64_t>(scratch_budget / act_bytes, 1, std::min<int64_t>(B, 65535));
  plan.tiling[0] = choose_tiling<typename P::B1, A>(s.h[0], s.w[0], chunk0, limits);
  plan.tiling[1] = choose_tiling<typename P::B2, A>(s.h[0], s.w[0], chunk0, limits);
  plan.tiling[2] = choose_tiling<typename P::B3, A>(s.h[0], s.w[0], chunk0, limits);
  plan.tiling[3] = choose_tiling<typename P::B4, A>(s.h[1], s.w[1], chunk0, limits);
  plan.tiling[4] = choose_tiling<typename P::B5, A>(s.h[1], s.w[1], chunk0, limits);
  plan.tiling[5] = choose_tiling<typename P::B6, A>(s.h[2], s.w[2], chunk0, limits);
  // Sums of bnecks 1, 4, 6 (a) and 3, 5 (b): each read by the next launch only.
  plan.sums_a = std::max({plan.tiling[0].tiles * P::B1::COUT, plan.tiling[3].tiles * P::B4::COUT,
                          plan.tiling[5].tiles * P::B6::COUT});
  plan.sums_b = std::max(plan.tiling[2].tiles * P::B3::COUT, plan.tiling[4].tiles * P::B5::COUT);
  const int64_t per_image = act_bytes + (plan.sums_a + plan.sums_b) * 8;
  plan.chunk = std::clamp<int64_t>(scratch_budget / per_image, 1, chunk0);
  plan.sums_elements = ceil_div<int64_t>(plan.chunk * (plan.sums_a + plan.sums_b) * 8,
                                         static_cast<int64_t>(sizeof(A)));
  plan.finish_blocks = std::clamp<int64_t>(
      ceil_div<int64_t>(int64_t{P::B6::COUT} * px2, kPadnetThreads), 1,
      std::max<int64_t>(1, 4 * int64_t{limits.sm_count} / plan.chunk));
  return plan;
}

namespace detail {

template <class Spec, class Prev, typename A>
cuda::Error launch_bneck(const BneckIO<A>& io, const BneckTiling& t, int64_t images,
                         cuda::Stream stream) {
  cuda::LaunchConfig cfg;
  cfg.grid = dim3(static_cast<unsigned>(t.tiles), static_cast<unsigned>(images));
  cfg.block = dim3(kPadnetThreads);
  cfg.smem = t.smem;
  return cuda::launch(bneck_tile_kernel<Spec, Prev, A>, cfg, stream, io);
}

}  // namespace detail

// x (B, 1, H, W) and params contiguous; scratch of plan.scratch_elements(); the taps t1, t2, t3
// contiguous. Requires B > 0. Returns the first failing launch's status.
template <int WIDTH, typename A>
cuda::Error launch_padnet_encoder(const PadnetLaunchPlan& plan, const A* x, const A* params,
                                  int64_t B, int64_t H, int64_t W, A* scratch, A* t1, A* t2,
                                  A* t3, cuda::Stream stream) {
  using P = PadnetSpec<WIDTH>;
  using B1 = typename P::B1;
  using B2 = typename P::B2;
  using B3 = typename P::B3;
  using B4 = typename P::B4;
  using B5 = typename P::B5;
  using B6 = typename P::B6;
  const TapSizes s = tap_sizes(H, W);
  const int64_t px[3] = {s.h[0] * s.w[0], s.h[1] * s.w[1], s.h[2] * s.w[2]};
  const A* pb1 = params + P::kStemParams;
  const A* pb2 = pb1 + B1::kParams;
  const A* pb3 = pb2 + B2::kParams;
  const A* pb4 = pb3 + B3::kParams;
  const A* pb5 = pb4 + B4::kParams;
  const A* pb6 = pb5 + B5::kParams;
  double* sums_a = reinterpret_cast<double*>(scratch);
  double* sums_b = sums_a + plan.chunk * plan.sums_a;
  A* y_a = scratch + plan.sums_elements;
  A* r_a = y_a + plan.chunk * plan.y_a;
  A* y_b = r_a + plan.chunk * plan.r_a;
  for (int64_t i0 = 0; i0 < B; i0 += plan.chunk) {
    const int64_t n = std::min(plan.chunk, B - i0);
    A* c1 = t1 + i0 * B2::COUT * px[0];
    A* c2 = t2 + i0 * B4::COUT * px[1];
    A* c3 = t3 + i0 * B6::COUT * px[2];
    const auto io = [&](const A* in, const A* in_res, const double* in_sums, int64_t in_tiles,
                        const A* prev, A* in_final, const A* prm, A* out, A* out_res,
                        double* out_sums, int64_t h, int64_t w, const BneckTiling& t) {
      BneckIO<A> r{};
      r.image = x + i0 * px[0];
      r.stem_params = params;
      r.in = in;
      r.in_res = in_res;
      r.in_sums = in_sums;
      r.in_tiles = in_tiles;
      r.prev_params = prev;
      r.in_final = in_final;
      r.params = prm;
      r.out = out;
      r.out_res = out_res;
      r.out_sums = out_sums;
      r.H = h;
      r.W = w;
      r.th = t.th;
      r.tw = t.tw;
      r.tiles_x = t.tiles_x;
      r.tiles = t.tiles;
      return r;
    };
    const BneckTiling* t = plan.tiling;
    cuda::Error err = cuda::kSuccess;
    const auto step = [&](cuda::Error e) {
      if (err == cuda::kSuccess) {
        err = e;
      }
    };
    // bneck 1: stem -> y_a (raw), r_a (shortcut), sums_a
    step(detail::launch_bneck<B1, void>(
        io(nullptr, nullptr, nullptr, 0, nullptr, nullptr, pb1, y_a, r_a, sums_a, H, W, t[0]),
        t[0], n, stream));
    // bneck 2 (no SE): finishes bneck 1 on load, writes t1 final
    step(detail::launch_bneck<B2, B1>(
        io(y_a, r_a, sums_a, t[0].tiles, pb1, nullptr, pb2, c1, nullptr, nullptr, H, W, t[1]),
        t[1], n, stream));
    // bneck 3 (stride 2): t1 -> y_b (raw), sums_b
    step(detail::launch_bneck<B3, B2>(
        io(c1, nullptr, nullptr, 0, pb2, nullptr, pb3, y_b, nullptr, sums_b, H, W, t[2]),
        t[2], n, stream));
    // bneck 4: finishes bneck 3 -> y_a (raw), r_a (its input), sums_a
    step(detail::launch_bneck<B4, B3>(
        io(y_b, nullptr, sums_b, t[2].tiles, pb3, nullptr, pb4, y_a, r_a, sums_a, s.h[1], s.w[1],
           t[3]),
        t[3], n, stream));
    // bneck 5 (stride 2): finishes bneck 4 into t2 -> y_b (raw), sums_b
    step(detail::launch_bneck<B5, B4>(
        io(y_a, r_a, sums_a, t[3].tiles, pb4, c2, pb5, y_b, nullptr, sums_b, s.h[1], s.w[1],
           t[4]),
        t[4], n, stream));
    // bneck 6: finishes bneck 5 -> y_a (raw), r_a (its input), sums_a
    step(detail::launch_bneck<B6, B5>(
        io(y_b, nullptr, sums_b, t[4].tiles, pb5, nullptr, pb6, y_a, r_a, sums_a, s.h[2], s.w[2],
           t[5]),
        t[5], n, stream));
    // finish bneck 6 into t3
    cuda::LaunchConfig fin;
    fin.grid = dim3(static_cast<unsigned>(plan.finish_blocks), static_cast<unsigned>(n));
    fin.block = dim3(kPadnetThreads);
    step(cuda::launch(se_finish_kernel<B6, A>, fin, stream, y_a, r_a, sums_a, t[5].tiles, pb6,
                      px[2], c3));
    if (err != cuda::kSuccess) {
      return err;
    }
  }
  return cuda::kSuccess;
}

}  // namespace fastvision::padnet
