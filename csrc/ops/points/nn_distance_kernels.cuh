// Device code and launch planning of nn_distance's forward: the nearest neighbour in both
// directions from one pass over the pairs. Torch-free: compiled by nvcc (through
// nn_distance_cuda.cu) and by g++ with the CUDA-on-CPU emulator (tests/emulated/drive_nn_distance.cpp).
//
// Pairs kernel. A block of 16 x 16 threads owns a group of cloud-1 rows (`rows_per_group`, walked
// in passes of 64) and a split of cloud-2 columns (`cols_per_split`, walked in tiles of 64). Each
// pass stages its 64 rows, each tile its 64 columns, in shared memory as structures of arrays; each
// thread computes a 4 x 4 register micro-tile of distances (rows 4 ty + m, columns tx + 16 n),
// coordinate by coordinate with the same rounding as point_dist (dist_step, point_math.h). From
// the micro-tile:
//   - row minima stay in registers across the tiles of a pass, then the 16 lanes of a row group
//     are reduced with shuffles and written to the row partials (S, B, P1);
//   - column minima of the thread's 4 rows go through shared memory, are reduced over the 16 row
//     groups and merged with the previous passes' value in the column partials (B, R, P2), which
//     only this block (and only the thread owning that column) reads and writes.
// Merge kernel: one thread per output row of either direction reduces its S (rows) or R (columns)
// partials, and writes the padding (0, -1) of rows past a cloud's length. With S = 1 the row
// partials *are* the d12 / i12 outputs and with R = 1 the column partials are d21 / i21 (no
// scratch; the merge then reads and rewrites each element in place).
//
// Exactness. Within a thread, candidates arrive in ascending index (columns of a row, rows of a
// column) and enter only when strictly below the current minimum: the CPU's rule, so an infinite
// or NaN distance never enters and equal distances keep the lower index. Every other combination
// (lanes, passes, splits) merges partial minima lexicographically by (distance, index)
// (neighbour_less); a partial is either (+inf, -1) or a finite distance with its first index, so
// the lexicographic minimum is the CPU's first minimum. The 16 row groups of a pass hold
// ascending row ranges, so their column minima merge in group order with a strict `<` too. Rows and columns past the cloud (or past
// the tile) are staged as NaN, whose distances never enter, so the inner loop has no bounds tests.
// No atomics: results are deterministic and equal the CPU's bit for bit.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "fastvision/cuda_compat.h"
#include "fastvision/point_math.h"

namespace fastvision::points::nn_distance_device {

constexpr int kTx = 16;  // threads along the columns of a tile
constexpr int kTy = 16;  // threads along the rows of a pass (row groups)
constexpr int kThreads = kTx * kTy;
constexpr int kMicro = 4;                 // rows and columns of a thread's register micro-tile
constexpr int kTile = kTx * kMicro;       // rows per pass = columns per tile = 64
static_assert(kTy * kMicro == kTile, "passes and tiles have the same extent");
constexpr int kStride = kTile + 1;        // a staged coordinate row (padded against bank conflicts)
constexpr int kDimChunk = 16;             // coordinates staged at once for a run-time D
constexpr int kMergeThreads = 256;
// Resident blocks per SM the register allocation must allow: 4 (at most 64 registers a thread,
// 50% occupancy) in float32; float64's micro-tile needs twice the registers.
template <typename A>
constexpr int kMinBlocks = sizeof(A) == 8 ? 2 : 4;
// Row minima keep their column as a 32-bit offset from the split's first column.
constexpr int64_t kMaxColsPerSplit = int64_t{1} << 30;

struct NnDistanceTuning {
  // Entries of the column-partial buffer (B, R, P2); beyond it a block takes more row passes.
  int64_t max_column_partials = int64_t{1} << 22;
  // Entries of the row-partial buffer (S, B, P1) of the column split.
  int64_t max_row_partials = int64_t{1} << 22;
  // Fewest columns per split.
  int64_t min_split_cols = 256;
};

struct NnDistancePlan {
  int64_t row_groups = 0;      // R: blocks per cloud along cloud 1
  int64_t rows_per_group = 0;  // rows of a group: a multiple of kTile, walked in passes
  int64_t splits = 1;          // S: blocks per (cloud, row group) along cloud 2
  int64_t cols_per_split = 0;  // a multiple of kTile
  int dim_chunk = 0;           // coordinates per staged chunk
  std::size_t smem = 0;        // dynamic shared memory of the pairs kernel
  bool pairs = false;          // whether the pairs kernel runs (there is at least one pair)
};

FV_DEVICE int64_t clamped_length(const int64_t* __restrict__ lengths, int64_t b, int64_t P) {
  const int64_t n = lengths[b];
  return n < 0 ? 0 : (n > P ? P : n);
}

template <typename A>
FV_HOST_DEVICE FV_INLINE A quiet_nan() {
  return std::numeric_limits<A>::quiet_NaN();
}

// dst[d * kStride + p] = coordinate d0 + d of point first + p, for p < kTile; NaN for points at
// or past `count` (past the cloud or the split), so that their distances never enter a minimum.
// Reads run along the points' contiguous coordinates.
template <typename T, typename A, int DS>
FV_DEVICE void stage_points(A* __restrict__ dst, const T* __restrict__ cloud, int64_t first,
                            int count, int d0, int dn, int dims) {
  const int n = DS > 0 ? kTile * DS : kTile * dn;
  for (int e = threadIdx.x; e < n; e += kThreads) {
    const int p = DS > 0 ? e / DS : e / dn;
    const int d = DS > 0 ? e % DS : e % dn;
    dst[d * kStride + p] =
        p < count ? static_cast<A>(cloud[(first + p) * dims + d0 + d]) : quiet_nan<A>();
  }
}

// acc[m][n] += the terms of coordinates [d0, d0 + dn) of the pair (row kMicro ty + m, column
// tx + kTx n), one coordinate at a time as point_dist adds them. A warp's two row groups read two
// row addresses (broadcasts) and its 16 column lanes 16 consecutive words: no bank conflict.
template <int NORM, int DS, typename A>
FV_DEVICE void accumulate_micro_tile(A (&acc)[kMicro][kMicro], const A* __restrict__ rows,
                                     const A* __restrict__ cols, int tx, int ty, int d0, int dn) {
  const int dims = DS > 0 ? DS : dn;
#pragma unroll
  for (int d = 0; d < dims; ++d) {
    A rv[kMicro], cv[kMicro];
#pragma unroll
    for (int m = 0; m < kMicro; ++m) {
      rv[m] = rows[d * kStride + kMicro * ty + m];
    }
#pragma unroll
    for (int n = 0; n < kMicro; ++n) {
      cv[n] = cols[d * kStride + tx + kTx * n];
    }
    const bool first = d0 + d == 0;
#pragma unroll
    for (int m = 0; m < kMicro; ++m) {
#pragma unroll
      for (int n = 0; n < kMicro; ++n) {
        acc[m][n] = dist_step<NORM>(acc[m][n], rv[m], cv[n], first);
      }
    }
  }
}

// Grid: x = B * R (cloud, row group), z = S (column split). Row partials at (s * B + b) * P1 + i,
// column partials at (b * R + r) * P2 + j (see the header comment for when these are the outputs).
template <typename T, int NORM, int DS>
FV_GLOBAL void __launch_bounds__(kThreads, kMinBlocks<opmath_t<T>>)
    nn_distance_pairs_kernel(const T* __restrict__ p1, const T* __restrict__ p2,
                             const int64_t* __restrict__ len1, const int64_t* __restrict__ len2,
                             int64_t B, int64_t P1, int64_t P2, int D, int64_t R,
                             int64_t rows_per_group, int64_t cols_per_split, int dim_chunk,
                             opmath_t<T>* row_d, int64_t* row_i, opmath_t<T>* col_d,
                             int64_t* col_i) {
  using A = opmath_t<T>;
  FV_DYNAMIC_SHARED(A, smem);
  const int dc = DS > 0 ? DS : dim_chunk;
  A* rows_s = smem;                                   // [dc][kStride]
  A* cols_s = rows_s + dc * kStride;                  // [dc][kStride]
  A* red_d = cols_s + dc * kStride;                   // [kTy][kTile] column partials per row group
  int* red_i = reinterpret_cast<int*>(red_d + kTy * kTile);  // their rows within the pass

  const int tid = threadIdx.x, tx = tid % kTx, ty = tid / kTx;
  const int64_t b = blockIdx.x / R, r = blockIdx.x % R, s = blockIdx.z;
  const int64_t n1 = clamped_length(len1, b, P1), n2 = clamped_length(len2, b, P2);
  const int64_t row_begin = r * rows_per_group;
  const int64_t row_end = row_begin + rows_per_group < n1 ? row_begin + rows_per_group : n1;
  const int64_t col_begin = s * cols_per_split;
  const int64_t col_end = col_begin + cols_per_split < n2 ? col_begin + cols_per_split : n2;
  if (row_begin >= row_end || col_begin >= col_end) {  // block-uniform: no pair here
    return;
  }
  const int dims = DS > 0 ? DS : D;
  const bool one_chunk = dims <= dc;  // rows staged once per pass
  const T* cloud1 = p1 + b * P1 * dims;
  const T* cloud2 = p2 + b * P2 * dims;
  A* group_col_d = col_d + (b * R + r) * P2;
  int64_t* group_col_i = col_i + (b * R + r) * P2;
  A* split_row_d = row_d + (s * B + b) * P1;
  int64_t* split_row_i = row_i + (s * B + b) * P1;

  for (int64_t pass0 = row_begin; pass0 < row_end; pass0 += kTile) {  // block-uniform
    const int rows_n = static_cast<int>(row_end - pass0 < kTile ? row_end - pass0 : kTile);
    A best_d[kMicro];
    int best_c[kMicro];  // column - col_begin (< kMaxColsPerSplit), or -1
#pragma unroll
    for (int m = 0; m < kMicro; ++m) {
      best_d[m] = fv_infinity<A>();
      best_c[m] = -1;
    }
    if (one_chunk) {  // the previous pass's last reads of rows_s precede its last red barrier
      stage_points<T, A, DS>(rows_s, cloud1, pass0, rows_n, 0, dims, dims);
    }
    for (int64_t t0 = col_begin; t0 < col_end; t0 += kTile) {  // block-uniform
      const int cols_n = static_cast<int>(col_end - t0 < kTile ? col_end - t0 : kTile);
      const int c0 = static_cast<int>(t0 - col_begin);
      A acc[kMicro][kMicro] = {};
      for (int d0 = 0; d0 < dims; d0 += dc) {
        const int dn = dims - d0 < dc ? dims - d0 : dc;
        __syncthreads();  // the previous tile (or chunk) is no longer read
        if (!one_chunk) {
          stage_points<T, A, DS>(rows_s, cloud1, pass0, rows_n, d0, dn, dims);
        }
        stage_points<T, A, DS>(cols_s, cloud2, t0, cols_n, d0, dn, dims);
        __syncthreads();  // the tiles are staged
        accumulate_micro_tile<NORM, DS>(acc, rows_s, cols_s, tx, ty, d0, dn);
      }
      // Row minima: this thread's columns of the tile in ascending index, strict `<`.
#pragma unroll
      for (int m = 0; m < kMicro; ++m) {
#pragma unroll
        for (int n = 0; n < kMicro; ++n) {
          if (acc[m][n] < best_d[m]) {
            best_d[m] = acc[m][n];
            best_c[m] = c0 + tx + kTx * n;
          }
        }
      }
      // Column minima over this thread's rows (ascending, strict `<`), then over the row groups.
#pragma unroll
      for (int n = 0; n < kMicro; ++n) {
        A cd = fv_infinity<A>();
        int ci = -1;
#pragma unroll
        for (int m = 0; m < kMicro; ++m) {
          if (acc[m][n] < cd) {
            cd = acc[m][n];
            ci = kMicro * ty + m;
          }
        }
        red_d[ty * kTile + tx + kTx * n] = cd;
        red_i[ty * kTile + tx + kTx * n] = ci;
      }
      __syncthreads();  // every row group's column minima are in red_d / red_i
      if (tid < cols_n) {
        // Group g holds rows [4 g, 4 g + 4): ascending groups, strict `<` keeps the first row.
        A cd = red_d[tid];
        int ci = red_i[tid];
        for (int g = 1; g < kTy; ++g) {
          const A gd = red_d[g * kTile + tid];
          if (gd < cd) {
            cd = gd;
            ci = red_i[g * kTile + tid];
          }
        }
        const int64_t j = t0 + tid;
        int64_t row = ci < 0 ? -1 : pass0 + ci;
        if (pass0 != row_begin) {  // merge with the earlier passes (lower rows) of this group
          const A prev_d = group_col_d[j];
          const int64_t prev_i = group_col_i[j];
          if (!neighbour_less(cd, row, prev_d, prev_i)) {
            cd = prev_d;
            row = prev_i;
          }
        }
        group_col_d[j] = cd;
        group_col_i[j] = row;
      }
      // red_d / red_i are rewritten only after the next tile's two barriers.
    }
    // Row minima across the 16 lanes of a row group (one half-warp).
#pragma unroll
    for (int m = 0; m < kMicro; ++m) {
      for (int off = kTx / 2; off > 0; off >>= 1) {
        const A od = __shfl_xor_sync(0xffffffffu, best_d[m], off);
        const int oc = __shfl_xor_sync(0xffffffffu, best_c[m], off);
        if (neighbour_less(od, int64_t{oc}, best_d[m], int64_t{best_c[m]})) {
          best_d[m] = od;
          best_c[m] = oc;
        }
      }
    }
    if (tx == 0) {
#pragma unroll
      for (int m = 0; m < kMicro; ++m) {
        if (kMicro * ty + m < rows_n) {
          split_row_d[pass0 + kMicro * ty + m] = best_d[m];
          split_row_i[pass0 + kMicro * ty + m] = best_c[m] < 0 ? -1 : col_begin + best_c[m];
        }
      }
    }
  }
}

// One thread per output row: rows of d12 (b, i) first, then rows of d21 (b, j). Valid rows merge
// their partials in ascending split / row-group order; rows past a cloud's length are (0, -1); a
// valid row whose other cloud is empty has no partial and stays (+inf, -1). The partials may be
// the outputs themselves (S = 1, R = 1): each element is read and rewritten by one thread.
template <typename A>
FV_GLOBAL void __launch_bounds__(kMergeThreads)
    nn_distance_merge_kernel(const A* row_d, const int64_t* row_i, const A* col_d,
                             const int64_t* col_i, const int64_t* __restrict__ len1,
                             const int64_t* __restrict__ len2, int64_t B, int64_t P1, int64_t P2,
                             int64_t R, int64_t rows_per_group, int64_t cols_per_split, A* d12,
                             int64_t* i12, A* d21, int64_t* i21) {
  int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const bool forward = e < B * P1;
  if (!forward) {
    e -= B * P1;
    if (e >= B * P2) {
      return;
    }
  }
  const int64_t P = forward ? P1 : P2, b = e / P, i = e % P;
  const int64_t n_own = forward ? clamped_length(len1, b, P1) : clamped_length(len2, b, P2);
  const int64_t n_other = forward ? clamped_length(len2, b, P2) : clamped_length(len1, b, P1);
  A* out_d = forward ? d12 : d21;
  int64_t* out_i = forward ? i12 : i21;
  if (i >= n_own) {
    out_d[e] = A(0);
    out_i[e] = -1;
    return;
  }
  // Partials that exist: the splits (row groups) that hold at least one point of the other cloud.
  const int64_t parts = ceil_div<int64_t>(n_other, forward ? cols_per_split : rows_per_group);
  A best = fv_infinity<A>();
  int64_t best_i = -1;
  for (int64_t k = 0; k < parts; ++k) {
    const int64_t o = forward ? (k * B + b) * P1 + i : (b * R + k) * P2 + i;
    const A pd = forward ? row_d[o] : col_d[o];
    const int64_t pi = forward ? row_i[o] : col_i[o];
    if (neighbour_less(pd, pi, best, best_i)) {
      best = pd;
      best_i = pi;
    }
  }
  out_d[e] = best;
  out_i[e] = best_i;
}

// `opmath_bytes`: sizeof(opmath_t<T>), the type staged in shared memory.
inline NnDistancePlan plan_nn_distance(int64_t B, int64_t P1, int64_t P2, int64_t D,
                                       int64_t opmath_bytes, int sms,
                                       const NnDistanceTuning& tuning = {}) {
  NnDistancePlan p;
  p.pairs = B > 0 && P1 > 0 && P2 > 0;
  p.dim_chunk = static_cast<int>(D == 3 ? 3 : std::clamp<int64_t>(D, 1, kDimChunk));
  p.smem = static_cast<std::size_t>(2 * p.dim_chunk * kStride * opmath_bytes +
                                    kTy * kTile * (opmath_bytes + int64_t{sizeof(int)}));
  const int64_t row_tiles = ceil_div<int64_t>(P1, kTile);
  // As many row groups as 64-row passes, unless the column partials would outgrow their budget:
  // then fewer groups of several passes each.
  int64_t R = row_tiles;
  if (B * P2 > 0) {
    R = std::min(R, std::max<int64_t>(1, tuning.max_column_partials / (B * P2)));
  }
  const int64_t passes = R > 0 ? ceil_div<int64_t>(row_tiles, R) : 1;
  p.rows_per_group = passes * kTile;
  p.row_groups = ceil_div<int64_t>(P1, p.rows_per_group);

  // Few blocks: split the columns too, so that the GPU has enough blocks.
  int64_t S = 1;
  const int64_t blocks = B * p.row_groups;
  if (p.pairs && blocks < 2 * static_cast<int64_t>(sms)) {
    const int64_t by_work = P2 / std::max<int64_t>(tuning.min_split_cols, 1);
    const int64_t by_occupancy = ceil_div<int64_t>(4 * static_cast<int64_t>(sms), blocks);
    const int64_t by_memory = tuning.max_row_partials / (B * P1);
    S = std::clamp<int64_t>(std::min({by_work, by_occupancy, by_memory}), 1, 65535);
  }
  S = std::max(S, ceil_div<int64_t>(P2, kMaxColsPerSplit));
  p.cols_per_split = std::max<int64_t>(ceil_div<int64_t>(ceil_div<int64_t>(P2, S), kTile), 1) * kTile;
  p.splits = std::max<int64_t>(ceil_div<int64_t>(P2, p.cols_per_split), 1);
  return p;
}

// Launches the pairs kernel and the merge. row_d / row_i: (S, B, P1) scratch when plan.splits > 1,
// else d12 / i12; col_d / col_i: (B, R, P2) scratch when plan.row_groups > 1, else d21 / i21.
// Distances in opmath_t<T>.
template <typename T>
cuda::Error launch_nn_distance(const NnDistancePlan& plan, int64_t norm, const T* p1,
                               const T* p2, const int64_t* len1, const int64_t* len2, int64_t B,
                               int64_t P1, int64_t P2, int64_t D, opmath_t<T>* row_d,
                               int64_t* row_i, opmath_t<T>* col_d, int64_t* col_i,
                               opmath_t<T>* d12, int64_t* i12, opmath_t<T>* d21, int64_t* i21,
                               cuda::Stream stream) {
  using A = opmath_t<T>;
  cuda::Error err = cuda::kSuccess;
  if (plan.pairs) {
    cuda::LaunchConfig pairs;
    pairs.grid = dim3(static_cast<unsigned>(B * plan.row_groups), 1,
                      static_cast<unsigned>(plan.splits));
    pairs.block = dim3(kThreads);
    pairs.smem = plan.smem;
    dispatch_norm_dim(norm, D, [&](auto norm_c, auto dim_c) {
      constexpr int NORM = decltype(norm_c)::value;
      constexpr int DS = decltype(dim_c)::value;
      err = cuda::launch(nn_distance_pairs_kernel<T, NORM, DS>, pairs, stream, p1, p2, len1, len2,
                         B, P1, P2, static_cast<int>(D), plan.row_groups, plan.rows_per_group,
                         plan.cols_per_split, plan.dim_chunk, row_d, row_i, col_d, col_i);
    });
    if (err != cuda::kSuccess) {
      return err;
    }
  }
  const int64_t outputs = B * (P1 + P2);
  if (outputs == 0) {
    return err;
  }
  cuda::LaunchConfig merge;
  merge.grid = dim3(static_cast<unsigned>(ceil_div<int64_t>(outputs, kMergeThreads)));
  merge.block = dim3(kMergeThreads);
  return cuda::launch(nn_distance_merge_kernel<A>, merge, stream, row_d, row_i, col_d, col_i,
                      len1, len2, B, P1, P2, plan.row_groups, plan.rows_per_group, plan.cols_per_split,
                      d12, i12, d21, i21);
}

}  // namespace fastvision::points::nn_distance_device
