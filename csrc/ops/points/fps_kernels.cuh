// Device code and launch planning of farthest_point_sample, torch-free: compiled by nvcc (through
// fps_cuda.cu) and by g++ with the CUDA-on-CPU emulator (tests/emulated/drive_fps.cpp).
//
// A cloud is split into G contiguous chunks, one block each: G = 1 (one block per cloud, as
// PyTorch3D and torch_cluster) for many or small clouds, G > 1 (the multi-block path) for few
// large clouds, so that a single cloud of 10^5..10^6 points uses every SM instead of one. Each
// thread owns the points lo + tid, lo + tid + blockDim, ... of its block's chunk [lo, hi) and
// keeps their running min-distance to the chosen set (in shared memory when the chunk fits, else
// in a global scratch buffer; the chunk's points are copied to shared memory too when both fit).
// Only the owner thread ever touches a point's min-distance, so an update needs no barrier.
// Per step, every thread folds the new chosen point into its points and keeps its best
// (distance, index) by fps_better (largest distance, lowest index on ties); a warp
// __shfl_xor_sync reduction on both value and index plus one cross-warp step through
// (double-buffered) shared memory gives every thread the block's winner with one __syncthreads.
// Multi-block: the kernel is launched cooperatively (every block co-resident); each block
// publishes its winner (and, for D = 3, its coordinates) in a global slot, one grid sync
// (cooperative_groups::this_grid().sync()) per step, then warp 0 of every block reduces the
// cloud's G slots by fps_better and broadcasts the winner through shared memory. fps_better is a
// total order, so the grid's winner is the CPU's (largest min-distance, lowest index) whatever
// the split. Seeds are consumed exactly like the CPU's run_fps (fps_cpu.cpp), and the distances
// are the same point_dist expression, so the sequence and the min-distances equal the CPU's bit
// for bit on every path.
#pragma once

#include <algorithm>
#include <cstdint>

#include "fastvision/cuda_compat.h"
#include "fastvision/point_math.h"

namespace fastvision::points::fps_device {

constexpr int kMaxThreads = 1024;

template <typename A>
FV_DEVICE void warp_argmax(A& d, int64_t& i) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const A od = __shfl_xor_sync(0xffffffffu, d, off);
    const int64_t oi =
        static_cast<int64_t>(__shfl_xor_sync(0xffffffffu, static_cast<long long>(i), off));
    if (fps_better(od, oi, d, i)) {
      d = od;
      i = oi;
    }
  }
}

// Every thread of the block ends with the block's best (d, i). sd/si: 32 shared slots, which the
// caller alternates between two buffers from one call to the next (one barrier per call).
template <typename A>
FV_DEVICE void block_argmax(A& d, int64_t& i, A* sd, int64_t* si) {
  warp_argmax(d, i);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sd[warp] = d;
    si[warp] = i;
  }
  __syncthreads();
  const int warps = blockDim.x >> 5;
  d = lane < warps ? sd[lane] : -fv_infinity<A>();
  i = lane < warps ? si[lane] : int64_t{-1};
  warp_argmax(d, i);
}

// Folds the chosen point c (its coordinates) into the min-distances of this thread's points of
// the chunk (pts and mind: the chunk's points and min-distances, point lo + q at q); returns the
// thread's best (min-distance, index) after the update.
template <typename T, int DS>
FV_DEVICE void fps_update(const T* c, const T* pts, opmath_t<T>* mind, int64_t lo, int64_t own,
                          int dims, opmath_t<T>& bd, int64_t& bi) {
  using A = opmath_t<T>;
  T creg[DS > 0 ? DS : 1];
  if constexpr (DS > 0) {
#pragma unroll
    for (int d = 0; d < DS; ++d) {
      creg[d] = c[d];
    }
    c = creg;
  }
  bd = -fv_infinity<A>();
  bi = -1;
  for (int64_t q = threadIdx.x; q < own; q += blockDim.x) {
    // The CPU's ScanChooser: distance from the chosen point to p, then min(mind, d).
    const A d = point_dist<2, A, DS>(c, 1, pts + q * dims, 1, dims);
    const A m0 = mind[q];
    const A m = d < m0 ? d : m0;
    mind[q] = m;
    if (fps_better(m, lo + q, bd, bi)) {
      bd = m;
      bi = lo + q;
    }
  }
}

// The kernel's static shared memory (the double-buffered reduction slots and the multi-block
// winner broadcast), which counts against the same per-block limit as the dynamic part; every
// declaration counted rounded up to 16 bytes, as the emulator allocates it.
template <typename T>
constexpr int64_t static_smem_bytes() {
  using A = opmath_t<T>;
  auto r16 = [](int64_t n) { return (n + 15) / 16 * 16; };
  return r16(2 * 32 * sizeof(A)) + r16(2 * 32 * sizeof(int64_t)) + r16(sizeof(A)) +
         r16(sizeof(int64_t)) + r16(3 * sizeof(T));
}

// Global slots through which the blocks of a cloud exchange their winners (multi-block path):
// d, i: (2, gridDim.x), c: (2, gridDim.x, 3) (D = 3 only), double-buffered by step parity. Not
// const or __restrict__: other blocks write them during the kernel (the grid sync orders the
// accesses, and its memory fence makes the writes visible to the plain loads after it).
template <typename T>
struct FpsSlots {
  opmath_t<T>* d = nullptr;
  int64_t* i = nullptr;
  T* c = nullptr;
};

// Grid: B * G blocks, block b * G + g owns points [g * chunk, (g + 1) * chunk) of cloud b.
// SMEM: min-distances in dynamic shared memory (the first mind_bytes), else in scratch (B, P).
// cache_points (only with SMEM): the chunk's points are copied after them. MULTI: G > 1,
// launched cooperatively, one grid sync per step.
template <typename T, int DS, bool SMEM, bool MULTI>
FV_GLOBAL void __launch_bounds__(kMaxThreads)
    fps_kernel(const T* __restrict__ points, const int64_t* __restrict__ lengths,
               const int64_t* __restrict__ seeds, int64_t B, int64_t P, int D, int64_t K,
               int64_t S, int64_t G, int64_t chunk, int64_t mind_bytes, bool cache_points,
               opmath_t<T>* __restrict__ scratch, FpsSlots<T> slots, int64_t* __restrict__ out_i,
               T* __restrict__ out_d) {
  using A = opmath_t<T>;
  FV_DYNAMIC_SHARED(unsigned char, smem);
  FV_SHARED(A[2][32], red_d);
  FV_SHARED(int64_t[2][32], red_i);

  const int64_t b = blockIdx.x / G, g = blockIdx.x % G;
  const int tid = threadIdx.x;
  const int dims = DS > 0 ? DS : D;
  const int64_t len = lengths[b];
  const int64_t n = len < 0 ? 0 : (len > P ? P : len);
  const int64_t lo = g * chunk;
  const int64_t own = n - lo < 0 ? 0 : (n - lo < chunk ? n - lo : chunk);  // points of the chunk
  int64_t* oi = out_i + b * K;
  T* od = out_d + b * K;
  const T* cloud = points + b * P * dims;
  A* mind = SMEM ? reinterpret_cast<A*>(smem) : scratch + b * P + lo;
  const bool leader = g == 0 && tid == 0;  // writes the cloud's output

  const T* pts = cloud + lo * dims;
  if (cache_points) {  // block-uniform
    T* sp = reinterpret_cast<T*>(smem + mind_bytes);
    for (int64_t e = tid; e < own * dims; e += blockDim.x) {
      sp[e] = pts[e];
    }
    __syncthreads();
    pts = sp;
  }
  for (int64_t q = tid; q < own; q += blockDim.x) {
    mind[q] = fv_infinity<A>();
  }
  // Point j's coordinates: from the chunk (shared memory when cached) or from the cloud.
  auto coords = [&](int64_t j) { return j >= lo && j - lo < own ? pts + (j - lo) * dims : cloud + j * dims; };

  A bd = -fv_infinity<A>();
  int64_t bi = -1;
  int64_t count = 0, total = 0;  // block-uniform (the same in every block of the cloud)
  if (n > 0) {
    // Seeds first, in order; -1 skips. (Out-of-range seeds are rejected by the Python wrapper;
    // here they are skipped so that nothing is read out of bounds.)
    const int64_t* sd = seeds + b * S;
    for (int64_t s = 0; s < S && count < K; ++s) {
      const int64_t j = sd[s];
      if (j < 0 || j >= n) {
        continue;
      }
      if (leader) {
        oi[count] = j;
      }
      // The owner of j reads its min-distance before the update.
      if (j >= lo && j - lo < own && tid == (j - lo) % blockDim.x) {
        od[count] = static_cast<T>(mind[j - lo]);
      }
      fps_update<T, DS>(coords(j), pts, mind, lo, own, dims, bd, bi);
      ++count;
    }
    if (count == 0 && K > 0) {  // no seed: start at index 0
      if (leader) {
        oi[0] = 0;
        od[0] = static_cast<T>(fv_infinity<A>());
      }
      fps_update<T, DS>(coords(0), pts, mind, lo, own, dims, bd, bi);
      count = 1;
    }
    total = K < (n > count ? n : count) ? K : (n > count ? n : count);
  }
  int buf = 0;
  if constexpr (!MULTI) {
    for (; count < total; ++count) {
      block_argmax(bd, bi, red_d[buf], red_i[buf]);
      buf ^= 1;
      if (tid == 0) {
        oi[count] = bi;
        od[count] = static_cast<T>(bd);
      }
      // bi is a valid index for finite inputs; the clamp only guards memory against NaN.
      fps_update<T, DS>(coords(bi >= 0 && bi < n ? bi : 0), pts, mind, lo, own, dims, bd, bi);
    }
  } else {
    // Every block of the grid must reach every grid sync: the loop runs the most steps any cloud
    // needs (min(K, n) - 1 after the first point, from every cloud's length), and the blocks of
    // a cloud that is done (or empty) only take part in the syncs.
    int64_t steps = 0;
    for (int64_t c = 0; c < B; ++c) {
      const int64_t lc = lengths[c];
      const int64_t nc = lc < 0 ? 0 : (lc > P ? P : lc);
      const int64_t need = (K < nc ? K : nc) - 1;
      steps = need > steps ? need : steps;
    }
    FV_SHARED(A, win_d);  // the cloud's winner, broadcast to the block
    FV_SHARED(int64_t, win_i);
    FV_SHARED(T[3], win_c);
    const int64_t G_all = gridDim.x;
    const int lane = tid & 31;
    for (int64_t step = 0; step < steps; ++step) {
      const bool active = count < total;  // block-uniform
      const int parity = static_cast<int>(step & 1);
      if (active) {
        block_argmax(bd, bi, red_d[buf], red_i[buf]);
        buf ^= 1;
        if (tid == 0) {
          const int64_t slot = parity * G_all + blockIdx.x;
          slots.d[slot] = bd;
          slots.i[slot] = bi;
          if constexpr (DS > 0) {
            if (bi >= 0) {  // the block's winner is one of its own points
              const T* c = pts + (bi - lo) * DS;
#pragma unroll
              for (int d = 0; d < DS; ++d) {
                slots.c[slot * DS + d] = c[d];
              }
            }
          }
        }
      }
      // Orders the slot writes of this step before every block's reads below; with two slot
      // buffers, a block cannot overwrite a buffer that another block still reads (it would
      // have to pass the next grid sync first).
      cooperative_groups::this_grid().sync();
      if (!active) {
        continue;
      }
      if (tid < 32) {  // warp 0 reduces the cloud's G slots; each lane keeps its best slot
        A d = -fv_infinity<A>();
        int64_t i = -1, from = -1;
        for (int64_t s = lane; s < G; s += 32) {
          const int64_t slot = parity * G_all + b * G + s;
          const A sd = slots.d[slot];
          const int64_t si = slots.i[slot];
          if (fps_better(sd, si, d, i)) {
            d = sd;
            i = si;
            from = slot;
          }
        }
        const int64_t mine = i;
        warp_argmax(d, i);
        // The lane whose own best is the winner supplies its coordinates (indices are distinct
        // across the chunks; with no winner, i = -1, the clamp below takes point 0).
        const unsigned holder = __ballot_sync(0xffffffffu, i >= 0 && mine == i);
        if constexpr (DS > 0) {
          if (holder == 0u && lane == 0) {
#pragma unroll
            for (int k = 0; k < DS; ++k) {
              win_c[k] = cloud[k];
            }
          } else if (holder != 0u && lane == __ffs(static_cast<int>(holder)) - 1) {
#pragma unroll
            for (int k = 0; k < DS; ++k) {
              win_c[k] = slots.c[from * DS + k];
            }
          }
        }
        if (lane == 0) {
          win_d = d;
          win_i = i;
        }
      }
      __syncthreads();
      bd = win_d;
      bi = win_i;
      if (leader) {
        oi[count] = bi;
        od[count] = static_cast<T>(bd);
      }
      const T* c;
      if constexpr (DS > 0) {
        c = win_c;
      } else {
        c = cloud + (bi >= 0 && bi < n ? bi : 0) * dims;
      }
      fps_update<T, DS>(c, pts, mind, lo, own, dims, bd, bi);
      ++count;
    }
  }
  if (g == 0) {
    for (int64_t k = count + tid; k < K; k += blockDim.x) {  // K > the cloud: pad
      oi[k] = -1;
      od[k] = static_cast<T>(A(0));
    }
  }
}

inline int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

enum class FpsPath { kSharedPointsAndDistances, kSharedDistances, kGlobalDistances };

// Planning parameters. The defaults are the production choice (see
// bench/analysis/farthest_point_sample.md); the emulated tests lower them to force the
// multi-block path and every shared-memory path at sizes the emulator can run.
struct FpsTuning {
  // The multi-block path needs at least this many points per cloud (below it the grid sync and
  // the cross-block reduction cost more than the split saves) ...
  int64_t multi_block_min_points = 16384;
  // ... and gives every block at least this many points.
  int64_t min_points_per_block = 1024;
  // Dynamic shared memory the plan may use; < 0: the device's opt-in budget.
  int64_t max_dynamic_smem = -1;
};

struct FpsPlan {
  FpsPath path = FpsPath::kGlobalDistances;
  int threads = 0;
  int64_t blocks_per_cloud = 1;  // G; > 1: the multi-block (cooperative) path
  int64_t chunk = 0;             // points per block
  int64_t mind_bytes = 0;        // min-distances in dynamic shared memory (0 on the global path)
  cuda::LaunchConfig config;
  bool multi_block() const { return blocks_per_cloud > 1; }
};

// elem_bytes: sizeof(T); acc_bytes: sizeof(opmath_t<T>); static_bytes: the kernel's static
// shared memory (static_smem_bytes<T>()). The global path needs a (B, P) scratch of opmath_t<T>;
// the multi-block path needs FpsSlots for B * G blocks.
inline FpsPlan plan_fps(int64_t B, int64_t P, int64_t D, int64_t elem_bytes, int64_t acc_bytes,
                        int64_t static_bytes, const cuda::DeviceLimits& limits,
                        const FpsTuning& tuning = {}) {
  FpsPlan plan;
  // Few large clouds: split each over G blocks, all co-resident (at most one block of up to
  // 1024 threads per SM, which __launch_bounds__(1024) guarantees fits the registers).
  const int64_t blocks_per_cloud_max =
      limits.cooperative_launch && B > 0 ? limits.sm_count / B : 1;
  int64_t G = 1;
  if (P >= tuning.multi_block_min_points && blocks_per_cloud_max >= 2) {
    G = std::min(blocks_per_cloud_max,
                 (P + tuning.min_points_per_block - 1) / std::max<int64_t>(tuning.min_points_per_block, 1));
  }
  plan.chunk = G > 1 ? (P + G - 1) / G : P;
  plan.blocks_per_cloud = G > 1 ? (P + plan.chunk - 1) / plan.chunk : 1;  // no empty block
  const int64_t chunk = plan.chunk;
  plan.threads = static_cast<int>(std::clamp<int64_t>(round_up(chunk, 32), 32, kMaxThreads));
  // Dynamic shared memory available beside the static buffers (and 1 KiB spare).
  const int64_t device_budget =
      static_cast<int64_t>(limits.smem_per_block_optin) - static_bytes - 1024;
  const int64_t budget = tuning.max_dynamic_smem >= 0
                             ? std::min(device_budget, tuning.max_dynamic_smem)
                             : device_budget;
  const int64_t mind_bytes = round_up(chunk * acc_bytes, 16);
  const int64_t point_bytes = chunk * D * elem_bytes;
  int64_t dynamic = 0;
  if (mind_bytes + point_bytes <= budget) {
    plan.path = FpsPath::kSharedPointsAndDistances;
    dynamic = mind_bytes + point_bytes;
    plan.mind_bytes = mind_bytes;
  } else if (mind_bytes <= budget) {
    plan.path = FpsPath::kSharedDistances;
    dynamic = mind_bytes;
    plan.mind_bytes = mind_bytes;
  }
  plan.config.grid = dim3(static_cast<unsigned>(B * plan.blocks_per_cloud));
  plan.config.block = dim3(static_cast<unsigned>(plan.threads));
  plan.config.smem = static_cast<std::size_t>(dynamic);
  plan.config.cooperative = plan.multi_block();
  // A real GPU refuses static + dynamic above the default limit unless the kernel opts in.
  plan.config.opt_in_smem =
      static_bytes + dynamic > static_cast<int64_t>(limits.smem_per_block_default);
  // Always the whole budget: the same attribute value from every launch of the kernel.
  plan.config.opt_in_limit = static_cast<std::size_t>(device_budget);
  return plan;
}

// Launches the plan. points (B, P, D), lengths (B,), seeds (B, S), out_i / out_d (B, K); scratch
// (B, P) of opmath_t<T> on the global path, else unused; slots for the multi-block path.
template <typename T, int DS>
cuda::Error launch_fps(const FpsPlan& plan, const T* points, const int64_t* lengths,
                       const int64_t* seeds, int64_t B, int64_t P, int D, int64_t K, int64_t S,
                       opmath_t<T>* scratch, FpsSlots<T> slots, int64_t* out_i, T* out_d,
                       cuda::Stream stream) {
  const bool smem = plan.path != FpsPath::kGlobalDistances;
  const bool cache = plan.path == FpsPath::kSharedPointsAndDistances;
  const int64_t G = plan.blocks_per_cloud;
  auto go = [&](auto kernel) {
    return cuda::launch(kernel, plan.config, stream, points, lengths, seeds, B, P, D, K, S, G,
                        plan.chunk, plan.mind_bytes, cache, scratch, slots, out_i, out_d);
  };
  if (plan.multi_block()) {
    return smem ? go(fps_kernel<T, DS, true, true>) : go(fps_kernel<T, DS, false, true>);
  }
  return smem ? go(fps_kernel<T, DS, true, false>) : go(fps_kernel<T, DS, false, false>);
}

}  // namespace fastvision::points::fps_device
