// CUDA kernel of farthest_point_sample: one block per cloud.
//
// Each thread owns the points p = tid, tid + blockDim, ... of its cloud and keeps their running
// min-distance to the chosen set (in shared memory when the cloud fits, else in a global scratch
// tensor; the points themselves are copied to shared memory too when both fit). Only the owner
// thread ever touches a point's min-distance, so an update needs no barrier. Per step, every
// thread folds the new chosen point into its points and keeps its best (distance, index) by
// fps_better (largest distance, lowest index on ties); a warp __shfl_xor_sync reduction on both
// value and index plus one cross-warp step through (double-buffered) shared memory gives every
// thread the winner with one __syncthreads per step. Seeds are consumed exactly like the CPU's
// run_fps (fps_cpu.cpp), and the distances are the same point_dist expression, so the sequence
// and the min-distances equal the CPU's bit for bit.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>

#include "fastvision/point_math.h"
#include "fps_common.h"
#include "points_common.h"

namespace fastvision::points {

namespace {

constexpr int kFpsMaxThreads = 1024;
constexpr int64_t kDefaultSmemBytes = 48 * 1024;  // above this, the kernel must opt in

template <typename A>
__device__ __forceinline__ void warp_argmax(A& d, int64_t& i) {
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
__device__ __forceinline__ void block_argmax(A& d, int64_t& i, A* sd, int64_t* si) {
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
__device__ __forceinline__ void fps_update(const T* pts, at::opmath_type<T>* mind, int64_t n,
                                           int dims, int64_t j, at::opmath_type<T>& bd,
                                           int64_t& bi) {
  using A = at::opmath_type<T>;
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

// SMEM: min-distances in dynamic shared memory (the first mind_bytes), else in scratch (B, P).
// cache_points (only with SMEM): the cloud's points are copied after them.
template <typename T, int DS, bool SMEM>
__global__ void __launch_bounds__(kFpsMaxThreads)
    fps_kernel(const T* __restrict__ points, const int64_t* __restrict__ lengths,
               const int64_t* __restrict__ seeds, int64_t P, int D, int64_t K, int64_t S,
               int64_t mind_bytes, bool cache_points, at::opmath_type<T>* __restrict__ scratch,
               int64_t* __restrict__ out_i, T* __restrict__ out_d) {
  using A = at::opmath_type<T>;
  extern __shared__ __align__(16) unsigned char fv_fps_smem[];
  __shared__ A red_d[2][32];
  __shared__ int64_t red_i[2][32];

  const int64_t b = blockIdx.x;
  const int tid = threadIdx.x;
  const int dims = DS > 0 ? DS : D;
  const int64_t len = lengths[b];
  const int64_t n = len < 0 ? 0 : (len > P ? P : len);
  int64_t* oi = out_i + b * K;
  T* od = out_d + b * K;
  const T* cloud = points + b * P * dims;
  A* mind = SMEM ? reinterpret_cast<A*>(fv_fps_smem) : scratch + b * P;

  const T* pts = cloud;
  if (cache_points) {  // block-uniform
    T* sp = reinterpret_cast<T*>(fv_fps_smem + mind_bytes);
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

int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

template <typename T, int DS, bool SMEM>
void launch_fps(const at::Tensor& pts, const at::Tensor& len, const at::Tensor& seeds, int64_t K,
                int threads, size_t smem, int64_t smem_budget, int64_t mind_bytes,
                bool cache_points, at::opmath_type<T>* scratch, at::Tensor& out_i,
                at::Tensor& out_d, cudaStream_t stream) {
  auto kernel = fps_kernel<T, DS, SMEM>;
  if (static_cast<int64_t>(smem) > kDefaultSmemBytes) {
    // Opt in to the device's whole budget (the same value from every caller, so concurrent
    // launches with different sizes cannot undercut each other).
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(smem_budget)));
  }
  kernel<<<static_cast<unsigned>(pts.size(0)), threads, smem, stream>>>(
      pts.const_data_ptr<T>(), len.const_data_ptr<int64_t>(), seeds.const_data_ptr<int64_t>(),
      pts.size(1), static_cast<int>(pts.size(2)), K, seeds.size(1), mind_bytes, cache_points,
      scratch, out_i.mutable_data_ptr<int64_t>(), out_d.mutable_data_ptr<T>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> farthest_point_sample_cuda(
    const at::Tensor& points, const std::optional<at::Tensor>& lengths, int64_t K,
    const at::Tensor& start_idx, int64_t method) {
  constexpr const char* op = "farthest_point_sample";
  check_fps_args(points, K, start_idx, method, op);  // `method` selects a CPU algorithm only
  const c10::cuda::CUDAGuard guard(points.device());
  assert_coordinates_async(points, op, "points");
  // Length and seed values are checked asynchronously by the Python wrapper.
  const at::Tensor len = lengths_or_full(lengths, points, op, "lengths");
  const at::Tensor pts = points.contiguous();
  const at::Tensor seeds = start_idx.contiguous();
  const int64_t B = pts.size(0), P = pts.size(1), D = pts.size(2);
  at::Tensor out_i = at::empty({B, K}, pts.options().dtype(at::kLong));
  at::Tensor out_d = at::empty({B, K}, pts.options());
  if (B == 0 || K == 0) {
    return {out_i, out_d};
  }
  TORCH_CHECK(D <= INT_MAX && B <= INT_MAX, op, ": B and D must fit in 32 bits, got B = ", B,
              ", D = ", D);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const auto* props = at::cuda::getCurrentDeviceProperties();
  const int threads =
      static_cast<int>(std::clamp<int64_t>(round_up(P, 32), 32, kFpsMaxThreads));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pts.scalar_type(),
                                  "farthest_point_sample_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    // Dynamic shared memory available beside the kernel's static reduction buffers.
    const int64_t static_bytes = 2 * 32 * static_cast<int64_t>(sizeof(A) + sizeof(int64_t));
    const int64_t budget =
        static_cast<int64_t>(props->sharedMemPerBlockOptin) - static_bytes - 1024;
    const int64_t mind_bytes = round_up(P * static_cast<int64_t>(sizeof(A)), 16);
    const int64_t point_bytes = P * D * static_cast<int64_t>(sizeof(scalar_t));
    at::Tensor scratch;
    auto run = [&](auto ds_c) {
      constexpr int DS = decltype(ds_c)::value;
      if (mind_bytes + point_bytes <= budget) {
        launch_fps<scalar_t, DS, true>(pts, len, seeds, K, threads,
                                       static_cast<size_t>(mind_bytes + point_bytes), budget,
                                       mind_bytes, true, nullptr, out_i, out_d, stream);
      } else if (mind_bytes <= budget) {
        launch_fps<scalar_t, DS, true>(pts, len, seeds, K, threads,
                                       static_cast<size_t>(mind_bytes), budget, mind_bytes,
                                       false, nullptr, out_i, out_d, stream);
      } else {
        scratch = at::empty({B, P}, pts.options().dtype(c10::CppTypeToScalarType<A>::value));
        launch_fps<scalar_t, DS, false>(pts, len, seeds, K, threads, 0, budget, 0, false,
                                        scratch.mutable_data_ptr<A>(), out_i, out_d, stream);
      }
    };
    if (D == 3) {
      run(std::integral_constant<int, 3>{});
    } else {
      run(std::integral_constant<int, 0>{});
    }
  });
  return {out_i, out_d};
}

TORCH_LIBRARY_IMPL(fastvision, CUDA, m) {
  m.impl("farthest_point_sample", &farthest_point_sample_cuda);
}

}  // namespace fastvision::points
