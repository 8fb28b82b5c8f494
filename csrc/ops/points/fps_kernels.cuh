// Device code and launch planning of farthest_point_sample, torch-free: compiled by nvcc (through
// fps_cuda.cu) and by g++ with the CUDA-on-CPU emulator (tests/emulated/drive_fps.cpp).
//
// One block per cloud. Each thread owns the points p = tid, tid + blockDim, ... of its cloud and
// keeps their running min-distance to the chosen set (in shared memory when the cloud fits, else
// in a global scratch buffer; the points themselves are copied to shared memory too when both
// fit). Only the owner thread ever touches a point's min-distance, so an update needs no barrier.
// Per step, every thread folds the new chosen point into its points and keeps its best (distance,
// index) by fps_better (largest distance, lowest index on ties); a warp __shfl_xor_sync reduction
// on both value and index plus one cross-warp step through (double-buffered) shared memory gives
// every thread the winner with one __syncthreads per step. Seeds are consumed exactly like the
// CPU's run_fps (fps_cpu.cpp), and the distances are the same point_dist expression, so the
// sequence and the min-distances equal the CPU's bit for bit.
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

// Folds chosen point j into the min-distances of this thread's points; returns the thread's
// best (min-distance, index) after the update.
template <typename T, int DS>
FV_DEVICE void fps_update(const T* pts, opmath_t<T>* mind, int64_t n, int dims, int64_t j,
                          opmath_t<T>& bd, int64_t& bi) {
  using A = opmath_t<T>;
  T creg[DS > 0 ? DS : 1];
  const T* c = pts + j * dims;
  if constexpr (DS > 0) {
#pragma unroll
    for (int d = 0; d < DS; ++d) {
      creg[d] = c[d];
    }
    c = creg;
  }
  bd = -fv_infinity<A>();
  bi = -1;
  for (int64_t p = threadIdx.x; p < n; p += blockDim.x) {
    // The CPU's ScanChooser: distance from the chosen point to p, then min(mind, d).
    const A d = point_dist<2, A, DS>(c, 1, pts + p * dims, 1, dims);
    const A m0 = mind[p];
    const A m = d < m0 ? d : m0;
    mind[p] = m;
    if (fps_better(m, p, bd, bi)) {
      bd = m;
      bi = p;
    }
  }
}

// The kernel's static shared memory (the double-buffered reduction slots), which counts against
// the same per-block limit as the dynamic part.
template <typename A>
constexpr int64_t static_smem_bytes() {
  return 2 * 32 * static_cast<int64_t>(sizeof(A) + sizeof(int64_t));
}

// SMEM: min-distances in dynamic shared memory (the first mind_bytes), else in scratch (B, P).
// cache_points (only with SMEM): the cloud's points are copied after them.
template <typename T, int DS, bool SMEM>
FV_GLOBAL void __launch_bounds__(kMaxThreads)
    fps_kernel(const T* __restrict__ points, const int64_t* __restrict__ lengths,
               const int64_t* __restrict__ seeds, int64_t P, int D, int64_t K, int64_t S,
               int64_t mind_bytes, bool cache_points, opmath_t<T>* __restrict__ scratch,
               int64_t* __restrict__ out_i, T* __restrict__ out_d) {
  using A = opmath_t<T>;
  FV_DYNAMIC_SHARED(unsigned char, smem);
  FV_SHARED(A[2][32], red_d);
  FV_SHARED(int64_t[2][32], red_i);

  const int64_t b = blockIdx.x;
  const int tid = threadIdx.x;
  const int dims = DS > 0 ? DS : D;
  const int64_t len = lengths[b];
  const int64_t n = len < 0 ? 0 : (len > P ? P : len);
  int64_t* oi = out_i + b * K;
  T* od = out_d + b * K;
  const T* cloud = points + b * P * dims;
  A* mind = SMEM ? reinterpret_cast<A*>(smem) : scratch + b * P;

  const T* pts = cloud;
  if (cache_points) {  // block-uniform
    T* sp = reinterpret_cast<T*>(smem + mind_bytes);
    for (int64_t e = tid; e < n * dims; e += blockDim.x) {
      sp[e] = cloud[e];
    }
    __syncthreads();
    pts = sp;
  }
  for (int64_t p = tid; p < n; p += blockDim.x) {
    mind[p] = fv_infinity<A>();
  }

  A bd = -fv_infinity<A>();
  int64_t bi = -1;
  int64_t count = 0;  // block-uniform
  if (n > 0) {
    // Seeds first, in order; -1 skips. (Out-of-range seeds are rejected by the Python wrapper;
    // here they are skipped so that nothing is read out of bounds.)
    const int64_t* sd = seeds + b * S;
    for (int64_t s = 0; s < S && count < K; ++s) {
      const int64_t j = sd[s];
      if (j < 0 || j >= n) {
        continue;
      }
      if (tid == 0) {
        oi[count] = j;
      }
      if (tid == j % blockDim.x) {  // the owner of j reads its min-distance before the update
        od[count] = static_cast<T>(mind[j]);
      }
      fps_update<T, DS>(pts, mind, n, dims, j, bd, bi);
      ++count;
    }
    if (count == 0 && K > 0) {  // no seed: start at index 0
      if (tid == 0) {
        oi[0] = 0;
        od[0] = static_cast<T>(fv_infinity<A>());
      }
      fps_update<T, DS>(pts, mind, n, dims, 0, bd, bi);
      count = 1;
    }
    const int64_t total = K < (n > count ? n : count) ? K : (n > count ? n : count);
    int buf = 0;
    for (; count < total; ++count) {
      block_argmax(bd, bi, red_d[buf], red_i[buf]);
      buf ^= 1;
      if (tid == 0) {
        oi[count] = bi;
        od[count] = static_cast<T>(bd);
      }
      // bi is a valid index for finite inputs; the clamp only guards memory against NaN.
      fps_update<T, DS>(pts, mind, n, dims, bi >= 0 && bi < n ? bi : 0, bd, bi);
    }
  }
  for (int64_t k = count + tid; k < K; k += blockDim.x) {  // K > the cloud: pad
    oi[k] = -1;
    od[k] = static_cast<T>(A(0));
  }
}

inline int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

enum class FpsPath { kSharedPointsAndDistances, kSharedDistances, kGlobalDistances };

struct FpsPlan {
  FpsPath path = FpsPath::kGlobalDistances;
  int threads = 0;
  int64_t mind_bytes = 0;  // min-distances in dynamic shared memory (0 on the global path)
  cuda::LaunchConfig config;
};

// elem_bytes: sizeof(T); acc_bytes: sizeof(opmath_t<T>); static_bytes: the kernel's static
// shared memory (static_smem_bytes<A>()). The global path needs a (B, P) scratch of opmath_t<T>.
inline FpsPlan plan_fps(int64_t B, int64_t P, int64_t D, int64_t elem_bytes, int64_t acc_bytes,
                        int64_t static_bytes, const cuda::DeviceLimits& limits) {
  FpsPlan plan;
  plan.threads = static_cast<int>(std::clamp<int64_t>(round_up(P, 32), 32, kMaxThreads));
  // Dynamic shared memory available beside the static reduction buffers (and 1 KiB spare).
  const int64_t budget =
      static_cast<int64_t>(limits.smem_per_block_optin) - static_bytes - 1024;
  const int64_t mind_bytes = round_up(P * acc_bytes, 16);
  const int64_t point_bytes = P * D * elem_bytes;
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
  plan.config.grid = dim3(static_cast<unsigned>(B));
  plan.config.block = dim3(static_cast<unsigned>(plan.threads));
  plan.config.smem = static_cast<std::size_t>(dynamic);
  // A real GPU refuses static + dynamic above the default limit unless the kernel opts in.
  plan.config.opt_in_smem =
      static_bytes + dynamic > static_cast<int64_t>(limits.smem_per_block_default);
  // Always the whole budget: the same attribute value from every launch of the kernel.
  plan.config.opt_in_limit = static_cast<std::size_t>(budget);
  return plan;
}

// Launches the plan. points (B, P, D), lengths (B,), seeds (B, S), out_i / out_d (B, K); scratch
// (B, P) of opmath_t<T> on the global path, else unused.
template <typename T, int DS>
cuda::Error launch_fps(const FpsPlan& plan, const T* points, const int64_t* lengths,
                       const int64_t* seeds, int64_t P, int D, int64_t K, int64_t S,
                       opmath_t<T>* scratch, int64_t* out_i, T* out_d, cuda::Stream stream) {
  switch (plan.path) {
    case FpsPath::kSharedPointsAndDistances:
      return cuda::launch(fps_kernel<T, DS, true>, plan.config, stream, points, lengths, seeds, P,
                          D, K, S, plan.mind_bytes, true, scratch, out_i, out_d);
    case FpsPath::kSharedDistances:
      return cuda::launch(fps_kernel<T, DS, true>, plan.config, stream, points, lengths, seeds, P,
                          D, K, S, plan.mind_bytes, false, scratch, out_i, out_d);
    case FpsPath::kGlobalDistances:
      break;
  }
  return cuda::launch(fps_kernel<T, DS, false>, plan.config, stream, points, lengths, seeds, P, D,
                      K, S, int64_t{0}, false, scratch, out_i, out_d);
}

}  // namespace fastvision::points::fps_device
