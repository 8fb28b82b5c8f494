"""knn_points: the AVX2 filtered scan (float32, K <= 8, 16..4096 points; knn_scan_cpu.h).

It computes every distance, takes the K-th smallest of 16 lane minima as a threshold, keeps the
points at or below it and inserts those only. It must return exactly what the portable scan
(knn_brute, FASTVISION_CPU_BASELINE=1 in a subprocess) and the reference return: same distances
bit for bit, same indices, ties to the lower index. The cases aim at the threshold: ties exactly
at it, all points equidistant, duplicates, ragged clouds (the +inf padding and the last partial
bit word), cloud sizes around the 16-point step and the 64-point word, coordinates at the
overflow bound.

(NaN and +inf distances cannot reach the kernel: knn_points rejects NaN, infinite and too large
coordinates, see test_ops_points_knn.py.)
"""

import os
import subprocess
import sys

import pytest
import torch
from helpers import grid_cloud

import fastvision
from fastvision.ops import _reference as ref
from fastvision.ops import knn_points

pytestmark = pytest.mark.skipif(
    fastvision.build_info()["cpu_kernels"] == "baseline", reason="this machine runs the portable scan only"
)

# float32 coordinates within +-BOUND cannot overflow a 3-D squared distance (points_common.h).
BOUND = 2.66e18


def _equidistant_points():
    """The 30 integer points at squared distance 25 from the origin: (+-5, 0, 0) and the signed
    permutations of (3, 4, 0)."""
    r = range(-5, 6)
    pts = [(x, y, z) for x in r for y in r for z in r if x * x + y * y + z * z == 25]
    assert len(pts) == 30
    return torch.tensor(sorted(pts), dtype=torch.float32)


def _cases():
    """(p1, p2, lengths2, K) tuples, float32, norm 2 and 1."""
    g = torch.Generator().manual_seed(11)
    cases = []
    # Cloud sizes around the 16-point step, the 64-point bit word and the filter's lower limit.
    for n in list(range(1, 18)) + [31, 32, 33, 63, 64, 65, 127, 129, 1000]:
        for K in sorted({1, 3, 8, min(8, n)}):
            if K > n:
                continue
            cases.append((torch.rand(2, 9, 3, generator=g), torch.rand(2, n, 3, generator=g), None, K))
    # Exact ties everywhere (3^3 grid positions, many duplicates): ties at the threshold.
    for n in (16, 40, 200, 1024):
        p2 = grid_cloud(3, n, 3, side=3, seed=n)
        p1 = torch.cat([p2[:, :5], grid_cloud(3, 6, 3, side=3, seed=n + 1) + 0.5], dim=1)
        for K in (1, 2, 7, 8):
            cases.append((p1, p2, None, K))
    # All points equidistant from the query: the threshold equals every distance.
    ring = _equidistant_points()
    for n in (16, 30, 64, 90):
        p2 = ring[torch.arange(n) % 30][torch.randperm(n, generator=g)].expand(2, n, 3).contiguous()
        for K in (1, 5, 8):
            cases.append((torch.zeros(2, 3, 3), p2, None, K))
    # Every point a duplicate of the first one.
    cases.append((torch.rand(1, 4, 3, generator=g), torch.rand(1, 1, 3, generator=g).expand(1, 50, 3).contiguous(), None, 8))
    # Ragged clouds: lengths in and around the filter's range, partial last word; K up to 8.
    p1, p2 = torch.rand(4, 20, 3, generator=g), torch.rand(4, 150, 3, generator=g)
    for l2 in ([150, 16, 17, 3], [65, 64, 63, 100], [129, 0, 8, 150]):
        for K in (1, 8):
            cases.append((p1, p2, torch.tensor(l2), K))
    # Coordinates at the overflow bound: the largest distances the op accepts.
    p2 = (torch.rand(2, 300, 3, generator=g) * 2 - 1) * BOUND
    p2[:, :8] = torch.tensor([BOUND, -BOUND, BOUND])
    p1 = torch.tensor([[[-BOUND, BOUND, -BOUND], [0.0, 0.0, 0.0]]]).expand(2, 2, 3).contiguous()
    cases.append((p1, p2, None, 8))
    # -0.0 coordinates (L1: |-0.0 - 0.0| keeps its sign through the sum).
    p1, p2 = torch.zeros(1, 2, 3), torch.rand(1, 40, 3, generator=g)
    p1[0, 0] = -0.0
    p2[0, 5] = 0.0
    cases.append((p1, p2, None, 4))
    return cases


_PORTABLE_SCRIPT = """
import sys, torch
import fastvision
from fastvision.ops import knn_points
assert fastvision.build_info()["cpu_kernels"] == "baseline"
cases = torch.load(sys.argv[1])
out = [tuple(knn_points(p1, p2, K, None, l2, norm=norm, method="brute_force")) for p1, p2, l2, K, norm in cases]
torch.save(out, sys.argv[2])
"""


@pytest.fixture(scope="module")
def portable_results(tmp_path_factory):
    """The cases with both norms, and the portable scan's results for them."""
    cases = [(p1, p2, l2, K, norm) for p1, p2, l2, K in _cases() for norm in (1, 2)]
    tmp = tmp_path_factory.mktemp("portable_knn")
    src, dst, script = tmp / "cases.pt", tmp / "out.pt", tmp / "portable.py"
    torch.save(cases, src)
    script.write_text(_PORTABLE_SCRIPT)
    env = dict(os.environ, FASTVISION_CPU_BASELINE="1")
    run = subprocess.run([sys.executable, str(script), str(src), str(dst)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return cases, torch.load(dst)


def test_filtered_scan_bitwise_equal_to_portable_scan(portable_results):
    cases, portable = portable_results
    for (p1, p2, l2, K, norm), (pd, pi) in zip(cases, portable):
        d, i = knn_points(p1, p2, K, None, l2, norm=norm, method="brute_force")
        where = (tuple(p2.shape), K, norm, None if l2 is None else l2.tolist())
        assert torch.equal(i, pi), where
        assert torch.equal(d.view(torch.int32), pd.view(torch.int32)), where


def test_filtered_scan_matches_reference_on_exact_ties():
    # Integer and half-integer coordinates: exact distances, so the reference's are the same bits.
    for p1, p2, l2, K in _cases():
        if p1.abs().max() > 100 or p2.abs().max() > 100 or (p2 != p2.round()).any():
            continue
        for norm in (1, 2):
            d, i = knn_points(p1, p2, K, None, l2, norm=norm, method="brute_force")
            rd, ri = ref.knn_points(p1, p2, K, None, l2, norm=norm)
            assert torch.equal(i, ri), (tuple(p2.shape), K, norm)
            assert torch.equal(d, rd), (tuple(p2.shape), K, norm)


def test_filtered_scan_all_equidistant_returns_lowest_indices():
    # Every distance equals the threshold: the first K indices, in order.
    ring = _equidistant_points()
    for K in (1, 4, 8):
        d, i = knn_points(torch.zeros(1, 1, 3), ring[None], K, method="brute_force")
        assert torch.equal(i[0, 0], torch.arange(K))
        assert torch.equal(d[0, 0], torch.full((K,), 25.0))


def test_filtered_scan_on_samplenet_size_matches_reference_indices():
    # SampleNet's soft projection size (64 queries, 1024 points, K = 8), random clouds, two
    # threads' worth of work items.
    g = torch.Generator().manual_seed(3)
    p1, p2 = torch.randn(4, 64, 3, generator=g), torch.randn(4, 1024, 3, generator=g)
    d, i = knn_points(p1, p2, 8, method="brute_force")
    rd, ri = ref.knn_points(p1, p2, 8)
    assert torch.equal(i, ri)
    torch.testing.assert_close(d, rd)
