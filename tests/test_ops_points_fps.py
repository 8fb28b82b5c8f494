"""farthest_point_sample: the exact greedy sequence, seeds, ragged clouds, both CPU algorithms."""

import pytest
import torch
from helpers import DEVICES, FLOAT_DTYPES, HALF_DTYPES, grid_cloud, ragged_lengths
from hypothesis import given, settings
from hypothesis import strategies as st

from fastvision.benchmarks.harness import make_clouds
from fastvision.ops import _reference as ref
from fastvision.ops import farthest_point_sample

METHODS = ["scan", "buckets"]


def _numpy_fps(points, K, start):
    """The official numpy FPS of the sampling papers (fps_from_given_pc), written out."""
    import numpy as np

    pts = points.double().numpy()
    chosen = [start]
    dist = ((pts - pts[start]) ** 2).sum(1)
    for _ in range(K - 1):
        j = int(np.argmax(dist))
        chosen.append(j)
        dist = np.minimum(dist, ((pts - pts[j]) ** 2).sum(1))
    return chosen


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("D", [2, 3, 5])
@pytest.mark.parametrize("method", METHODS)
def test_fps_matches_reference(device, dtype, D, method):
    pts = make_clouds(4, 120, D, device=device, dtype=dtype)
    lengths = ragged_lengths(4, 120, device, minimum=20)
    idx, md = farthest_point_sample(pts, 20, lengths, start=3, return_min_dists=True, method=method)
    seeds = torch.full((4, 1), 3, dtype=torch.int64)
    ri, rmd = ref.farthest_point_sample(pts, 20, lengths, seeds)
    assert torch.equal(idx, ri)
    torch.testing.assert_close(md, rmd, rtol=0, atol=0)
    assert torch.isinf(md[:, 0]).all() and (md[:, 1:-1] >= md[:, 2:]).all()


def test_fps_matches_official_numpy_procedure():
    pts = torch.rand(1, 500, 3, dtype=torch.float64)
    assert farthest_point_sample(pts, 64, start=7)[0].tolist() == _numpy_fps(pts[0], 64, 7)


@pytest.mark.parametrize("method", METHODS)
def test_fps_ties_and_duplicates(method):
    pts = grid_cloud(2, 200, 3, side=3, dtype=torch.float64)  # 27 distinct positions, many repeats
    idx, md = farthest_point_sample(pts, 40, return_min_dists=True, method=method)
    ri, rmd = ref.farthest_point_sample(pts, 40)
    assert torch.equal(idx, ri)
    assert torch.equal(md, rmd)


def test_fps_buckets_bitwise_equal_to_scan_on_large_clouds():
    pts = torch.cat([torch.rand(2, 12000, 3), grid_cloud(2, 3000, 3, side=5) / 5], dim=1)
    lengths = torch.tensor([15000, 9000])
    seeds = torch.tensor([[5, -1, 77], [-1, -1, -1]])
    scan = farthest_point_sample(pts, 300, lengths, start=seeds, return_min_dists=True, method="scan")
    for method in ("buckets", "auto"):
        other = farthest_point_sample(pts, 300, lengths, start=seeds, return_min_dists=True, method=method)
        assert torch.equal(scan[0], other[0])
        assert torch.equal(scan[1], other[1])


def test_fps_buckets_on_one_large_cloud():
    # >= 16384 points: the bucket tree is built in parallel; the sequence must not change.
    pts = torch.cat([torch.rand(1, 20000, 3), grid_cloud(1, 500, 3, side=6) / 6], dim=1)
    scan = farthest_point_sample(pts, 80, return_min_dists=True, method="scan")
    buckets = farthest_point_sample(pts, 80, return_min_dists=True, method="buckets")
    assert torch.equal(scan[0], buckets[0]) and torch.equal(scan[1], buckets[1])


@pytest.mark.parametrize("method", METHODS)
def test_fps_seed_sets(method):
    pts = torch.rand(3, 50, 3)
    seeds = torch.tensor([[4, -1, 9], [-1, -1, -1], [2, 2, 30]])
    idx = farthest_point_sample(pts, 8, start=seeds, method=method)
    ri, _ = ref.farthest_point_sample(pts, 8, None, seeds)
    assert torch.equal(idx, ri)
    assert idx[0, :2].tolist() == [4, 9] and idx[1, 0] == 0 and idx[2, :3].tolist() == [2, 2, 30]
    # Continuing from a prefix of an FPS run reproduces the run.
    full = farthest_point_sample(pts, 12, start=5, method=method)
    assert torch.equal(farthest_point_sample(pts, 12, start=full[:, :6], method=method), full)


def test_fps_random_start_is_reproducible_and_in_range():
    pts = torch.rand(6, 40, 3)
    lengths = torch.tensor([40, 5, 9, 40, 12, 6])
    a = farthest_point_sample(pts, 5, lengths, start="random", generator=torch.Generator().manual_seed(1))
    b = farthest_point_sample(pts, 5, lengths, start="random", generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert (a < lengths[:, None]).all() and (a >= 0).all()
    for row, n in zip(a, lengths.tolist()):
        assert len(set(row.tolist())) == 5 and max(row.tolist()) < n


def test_fps_op_pads_short_clouds():
    # The op itself pads with -1 (PyTorch3D's convention); the wrapper rejects K > length.
    pts = torch.rand(2, 10, 3)
    idx, md = torch.ops.fastvision.farthest_point_sample(pts, torch.tensor([10, 3]), 5, torch.zeros(2, 1, dtype=torch.int64), -1)
    assert (idx[1, 3:] == -1).all() and (md[1, 3:] == 0).all() and (idx[1, :3] >= 0).all()
    idx, _ = torch.ops.fastvision.farthest_point_sample(pts, torch.tensor([10, 0]), 5, torch.full((2, 1), -1), -1)
    assert (idx[1] == -1).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_fps_half(device, dtype):
    pts = torch.rand(2, 64, 3, device=device).to(dtype)
    idx, md = farthest_point_sample(pts, 10, return_min_dists=True)
    ri, rmd = ref.farthest_point_sample(pts.float(), 10)
    assert torch.equal(idx.cpu(), ri.cpu()) and md.dtype == dtype


def test_fps_opcheck_and_compile():
    pts = torch.rand(2, 30, 3)
    torch.library.opcheck(torch.ops.fastvision.farthest_point_sample, (pts, torch.tensor([30, 12]), 6, torch.tensor([[0], [3]]), -1))
    compiled = torch.compile(lambda p: farthest_point_sample(p, 6, start=2), fullgraph=True)
    assert torch.equal(compiled(pts), farthest_point_sample(pts, 6, start=2))


@pytest.mark.parametrize("start", [0, "random"])
def test_fps_empty_cloud_in_batch(start):
    pts = torch.rand(2, 10, 3)
    idx = farthest_point_sample(pts, 0, torch.tensor([10, 0]), start=start)
    assert idx.shape == (2, 0)
    idx = torch.ops.fastvision.farthest_point_sample(pts, torch.tensor([10, 0]), 3, torch.tensor([[0], [-1]]), -1)[0]
    assert (idx[1] == -1).all() and (idx[0] >= 0).all()


def test_fps_no_gradient_warning_and_zero_k():
    pts = torch.rand(2, 30, 3, requires_grad=True)
    idx, md = farthest_point_sample(pts, 4, return_min_dists=True)
    assert not md.requires_grad
    assert farthest_point_sample(pts, 0).shape == (2, 0)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: farthest_point_sample(torch.rand(2, 10, 3), 11), ValueError, "K = 11 is larger than the clouds"),
        (lambda: farthest_point_sample(torch.rand(2, 10, 3), 4, torch.tensor([10, 3])), RuntimeError, "K = 4 is larger than a cloud"),
        (lambda: farthest_point_sample(torch.rand(2, 10, 3), -1), ValueError, "K must be at least 0"),
        (lambda: farthest_point_sample(torch.rand(2, 10, 3), 2, start=10), ValueError, "start = 10 is not a point index"),
        (lambda: farthest_point_sample(torch.rand(2, 10, 3), 2, start="middle"), ValueError, "start must be"),
        (lambda: farthest_point_sample(torch.rand(2, 10, 3), 2, start=torch.zeros(3, 1, dtype=torch.int64)), ValueError, r"\(B, S\)"),
        (lambda: farthest_point_sample(torch.rand(2, 10, 3), 2, start=torch.tensor([[0], [10]])), ValueError, r"start_idx\[1, 0\] must be -1"),
        (lambda: farthest_point_sample(torch.rand(10, 3), 2), ValueError, r"points must have shape"),
        (lambda: farthest_point_sample(torch.full((1, 4, 3), float("nan")), 2), ValueError, "points contains NaN"),
        (lambda: farthest_point_sample(torch.rand(1, 40, 9), 2, method="buckets"), ValueError, "D <= 8"),
    ],
)
def test_fps_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 3), P=st.integers(1, 40), D=st.integers(1, 4), data=st.data())
def test_fps_property(B, P, D, data):
    seed = data.draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, P + 1, (B,), generator=g)
    K = data.draw(st.integers(0, int(lengths.min())))
    pts = torch.randint(-2, 3, (B, P, D), generator=g).float()
    method = data.draw(st.sampled_from(METHODS))
    idx, md = farthest_point_sample(pts, K, lengths, return_min_dists=True, method=method)
    ri, rmd = ref.farthest_point_sample(pts, K, lengths)
    assert torch.equal(idx, ri)
    assert torch.equal(md, rmd)
