// CPU kernel of farthest_point_sample. Small clouds run the classic scan over a
// structure-of-arrays copy (vectorised). Large clouds are split into k-d tree buckets with
// bounding boxes: a new sample only rescans the buckets it can still bring closer (a rigorous
// lower bound of the computed distance decides), which gives the same sequence far faster.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cpu_distance.h"
#include "fastvision/point_math.h"
#include "fps_common.h"
#include "kdtree.h"
#include "points_common.h"

namespace fastvision::points {

namespace {

// auto: buckets once the cloud is large and enough points are sampled to pay for the tree build
// (measured on 3-D clouds: at P = 100000 the scan still wins for K = 64).
constexpr int64_t kBucketMinPoints = 2048;
constexpr int64_t kBucketMinK = 256;
constexpr int64_t kBucketSize = 128;

// Writes the selection of one cloud into out_i/out_d. `chooser` holds the per-algorithm state:
// chooser.update(j) adds point j to the set, chooser.farthest() returns the next (index, dist).
template <typename T, typename Chooser>
void run_fps(Chooser& chooser, const int64_t* seeds, int64_t S, int64_t n, int64_t K,
             int64_t* out_i, T* out_d) {
  int64_t count = 0;
  for (int64_t s = 0; s < S && count < K; ++s) {
    const int64_t j = seeds[s];
    if (j < 0) {
      continue;
    }
    out_i[count] = j;
    out_d[count] = chooser.min_dist(j);
    chooser.update(j);
    ++count;
  }
  if (count == 0 && K > 0 && n > 0) {  // no seed given: start at index 0
    out_i[0] = 0;
    out_d[0] = fv_infinity<T>();
    chooser.update(0);
    count = 1;
  }
  const int64_t total = std::min(K, std::max(n, count));
  for (; count < total; ++count) {
    const auto [j, d] = chooser.farthest();
    out_i[count] = j;
    out_d[count] = d;
    chooser.update(j);
  }
}

// The classic scan: min-distances in index order, argmax with the lowest index on ties.
template <typename T, int DS>
struct ScanChooser {
  const T* pts;  // (n, D) row-major
  const T* soa;  // (D, stride)
  int64_t stride, n;
  int D;
  std::vector<T> mind;

  ScanChooser(const T* p, const T* s, int64_t stride_, int64_t n_, int D_)
      : pts(p), soa(s), stride(stride_), n(n_), D(D_), mind(static_cast<size_t>(n_)) {
    std::fill(mind.begin(), mind.end(), fv_infinity<T>());
  }
  T min_dist(int64_t j) const { return mind[j]; }
  void update(int64_t j) {
    constexpr int64_t kBlock = 256;
    T buf[kBlock];
    for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
      const int64_t m = std::min(kBlock, n - j0);
      chunk_distances<2, DS>(pts + j * D, soa, stride, j0, m, D, buf);
      T* md = mind.data() + j0;
      for (int64_t c = 0; c < m; ++c) {
        md[c] = std::min(md[c], buf[c]);
      }
    }
  }
  std::pair<int64_t, T> farthest() const {
    const T mx = array_max(mind.data(), n);
    const int64_t j = std::find(mind.begin(), mind.end(), mx) - mind.begin();
    return {j, mx};
  }
};

// A k-d tree whose every node keeps its bounding box and the farthest point of its subtree (the
// largest min-distance, lowest index on ties). A new sample descends only into the subtrees it can
// still bring closer: a subtree is skipped when a rigorous lower bound of the computed distance
// from the sample to its box is not below the subtree's largest min-distance (then no point in it
// changes). Maxima are recomputed on the way back up, so the next farthest point is the root's.
template <typename T, int DS>
struct BucketChooser {
  KdTree<T> tree;
  int D;
  std::vector<T> box_lo, box_hi;  // (nodes, D)
  std::vector<T> best_d;          // per node: largest min-distance in the subtree ...
  std::vector<int64_t> best_i;    // ... and its (lowest) original index
  std::vector<T> mind;            // per reordered point
  std::vector<int64_t> where;     // original index -> reordered position

  BucketChooser(const T* pts, int64_t n, int D_) : D(D_) {
    tree.template build<DS>(pts, n, D, kBucketSize);
    const auto& nodes = tree.nodes();
    const size_t N = nodes.size();
    box_lo.resize(N * D);
    box_hi.resize(N * D);
    best_d.assign(N, fv_infinity<T>());
    best_i.assign(N, -1);
    mind.assign(static_cast<size_t>(n), fv_infinity<T>());
    where.resize(static_cast<size_t>(n));
    const T* p = tree.points();
    const int64_t* ids = tree.ids();
    // Nodes are stored parent first, so a reverse sweep sees children before their parent.
    for (size_t k = N; k-- > 0;) {
      const auto& nd = nodes[k];
      T* lo = box_lo.data() + k * D;
      T* hi = box_hi.data() + k * D;
      if (nd.left < 0) {
        std::copy_n(p + nd.lo * D, D, lo);
        std::copy_n(p + nd.lo * D, D, hi);
        for (int64_t j = nd.lo; j < nd.hi; ++j) {
          where[ids[j]] = j;
          for (int d = 0; d < D; ++d) {
            lo[d] = std::min(lo[d], p[j * D + d]);
            hi[d] = std::max(hi[d], p[j * D + d]);
          }
        }
      } else {
        for (int d = 0; d < D; ++d) {
          lo[d] = std::min(box_lo[nd.left * D + d], box_lo[nd.right * D + d]);
          hi[d] = std::max(box_hi[nd.left * D + d], box_hi[nd.right * D + d]);
        }
      }
    }
  }
  T min_dist(int64_t j) const { return mind[where[j]]; }
  void update(int64_t j) {
    if (!tree.nodes().empty()) {
      descend(0, tree.points() + where[j] * D);
    }
  }
  std::pair<int64_t, T> farthest() const { return {best_i[0], best_d[0]}; }

 private:
  void descend(int32_t node, const T* s) {
    const int dims = DS > 0 ? DS : D;
    const T* lo = box_lo.data() + static_cast<int64_t>(node) * D;
    const T* hi = box_hi.data() + static_cast<int64_t>(node) * D;
    // Same terms, same rounding, same order as point_dist, on the per-axis offsets to the box.
    T bound = T(0);
    for (int d = 0; d < dims; ++d) {
      const T off = s[d] < lo[d] ? lo[d] - s[d] : (s[d] > hi[d] ? s[d] - hi[d] : T(0));
      bound = d == 0 ? dist_term<2>(off) : fv_add(bound, dist_term<2>(off));
    }
    if (!(bound < best_d[node])) {
      return;
    }
    const auto& nd = tree.nodes()[node];
    if (nd.left >= 0) {
      descend(nd.left, s);
      descend(nd.right, s);
      const bool left = fps_better(best_d[nd.left], best_i[nd.left], best_d[nd.right],
                                   best_i[nd.right]);
      best_d[node] = left ? best_d[nd.left] : best_d[nd.right];
      best_i[node] = left ? best_i[nd.left] : best_i[nd.right];
      return;
    }
    // Vectorised rescan of the bucket (the distances are chunk_distances', i.e. point_dist's).
    const int64_t m = nd.hi - nd.lo;
    T buf[kBucketSize];
    chunk_distances<2, DS>(s, tree.soa(), static_cast<int64_t>(mind.size()), nd.lo, m, D, buf);
    T* md = mind.data() + nd.lo;
    for (int64_t k = 0; k < m; ++k) {
      md[k] = std::min(md[k], buf[k]);
    }
    const T bd = array_max(md, m);
    const int64_t* ids = tree.ids() + nd.lo;
    int64_t bi = -1;
    for (int64_t k = 0; k < m; ++k) {
      if (md[k] == bd && static_cast<uint64_t>(ids[k]) < static_cast<uint64_t>(bi)) {
        bi = ids[k];
      }
    }
    best_d[node] = bd;
    best_i[node] = bi;
  }
};

template <typename T, int DS>
void fps_impl(const at::Tensor& pts, const int64_t* len, const at::Tensor& seeds, int64_t K,
              int64_t method, at::Tensor& out_i, at::Tensor& out_d) {
  const int64_t B = pts.size(0), P = pts.size(1), S = seeds.size(1);
  const int D = static_cast<int>(pts.size(2));
  const at::Tensor soa = pts.transpose(1, 2).contiguous();
  const T* p = pts.const_data_ptr<T>();
  const T* s = soa.const_data_ptr<T>();
  const int64_t* sd = seeds.const_data_ptr<int64_t>();
  int64_t* oi = out_i.mutable_data_ptr<int64_t>();
  T* od = out_d.mutable_data_ptr<T>();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n = len[b];
      const bool buckets = method == kFpsBuckets ||
                           (method == kFpsAuto && n >= kBucketMinPoints && K >= kBucketMinK &&
                            D <= kKdMaxDim);
      if (buckets && n > 0) {
        BucketChooser<T, DS> chooser(p + b * P * D, n, D);
        run_fps<T>(chooser, sd + b * S, S, n, K, oi + b * K, od + b * K);
      } else if (n > 0) {
        ScanChooser<T, DS> chooser(p + b * P * D, s + b * D * P, P, n, D);
        run_fps<T>(chooser, sd + b * S, S, n, K, oi + b * K, od + b * K);
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> farthest_point_sample_cpu(
    const at::Tensor& points, const std::optional<at::Tensor>& lengths, int64_t K,
    const at::Tensor& start_idx, int64_t method) {
  constexpr const char* op = "farthest_point_sample";
  check_fps_args(points, K, start_idx, method, op);
  FV_CHECK_VALUE(method != kFpsBuckets || points.size(2) <= kKdMaxDim, op,
                 "the bucket method supports D <= ", kKdMaxDim, ", got D = ", points.size(2));
  const at::Tensor len = lengths_or_full(lengths, points, op, "lengths");
  check_lengths_values(len, points.size(1), op, "lengths");
  const at::Tensor seeds = start_idx.contiguous();
  {
    const int64_t* l = len.const_data_ptr<int64_t>();
    const int64_t* sd = seeds.const_data_ptr<int64_t>();
    for (int64_t b = 0; b < seeds.size(0); ++b) {
      for (int64_t s = 0; s < seeds.size(1); ++s) {
        const int64_t j = sd[b * seeds.size(1) + s];
        FV_CHECK_VALUE(j >= -1 && j < l[b], op, "start_idx[", b, ", ", s,
                       "] must be -1 (none) or a point index in [0, ", l[b], "), got ", j);
      }
    }
  }
  const at::ScalarType ct = opmath_dtype(points.scalar_type());
  const at::Tensor pts = points.to(ct).contiguous();
  check_coordinates_cpu(pts, op, "points");
  const int64_t B = pts.size(0);
  at::Tensor out_i = at::full({B, K}, -1, pts.options().dtype(at::kLong));
  at::Tensor out_d = at::zeros({B, K}, pts.options());
  if (B > 0 && K > 0) {
    AT_DISPATCH_FLOATING_TYPES(ct, "farthest_point_sample_cpu", [&] {
      pts.size(2) == 3
          ? fps_impl<scalar_t, 3>(pts, len.const_data_ptr<int64_t>(), seeds, K, method, out_i,
                                  out_d)
          : fps_impl<scalar_t, 0>(pts, len.const_data_ptr<int64_t>(), seeds, K, method, out_i,
                                  out_d);
    });
  }
  return {out_i, out_d.to(points.scalar_type())};
}

TORCH_LIBRARY_IMPL(fastvision, CPU, m) {
  m.impl("farthest_point_sample", &farthest_point_sample_cpu);
}

}  // namespace fastvision::points
