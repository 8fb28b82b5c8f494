// Device code and launch planning of knn_points (also soft_project's neighbour search) and its
// backward (also nn_distance's: a K = 1 gradient in each direction),
// torch-free: compiled by nvcc (through knn_cuda.cu) and by g++ with the CUDA-on-CPU emulator
// (tests/emulated/drive_knn.cpp).
//
// Forward: one thread per query. The block's threads stage tiles of the cloud's p2 points in
// shared memory and every thread scans them in ascending index order, keeping its top-K sorted by
// (distance, index): in registers for K <= 32 (compile-time capacity 1, 2, 4, 8, 16 or 32, the
// smallest >= K; only the first K are written), in the output rows in global memory for larger K.
// A candidate enters only if its distance is strictly below the current K-th one, exactly like
// the CPU scan, so ties keep the lowest index and results equal the CPU's bit for bit (the
// distance is the same point_dist expression, rounded the same way, see point_math.h).
// When there are few queries, the reference range is split across blocks (grid z); each split
// writes a sorted partial top-K to a scratch buffer and a merge kernel combines them
// lexicographically by (distance, index).
//
// Backward: one thread per query; grad_p1 accumulated in registers in neighbour order (the CPU
// order), grad_p2 scattered with atomicAdd (into a float32 buffer for half/bfloat16 inputs), so
// grad_p2 is not deterministic (the glue reports it in deterministic mode). Indices outside
// [0, P2) are skipped (the CPU kernel rejects them; checking here would need a host sync).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "fastvision/cuda_compat.h"
#include "fastvision/point_math.h"

namespace fastvision::points::knn_device {

constexpr int kThreads = 256;        // queries per block for K <= 8
constexpr int kThreadsLargeK = 128;  // K > 8 (larger register top-K, or top-K in global memory)
constexpr int kMergeThreads = 128;
constexpr int kBackwardThreads = 256;
constexpr int kMaxRegisterK = 32;
constexpr int64_t kTileBytes = 16 * 1024;          // generic-D tile of p2 points
constexpr int64_t kMaxTilePointBytes = 32 * 1024;  // larger points are read from global memory
constexpr int64_t kMinSplitLen = 256;              // fewest reference points per split
constexpr int64_t kMaxPartialEntries = int64_t{1} << 22;  // scratch of the split path (entries)

FV_DEVICE int64_t clamped_length(const int64_t* __restrict__ lengths, int64_t b,
                                                  int64_t P) {
  const int64_t n = lengths[b];
  return n < 0 ? 0 : (n > P ? P : n);
}

template <typename A>
FV_DEVICE void pad_row(A* d, int64_t* i, int K, A value) {
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

  FV_DEVICE void init(A*, int64_t*, int, bool) {
#pragma unroll
    for (int k = 0; k < KC; ++k) {
      d[k] = fv_infinity<A>();
      i[k] = -1;
    }
  }
  FV_DEVICE A kth_dist() const { return d[KC - 1]; }
  FV_DEVICE int64_t kth_idx() const { return i[KC - 1]; }
  FV_DEVICE void insert(A cand, int64_t j) {
    topk_insert_static<KC>(d, i, cand, j);
  }
  // The first K (<= KC) entries.
  FV_DEVICE void store(A* od, int64_t* oi, int K) const {
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

  FV_DEVICE void init(A* od, int64_t* oi, int K_, bool active) {
    d = od;
    i = oi;
    K = K_;
    if (active) {
      pad_row(d, i, K, fv_infinity<A>());
    }
  }
  FV_DEVICE A kth_dist() const { return kth_d; }
  FV_DEVICE int64_t kth_idx() const { return kth_i; }
  FV_DEVICE void insert(A cand, int64_t j) {
    topk_insert_dynamic(d, i, K, cand, j);
    kth_d = d[K - 1];
    kth_i = i[K - 1];
  }
  FV_DEVICE void store(A*, int64_t*, int) const {}
};

template <typename A, int KC>
using TopKList = std::conditional_t<(KC > 0), RegisterTopK<A, (KC > 0 ? KC : 1)>, GlobalTopK<A>>;

// Grid: x = B * qblocks (cloud, block of queries), z = split of the reference range. Output rows
// at ((split * B + b) * P1 + i) * K of out_d/out_i (the final output when there is one split).
template <typename T, int NORM, int DS, int KC>
FV_GLOBAL void __launch_bounds__(kThreads)
    knn_kernel(const T* __restrict__ p1, const T* __restrict__ p2,
               const int64_t* __restrict__ len1, const int64_t* __restrict__ len2, int64_t B,
               int64_t P1, int64_t P2, int D, int K, int64_t qblocks, int64_t split_len,
               int tile_pts, opmath_t<T> pad, opmath_t<T>* __restrict__ out_d,
               int64_t* __restrict__ out_i) {
  using A = opmath_t<T>;
  FV_DYNAMIC_SHARED(T, tile);

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
FV_GLOBAL void __launch_bounds__(kMergeThreads)
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
FV_GLOBAL void __launch_bounds__(kBackwardThreads)
    knn_backward_kernel(const T* __restrict__ p1, const T* __restrict__ p2,
                        const int64_t* __restrict__ idx,
                        const opmath_t<T>* __restrict__ grad, int64_t BP1, int64_t P1,
                        int64_t P2, int D, int64_t K, T* __restrict__ g1,
                        opmath_t<T>* __restrict__ g2) {
  using A = opmath_t<T>;
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

// Smallest register capacity >= K, or 0 for the global-memory top-K.
inline int register_capacity(int64_t K) {
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

struct KnnPlan {
  int threads = 0;
  int tile_pts = 0;      // points per shared-memory tile; 0: read p2 from global memory
  size_t smem = 0;       // dynamic shared memory per block
  int64_t qblocks = 0;   // blocks per cloud along the queries
  int64_t splits = 1;    // blocks per (cloud, query block) along the reference points
  int64_t split_len = 0; // reference points per split
};

inline KnnPlan plan_knn(int64_t B, int64_t P1, int64_t P2, int64_t D, int64_t K, int kc,
                 int64_t elem_bytes, int sms) {
  KnnPlan p;
  const int64_t max_threads = (kc == 0 || kc >= 16) ? kThreadsLargeK : kThreads;
  p.threads = static_cast<int>(std::min<int64_t>(max_threads, ceil_div<int64_t>(P1, 32) * 32));
  p.qblocks = ceil_div<int64_t>(P1, p.threads);
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
    const int64_t by_occupancy = ceil_div<int64_t>(4 * static_cast<int64_t>(sms), blocks);
    const int64_t by_memory = kMaxPartialEntries / (B * P1 * K);
    p.splits = std::clamp<int64_t>(std::min({by_work, by_occupancy, by_memory}), 1, 65535);
  }
  const int64_t granule = std::max(p.tile_pts, 1);
  p.split_len = ceil_div<int64_t>(ceil_div<int64_t>(P2, p.splits), granule) * granule;
  if (p.split_len > 0) {
    p.splits = ceil_div<int64_t>(P2, p.split_len);
  } else {
    p.splits = 1;
  }
  return p;
}


// Launches the forward search of `plan`. With plan.splits > 1, part_d / part_i hold
// (splits, B, P1, K) partial results and the merge writes out_d / out_i; otherwise the search
// writes out_d / out_i directly. out_d is in opmath_t<T>.
template <typename T>
cuda::Error launch_knn(const KnnPlan& plan, int64_t norm, int kc, const T* p1, const T* p2,
                       const int64_t* len1, const int64_t* len2, int64_t B, int64_t P1,
                       int64_t P2, int64_t D, int64_t K, opmath_t<T> pad, opmath_t<T>* part_d,
                       int64_t* part_i, opmath_t<T>* out_d, int64_t* out_i, cuda::Stream stream) {
  using A = opmath_t<T>;
  const bool split = plan.splits > 1;
  cuda::LaunchConfig search;
  search.grid = dim3(static_cast<unsigned>(B * plan.qblocks), 1, static_cast<unsigned>(plan.splits));
  search.block = dim3(static_cast<unsigned>(plan.threads));
  search.smem = plan.smem;
  cuda::Error err = cuda::kSuccess;
  dispatch_norm_dim(norm, D, [&](auto norm_c, auto dim_c) {
    constexpr int NORM = decltype(norm_c)::value;
    constexpr int DS = decltype(dim_c)::value;
    dispatch_capacity(kc, [&](auto kc_c) {
      constexpr int KC = decltype(kc_c)::value;
      err = cuda::launch(knn_kernel<T, NORM, DS, KC>, search, stream, p1, p2, len1, len2, B, P1,
                         P2, static_cast<int>(D), static_cast<int>(K), plan.qblocks,
                         plan.split_len, plan.tile_pts, pad, split ? part_d : out_d,
                         split ? part_i : out_i);
    });
  });
  if (err != cuda::kSuccess || !split) {
    return err;
  }
  cuda::LaunchConfig merge;
  merge.grid = dim3(static_cast<unsigned>(ceil_div<int64_t>(B * P1, kMergeThreads)));
  merge.block = dim3(kMergeThreads);
  dispatch_capacity(kc, [&](auto kc_c) {
    constexpr int KC = decltype(kc_c)::value;
    err = cuda::launch(knn_merge_kernel<A, KC>, merge, stream, part_d, part_i, len1, B, P1,
                       static_cast<int>(K), plan.splits, pad, out_d, out_i);
  });
  return err;
}

// Launches the backward: g1 (B, P1, D) in T, g2 (B, P2, D) in opmath_t<T>, zeroed by the caller.
template <typename T>
cuda::Error launch_knn_backward(int64_t norm, const T* p1, const T* p2, const int64_t* idx,
                                const opmath_t<T>* grad, int64_t B, int64_t P1, int64_t P2,
                                int64_t D, int64_t K, T* g1, opmath_t<T>* g2,
                                cuda::Stream stream) {
  cuda::LaunchConfig cfg;
  cfg.grid = dim3(static_cast<unsigned>(ceil_div<int64_t>(B * P1, kBackwardThreads)));
  cfg.block = dim3(kBackwardThreads);
  cuda::Error err = cuda::kSuccess;
  dispatch_norm_dim(norm, D, [&](auto norm_c, auto dim_c) {
    constexpr int NORM = decltype(norm_c)::value;
    constexpr int DS = decltype(dim_c)::value;
    err = cuda::launch(knn_backward_kernel<T, NORM, DS>, cfg, stream, p1, p2, idx, grad, B * P1,
                       P1, P2, static_cast<int>(D), K, g1, g2);
  });
  return err;
}

}  // namespace fastvision::points::knn_device
