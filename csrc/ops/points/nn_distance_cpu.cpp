// CPU kernel of nn_distance: nearest neighbours in both directions. Small clouds take one pass
// over the pairs (each distance updates the row minimum and the column minimum); large clouds run
// the k-d tree search of knn_points in each direction.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "fastvision/common.h"
#include "cpu_distance.h"
#include "fastvision/point_math.h"
#include "knn_common.h"
#include "knn_cpu.h"
#include "kdtree.h"
#include "nn_distance_common.h"
#include "points_common.h"

namespace fastvision::points {

namespace {

constexpr int64_t kChunk = 16;
constexpr int64_t kRowBlock = 256;          // rows per work item of the one-pass scan
// auto: the k-d tree (both ways) once there are enough pairs and neither cloud is small
// (measured on 3-D clouds).
constexpr int64_t kTreeMinPoints = 256;
constexpr int64_t kTreeMinPairs = int64_t{1} << 18;

template <int NORM, int DS, typename T>
void one_pass(const at::Tensor& a, const at::Tensor& b, const int64_t* len1, const int64_t* len2,
              at::Tensor& d12, at::Tensor& i12, at::Tensor& d21, at::Tensor& i21) {
  const int64_t B = a.size(0), P1 = a.size(1), P2 = b.size(1);
  const int D = static_cast<int>(a.size(2));
  const at::Tensor soa = b.transpose(1, 2).contiguous();
  const T* s = soa.const_data_ptr<T>();
  const T* q = a.const_data_ptr<T>();
  T* rd = d12.mutable_data_ptr<T>();
  int64_t* ri = i12.mutable_data_ptr<int64_t>();
  const int64_t blocks = std::max<int64_t>((P1 + kRowBlock - 1) / kRowBlock, 1);
  // Column minima per (cloud, row block), merged below in row-block order.
  std::vector<T> col_d(static_cast<size_t>(B * blocks * P2), fv_infinity<T>());
  std::vector<int64_t> col_i(static_cast<size_t>(B * blocks * P2), -1);

  at::parallel_for(0, B * blocks, 1, [&](int64_t w0, int64_t w1) {
    T buf[kChunk];
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t c = w / blocks, blk = w % blocks;
      const int64_t n2 = len2[c];
      const int64_t r0 = blk * kRowBlock, r1 = std::min(len1[c], r0 + kRowBlock);
      T* cd = col_d.data() + w * P2;
      int64_t* ci = col_i.data() + w * P2;
      const T* sc = s + c * D * P2;
      for (int64_t i = r0; i < r1; ++i) {
        const T* qi = q + (c * P1 + i) * D;
        T best = fv_infinity<T>();
        int64_t best_i = -1;
        for (int64_t j0 = 0; j0 < n2; j0 += kChunk) {
          const int64_t n = std::min(kChunk, n2 - j0);
          if (n == kChunk) {
            chunk_distances<NORM, DS>(qi, sc, P2, j0, kChunk, D, buf);
          } else {
            chunk_distances<NORM, DS>(qi, sc, P2, j0, n, D, buf);
          }
          // Rows are visited in ascending order, so strict `<` keeps the lowest row index.
          T* cdj = cd + j0;
          int64_t* cij = ci + j0;
          for (int64_t k = 0; k < n; ++k) {
            const bool better = buf[k] < cdj[k];
            cdj[k] = better ? buf[k] : cdj[k];
            cij[k] = better ? i : cij[k];
          }
          if (any_less(buf, n, best)) {
            for (int64_t k = 0; k < n; ++k) {
              if (buf[k] < best) {
                best = buf[k];
                best_i = j0 + k;
              }
            }
          }
        }
        rd[c * P1 + i] = best;
        ri[c * P1 + i] = best_i;
      }
    }
  });

  T* cdo = d21.mutable_data_ptr<T>();
  int64_t* cio = i21.mutable_data_ptr<int64_t>();
  at::parallel_for(0, B, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      for (int64_t j = 0; j < len2[c]; ++j) {
        T best = fv_infinity<T>();
        int64_t best_i = -1;
        for (int64_t blk = 0; blk < blocks; ++blk) {
          const int64_t o = (c * blocks + blk) * P2 + j;
          if (col_d[o] < best) {
            best = col_d[o];
            best_i = col_i[o];
          }
        }
        cdo[c * P2 + j] = best;
        cio[c * P2 + j] = best_i;
      }
    }
  });
}

// Rows past the cloud's length: distance 0, index -1.
void zero_padding(at::Tensor& d, at::Tensor& i, const at::Tensor& lengths) {
  const at::Tensor pad =
      at::arange(d.size(1), lengths.options()).unsqueeze(0) >= lengths.unsqueeze(1);
  d.masked_fill_(pad, 0);
  i.masked_fill_(pad, -1);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> nn_distance_cpu(
    const at::Tensor& p1, const at::Tensor& p2, const std::optional<at::Tensor>& lengths1,
    const std::optional<at::Tensor>& lengths2, int64_t norm, int64_t method) {
  constexpr const char* op = "nn_distance";
  check_nn_distance_args(p1, p2, norm, method, op);
  const at::Tensor l1 = lengths_or_full(lengths1, p1, op, "lengths1");
  const at::Tensor l2 = lengths_or_full(lengths2, p2, op, "lengths2");
  check_lengths_values(l1, p1.size(1), op, "lengths1");
  check_lengths_values(l2, p2.size(1), op, "lengths2");
  const at::ScalarType ct = opmath_dtype(p1.scalar_type());
  const at::Tensor a = p1.to(ct).contiguous(), b = p2.to(ct).contiguous();
  check_coordinates_cpu(a, op, "p1");
  check_coordinates_cpu(b, op, "p2");
  const int64_t B = p1.size(0), P1 = p1.size(1), P2 = p2.size(1), D = p1.size(2);

  const bool use_tree = method == kKnnKdTree ||
                        (method == kKnnAuto && D <= kKdMaxDim && P1 >= kTreeMinPoints &&
                         P2 >= kTreeMinPoints && P1 * P2 >= kTreeMinPairs);
  if (use_tree && P1 > 0 && P2 > 0) {
    auto [d12, i12] = knn_points_cpu(a, b, l1, l2, 1, norm, true, kKnnKdTree);
    auto [d21, i21] = knn_points_cpu(b, a, l2, l1, 1, norm, true, kKnnKdTree);
    d12 = d12.squeeze(2);
    i12 = i12.squeeze(2);
    d21 = d21.squeeze(2);
    i21 = i21.squeeze(2);
    zero_padding(d12, i12, l1);
    zero_padding(d21, i21, l2);
    return {d12.to(p1.scalar_type()), i12, d21.to(p1.scalar_type()), i21};
  }

  at::Tensor d12 = at::empty({B, P1}, a.options()), d21 = at::empty({B, P2}, a.options());
  at::Tensor i12 = at::empty({B, P1}, a.options().dtype(at::kLong));
  at::Tensor i21 = at::empty({B, P2}, a.options().dtype(at::kLong));
  if (B > 0) {
    const int64_t* len1 = l1.const_data_ptr<int64_t>();
    const int64_t* len2 = l2.const_data_ptr<int64_t>();
    AT_DISPATCH_FLOATING_TYPES(ct, "nn_distance_cpu", [&] {
      dispatch_norm_dim(norm, D, [&](auto norm_c, auto dim_c) {
        one_pass<decltype(norm_c)::value, decltype(dim_c)::value, scalar_t>(a, b, len1, len2, d12,
                                                                           i12, d21, i21);
      });
    });
    zero_padding(d12, i12, l1);
    zero_padding(d21, i21, l2);
  }
  return {d12.to(p1.scalar_type()), i12, d21.to(p1.scalar_type()), i21};
}

TORCH_LIBRARY_IMPL(fastvision, CPU, m) { m.impl("nn_distance", &nn_distance_cpu); }

}  // namespace fastvision::points
