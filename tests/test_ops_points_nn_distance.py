"""nn_distance, chamfer_distance and the S-NET sampling loss."""

import pytest
import torch
from helpers import DEVICES, FLOAT_DTYPES, HALF_DTYPES, grid_cloud, ragged_lengths, separated_cloud
from hypothesis import given, settings
from hypothesis import strategies as st

from fastvision.benchmarks.harness import make_pair
from fastvision.losses import sampling_loss, sampling_loss_terms
from fastvision.ops import _reference as ref
from fastvision.ops import chamfer_distance, nn_distance

METHODS = ["brute_force", "kdtree"]


def _assert_same(out, expected):
    for a, b in zip(out, expected):
        assert a.shape == b.shape
        if a.dtype == torch.int64:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("D", [1, 3, 4])
@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("method", METHODS)
def test_nn_distance_matches_reference(device, dtype, D, norm, method):
    p1, p2 = make_pair(5, 300, 170, D, device=device, dtype=dtype)
    l1 = ragged_lengths(5, 300, device, seed=3)
    l2 = ragged_lengths(5, 170, device, seed=4)
    for lengths in [(None, None), (l1, l2)]:
        out = nn_distance(p1, p2, *lengths, norm=norm, method=method)
        _assert_same(out, ref.nn_distance(p1, p2, *lengths, norm=norm))


@pytest.mark.parametrize("method", METHODS)
def test_nn_distance_ties(method):
    p1, p2 = grid_cloud(2, 300, 3, side=3), grid_cloud(2, 280, 3, side=3, seed=5)
    _assert_same(nn_distance(p1, p2, method=method), ref.nn_distance(p1, p2))


def test_nn_distance_methods_bitwise_equal_on_large_clouds():
    p1 = torch.cat([torch.rand(2, 5000, 3), grid_cloud(2, 500, 3, side=4) / 4], dim=1)
    p2 = torch.rand(2, 4500, 3)
    l1, l2 = torch.tensor([5500, 4100]), torch.tensor([4500, 4400])
    one_pass = nn_distance(p1, p2, l1, l2, method="brute_force")
    _assert_same(nn_distance(p1, p2, l1, l2, method="kdtree"), one_pass)
    _assert_same(nn_distance(p1, p2, l1, l2), one_pass)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_nn_distance_half(device, dtype):
    p1 = torch.rand(2, 30, 3, device=device).to(dtype)
    p2 = torch.rand(2, 20, 3, device=device).to(dtype)
    out = nn_distance(p1, p2)
    expected = ref.nn_distance(p1.float(), p2.float())
    _assert_same(out, [e.to(dtype) if e.is_floating_point() else e for e in expected])


def test_nn_distance_padding_and_empty_clouds():
    p1, p2 = torch.rand(3, 6, 3), torch.rand(3, 5, 3)
    d12, i12, d21, i21 = nn_distance(p1, p2, torch.tensor([6, 2, 4]), torch.tensor([5, 5, 0]))
    assert (d12[1, 2:] == 0).all() and (i12[1, 2:] == -1).all()
    assert torch.isinf(d12[2, :4]).all() and (i12[2, :4] == -1).all()  # valid rows, empty p2
    assert (d12[2, 4:] == 0).all() and (d21[2] == 0).all() and (i21[2] == -1).all()
    out = nn_distance(torch.rand(0, 4, 3), torch.rand(0, 2, 3))
    assert [t.shape for t in out] == [(0, 4), (0, 4), (0, 2), (0, 2)]
    d12, i12, d21, i21 = nn_distance(torch.rand(2, 0, 3), torch.rand(2, 3, 3))
    assert d12.shape == (2, 0) and torch.isinf(d21).all() and (i21 == -1).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm", [1, 2])
def test_nn_distance_gradcheck(device, norm):
    p1 = separated_cloud(2, 7, 3, device=device).requires_grad_()
    p2 = separated_cloud(2, 5, 3, device=device, seed=2).requires_grad_()
    l1, l2 = torch.tensor([7, 4], device=device), torch.tensor([5, 3], device=device)
    assert torch.autograd.gradcheck(lambda a, b: nn_distance(a, b, l1, l2, norm=norm)[0::2], (p1, p2))


def test_nn_distance_opcheck_and_compile():
    p1, p2 = torch.rand(2, 8, 3, requires_grad=True), torch.rand(2, 6, 3, requires_grad=True)
    torch.library.opcheck(torch.ops.fastvision.nn_distance, (p1, p2, None, torch.tensor([6, 2]), 2, -1))
    torch.library.opcheck(torch.ops.fastvision.nn_distance, (p1, p2, None, None, 1, 1))
    compiled = torch.compile(chamfer_distance, fullgraph=True)
    torch.testing.assert_close(compiled(p1, p2), chamfer_distance(p1, p2))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: nn_distance(torch.rand(2, 5), torch.rand(2, 4, 3)), ValueError, r"p1 must have shape"),
        (lambda: nn_distance(torch.rand(2, 5, 3), torch.rand(2, 4, 2)), RuntimeError, "same point dimension"),
        (lambda: nn_distance(torch.rand(2, 5, 3), torch.rand(2, 4, 3), torch.tensor([6, 1])), RuntimeError, "lengths1 must lie in"),
        (lambda: nn_distance(torch.rand(2, 5, 3), torch.rand(2, 4, 3).fill_(float("inf"))), ValueError, "p2 contains NaN or infinite"),
        (lambda: nn_distance(torch.rand(2, 5, 3), torch.rand(2, 4, 3), norm=0), ValueError, "norm must be 1 or 2"),
        (lambda: chamfer_distance(torch.rand(2, 5, 3), torch.rand(2, 4, 3), reduction="avg"), ValueError, "reduction must be"),
    ],
)
def test_nn_distance_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_chamfer_distance(reduction):
    p1, p2 = torch.rand(4, 50, 3, dtype=torch.float64), torch.rand(4, 40, 3, dtype=torch.float64)
    l1, l2 = torch.tensor([50, 10, 1, 33]), torch.tensor([40, 40, 7, 2])
    per_cloud = ref.chamfer_distance(p1, p2, l1, l2)
    expected = {"mean": per_cloud.mean(), "sum": per_cloud.sum(), "none": per_cloud}[reduction]
    torch.testing.assert_close(chamfer_distance(p1, p2, l1, l2, reduction=reduction), expected)
    # Against a dense oracle written independently of the kernels.
    d = torch.cdist(p1[1:2, :10], p2[1:2, :40]) ** 2
    torch.testing.assert_close(
        chamfer_distance(p1[1:2, :10], p2[1:2], reduction="none")[0],
        d.min(2).values.mean() + d.min(1).values.mean(),
    )


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 3), P1=st.integers(0, 25), P2=st.integers(0, 25), D=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_nn_distance_property(B, P1, P2, D, seed):
    g = torch.Generator().manual_seed(seed)
    p1 = torch.randint(-2, 3, (B, P1, D), generator=g).double()
    p2 = torch.randint(-2, 3, (B, P2, D), generator=g).double()
    l1 = torch.randint(0, P1 + 1, (B,), generator=g)
    l2 = torch.randint(0, P2 + 1, (B,), generator=g)
    _assert_same(nn_distance(p1, p2, l1, l2), ref.nn_distance(p1, p2, l1, l2))


def test_sampling_loss_equals_official_formula():
    # orendv/learning_to_sample get_sampling_loss: batch means of each term, beta fixed to 1.
    g, p = torch.rand(3, 16, 3, dtype=torch.float64), torch.rand(3, 100, 3, dtype=torch.float64)
    d = torch.cdist(g, p) ** 2
    gamma, delta = 0.5, 1 / 30
    official = (
        d.min(2).values.mean()
        + d.min(2).values.max(1).values.mean()
        + (gamma + delta * 16) * d.min(1).values.mean()
    )
    torch.testing.assert_close(sampling_loss(g, p, gamma=gamma, delta=delta), official)
    l_f, l_m, l_b = sampling_loss_terms(g, p)
    rf, rm, rb = ref.sampling_loss_terms(g, p)
    torch.testing.assert_close((l_f, l_m, l_b), (rf, rm, rb))


def test_sampling_loss_ragged_and_gradients():
    g = torch.rand(2, 8, 3, dtype=torch.float64, requires_grad=True)
    p = torch.rand(2, 30, 3, dtype=torch.float64, requires_grad=True)
    lg, lp = torch.tensor([8, 5]), torch.tensor([30, 12])
    per_cloud = sampling_loss(g, p, beta=2.0, gamma=1.0, delta=0.1, lengths_generated=lg, lengths_points=lp, reduction="none")
    d = torch.cdist(g[1:, :5], p[1:, :12]) ** 2
    manual = d.min(2).values.mean() + 2.0 * d.min(2).values.max() + (1.0 + 0.1 * 5) * d.min(1).values.mean()
    torch.testing.assert_close(per_cloud[1], manual)
    per_cloud.sum().backward()
    assert g.grad[1, 5:].eq(0).all() and p.grad[1, 12:].eq(0).all()
    assert g.grad[0].abs().sum() > 0
