"""fastvision.compat.torch_cluster: torch_cluster's knn, knn_graph and fps conventions.

The first tests repeat the checks of torch_cluster's own test_knn.py and test_fps.py (same inputs,
same expected outputs, TorchScript included; their cosine check runs here on the CPU too, where
torch_cluster raises). The rest compare with naive oracles written here (dense distances per
query, the greedy FPS loop per example) on ragged batches with empty examples, check the edge and
sample order, the ratio rounding, random starts, the errors, and CUDA against CPU.
"""

import math

import pytest
import scipy.spatial
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastvision.compat.torch_cluster import fps, knn, knn_graph

DTYPES = [torch.half, torch.float, torch.double]  # torch_cluster's grad_dtypes


def to_set(edge_index):
    return set(map(tuple, edge_index.t().tolist()))


# ---------------------------------------------------------------------------------------------
# Oracles: plain loops over the queries / examples, distances in float64.


def naive_knn(x, y, k, batch_x=None, batch_y=None, cosine=False):
    """torch_cluster's kNN edge index, in the order the drop-in promises: by query, then by
    distance, then by x index."""
    x = x.double() if x.dim() == 2 else x.double()[:, None]
    y = y.double() if y.dim() == 2 else y.double()[:, None]
    bx = torch.zeros(len(x), dtype=torch.long) if batch_x is None else batch_x
    by = torch.zeros(len(y), dtype=torch.long) if batch_y is None else batch_y
    rows, cols = [], []
    for i in range(len(y)):
        cand = (bx == by[i]).nonzero().flatten().tolist()
        if cosine:
            d = [1 - float(x[j] @ y[i]) / float(x[j].norm() * y[i].norm()) for j in cand]
        else:
            d = [float(((x[j] - y[i]) ** 2).sum()) for j in cand]
        best = sorted(zip(d, cand))[:k]
        rows += [i] * len(best)
        cols += [j for _, j in best]
    return torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1)


def naive_knn_graph(x, k, batch=None, loop=False, flow="source_to_target"):
    e = naive_knn(x, x, k if loop else k + 1, batch, batch)
    row, col = (e[1], e[0]) if flow == "source_to_target" else (e[0], e[1])
    if not loop:
        keep = row != col
        row, col = row[keep], col[keep]
    return torch.stack([row, col])


def naive_fps_example(p, count, start):
    """The greedy loop of torch_cluster's CPU kernel: argmax (first maximum) of the distances to
    the chosen set."""
    p = p.double()
    chosen = [start]
    dist = ((p - p[start]) ** 2).sum(1)
    for _ in range(count - 1):
        j = int(torch.argmax(dist))
        chosen.append(j)
        dist = torch.minimum(dist, ((p - p[j]) ** 2).sum(1))
    return chosen


def naive_fps(src, ptr, counts, starts=None):
    out = []
    for b in range(len(ptr) - 1):
        lo, hi = ptr[b], ptr[b + 1]
        if counts[b] == 0:
            continue
        start = 0 if starts is None else starts[b]
        out += [lo + j for j in naive_fps_example(src[lo:hi], counts[b], start)]
    return torch.tensor(out, dtype=torch.long)


def ragged_batch(sizes):
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))


def ptr_of(sizes):
    return [0] + torch.tensor(sizes).cumsum(0).tolist()


# ---------------------------------------------------------------------------------------------
# torch_cluster's test_knn.py and test_fps.py, repeated


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_cluster_knn(dtype):
    x = torch.tensor(
        [[-1, -1], [-1, 1], [1, 1], [1, -1], [-1, -1], [-1, 1], [1, 1], [1, -1]], dtype=dtype
    )
    y = torch.tensor([[1, 0], [-1, 0]], dtype=dtype)
    batch_x = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    batch_y = torch.tensor([0, 1])

    assert to_set(knn(x, y, 2)) == {(0, 2), (0, 3), (1, 0), (1, 1)}
    assert to_set(torch.jit.script(knn)(x, y, 2)) == {(0, 2), (0, 3), (1, 0), (1, 1)}
    assert to_set(knn(x, y, 2, batch_x, batch_y)) == {(0, 2), (0, 3), (1, 4), (1, 5)}
    # torch_cluster runs this one on CUDA only (its CPU kernel has no cosine).
    assert to_set(knn(x, y, 2, batch_x, batch_y, cosine=True)) == {(0, 2), (0, 3), (1, 4), (1, 5)}
    # Skipping a batch.
    batch_x = torch.tensor([0, 0, 0, 0, 2, 2, 2, 2])
    batch_y = torch.tensor([0, 2])
    assert to_set(knn(x, y, 2, batch_x, batch_y)) == {(0, 2), (0, 3), (1, 4), (1, 5)}


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_cluster_knn_graph(dtype):
    x = torch.tensor([[-1, -1], [-1, 1], [1, 1], [1, -1]], dtype=dtype)
    ring = {(0, 1), (0, 3), (1, 0), (1, 2), (2, 1), (2, 3), (3, 0), (3, 2)}
    assert to_set(knn_graph(x, k=2, flow="target_to_source")) == ring
    reversed_ring = {(j, i) for i, j in ring}
    assert to_set(knn_graph(x, k=2, flow="source_to_target")) == reversed_ring
    assert to_set(torch.jit.script(knn_graph)(x, k=2, flow="source_to_target")) == reversed_ring


def test_torch_cluster_knn_graph_large():
    x = torch.randn(1000, 3)
    edge_index = knn_graph(x, k=5, flow="target_to_source", loop=True)
    _, col = scipy.spatial.cKDTree(x.numpy()).query(x.numpy(), k=5)
    assert to_set(edge_index) == {(i, j) for i, ns in enumerate(col) for j in ns}


@torch.jit.script
def _scripted_fps(x: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    return fps(x, None, ratio, False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_cluster_fps(dtype):
    x = torch.tensor(
        [[-1, -1], [-1, 1], [1, 1], [1, -1], [-2, -2], [-2, 2], [2, 2], [2, -2]], dtype=dtype
    )
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    ptr = torch.tensor([0, 4, 8])
    assert fps(x, batch, random_start=False).tolist() == [0, 2, 4, 6]
    assert fps(x, batch, ratio=0.5, random_start=False).tolist() == [0, 2, 4, 6]
    assert fps(x, batch, ratio=torch.tensor(0.5), random_start=False).tolist() == [0, 2, 4, 6]
    assert fps(x, ptr=[0, 4, 8], ratio=0.5, random_start=False).tolist() == [0, 2, 4, 6]
    assert fps(x, ptr=ptr, ratio=0.5, random_start=False).tolist() == [0, 2, 4, 6]
    ratios = torch.tensor([0.5, 0.5])
    assert fps(x, batch, ratio=ratios, random_start=False).tolist() == [0, 2, 4, 6]
    assert fps(x, random_start=False).sort()[0].tolist() == [0, 5, 6, 7]
    assert fps(x, ratio=0.5, random_start=False).sort()[0].tolist() == [0, 5, 6, 7]
    assert fps(x, ratio=torch.tensor(0.5), random_start=False).sort()[0].tolist() == [0, 5, 6, 7]
    assert fps(x, ratio=torch.tensor([0.5]), random_start=False).sort()[0].tolist() == [0, 5, 6, 7]
    assert _scripted_fps(x, torch.tensor([0.5])).sort()[0].tolist() == [0, 5, 6, 7]


def test_torch_cluster_random_fps():
    N = 1024
    for _ in range(5):
        pos = torch.randn(2 * N, 3)
        batch = torch.cat([torch.zeros(N, dtype=torch.long), torch.ones(N, dtype=torch.long)])
        idx = fps(pos, batch, ratio=0.5)
        assert idx.min() >= 0 and idx.max() < 2 * N


# ---------------------------------------------------------------------------------------------
# knn against the oracle


def test_knn_layout_and_order_hand_example():
    # Row 0 the query (into y), row 1 the neighbour (into x); by query, nearest first, equal
    # distances by x index: query 0 is at distance 1 from x0..x3, query 1 at 0, 32, 34 from
    # x4, x3, x1.
    x = torch.tensor([[0.0, 0], [2, 0], [0, 0], [1, 1], [5, 5]])
    y = torch.tensor([[1.0, 0], [5, 5]])
    out = knn(x, y, 3)
    assert out.dtype == torch.long
    assert out.tolist() == [[0, 0, 0, 1, 1, 1], [0, 1, 2, 4, 3, 1]]


@pytest.mark.parametrize("dtype", [torch.float, torch.double])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_knn_ragged_empty_and_skipped_examples(dtype, k):
    # Examples 0..5 of x with 6, 0, 2, 9, 0, 1 points; y with 3, 4, 0, 5, 2, 1 queries: empty
    # examples on either side, examples smaller than k, and example 6 present in neither.
    sizes_x, sizes_y = [6, 0, 2, 9, 0, 1], [3, 4, 0, 5, 2, 1]
    bx, by = ragged_batch(sizes_x), ragged_batch(sizes_y)
    x = torch.randn(len(bx), 3, dtype=dtype)
    y = torch.randn(len(by), 3, dtype=dtype)
    expected = naive_knn(x, y, k, bx, by)
    assert torch.equal(knn(x, y, k, bx, by), expected)
    assert torch.equal(knn(x, y, k, bx, by, batch_size=7), expected)
    assert torch.equal(torch.jit.script(knn)(x, y, k, bx, by), expected)


def test_knn_against_oracle_on_a_grid_with_ties():
    # Integer coordinates: exact distances and many exact ties, so the order is fully specified.
    g = torch.stack(torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij"), -1)
    x = torch.cat([g.reshape(-1, 2), g.reshape(-1, 2)]).float()  # every point twice
    bx = ragged_batch([16, 16])
    y = (torch.rand(10, 2) * 4).floor()
    by = ragged_batch([4, 6])
    for k in (1, 4, 9, 16, 40):
        assert torch.equal(knn(x, y, k, bx, by), naive_knn(x, y, k, bx, by))
        assert torch.equal(knn(x, y, k), naive_knn(x, y, k))


def test_knn_one_batch_vector_none_is_example_zero():
    x, y = torch.randn(7, 2), torch.randn(4, 2)
    zeros_x, zeros_y = torch.zeros(7, dtype=torch.long), torch.zeros(4, dtype=torch.long)
    expected = naive_knn(x, y, 3)
    assert torch.equal(knn(x, y, 3, zeros_x, None), expected)
    assert torch.equal(knn(x, y, 3, None, zeros_y), expected)
    assert torch.equal(knn(x, y, 3, batch_size=1), expected)


def test_knn_one_dimensional_inputs_and_extra_features():
    x, y = torch.randn(9), torch.randn(5)
    assert torch.equal(knn(x, y, 2), naive_knn(x[:, None], y[:, None], 2))
    x, y = torch.randn(9, 11, dtype=torch.double), torch.randn(5, 11, dtype=torch.double)
    assert torch.equal(knn(x, y, 4), naive_knn(x, y, 4))


def test_knn_k_zero_k_large_and_empty_inputs():
    x, y = torch.randn(5, 3), torch.randn(2, 3)
    assert knn(x, y, 0).shape == (2, 0)
    assert torch.equal(knn(x, y, 50), naive_knn(x, y, 50))  # every point, as torch_cluster
    assert torch.equal(knn(x, y, 150), naive_knn(x, y, 150))  # k > 100: torch_cluster's CUDA cap
    for a, b in ((x[:0], y), (x, y[:0])):
        e = knn(a, b, 3)
        assert e.shape == (2, 0) and e.dtype == torch.long
    bx = torch.tensor([0, 0, 0, 1, 1])
    by = torch.tensor([2, 2])  # queries in an example x does not have
    assert knn(x, y, 3, bx, by).shape == (2, 0)


def test_knn_half_precision_on_grid():
    x = (torch.rand(40, 3) * 8).floor()
    y = (torch.rand(12, 3) * 8).floor()
    bx, by = ragged_batch([25, 15]), ragged_batch([5, 7])
    out = knn(x.half(), y.half(), 5, bx, by)
    assert torch.equal(out, naive_knn(x, y, 5, bx, by))
    assert torch.equal(knn(x.bfloat16(), y.bfloat16(), 5, bx, by), out)


@pytest.mark.parametrize("dtype", [torch.float, torch.double, torch.half])
def test_knn_cosine_against_oracle(dtype):
    bx, by = ragged_batch([10, 0, 7]), ragged_batch([3, 2, 4])
    x = torch.randn(len(bx), 4).to(dtype)
    y = torch.randn(len(by), 4).to(dtype)
    for k in (1, 3, 8):
        expected = naive_knn(x, y, k, bx, by, cosine=True)
        assert torch.equal(knn(x, y, k, bx, by, cosine=True), expected)
    # Cosine ignores the scale of the rows; Euclidean does not.
    scaled = x * torch.rand(len(x), 1).to(dtype).add(0.5)
    assert torch.equal(knn(scaled, y, 3, bx, by, cosine=True), knn(x, y, 3, bx, by, cosine=True))


def test_knn_accepts_inputs_that_require_grad_and_returns_indices():
    # torch_cluster's outputs are indices: no gradient flows through them there or here.
    x = torch.randn(6, 3, requires_grad=True)
    y = torch.randn(3, 3, requires_grad=True)
    e = knn(x, y, 2)
    assert e.dtype == torch.long and not e.requires_grad
    assert torch.equal(e, naive_knn(x.detach(), y.detach(), 2))
    # The usual PyG pattern: gather with the edges, differentiate the gathered values.
    (x[e[1]] - y[e[0]]).pow(2).sum().backward()
    assert x.grad is not None and y.grad is not None


def test_knn_non_contiguous_inputs():
    x = torch.randn(3, 20).t()  # (20, 3), transposed view
    y = torch.randn(8, 6)[:, ::2]
    bx, by = ragged_batch([12, 8]), ragged_batch([5, 3])
    assert torch.equal(knn(x, y, 4, bx, by), naive_knn(x, y, 4, bx, by))


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 5)), min_size=1, max_size=5),
    k=st.integers(0, 12),
    dim=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_knn_property_against_oracle(sizes, k, dim, seed):
    g = torch.Generator().manual_seed(seed)
    bx = ragged_batch([s[0] for s in sizes])
    by = ragged_batch([s[1] for s in sizes])
    x = torch.randn(len(bx), dim, generator=g, dtype=torch.double)
    y = torch.randn(len(by), dim, generator=g, dtype=torch.double)
    assert torch.equal(knn(x, y, k, bx, by), naive_knn(x, y, k, bx, by))


# ---------------------------------------------------------------------------------------------
# knn_graph


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("flow", ["source_to_target", "target_to_source"])
def test_knn_graph_against_oracle(loop, flow):
    batch = ragged_batch([7, 0, 1, 12])
    x = torch.randn(len(batch), 3)
    for k in (1, 3, 20):
        out = knn_graph(x, k, batch, loop=loop, flow=flow)
        assert torch.equal(out, naive_knn_graph(x, k, batch, loop, flow))
        assert torch.equal(torch.jit.script(knn_graph)(x, k, batch, loop, flow), out)


def test_knn_graph_duplicates_keep_torch_clusters_self_loop_rule():
    # Three copies of a point: each copy's 2 nearest are the two lowest-index copies, so copy 2
    # does not see itself and keeps both edges (as torch_cluster's kNN + self-loop mask gives).
    x = torch.tensor([[0.0, 0], [0, 0], [0, 0], [5, 5]])
    out = knn_graph(x, 1, flow="target_to_source")
    assert out.tolist() == [[0, 1, 2, 2, 3], [1, 0, 0, 1, 0]]
    assert torch.equal(out, naive_knn_graph(x, 1, flow="target_to_source"))


# ---------------------------------------------------------------------------------------------
# fps against the oracle


@pytest.mark.parametrize("dtype", [torch.float, torch.double])
def test_fps_ragged_batch_against_oracle(dtype):
    sizes = [20, 0, 1, 33, 2, 0, 9]
    batch = ragged_batch(sizes)
    src = torch.randn(len(batch), 3, dtype=dtype)
    for ratio in (0.25, 0.5, 1.0):
        counts = [math.ceil(n * ratio) for n in sizes]
        expected = naive_fps(src, ptr_of(sizes), counts)
        assert torch.equal(fps(src, batch, ratio, False), expected)
        assert torch.equal(fps(src, batch, ratio, False, batch_size=7), expected)
        assert torch.equal(fps(src, ptr=ptr_of(sizes), ratio=ratio, random_start=False), expected)
        ptr = torch.tensor(ptr_of(sizes))
        assert torch.equal(fps(src, None, ratio, False, None, ptr), expected)


def test_fps_per_example_ratio_and_trailing_empty_examples():
    sizes = [10, 4, 7]
    batch = ragged_batch(sizes)
    src = torch.randn(len(batch), 2)
    ratio = torch.tensor([0.3, 1.0, 0.5])
    counts = [3, 4, 4]  # ceil(10 * 0.3f) = 3 (float32(0.3) * 10 rounds to 3.0), 4, ceil(3.5)
    expected = naive_fps(src, ptr_of(sizes), counts)
    assert torch.equal(fps(src, batch, ratio, False), expected)
    # batch_size beyond the last example adds empty examples (ratio then needs one per example).
    ratio5 = torch.tensor([0.3, 1.0, 0.5, 0.5, 0.5])
    assert torch.equal(fps(src, batch, ratio5, False, batch_size=5), expected)


def test_fps_ptr_may_start_late_and_end_early():
    # ptr need not cover every row: rows before ptr[0] and after ptr[-1] belong to no example.
    src = torch.randn(12, 3)
    ptr = [2, 6, 6, 10]
    expected = naive_fps(src, ptr, [2, 0, 2])
    assert torch.equal(fps(src, ptr=ptr, ratio=0.5, random_start=False), expected)


def test_fps_ratio_rounding_follows_torch_cluster():
    # torch_cluster's CPU kernel counts ceil(float32(n) * ratio) with ratio a tensor of src's
    # dtype: float32(0.6) * 25 = 15.000001 in float32, so 16 points (exact arithmetic: 15), for
    # float64 src too; float16(0.3) = 0.30005 makes ceil(10 * 0.30005) = 4 where float32 gives 3.
    assert fps(torch.randn(25, 3), ratio=0.6, random_start=False).numel() == 16
    assert fps(torch.randn(25, 3, dtype=torch.double), ratio=0.6, random_start=False).numel() == 16
    grid = torch.arange(30.0).reshape(10, 3)
    assert fps(grid, ratio=0.3, random_start=False).numel() == 3
    assert fps(grid.half(), ratio=0.3, random_start=False).numel() == 4
    # Without a ratio the default is 0.5: ceil(0.5 * 7) = 4.
    assert fps(torch.randn(7, 2), random_start=False).numel() == 4


def test_fps_duplicates_pick_first_index_when_everything_is_covered():
    # Two distinct points, each four times: after both are chosen every distance is 0 and
    # torch_cluster's argmax takes the example's first row again.
    src = torch.tensor([[0.0, 0], [0, 0], [1, 1], [1, 1], [0, 0], [1, 1], [0, 0], [1, 1]])
    assert fps(src, ratio=0.5, random_start=False).tolist() == [0, 2, 0, 0]
    assert torch.equal(fps(src, ratio=1.0, random_start=False), naive_fps(src, [0, 8], [8]))


def test_fps_flattens_trailing_dimensions_and_reads_1d_as_one_feature():
    src = torch.randn(16, 2, 3)
    assert torch.equal(fps(src, ratio=0.5, random_start=False),
                       naive_fps(src.reshape(16, 6), [0, 16], [8]))
    line = torch.tensor([0.0, 10.0, 3.0, 7.0, 1.0])
    assert fps(line, ratio=0.5, random_start=False).tolist() == [0, 1, 2]  # 9 = 9: index 2


def test_fps_random_start():
    sizes = [1, 0, 6, 13]
    batch = ragged_batch(sizes)
    ptr = ptr_of(sizes)
    src = torch.randn(len(batch), 3)
    starts_seen = [set() for _ in sizes]
    for _ in range(200):
        out = fps(src, batch, ratio=1.0)
        pos = 0
        for b, n in enumerate(sizes):
            if n == 0:
                continue
            first = int(out[pos]) - ptr[b]
            assert 0 <= first < n
            starts_seen[b].add(first)
            # The rest is the greedy sequence from that start.
            expected = naive_fps(src, ptr, [n if c == b else 0 for c in range(len(sizes))],
                                 [first if c == b else 0 for c in range(len(sizes))])
            assert torch.equal(out[pos:pos + n], expected)
            pos += n
    assert starts_seen == [{0}, set(), set(range(6)), set(range(13))]
    torch.manual_seed(3)
    a = fps(src, batch, ratio=0.5)
    torch.manual_seed(3)
    assert torch.equal(fps(src, batch, ratio=0.5), a)


def test_fps_empty_inputs():
    assert fps(torch.zeros(0, 3)).shape == (0,)
    assert fps(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)).shape == (0,)
    assert fps(torch.zeros(0, 3), ptr=[0, 0]).shape == (0,)
    assert fps(torch.randn(4, 3), ptr=[1, 1, 1]).shape == (0,)


def test_fps_half_precision_and_grad_inputs():
    grid = torch.stack(torch.meshgrid(torch.arange(5), torch.arange(4), indexing="ij"), -1)
    src = grid.reshape(-1, 2).float()
    batch = ragged_batch([12, 8])
    expected = naive_fps(src, [0, 12, 20], [6, 4])
    assert torch.equal(fps(src.half(), batch, 0.5, False), expected)
    assert torch.equal(fps(src.bfloat16(), batch, 0.5, False), expected)
    leaf = src.clone().requires_grad_()
    out = fps(leaf, batch, 0.5, False)
    assert out.dtype == torch.long and not out.requires_grad and torch.equal(out, expected)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 12), min_size=1, max_size=5),
    ratio=st.sampled_from([0.1, 0.25, 0.5, 0.75, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_fps_property_against_oracle(sizes, ratio, seed):
    g = torch.Generator().manual_seed(seed)
    batch = ragged_batch(sizes)
    src = torch.randn(len(batch), 3, generator=g, dtype=torch.double)
    counts = [math.ceil(n * ratio) for n in sizes]  # exact for these ratios in float32 too
    assert torch.equal(fps(src, ptr=ptr_of(sizes), ratio=ratio, random_start=False),
                       naive_fps(src, ptr_of(sizes), counts))


# ---------------------------------------------------------------------------------------------
# Errors


X, Y = torch.randn(6, 3), torch.randn(2, 3)
BX, BY = torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 1])

KNN_ERRORS = [
    (lambda: knn(X, Y, -1), ValueError, r"knn: k must be non-negative, got -1"),
    (lambda: knn(X, torch.randn(2, 4), 2), ValueError,
     r"knn: x and y must have the same number of features, got 3 and 4"),
    (lambda: knn(X, Y.double(), 2), TypeError,
     r"knn: x and y must have the same dtype, got torch.float32 and torch.float64"),
    (lambda: knn(X.long(), Y.long(), 2), TypeError,
     r"knn: x must be a floating-point tensor, got torch.int64"),
    (lambda: knn(torch.randn(6, 3, 1), Y, 2), ValueError,
     r"knn: x must have shape \(N, F\) or \(N,\), got torch.Size\(\[6, 3, 1\]\)"),
    (lambda: knn(X, Y, 2, BX[:5], BY), ValueError,
     r"knn: batch_x must be a 1-D vector with one entry per row \(6\), got shape"),
    (lambda: knn(X, Y, 2, BX.float(), BY), TypeError,
     r"knn: batch_x must hold integer example indices, got torch.float32"),
    (lambda: knn(X, Y, 2, torch.tensor([0, 1, 0, 1, 0, 1]), BY), ValueError,
     r"knn: batch_x must be sorted"),
    (lambda: knn(X, Y, 2, BX, torch.tensor([1, 0])), ValueError, r"knn: batch_y must be sorted"),
    (lambda: knn(X, Y, 2, BX - 1, BY), ValueError,
     r"knn: batch vectors must hold example indices >= 0, got -1"),
    (lambda: knn(X, Y, 2, BX, BY, batch_size=1), ValueError,
     r"knn: batch_size = 1, but the batch vectors hold example index 1"),
    (lambda: knn(X, Y, 2, BX, None), ValueError,
     r"knn: batch_y is None but batch_x holds 2 examples"),
    (lambda: knn(X, Y, 2, None, BY), ValueError,
     r"knn: batch_x is None but batch_y holds 2 examples"),
    (lambda: knn(X, Y, 2, batch_size=2), ValueError,
     r"knn: batch_size = 2 needs batch vectors, got none"),
    (lambda: knn(X, Y, 2, batch_size=0), ValueError, r"knn: batch_size must be at least 1, got 0"),
    (lambda: knn(X, torch.tensor([[0.0, float("nan"), 0]]), 2), RuntimeError,
     r"knn: y contains NaN or infinite values"),
    (lambda: knn(X, torch.zeros(1, 3), 2, cosine=True), RuntimeError,
     r"knn: cosine=True needs non-zero vectors, but a row of y is zero"),
    (lambda: knn_graph(X, 2, flow="up"), ValueError,
     r"knn_graph: flow must be 'source_to_target' or 'target_to_source', got 'up'"),
    (lambda: knn_graph(X, -1), ValueError, r"knn_graph: k must be non-negative, got -1"),
    (lambda: knn_graph(X, 2, torch.tensor([1, 1, 0, 0, 0, 0])), ValueError,
     r"knn_graph: batch_x must be sorted"),
]

FPS_ERRORS = [
    (lambda: fps(X, ratio=0.0), ValueError, r"fps: ratio must lie in \(0, 1\], got 0.0"),
    (lambda: fps(X, ratio=1.5), ValueError, r"fps: ratio must lie in \(0, 1\], got 1.5"),
    (lambda: fps(X, ratio=float("nan")), ValueError, r"fps: ratio must lie in \(0, 1\], got nan"),
    (lambda: fps(X, BX, torch.tensor([0.5, 2.0])), ValueError,
     r"fps: ratio must lie in \(0, 1\], got values from 0.5 to 2.0"),
    (lambda: fps(X, BX, torch.tensor([0.5, 0.5, 0.5])), ValueError,
     r"fps: ratio must hold one value or one per example \(2\), got shape"),
    (lambda: fps(X, ratio=torch.tensor([[0.5]])), ValueError,
     r"fps: a ratio tensor must be floating-point, 0-dim or 1-D"),
    (lambda: fps(X.long()), TypeError,
     r"fps: src must be a floating-point tensor, got torch.int64"),
    (lambda: fps(torch.tensor(1.0)), ValueError, r"fps: src must have shape \(N, \.\.\.\)"),
    (lambda: fps(torch.zeros(4, 0)), ValueError,
     r"fps: src must have at least one feature per row"),
    (lambda: fps(X, BX[:4]), ValueError,
     r"fps: batch must be a 1-D vector with one entry per row \(6\)"),
    (lambda: fps(X, torch.tensor([1, 1, 1, 0, 0, 0])), ValueError,
     r"fps: batch must be sorted example indices in \[0, 2\), got values from 0 to 1"),
    (lambda: fps(X, BX, batch_size=1), ValueError,
     r"fps: batch must be sorted example indices in \[0, 1\), got values from 0 to 1"),
    (lambda: fps(X, BX - 1), ValueError, r"in \[0, 1\), got values from -1 to 0"),
    (lambda: fps(X, BX - 2), ValueError, r"fps: batch must hold example indices >= 0, got -1"),
    (lambda: fps(X, BX, batch_size=0), ValueError, r"fps: batch_size must be at least 1, got 0"),
    (lambda: fps(X, ptr=[0, 4, 2]), ValueError,
     r"fps: ptr must be non-decreasing offsets in \[0, 6\], got values from 0 to 4"),
    (lambda: fps(X, ptr=[0, 7]), ValueError,
     r"fps: ptr must be non-decreasing offsets in \[0, 6\], got values from 0 to 7"),
    (lambda: fps(X, ptr=[0]), ValueError, r"fps: ptr must be 1-D with at least 2 entries"),
    (lambda: fps(X, ptr=torch.tensor([0.0, 6.0])), TypeError,
     r"fps: ptr must hold integer row offsets, got torch.float32"),
    (lambda: fps(torch.tensor([[0.0, float("inf")]])), RuntimeError,
     r"fps: src contains NaN or infinite values"),
]


@pytest.mark.parametrize("call,error,match", KNN_ERRORS + FPS_ERRORS)
def test_errors_name_function_argument_and_value(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# CUDA


@pytest.mark.cuda
def test_cuda_matches_cpu_and_knn_without_batch_does_not_sync():
    bx, by = ragged_batch([300, 0, 17, 150]), ragged_batch([40, 5, 0, 77])
    x, y = torch.randn(len(bx), 3), torch.randn(len(by), 3)
    for k, cosine in ((1, False), (16, False), (120, False), (5, True)):
        cpu = knn(x, y, k, bx, by, cosine=cosine)
        gpu = knn(x.cuda(), y.cuda(), k, bx.cuda(), by.cuda(), cosine=cosine)
        assert torch.equal(gpu.cpu(), cpu)
    assert torch.equal(knn_graph(x.cuda(), 6, bx.cuda()).cpu(), knn_graph(x, 6, bx))
    ratio = torch.tensor([0.5, 0.5, 0.25, 1.0])
    gpu = fps(x.cuda(), bx.cuda(), ratio.cuda(), False)
    assert torch.equal(gpu.cpu(), fps(x, bx, ratio, False))
    out = fps(x.cuda(), bx.cuda(), 0.5)
    assert out.numel() == 150 + 9 + 75
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        knn(x.cuda(), y.cuda(), 8)
    finally:
        torch.cuda.set_sync_debug_mode("default")
