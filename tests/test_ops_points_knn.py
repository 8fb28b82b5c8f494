"""knn_points / knn_gather: reference, methods, gradients, opcheck, compile, edge sizes, errors."""

import pytest
import torch
from helpers import (
    DEVICES,
    FLOAT_DTYPES,
    HALF_DTYPES,
    grid_cloud,
    ragged_lengths,
    separated_cloud,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from fastvision.benchmarks.harness import make_pair
from fastvision.ops import _reference as ref
from fastvision.ops import knn_gather, knn_points

METHODS = ["brute_force", "kdtree"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("D", [1, 2, 3, 5])
@pytest.mark.parametrize("K", [1, 3, 8])
@pytest.mark.parametrize("method", METHODS)
def test_knn_matches_reference(device, dtype, D, K, method):
    p1, p2 = make_pair(4, 37, 53, D, device=device, dtype=dtype)
    l1 = ragged_lengths(4, 37, device, seed=1)
    l2 = ragged_lengths(4, 53, device, seed=2)
    for lengths1, lengths2 in [(None, None), (l1, l2)]:
        dists, idx = knn_points(p1, p2, K, lengths1, lengths2, method=method)
        rd, ri = ref.knn_points(p1, p2, K, lengths1, lengths2)
        assert dists.dtype == dtype and idx.dtype == torch.int64
        assert dists.shape == idx.shape == (4, 37, K)
        torch.testing.assert_close(idx, ri, rtol=0, atol=0)
        torch.testing.assert_close(dists, rd)


@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("method", METHODS)
def test_knn_ties_go_to_lower_index(norm, method):
    # Integer grid with repeated points: most distances tie exactly.
    p1 = grid_cloud(3, 40, 3, side=4)
    p2 = grid_cloud(3, 90, 3, side=4, seed=1)
    dists, idx = knn_points(p1, p2, 10, norm=norm, method=method)
    rd, ri = ref.knn_points(p1, p2, 10, norm=norm)
    assert torch.equal(idx, ri)
    assert torch.equal(dists, rd)


@pytest.mark.parametrize("D", [2, 3, 4])
@pytest.mark.parametrize("norm", [1, 2])
def test_knn_kdtree_bitwise_equal_to_brute_force_on_large_clouds(D, norm):
    # Large enough that "auto" picks the k-d tree; duplicates and ties included.
    p2 = torch.cat([torch.rand(2, 5000, D), grid_cloud(2, 1000, D, side=3) / 3], dim=1)
    p1 = torch.cat([torch.rand(2, 300, D), p2[:, :100]], dim=1)
    l2 = torch.tensor([6000, 4500])
    brute = knn_points(p1, p2, 9, lengths2=l2, norm=norm, method="brute_force")
    tree = knn_points(p1, p2, 9, lengths2=l2, norm=norm, method="kdtree")
    auto = knn_points(p1, p2, 9, lengths2=l2, norm=norm)
    for other in (tree, auto):
        assert torch.equal(brute.idx, other.idx)
        assert torch.equal(brute.dists, other.dists)


def test_knn_kdtree_parallel_build_on_one_large_cloud():
    # A single cloud of >= 16384 points builds the top of its tree serially and the subtrees in
    # parallel; the result must not change.
    p2 = torch.cat([torch.rand(1, 19000, 3), grid_cloud(1, 1000, 3, side=4) / 4], dim=1)
    p1 = torch.cat([torch.rand(1, 250, 3), p2[:, :50]], dim=1)
    brute = knn_points(p1, p2, 6, method="brute_force")
    tree = knn_points(p1, p2, 6, method="kdtree")
    assert torch.equal(brute.idx, tree.idx) and torch.equal(brute.dists, tree.dists)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_knn_half_precision_computes_in_float32(device, dtype):
    p1 = torch.rand(2, 30, 3, device=device).to(dtype)
    p2 = torch.rand(2, 40, 3, device=device).to(dtype)
    dists, idx = knn_points(p1, p2, 4)
    rd, ri = ref.knn_points(p1.float(), p2.float(), 4)
    assert dists.dtype == dtype
    assert torch.equal(idx, ri)
    assert torch.equal(dists, rd.to(dtype))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm", [1, 2])
def test_knn_gradcheck(device, norm):
    p1 = separated_cloud(2, 6, 3, device=device).requires_grad_()
    p2 = separated_cloud(2, 9, 3, device=device, seed=1).requires_grad_()
    l2 = torch.tensor([9, 2], device=device)  # second cloud shorter than K: padded slots

    def f(a, b):
        d = knn_points(a, b, 3, lengths2=l2, norm=norm).dists
        return torch.where(torch.isinf(d), torch.zeros_like(d), d)

    assert torch.autograd.gradcheck(f, (p1, p2))


@pytest.mark.parametrize("device", DEVICES)
def test_knn_gradient_matches_reference(device):
    p1 = torch.rand(3, 20, 3, device=device, requires_grad=True)
    p2 = torch.rand(3, 30, 3, device=device, requires_grad=True)
    w = torch.rand(3, 20, 4, device=device)
    (knn_points(p1, p2, 4).dists * w).sum().backward()
    a, b = p1.detach().clone().requires_grad_(), p2.detach().clone().requires_grad_()
    (ref.knn_points(a, b, 4)[0] * w).sum().backward()
    torch.testing.assert_close(p1.grad, a.grad)
    torch.testing.assert_close(p2.grad, b.grad)


def test_knn_opcheck():
    p1 = torch.rand(2, 9, 3, requires_grad=True)
    p2 = torch.rand(2, 11, 3, requires_grad=True)
    lengths = torch.tensor([11, 4])
    torch.library.opcheck(torch.ops.fastvision.knn_points, (p1, p2, None, lengths, 3, 2, True, -1))
    torch.library.opcheck(torch.ops.fastvision.knn_points, (p1, p2, None, None, 1, 1, True, 1))
    d, idx = torch.ops.fastvision.knn_points(p1, p2, None, None, 3, 2, True, -1)
    torch.library.opcheck(
        torch.ops.fastvision._knn_points_backward,
        (p1.detach(), p2.detach(), idx, torch.rand_like(d), 2),
    )


def test_knn_torch_compile_fullgraph():
    def f(a, b, lengths):
        d, i = knn_points(a, b, 5, lengths2=lengths)
        return torch.where(torch.isinf(d), torch.zeros_like(d), d), i

    a, b = torch.rand(2, 16, 3), torch.rand(2, 20, 3)
    lengths = torch.tensor([20, 7])
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    for out, expected in zip(compiled(a, b, lengths), f(a, b, lengths)):
        assert torch.equal(out, expected)


def test_knn_torch_compile_inductor_gradients():
    @torch.compile(fullgraph=True)
    def loss(a, b):
        return knn_points(a, b, 4).dists.sum()

    a = torch.rand(2, 16, 3, requires_grad=True)
    b = torch.rand(2, 20, 3, requires_grad=True)
    loss(a, b).backward()
    a2, b2 = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    knn_points(a2, b2, 4).dists.sum().backward()
    torch.testing.assert_close(a.grad, a2.grad)
    torch.testing.assert_close(b.grad, b2.grad)


@pytest.mark.parametrize("method", METHODS)
def test_knn_edge_sizes(method):
    # Empty batch, no queries, K == P2, single point, clouds of length 0.
    assert knn_points(torch.rand(0, 5, 3), torch.rand(0, 5, 3), 2, method=method).idx.shape == (0, 5, 2)
    assert knn_points(torch.rand(2, 0, 3), torch.rand(2, 5, 3), 2, method=method).idx.shape == (2, 0, 2)
    p1, p2 = torch.rand(1, 4, 3), torch.rand(1, 5, 3)
    d, i = knn_points(p1, p2, 5, method=method)
    assert torch.equal(i.sort(dim=2).values, torch.arange(5).expand(1, 4, 5))
    d, i = knn_points(torch.rand(1, 1, 3), torch.rand(1, 1, 3), 1, method=method)
    assert i.item() == 0
    d, i = knn_points(p1, p2, 2, torch.tensor([0]), torch.tensor([0]), method=method)
    assert (i == -1).all() and torch.isinf(d).all()
    d, i = knn_points(p1, p2, 3, None, torch.tensor([1]), method=method)
    assert (i[..., 0] == 0).all() and (i[..., 1:] == -1).all() and torch.isinf(d[..., 1:]).all()


def test_knn_non_contiguous_inputs():
    base1, base2 = torch.rand(3, 3, 40), torch.rand(3, 50, 6)
    p1, p2 = base1.transpose(1, 2), base2[:, :, ::2]
    assert not p1.is_contiguous() and not p2.is_contiguous()
    d, i = knn_points(p1, p2, 4)
    rd, ri = ref.knn_points(p1.contiguous(), p2.contiguous(), 4)
    assert torch.equal(i, ri)
    torch.testing.assert_close(d, rd)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: knn_points(torch.rand(2, 5, 3), torch.rand(2, 4, 3), 5), ValueError, "K = 5 is larger"),
        (lambda: knn_points(torch.rand(2, 5, 3), torch.rand(2, 4, 3), 0), ValueError, "K must be at least 1"),
        (lambda: knn_points(torch.rand(5, 3), torch.rand(2, 4, 3), 1), ValueError, r"p1 must have shape \(B, P, D\)"),
        (lambda: knn_points(torch.rand(2, 5, 3), torch.rand(3, 4, 3), 1), RuntimeError, "same number of clouds"),
        (lambda: knn_points(torch.rand(2, 5, 3), torch.rand(2, 4, 2), 1), RuntimeError, "same point dimension"),
        (lambda: knn_points(torch.rand(2, 5, 3), torch.rand(2, 4, 3).double(), 1), RuntimeError, "dtype of p1"),
        (lambda: knn_points(torch.ones(2, 5, 3, dtype=torch.int32), torch.ones(2, 4, 3, dtype=torch.int32), 1), TypeError, "floating-point"),
        (lambda: knn_points(torch.rand(2, 5, 3), torch.rand(2, 4, 3), 1, lengths2=torch.tensor([4, 5])), RuntimeError, "lengths2 must lie in"),
        (lambda: knn_points(torch.rand(2, 5, 3), torch.rand(2, 4, 3), 1, lengths2=torch.tensor([4, 4], dtype=torch.int32)), ValueError, "int64"),
        (lambda: knn_points(torch.rand(2, 5, 3), torch.rand(2, 4, 3), 1, lengths2=torch.tensor([4])), RuntimeError, r"lengths2 must have shape \(B,\)"),
        (lambda: knn_points(torch.full((2, 5, 3), float("nan")), torch.rand(2, 4, 3), 1), ValueError, "p1 contains NaN"),
        (lambda: knn_points(torch.rand(2, 5, 3), torch.rand(2, 4, 3), 1, norm=3), ValueError, "norm must be 1 or 2"),
        (lambda: knn_points(torch.rand(2, 5, 3), torch.rand(2, 4, 3), 1, method="fast"), ValueError, "method must be one of"),
        (lambda: knn_points(torch.rand(2, 5, 9), torch.rand(2, 4, 9), 1, method="kdtree"), ValueError, "D <= 8"),
    ],
)
def test_knn_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_knn_op_checks_lengths_values_itself():
    # The op (not only the wrapper) rejects out-of-range lengths on CPU.
    with pytest.raises(ValueError, match=r"lengths2\[1\] must lie in \[0, 4\], got 7"):
        torch.ops.fastvision.knn_points(
            torch.rand(2, 5, 3), torch.rand(2, 4, 3), None, torch.tensor([4, 7]), 1, 2, True, -1
        )


def test_knn_gather():
    x = torch.rand(2, 7, 4, requires_grad=True)
    idx = torch.tensor([[[0, 6, -1]], [[3, -1, -1]]])
    out = knn_gather(x, idx)
    assert torch.equal(out, ref.knn_gather(x.detach(), idx))
    assert (out[0, 0, 2] == 0).all() and (out[1, 0, 1:] == 0).all()
    out.sum().backward()
    assert x.grad[0, 0].eq(1).all() and x.grad[0, 1].eq(0).all()
    with pytest.raises(RuntimeError, match="idx entries must be -1"):
        knn_gather(x, torch.tensor([[[7]], [[0]]]))
    with pytest.raises(ValueError, match="idx must be int64"):
        knn_gather(x, torch.zeros(2, 1, 1, dtype=torch.int32))


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 3),
    P1=st.integers(0, 20),
    P2=st.integers(1, 30),
    D=st.integers(1, 4),
    data=st.data(),
)
def test_knn_property_against_reference(B, P1, P2, D, data):
    K = data.draw(st.integers(1, P2))
    norm = data.draw(st.sampled_from([1, 2]))
    method = data.draw(st.sampled_from(METHODS))
    seed = data.draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    # Coarse values so that exact ties are frequent.
    p1 = torch.randint(-3, 4, (B, P1, D), generator=g).float() / 2
    p2 = torch.randint(-3, 4, (B, P2, D), generator=g).float() / 2
    l2 = torch.randint(0, P2 + 1, (B,), generator=g)
    d, i = knn_points(p1, p2, K, lengths2=l2, norm=norm, method=method)
    rd, ri = ref.knn_points(p1, p2, K, None, l2, norm=norm)
    assert torch.equal(i, ri)
    assert torch.equal(d, rd)


@pytest.mark.parametrize("bad", [3, -2, 1 << 40])
def test_knn_backward_rejects_indices_outside_the_cloud(bad):
    # Issue 13, section 4 item 4: the private backward op is callable through torch.ops.
    p1, p2 = torch.randn(1, 2, 3), torch.randn(1, 3, 3)
    idx = torch.tensor([[[0, 1], [2, bad]]])
    with pytest.raises(ValueError, match=r"_knn_points_backward: idx\[0, 1, 1\] must be -1"):
        torch.ops.fastvision._knn_points_backward(p1, p2, idx, torch.ones(1, 2, 2), 2)


@pytest.mark.cuda
def test_knn_backward_cuda_alerts_in_deterministic_mode():
    # Issue 13, section 4 item 5: grad_p2 is scattered with atomicAdd on CUDA.
    p1, p2 = torch.randn(1, 4, 3, device="cuda"), torch.randn(1, 5, 3, device="cuda")
    idx = torch.zeros(1, 4, 2, dtype=torch.long, device="cuda")
    grad = torch.ones(1, 4, 2, device="cuda")
    torch.use_deterministic_algorithms(True)
    try:
        with pytest.raises(RuntimeError, match="_knn_points_backward"):
            torch.ops.fastvision._knn_points_backward(p1, p2, idx, grad, 2)
    finally:
        torch.use_deterministic_algorithms(False)


_PORTABLE_KNN_SCRIPT = """
import sys, torch
import fastvision
from fastvision.ops import knn_points
assert fastvision.build_info()["cpu_kernels"] == "baseline"
cases = torch.load(sys.argv[1])
out = [tuple(knn_points(p1, p2, K, l1, l2, norm=norm, method="brute_force")) for p1, p2, l1, l2, K, norm in cases]
torch.save(out, sys.argv[2])
"""


def _bits(t):
    return t.view(torch.int64 if t.dtype == torch.float64 else torch.int32)


@pytest.mark.skipif(__import__("fastvision").build_info()["cpu_kernels"] == "baseline",
                    reason="this machine runs the portable scan only")
def test_knn_avx2_scan_bitwise_equal_to_portable_scan(tmp_path):
    # The AVX2 few-query scan (knn_scan_cpu.h) against the portable knn_brute, run in a
    # subprocess with FASTVISION_CPU_BASELINE=1: same distances bit for bit (-0.0 included) and
    # same indices, ties by index, ragged clouds (the +inf padding), D past the AVX2 limit.
    import os
    import subprocess
    import sys

    g = torch.Generator().manual_seed(5)
    cases = []
    for dtype in (torch.float32, torch.float64):
        for D in (1, 3, 4, 17):
            for norm in (1, 2):
                p1 = torch.rand(3, 45, D, generator=g, dtype=dtype)
                p2 = torch.rand(3, 2100, D, generator=g, dtype=dtype)  # two cache blocks
                p2[:, 1000:1500] = grid_cloud(3, 500, D, side=3).to(dtype) / 3  # exact ties
                p1[:, :5] = p2[:, 1000:1005]
                p1[0, 5] = -0.0  # |-0.0 - 0.0| is -0.0: the sum of the terms stays -0.0
                p2[0, 7] = 0.0
                l2 = torch.tensor([2100, 1037, 6])
                l1 = torch.tensor([45, 0, 30])
                cases.append((p1, p2, None, None, 8, norm))
                cases.append((p1, p2, l1, l2, 9, norm))
    src, dst = tmp_path / "cases.pt", tmp_path / "out.pt"
    torch.save(cases, src)
    script = tmp_path / "portable.py"
    script.write_text(_PORTABLE_KNN_SCRIPT)
    env = dict(os.environ, FASTVISION_CPU_BASELINE="1")
    run = subprocess.run([sys.executable, str(script), str(src), str(dst)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    portable = torch.load(dst)
    for (p1, p2, l1, l2, K, norm), (pd, pi) in zip(cases, portable):
        d, i = knn_points(p1, p2, K, l1, l2, norm=norm, method="brute_force")
        assert torch.equal(i, pi), (p1.dtype, p1.shape[2], norm)
        assert torch.equal(_bits(d), _bits(pd)), (p1.dtype, p1.shape[2], norm)
