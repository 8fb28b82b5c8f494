// CUDA kernels of knn_points and its backward.
//
// Forward: one thread per query. The block's threads stage tiles of the cloud's p2 points in
// shared memory and every thread scans them in ascending index order, keeping its top-K sorted by
// (distance, index): in registers for K <= 32 (compile-time capacity 1, 2, 4, 8, 16 or 32, the
// smallest >= K; only the first K are written), in the output rows in global memory for larger K.
// A candidate enters only if its distance is strictly below the current K-th one, exactly like
// the CPU scan, so ties keep the lowest index and results equal the CPU's bit for bit (the
// distance is the same point_dist expression, rounded the same way, see point_math.h).
// When there are few queries, the reference range is split across blocks (grid z); each split
// writes a sorted partial top-K to a scratch tensor and a merge kernel combines them
// lexicographically by (distance, index).
//
// Backward: one thread per query; grad_p1 accumulated in registers in neighbour order (the CPU
// order), grad_p2 scattered with atomicAdd (into a float32 buffer for half/bfloat16 inputs).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <limits>
#include <type_traits>

#include "fastvision/point_math.h"
#include "knn_common.h"
#include "knn_cuda.cuh"
#include "points_common.h"

namespace fastvision::points {

namespace {

constexpr int kThreads = 256;        // queries per block for K <= 8
constexpr int kThreadsLargeK = 128;  // K > 8 (larger register top-K, or top-K in global memory)
constexpr int kMergeThreads = 128;
constexpr int kBackwardThreads = 256;
constexpr int kMaxRegisterK = 32;
constexpr int64_t kTileBytes = 16 * 1024;          // generic-D tile of p2 points
constexpr int64_t kMaxTilePointBytes = 32 * 1024;  // larger points are read from global memory
constexpr int64_t kMinSplitLen = 256;              // fewest reference points per split
constexpr int64_t kMaxPartialEntries = int64_t{1} << 22;  // scratch of the split path (entries)

template <int V>
using int_c = std::integral_constant<int, V>;

__device__ __forceinline__ int64_t clamped_length(const int64_t* __restrict__ lengths, int64_t b,
                                                  int64_t P) {
  const int64_t n = lengths[b];
  return n < 0 ? 0 : (n > P ? P : n);
}

template <typename A>
__device__ __forceinline__ void pad_row(A* d, int64_t* i, int K, A value) {
  for (int k = 0; k < K; ++k) {
    d[k] = value;
    i[k] = -1;
  }
}

// Ascending top-K in registers, compile-time capacity KC (every index static after unrolling).
template <typename A, int KC>
struct RegisterTopK {
  A d[KC];
  int64_t i[KC];

  __device__ __forceinline__ void init(A*, int64_t*, int, bool) {
#pragma unroll
    for (int k = 0; k < KC; ++k) {
      d[k] = fv_infinity<A>();
      i[k] = -1;
    }
  }
  __device__ __forceinline__ A kth_dist() const { return d[KC - 1]; }
  __device__ __forceinline__ int64_t kth_idx() const { return i[KC - 1]; }
  __device__ __forceinline__ void insert(A cand, int64_t j) {
    topk_insert_static<KC>(d, i, cand, j);
  }
  // The first K (<= KC) entries.
  __device__ __forceinline__ void store(A* od, int64_t* oi, int K) const {
#pragma unroll
    for (int k = 0; k < KC; ++k) {
      if (k < K) {
        od[k] = d[k];
        oi[k] = i[k];
      }
    }
  }
};

// Ascending top-K kept in place in a row of the output (or scratch) in global memory.
template <typename A>
struct GlobalTopK {
  A* d = nullptr;
  int64_t* i = nullptr;
  int K = 0;
  A kth_d = fv_infinity<A>();
  int64_t kth_i = -1;

  __device__ __forceinline__ void init(A* od, int64_t* oi, int K_, bool active) {
    d = od;
    i = oi;
    K = K_;
    if (active) {
      pad_row(d, i, K, fv_infinity<A>());
    }
  }
  __device__ __forceinline__ A kth_dist() const { return kth_d; }
  __device__ __forceinline__ int64_t kth_idx() const { return kth_i; }
  __device__ __forceinline__ void insert(A cand, int64_t j) {
    topk_insert_dynamic(d, i, K, cand, j);
    kth_d = d[K - 1];
    kth_i = i[K - 1];
  }
  __device__ __forceinline__ void store(A*, int64_t*, int) const {}
};

template <typename A, int KC>
using TopKList = std::conditional_t<(KC > 0), RegisterTopK<A, (KC > 0 ? KC : 1)>, GlobalTopK<A>>;

// Grid: x = B * qblocks (cloud, block of queries), z = split of the reference range. Output rows
// at ((split * B + b) * P1 + i) * K of out_d/out_i (the final output when there is one split).
template <typename T, int NORM, int DS, int KC>
__global__ void __launch_bounds__(kThreads)
    knn_kernel(const T* __restrict__ p1, const T* __restrict__ p2,
               const int64_t* __restrict__ len1, const int64_t* __restrict__ len2, int64_t B,
               int64_t P1, int64_t P2, int D, int K, int64_t qblocks, int64_t split_len,
               int tile_pts, at::opmath_type<T> pad, at::opmath_type<T>* __restrict__ out_d,
               int64_t* __restrict__ out_i) {
  using A = at::opmath_type<T>;
  extern __shared__ __align__(16) unsigned char fv_knn_smem[];
  T* tile = reinterpret_cast<T*>(fv_knn_smem);

  const int64_t b = blockIdx.x / qblocks;
  const int64_t q0 = (blockIdx.x % qblocks) * static_cast<int64_t>(blockDim.x);
  const int64_t i = q0 + threadIdx.x;
  const int64_t s = blockIdx.z;
  const bool split = gridDim.z > 1;
  const int64_t o = ((s * B + b) * P1 + i) * K;
  const int64_t n1 = clamped_length(len1, b, P1);
  if (q0 >= n1) {  // the whole block is past the cloud's queries (block-uniform exit)
    if (!split && i < P1) {
      pad_row(out_d + o, out_i + o, K, pad);
    }
    return;
  }
  const bool valid = i < n1;
  const int dims = DS > 0 ? DS : D;
  const int64_t n2 = clamped_length(len2, b, P2);
  const int64_t r0 = s * split_len;
  const int64_t r1 = r0 + split_len < n2 ? r0 + split_len : n2;

  // The query: in registers for a compile-time D, read in place otherwise. Threads past the
  // queries read query q0 (in bounds) and discard the result.
  const T* qg = p1 + (b * P1 + (valid ? i : q0)) * dims;
  T qreg[DS > 0 ? DS : 1];
  const T* q = qg;
  if constexpr (DS > 0) {
#pragma unroll
    for (int d = 0; d < DS; ++d) {
      qreg[d] = qg[d];
    }
    q = qreg;
  }

  TopKList<A, KC> list;
  list.init(out_d + o, out_i + o, K, valid);

  const bool use_tile = DS > 0 || tile_pts > 0;
  const int64_t step = use_tile ? tile_pts : (int64_t{1} << 20);
  for (int64_t t0 = r0; t0 < r1; t0 += step) {  // block-uniform trip count
    const int cnt = static_cast<int>(r1 - t0 < step ? r1 - t0 : step);
    const T* src = p2 + (b * P2 + t0) * dims;
    const T* base = src;
    if (use_tile) {
      __syncthreads();  // the previous tile is no longer read
      const int elems = cnt * dims;
      for (int e = threadIdx.x; e < elems; e += blockDim.x) {
        tile[e] = src[e];
      }
      __syncthreads();
      base = tile;
    }
    if (valid) {
      for (int j = 0; j < cnt; ++j) {
        const A dist = point_dist<NORM, A, DS>(q, 1, base + static_cast<int64_t>(j) * dims, 1,
                                               dims);
        // Strict `<`: candidates arrive in ascending index, so equal distances keep the lower
        // index, and an infinite distance never enters (as on the CPU).
        if (dist < list.kth_dist()) {
          list.insert(dist, t0 + j);
        }
      }
    }
  }
  if (valid) {
    list.store(out_d + o, out_i + o, K);
  } else if (!split && i < P1) {
    pad_row(out_d + o, out_i + o, K, pad);
  }
}

// Merges the sorted partial top-K lists of the splits (S, B, P1, K) into (B, P1, K).
template <typename A, int KC>
__global__ void __launch_bounds__(kMergeThreads)
    knn_merge_kernel(const A* __restrict__ part_d, const int64_t* __restrict__ part_i,
                     const int64_t* __restrict__ len1, int64_t B, int64_t P1, int K, int64_t S,
                     A pad, A* __restrict__ out_d, int64_t* __restrict__ out_i) {
  const int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (q >= B * P1) {
    return;
  }
  const int64_t b = q / P1, i = q % P1;
  const int64_t o = q * K;
  if (i >= clamped_length(len1, b, P1)) {
    pad_row(out_d + o, out_i + o, K, pad);
    return;
  }
  TopKList<A, KC> list;
  list.init(out_d + o, out_i + o, K, true);
  for (int64_t s = 0; s < S; ++s) {
    const A* sd = part_d + (s * B * P1 + q) * K;
    const int64_t* si = part_i + (s * B * P1 + q) * K;
    for (int k = 0; k < K; ++k) {
      const A c = sd[k];
      const int64_t j = si[k];
      // Each partial list is sorted, and empty slots (+inf, -1) sort last.
      if (!neighbour_less(c, j, list.kth_dist(), list.kth_idx())) {
        break;
      }
      list.insert(c, j);
    }
  }
  list.store(out_d + o, out_i + o, K);
}

template <typename T, int NORM, int DS>
__global__ void __launch_bounds__(kBackwardThreads)
    knn_backward_kernel(const T* __restrict__ p1, const T* __restrict__ p2,
                        const int64_t* __restrict__ idx,
                        const at::opmath_type<T>* __restrict__ grad, int64_t BP1, int64_t P1,
                        int64_t P2, int D, int64_t K, T* __restrict__ g1,
                        at::opmath_type<T>* __restrict__ g2) {
  using A = at::opmath_type<T>;
  const int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (q >= BP1) {
    return;
  }
  const int dims = DS > 0 ? DS : D;
  const int64_t b = q / P1;
  const T* a = p1 + q * dims;
  const int64_t* iq = idx + q * K;
  const A* gq = grad + q * K;
  const T* cloud = p2 + b * P2 * dims;
  A* gcloud = g2 + b * P2 * dims;
  // Same expression and order as the CPU: grad_p1[d] = ((0 + v_0) + v_1) + ..., v_k =
  // grad[k] * dist_term_grad(a[d] - p2[idx[k]][d]); grad_p2[idx[k]][d] -= v_k.
  if constexpr (DS > 0) {
    A av[DS], acc[DS];
#pragma unroll
    for (int d = 0; d < DS; ++d) {
      av[d] = static_cast<A>(a[d]);
      acc[d] = A(0);
    }
    for (int64_t k = 0; k < K; ++k) {
      const int64_t j = iq[k];
      if (j < 0 || j >= P2) {
        continue;
      }
      const A gk = gq[k];
#pragma unroll
      for (int d = 0; d < DS; ++d) {
        const A v = fv_mul(gk, dist_term_grad<NORM>(av[d] - static_cast<A>(cloud[j * DS + d])));
        acc[d] = fv_add(acc[d], v);
        atomicAdd(gcloud + j * DS + d, -v);
      }
    }
#pragma unroll
    for (int d = 0; d < DS; ++d) {
      g1[q * DS + d] = static_cast<T>(acc[d]);
    }
  } else {
    for (int d = 0; d < dims; ++d) {
      const A ad = static_cast<A>(a[d]);
      A acc = A(0);
      for (int64_t k = 0; k < K; ++k) {
        const int64_t j = iq[k];
        if (j < 0 || j >= P2) {
          continue;
        }
        const A v = fv_mul(gq[k], dist_term_grad<NORM>(ad - static_cast<A>(cloud[j * dims + d])));
        acc = fv_add(acc, v);
        atomicAdd(gcloud + j * dims + d, -v);
      }
      g1[q * dims + d] = static_cast<T>(acc);
    }
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Smallest register capacity >= K, or 0 for the global-memory top-K.
int register_capacity(int64_t K) {
  for (int c = 1; c <= kMaxRegisterK; c *= 2) {
    if (K <= c) {
      return c;
    }
  }
  return 0;
}

template <typename F>
void dispatch_capacity(int kc, F&& f) {
  switch (kc) {
    case 1: f(int_c<1>{}); break;
    case 2: f(int_c<2>{}); break;
    case 4: f(int_c<4>{}); break;
    case 8: f(int_c<8>{}); break;
    case 16: f(int_c<16>{}); break;
    case 32: f(int_c<32>{}); break;
    default: f(int_c<0>{}); break;
  }
}

template <typename F>
void dispatch_norm_dim(int64_t norm, int64_t D, F&& f) {
  if (norm == 2) {
    if (D == 3) {
      f(int_c<2>{}, int_c<3>{});
    } else {
      f(int_c<2>{}, int_c<0>{});
    }
  } else {
    if (D == 3) {
      f(int_c<1>{}, int_c<3>{});
    } else {
      f(int_c<1>{}, int_c<0>{});
    }
  }
}

struct KnnPlan {
  int threads = 0;
  int tile_pts = 0;      // points per shared-memory tile; 0: read p2 from global memory
  size_t smem = 0;       // dynamic shared memory per block
  int64_t qblocks = 0;   // blocks per cloud along the queries
  int64_t splits = 1;    // blocks per (cloud, query block) along the reference points
  int64_t split_len = 0; // reference points per split
};

KnnPlan plan_knn(int64_t B, int64_t P1, int64_t P2, int64_t D, int64_t K, int kc,
                 int64_t elem_bytes, int sms) {
  KnnPlan p;
  const int64_t max_threads = (kc == 0 || kc >= 16) ? kThreadsLargeK : kThreads;
  p.threads = static_cast<int>(std::min<int64_t>(max_threads, ceil_div(P1, 32) * 32));
  p.qblocks = ceil_div(P1, p.threads);
  const int64_t point_bytes = D * elem_bytes;
  if (D == 3) {
    p.tile_pts = p.threads;
  } else if (point_bytes > kMaxTilePointBytes) {
    p.tile_pts = 0;
  } else {
    p.tile_pts = static_cast<int>(std::clamp<int64_t>(kTileBytes / point_bytes, 1, p.threads));
  }
  p.smem = static_cast<size_t>(p.tile_pts * point_bytes);

  // Few queries: split the reference points so that the GPU has enough blocks.
  const int64_t blocks = B * p.qblocks;
  p.splits = 1;
  if (blocks < 2 * static_cast<int64_t>(sms) && P2 > 0) {
    const int64_t by_work = P2 / std::max<int64_t>(kMinSplitLen, 8 * K);
    const int64_t by_occupancy = ceil_div(4 * static_cast<int64_t>(sms), blocks);
    const int64_t by_memory = kMaxPartialEntries / (B * P1 * K);
    p.splits = std::clamp<int64_t>(std::min({by_work, by_occupancy, by_memory}), 1, 65535);
  }
  const int64_t granule = std::max(p.tile_pts, 1);
  p.split_len = ceil_div(ceil_div(P2, p.splits), granule) * granule;
  if (p.split_len > 0) {
    p.splits = ceil_div(P2, p.split_len);
  } else {
    p.splits = 1;
  }
  return p;
}

}  // namespace

void knn_cuda_forward(const at::Tensor& p1, const at::Tensor& p2, const at::Tensor& lengths1,
                      const at::Tensor& lengths2, int64_t K, int64_t norm,
                      double invalid_query_dist, at::Tensor& dists, at::Tensor& idx) {
  const int64_t B = p1.size(0), P1 = p1.size(1), P2 = p2.size(1), D = p1.size(2);
  if (B == 0 || P1 == 0 || K == 0) {
    return;
  }
  TORCH_CHECK(K <= INT_MAX && D <= INT_MAX, "knn_points: K and D must fit in 32 bits, got K = ",
              K, ", D = ", D);
  const int kc = register_capacity(K);
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p1.scalar_type(), "knn_points_cuda",
                                  [&] {
    using A = at::opmath_type<scalar_t>;
    constexpr bool direct = std::is_same_v<A, scalar_t>;
    const KnnPlan plan = plan_knn(B, P1, P2, D, K, kc, sizeof(scalar_t), sms);
    TORCH_CHECK(B * plan.qblocks <= INT_MAX, "knn_points: too many queries (B * P1 = ", B * P1,
                ")");
    // Half and bfloat16 results are computed and merged in float32, then rounded once.
    at::Tensor out_d =
        direct ? dists : at::empty(dists.sizes(), dists.options().dtype(c10::CppTypeToScalarType<A>::value));
    A* kd = out_d.mutable_data_ptr<A>();
    int64_t* ki = idx.mutable_data_ptr<int64_t>();
    at::Tensor part_d, part_i;
    if (plan.splits > 1) {
      part_d = at::empty({plan.splits, B, P1, K}, out_d.options());
      part_i = at::empty({plan.splits, B, P1, K}, idx.options());
      kd = part_d.mutable_data_ptr<A>();
      ki = part_i.mutable_data_ptr<int64_t>();
    }
    const A pad = static_cast<A>(invalid_query_dist);
    const dim3 grid(static_cast<unsigned>(B * plan.qblocks), 1,
                    static_cast<unsigned>(plan.splits));
    dispatch_norm_dim(norm, D, [&](auto norm_c, auto dim_c) {
      constexpr int NORM = decltype(norm_c)::value;
      constexpr int DS = decltype(dim_c)::value;
      dispatch_capacity(kc, [&](auto kc_c) {
        constexpr int KC = decltype(kc_c)::value;
        knn_kernel<scalar_t, NORM, DS, KC><<<grid, plan.threads, plan.smem, stream>>>(
            p1.const_data_ptr<scalar_t>(), p2.const_data_ptr<scalar_t>(),
            lengths1.const_data_ptr<int64_t>(), lengths2.const_data_ptr<int64_t>(), B, P1, P2,
            static_cast<int>(D), static_cast<int>(K), plan.qblocks, plan.split_len,
            plan.tile_pts, pad, kd, ki);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
    if (plan.splits > 1) {
      dispatch_capacity(kc, [&](auto kc_c) {
        constexpr int KC = decltype(kc_c)::value;
        const unsigned blocks = static_cast<unsigned>(ceil_div(B * P1, kMergeThreads));
        knn_merge_kernel<A, KC><<<blocks, kMergeThreads, 0, stream>>>(
            part_d.const_data_ptr<A>(), part_i.const_data_ptr<int64_t>(),
            lengths1.const_data_ptr<int64_t>(), B, P1, static_cast<int>(K), plan.splits, pad,
            out_d.mutable_data_ptr<A>(), idx.mutable_data_ptr<int64_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    }
    if constexpr (!direct) {
      dists.copy_(out_d);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> knn_points_cuda(const at::Tensor& p1, const at::Tensor& p2,
                                                   const std::optional<at::Tensor>& lengths1,
                                                   const std::optional<at::Tensor>& lengths2,
                                                   int64_t K, int64_t norm, bool return_sorted,
                                                   int64_t method) {
  (void)return_sorted;  // always sorted by (distance, index)
  constexpr const char* op = "knn_points";
  check_knn_args(p1, p2, K, norm, method, op);  // `method` selects a CPU search only
  const c10::cuda::CUDAGuard guard(p1.device());
  assert_coordinates_async(p1, op, "p1");
  assert_coordinates_async(p2, op, "p2");
  // Length values are checked asynchronously by the Python wrapper; the kernels clamp them.
  const at::Tensor l1 = lengths_or_full(lengths1, p1, op, "lengths1");
  const at::Tensor l2 = lengths_or_full(lengths2, p2, op, "lengths2");
  const at::Tensor a = p1.contiguous(), b = p2.contiguous();
  const int64_t B = a.size(0), P1 = a.size(1);
  at::Tensor dists = at::empty({B, P1, K}, a.options());
  at::Tensor idx = at::empty({B, P1, K}, a.options().dtype(at::kLong));
  knn_cuda_forward(a, b, l1, l2, K, norm, std::numeric_limits<double>::infinity(), dists, idx);
  return {dists, idx};
}

std::tuple<at::Tensor, at::Tensor> knn_points_backward_cuda(const at::Tensor& p1,
                                                            const at::Tensor& p2,
                                                            const at::Tensor& idx,
                                                            const at::Tensor& grad_dists,
                                                            int64_t norm) {
  constexpr const char* op = "_knn_points_backward";
  check_knn_backward_args(p1, p2, idx, grad_dists, norm, op);
  const c10::cuda::CUDAGuard guard(p1.device());
  const at::ScalarType ct = cpu_compute_type(p1.scalar_type());  // float32 for half/bfloat16
  const at::Tensor a = p1.contiguous(), b = p2.contiguous(), ix = idx.contiguous();
  const at::Tensor g = grad_dists.to(ct).contiguous();
  const int64_t B = a.size(0), P1 = a.size(1), P2 = b.size(1), D = a.size(2), K = ix.size(2);
  at::Tensor g1 = at::empty(a.sizes(), a.options());
  at::Tensor g2acc = at::zeros(b.sizes(), b.options().dtype(ct));
  if (B * P1 > 0) {
    TORCH_CHECK(D <= INT_MAX, op, ": D must fit in 32 bits, got ", D);
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(),
                                    "knn_points_backward_cuda", [&] {
      using A = at::opmath_type<scalar_t>;
      const unsigned blocks = static_cast<unsigned>(ceil_div(B * P1, kBackwardThreads));
      dispatch_norm_dim(norm, D, [&](auto norm_c, auto dim_c) {
        constexpr int NORM = decltype(norm_c)::value;
        constexpr int DS = decltype(dim_c)::value;
        knn_backward_kernel<scalar_t, NORM, DS><<<blocks, kBackwardThreads, 0, stream>>>(
            a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(),
            ix.const_data_ptr<int64_t>(), g.const_data_ptr<A>(), B * P1, P1, P2,
            static_cast<int>(D), K, g1.mutable_data_ptr<scalar_t>(),
            g2acc.mutable_data_ptr<A>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
  at::Tensor g2 = ct == b.scalar_type() ? g2acc : g2acc.to(b.scalar_type());
  return {g1, g2};
}

TORCH_LIBRARY_IMPL(fastvision, CUDA, m) {
  m.impl("knn_points", &knn_points_cuda);
  m.impl("_knn_points_backward", &knn_points_backward_cuda);
}

}  // namespace fastvision::points
