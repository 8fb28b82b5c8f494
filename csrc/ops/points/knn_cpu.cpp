// CPU kernels of knn_points and its backward: a blocked brute-force scan (vectorised distance
// chunks over a structure-of-arrays copy of p2; on AVX2 CPUs the register-resident scans of
// knn_scan_cpu.h, bit-identical) for small clouds, a k-d tree for large ones.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

#include "fastvision/common.h"
#include "fastvision/point_math.h"
#include "kdtree.h"
#include "cpu_distance.h"
#include "fastvision/cpu_simd.h"
#include "knn_common.h"
#include "knn_cpu.h"
#include "knn_scan_cpu.h"
#include "points_common.h"

namespace fastvision::points {

namespace {

constexpr int64_t kChunk = 16;  // distances computed together (one SIMD-friendly block, <= 32)
constexpr int64_t kQueryGrain = 32;    // queries per parallel work item
// auto: the k-d tree pays for its build once both clouds reach kTreeMinPoints and there are
// enough queries per searched point (measured on 3-D clouds: otherwise the vectorised scan wins).
constexpr int64_t kTreeMinPoints = 128;
constexpr int64_t kTreeMaxPointsPerQuery = 16;
constexpr int64_t kTreeLeafSize = 16;

// Brute-force top-K of queries [i0, i1) of one cloud. Points are scanned in ascending index, so a
// strict `<` against the current K-th keeps the lowest index among equal distances.
template <int NORM, int DS, typename T>
void knn_brute(const T* q, int64_t i0, int64_t i1, const T* soa, int64_t stride, int64_t n2,
               int D, int K, T* out_d, int64_t* out_i) {
  T buf[kChunk];
  for (int64_t i = i0; i < i1; ++i) {
    T* dd = out_d + i * K;
    int64_t* ii = out_i + i * K;
    const T* qi = q + i * D;
    for (int64_t j0 = 0; j0 < n2; j0 += kChunk) {
      const int64_t n = std::min(kChunk, n2 - j0);
      if (n == kChunk) {
        chunk_distances<NORM, DS>(qi, soa, stride, j0, kChunk, D, buf);
      } else {
        chunk_distances<NORM, DS>(qi, soa, stride, j0, n, D, buf);
      }
      // A bit mask of the candidates instead of a branch per distance: in the chunks that hold
      // candidates, per-element branches mispredict often. Candidates are still visited in
      // ascending index and re-tested against the (shrinking) K-th distance.
      const T worst = dd[K - 1];
      if (!any_less(buf, n, worst)) {  // the common case, vectorised
        continue;
      }
      uint32_t mask = 0;
      for (int64_t c = 0; c < n; ++c) {
        mask |= static_cast<uint32_t>(buf[c] < worst) << c;
      }
      while (mask != 0) {
        const int c = __builtin_ctz(mask);
        mask &= mask - 1;
        if (buf[c] < dd[K - 1]) {
          scan_insert(dd, ii, K, buf[c], j0 + c);
        }
      }
    }
  }
}

template <typename T>
void fill_empty(T* d, int64_t* i, int64_t n) {
  std::fill_n(d, n, fv_infinity<T>());
  std::fill_n(i, n, int64_t{-1});
}

template <typename T, int NORM, int DS>
void knn_impl(const at::Tensor& p1, const at::Tensor& p2, const int64_t* len1,
              const int64_t* len2, int K, bool use_tree, at::Tensor& dists, at::Tensor& idx) {
  const int64_t B = p1.size(0), P1 = p1.size(1), P2 = p2.size(1);
  const int D = static_cast<int>(p1.size(2));
  const T* q = p1.const_data_ptr<T>();
  T* out_d = dists.mutable_data_ptr<T>();
  int64_t* out_i = idx.mutable_data_ptr<int64_t>();
  fill_empty(out_d, out_i, B * P1 * K);
  const int64_t chunks = (P1 + kQueryGrain - 1) / kQueryGrain;

  if (use_tree) {
    std::vector<KdTree<T>> trees(static_cast<size_t>(B));
    const T* pts = p2.const_data_ptr<T>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        trees[b].template build<DS>(pts + b * P2 * D, len2[b], D, kTreeLeafSize);
      }
    });
    // Visit the queries grouped by the leaf that holds them: consecutive searches then walk the
    // same part of the tree and touch the same points (a large win on big clouds).
    std::vector<int64_t> order(static_cast<size_t>(B * P1));
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t n1 = len1[b];
        if (trees[b].nodes().empty()) {
          std::iota(order.begin() + b * P1, order.begin() + b * P1 + n1, int64_t{0});
          continue;
        }
        std::vector<int64_t> start(trees[b].nodes().size() + 1, 0);
        std::vector<int32_t> leaf(static_cast<size_t>(n1));
        for (int64_t i = 0; i < n1; ++i) {
          leaf[i] = trees[b].leaf_of(q + (b * P1 + i) * D);
          ++start[leaf[i] + 1];
        }
        std::partial_sum(start.begin(), start.end(), start.begin());
        for (int64_t i = 0; i < n1; ++i) {
          order[b * P1 + start[leaf[i]]++] = i;
        }
      }
    });
    at::parallel_for(0, B * chunks, 1, [&](int64_t w0, int64_t w1) {
      for (int64_t w = w0; w < w1; ++w) {
        const int64_t b = w / chunks, c = w % chunks;
        const int64_t r1 = std::min(len1[b], (c + 1) * kQueryGrain);
        for (int64_t r = c * kQueryGrain; r < r1; ++r) {
          const int64_t i = order[b * P1 + r];
          const int64_t o = (b * P1 + i) * K;
          trees[b].template knn<NORM, DS>(q + (b * P1 + i) * D, K, out_d + o, out_i + o);
        }
      }
    });
    return;
  }
#if FV_X86_SIMD
  if (cpu_avx2_fma() && D <= kMaxScanDims) {
    // Padded structure-of-arrays copy of p2, (B, D, stride), +inf past each cloud's length.
    const int64_t stride = std::max<int64_t>(ceil_div(P2, kScanStep), 1) * kScanStep;
    // float32 with K <= 8 and indices that fit int32: the top-K list in registers.
    const bool register_topk = K <= 8 && stride <= INT32_MAX;
    at::Tensor soa = at::empty({B, D, stride}, p2.options());
    const T* pts = p2.const_data_ptr<T>();
    T* sp = soa.mutable_data_ptr<T>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        T* rows = sp + b * D * stride;
        if constexpr (std::is_same_v<T, float> && DS == 3) {
          soa_rows_3d(pts + b * P2 * D, len2[b], rows, rows + stride, rows + 2 * stride);
        } else {
          for (int64_t d = 0; d < D; ++d) {
            const T* src = pts + b * P2 * D + d;
            for (int64_t j = 0; j < len2[b]; ++j) rows[d * stride + j] = src[j * D];
          }
        }
        for (int64_t d = 0; d < D; ++d) {
          std::fill(rows + d * stride + len2[b], rows + (d + 1) * stride, fv_infinity<T>());
        }
      }
    });
    at::parallel_for(0, B * chunks, 1, [&](int64_t w0, int64_t w1) {
      for (int64_t w = w0; w < w1; ++w) {
        const int64_t b = w / chunks, c = w % chunks;
        const int64_t i0 = c * kQueryGrain, i1 = std::min(len1[b], i0 + kQueryGrain);
        if (i0 >= i1 || len2[b] == 0) {
          continue;
        }
        if constexpr (std::is_same_v<T, float>) {
          if (register_topk && len2[b] >= kFilterMinPoints && len2[b] <= kFilterMaxPoints) {
            knn_scan_avx2_k8_filtered<NORM, DS>(q + b * P1 * D, i0, i1, sp + b * D * stride, stride, len2[b], D,
                                                K, out_d + b * P1 * K, out_i + b * P1 * K);
            continue;
          }
          if (register_topk) {
            knn_scan_avx2_k8<NORM, DS>(q + b * P1 * D, i0, i1, sp + b * D * stride, stride, len2[b], D, K,
                                       out_d + b * P1 * K, out_i + b * P1 * K);
            continue;
          }
        }
        knn_scan_avx2<NORM, DS>(q + b * P1 * D, i0, i1, sp + b * D * stride, stride, len2[b], D, K,
                                out_d + b * P1 * K, out_i + b * P1 * K);
      }
    });
    return;
  }
#endif
  // Structure-of-arrays copy of p2: (B, D, P2).
  const at::Tensor soa = p2.transpose(1, 2).contiguous();
  const T* s = soa.const_data_ptr<T>();
  at::parallel_for(0, B * chunks, 1, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t b = w / chunks, c = w % chunks;
      const int64_t i0 = c * kQueryGrain, i1 = std::min(len1[b], i0 + kQueryGrain);
      if (i0 >= i1 || len2[b] == 0) {
        continue;
      }
      knn_brute<NORM, DS>(q + b * P1 * D, i0, i1, s + b * D * P2, P2, len2[b], D, K,
                          out_d + b * P1 * K, out_i + b * P1 * K);
    }
  });
}

template <typename T, int NORM>
void knn_backward_impl(const at::Tensor& p1, const at::Tensor& p2, const at::Tensor& idx,
                       const at::Tensor& grad, at::Tensor& g1, at::Tensor& g2) {
  const int64_t B = p1.size(0), P1 = p1.size(1), P2 = p2.size(1), K = idx.size(2);
  const int64_t D = p1.size(2);
  const T* a = p1.const_data_ptr<T>();
  const T* b = p2.const_data_ptr<T>();
  const int64_t* ix = idx.const_data_ptr<int64_t>();
  const T* g = grad.const_data_ptr<T>();
  T* ga = g1.mutable_data_ptr<T>();
  T* gb = g2.mutable_data_ptr<T>();
  // One cloud per work item: the scatter into grad_p2 stays sequential, hence deterministic.
  at::parallel_for(0, B, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      for (int64_t i = 0; i < P1; ++i) {
        const T* qi = a + (c * P1 + i) * D;
        T* gqi = ga + (c * P1 + i) * D;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t j = ix[(c * P1 + i) * K + k];
          if (j < 0) {
            continue;
          }
          const T gk = g[(c * P1 + i) * K + k];
          const T* pj = b + (c * P2 + j) * D;
          T* gpj = gb + (c * P2 + j) * D;
          for (int64_t d = 0; d < D; ++d) {
            const T v = gk * dist_term_grad<NORM>(qi[d] - pj[d]);
            gqi[d] += v;
            gpj[d] -= v;
          }
        }
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> knn_points_cpu(const at::Tensor& p1, const at::Tensor& p2,
                                                  const std::optional<at::Tensor>& lengths1,
                                                  const std::optional<at::Tensor>& lengths2,
                                                  int64_t K, int64_t norm, bool return_sorted,
                                                  int64_t method) {
  (void)return_sorted;  // every path returns neighbours sorted by (distance, index)
  constexpr const char* op = "knn_points";
  check_knn_args(p1, p2, K, norm, method, op);
  const at::Tensor l1 = lengths_or_full(lengths1, p1, op, "lengths1");
  const at::Tensor l2 = lengths_or_full(lengths2, p2, op, "lengths2");
  check_lengths_values(l1, p1.size(1), op, "lengths1");
  check_lengths_values(l2, p2.size(1), op, "lengths2");

  const at::ScalarType ct = opmath_dtype(p1.scalar_type());
  const at::Tensor a = p1.to(ct).contiguous(), b = p2.to(ct).contiguous();
  check_coordinates_cpu(a, op, "p1");
  check_coordinates_cpu(b, op, "p2");
  const int64_t B = a.size(0), P1 = a.size(1), P2 = b.size(1), D = a.size(2);
  at::Tensor dists = at::empty({B, P1, K}, a.options());
  at::Tensor idx = at::empty({B, P1, K}, a.options().dtype(at::kLong));
  if (B > 0 && P1 > 0) {
    const bool use_tree =
        method == kKnnKdTree ||
        (method == kKnnAuto && D <= kKdMaxDim && P2 >= kTreeMinPoints && P1 >= kTreeMinPoints &&
         P2 <= kTreeMaxPointsPerQuery * P1);
    FV_CHECK_VALUE(!use_tree || D <= kKdMaxDim, op, "the k-d tree method supports D <= ",
                   kKdMaxDim, ", got D = ", D);
    const int64_t* len1 = l1.const_data_ptr<int64_t>();
    const int64_t* len2 = l2.const_data_ptr<int64_t>();
    AT_DISPATCH_FLOATING_TYPES(ct, "knn_points_cpu", [&] {
      const int k = static_cast<int>(K);
      dispatch_norm_dim(norm, D, [&](auto norm_c, auto dim_c) {
        knn_impl<scalar_t, decltype(norm_c)::value, decltype(dim_c)::value>(a, b, len1, len2, k,
                                                                            use_tree, dists, idx);
      });
    });
  }
  return {dists.to(p1.scalar_type()), idx};
}

std::tuple<at::Tensor, at::Tensor> knn_points_backward_cpu(const at::Tensor& p1,
                                                           const at::Tensor& p2,
                                                           const at::Tensor& idx,
                                                           const at::Tensor& grad_dists,
                                                           int64_t norm) {
  constexpr const char* op = "_knn_points_backward";
  check_knn_backward_args(p1, p2, idx, grad_dists, norm, op);
  const at::ScalarType ct = opmath_dtype(p1.scalar_type());
  const at::Tensor a = p1.to(ct).contiguous(), b = p2.to(ct).contiguous();
  const at::Tensor g = grad_dists.to(ct).contiguous(), ix = idx.contiguous();
  // The op is public through torch.ops: an index past the cloud would write out of bounds.
  const int64_t P2 = p2.size(1), K = ix.size(2), rows = ix.size(0) * ix.size(1);
  const int64_t* iv = ix.const_data_ptr<int64_t>();
  for (int64_t r = 0; r < rows * K; ++r) {
    FV_CHECK_VALUE(iv[r] >= -1 && iv[r] < P2, op, "idx[", r / K / ix.size(1), ", ",
                   r / K % ix.size(1), ", ", r % K,
                   "] must be -1 (no neighbour) or a point index in [0, P2 = ", P2, "), got ",
                   iv[r]);
  }
  at::Tensor g1 = at::zeros_like(a), g2 = at::zeros_like(b);
  AT_DISPATCH_FLOATING_TYPES(ct, "knn_points_backward_cpu", [&] {
    dispatch_norm(norm, [&](auto norm_c) {
      knn_backward_impl<scalar_t, decltype(norm_c)::value>(a, b, ix, g, g1, g2);
    });
  });
  return {g1.to(p1.scalar_type()), g2.to(p2.scalar_type())};
}

TORCH_LIBRARY_IMPL(fastvision, CPU, m) {
  m.impl("knn_points", &knn_points_cpu);
  m.impl("_knn_points_backward", &knn_points_backward_cpu);
}

}  // namespace fastvision::points
