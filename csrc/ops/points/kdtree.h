// A k-d tree built inside the CPU ops for large clouds, so that kNN, nearest-neighbour distance
// and FPS are not O(P1 * P2). Every distance it computes is the same expression as the brute-force
// path (fastvision/point_math.h), and every pruning bound is a rigorous lower bound of that
// computed distance (per-axis offsets rounded the same way, summed in the same order), so the
// results are bit-identical to the brute-force path, ties included.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include "cpu_distance.h"
#include "fastvision/point_math.h"

namespace fastvision::points {

constexpr int kKdMaxDim = 8;           // the tree is used for D <= kKdMaxDim only
constexpr int64_t kMaxLeafSize = 128;
constexpr int64_t kParallelBuildMinPoints = 16384;

template <typename T>
class KdTree {
 public:
  struct Node {
    T split;
    int32_t dim;
    int32_t left;   // -1 for a leaf
    int32_t right;
    int64_t lo, hi;  // the node's range in the reordered point array
  };

  // points: contiguous (n, D). Leaves hold at most leaf_size points. DS > 0 fixes D at compile
  // time (the 3-D fast path).
  template <int DS>
  void build(const T* points, int64_t n, int D, int64_t leaf_size) {
    TORCH_INTERNAL_ASSERT(leaf_size >= 1 && leaf_size <= kMaxLeafSize);
    TORCH_INTERNAL_ASSERT(D >= 1 && D <= kKdMaxDim && (DS == 0 || DS == D));
    D_ = D;
    leaf_size_ = leaf_size;
    // The build partitions contiguous records (coordinates + index) rather than an index array,
    // so the median selections stream through memory instead of gathering.
    std::vector<Record<DS>> recs(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) {
      std::copy_n(points + j * D, D, recs[j].c);
      recs[j].id = j;
    }
    // The shape of the tree depends on n only (median splits), so every node's slot is known in
    // advance: the top levels are split here, the subtrees below them in parallel (when not
    // already inside a parallel region, i.e. for a batch of one large cloud).
    nodes_.assign(static_cast<size_t>(n > 0 ? subtree_nodes(n) : 0), Node{});
    if (n > 0) {
      std::vector<Subtree> frontier;
      const int top_levels = n >= kParallelBuildMinPoints ? 3 : 0;
      split_top(recs.data(), 0, 0, n, top_levels, frontier);
      at::parallel_for(0, static_cast<int64_t>(frontier.size()), 1, [&](int64_t f0, int64_t f1) {
        for (int64_t f = f0; f < f1; ++f) {
          build_node(recs.data(), frontier[f].id, frontier[f].lo, frontier[f].hi);
        }
      });
    }
    pts_.resize(static_cast<size_t>(n * D));
    soa_.resize(static_cast<size_t>(n * D));
    ids_.resize(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) {
      ids_[j] = recs[j].id;
      for (int d = 0; d < D; ++d) {
        pts_[j * D + d] = recs[j].c[d];
        soa_[d * n + j] = recs[j].c[d];
      }
    }
  }

  // The K nearest points of q, ascending by (distance, index), merged into dist/idx (which the
  // caller initialises to +inf / -1).
  template <int NORM, int DS>
  void knn(const T* q, int K, T* dist, int64_t* idx) const {
    if (nodes_.empty()) {
      return;
    }
    T off[kKdMaxDim] = {};
    search<NORM, DS>(0, q, off, K, dist, idx);
  }

  // The leaf whose cell holds q (the first leaf a search for q visits).
  int32_t leaf_of(const T* q) const {
    int32_t node = 0;
    while (nodes_[node].left >= 0) {
      const Node& nd = nodes_[node];
      node = q[nd.dim] - nd.split <= T(0) ? nd.left : nd.right;
    }
    return node;
  }

  const std::vector<Node>& nodes() const { return nodes_; }
  const T* points() const { return pts_.data(); }
  const T* soa() const { return soa_.data(); }  // (D, n)
  const int64_t* ids() const { return ids_.data(); }

 private:
  template <int DS>
  struct Record {
    T c[DS > 0 ? DS : kKdMaxDim];
    int64_t id;
  };

  struct Subtree {
    int32_t id;
    int64_t lo, hi;
  };

  // Nodes of the subtree over m points, in preorder (parent, left subtree, right subtree).
  int32_t subtree_nodes(int64_t m) const {
    return m <= leaf_size_ ? 1 : 1 + subtree_nodes(m / 2) + subtree_nodes(m - m / 2);
  }

  // Splits node `id` over [lo, hi) at the median of its widest axis; returns the split point.
  template <typename R>
  int64_t split_node(R* recs, int32_t id, int64_t lo, int64_t hi) {
    T mn[kKdMaxDim], mx[kKdMaxDim];
    for (int d = 0; d < D_; ++d) {
      mn[d] = mx[d] = recs[lo].c[d];
    }
    for (int64_t j = lo + 1; j < hi; ++j) {
      for (int d = 0; d < D_; ++d) {
        mn[d] = std::min(mn[d], recs[j].c[d]);
        mx[d] = std::max(mx[d], recs[j].c[d]);
      }
    }
    int dim = 0;
    for (int d = 1; d < D_; ++d) {
      if (mx[d] - mn[d] > mx[dim] - mn[dim]) {
        dim = d;
      }
    }
    const int64_t mid = lo + (hi - lo) / 2;
    std::nth_element(recs + lo, recs + mid, recs + hi,
                     [dim](const R& a, const R& b) { return a.c[dim] < b.c[dim]; });
    const int32_t left = id + 1;
    nodes_[id] = Node{recs[mid].c[dim], dim, left, left + subtree_nodes(mid - lo), lo, hi};
    return mid;
  }

  template <typename R>
  void split_top(R* recs, int32_t id, int64_t lo, int64_t hi, int levels,
                 std::vector<Subtree>& frontier) {
    if (levels == 0 || hi - lo <= leaf_size_) {
      frontier.push_back(Subtree{id, lo, hi});
      return;
    }
    const int64_t mid = split_node(recs, id, lo, hi);
    split_top(recs, nodes_[id].left, lo, mid, levels - 1, frontier);
    split_top(recs, nodes_[id].right, mid, hi, levels - 1, frontier);
  }

  template <typename R>
  void build_node(R* recs, int32_t id, int64_t lo, int64_t hi) {
    if (hi - lo <= leaf_size_) {
      nodes_[id] = Node{T(0), 0, -1, -1, lo, hi};
      return;
    }
    const int64_t mid = split_node(recs, id, lo, hi);
    build_node(recs, nodes_[id].left, lo, mid);
    build_node(recs, nodes_[id].right, mid, hi);
  }

  // Lower bound of the computed distance from q to any point whose per-axis offsets from q are
  // at least off[]: the same terms, rounded the same way, summed in the same order.
  template <int NORM, int DS>
  T bound(const T* off) const {
    const int dims = DS > 0 ? DS : D_;
    T acc = dist_term<NORM>(off[0]);
    for (int d = 1; d < dims; ++d) {
      acc = fv_add(acc, dist_term<NORM>(off[d]));
    }
    return acc;
  }

  template <int NORM, int DS>
  void search(int32_t node, const T* q, T* off, int K, T* dist, int64_t* idx) const {
    const Node& nd = nodes_[node];
    if (nd.left < 0) {
      // Leaves hold at most kMaxLeafSize points, stored as a structure of arrays: the distances
      // of a whole leaf are computed in one vectorised pass (the same expression as point_dist).
      T buf[kMaxLeafSize];
      const int64_t m = nd.hi - nd.lo;
      chunk_distances<NORM, DS>(q, soa_.data(), static_cast<int64_t>(ids_.size()), nd.lo, m, D_,
                                buf);
      if (!any_less(buf, m, dist[K - 1]) && !any_equal(buf, m, dist[K - 1])) {
        return;
      }
      for (int64_t j = 0; j < m; ++j) {
        topk_insert_dynamic(dist, idx, K, buf[j], ids_[nd.lo + j]);
      }
      return;
    }
    const T diff = q[nd.dim] - nd.split;
    const int32_t near = diff <= T(0) ? nd.left : nd.right;
    const int32_t far = diff <= T(0) ? nd.right : nd.left;
    search<NORM, DS>(near, q, off, K, dist, idx);
    const T saved = off[nd.dim];
    off[nd.dim] = fv_abs(diff);
    // Ties must be explored: a point at exactly the K-th distance may have a lower index.
    if (!(bound<NORM, DS>(off) > dist[K - 1])) {
      search<NORM, DS>(far, q, off, K, dist, idx);
    }
    off[nd.dim] = saved;
  }

  int D_ = 0;
  int64_t leaf_size_ = 16;
  std::vector<Node> nodes_;
  std::vector<T> pts_;  // (n, D), reordered
  std::vector<T> soa_;  // (D, n), reordered
  std::vector<int64_t> ids_;
};

}  // namespace fastvision::points
