"""soft_project: reference, the official SampleNet module, gradients, stability, hard mode, opcheck,
compile, edge sizes, errors, property tests, CUDA vs CPU."""

import pytest
import torch
import torch.nn as nn
from helpers import DEVICES, FLOAT_DTYPES, HALF_DTYPES, separated_cloud
from hypothesis import given, settings
from hypothesis import strategies as st

from fastvision.ops import _reference as ref
from fastvision.ops import knn_points, soft_project

# ------------------------------------------------------------------------------------------------
# An independent oracle: the official SampleNet PyTorch SoftProjection module
# (itailang/SampleNet, registration/src/soft_projection.py), with its two CUDA dependencies
# (knn_cuda.KNN and pointnet2's grouping_operation) replaced by plain PyTorch equivalents.


def _official_knn_point(group_size, point_cloud, query_cloud):
    # KNN(k, transpose_mode=False)(ref, query): channels-first (B, 3, N), (B, 3, M) ->
    # dist, idx of shape (B, k, M).
    diff = query_cloud.unsqueeze(3) - point_cloud.unsqueeze(2)  # (B, 3, M, N)
    d = (diff**2).sum(1)
    dist, idx = torch.sort(d, dim=2, stable=True)
    return dist[:, :, :group_size].permute(0, 2, 1), idx[:, :, :group_size].permute(0, 2, 1)


def _official_group_point(features, idx):
    # grouping_operation: (B, C, N), int (B, M, k) -> (B, C, M, k).
    B, C, _ = features.shape
    _, M, K = idx.shape
    flat = idx.long().reshape(B, 1, M * K).expand(B, C, M * K)
    return features.gather(2, flat).reshape(B, C, M, K)


def _axis_to_dim(axis):
    return {0: 0, 1: 2, 2: 3, 3: 1}.get(axis)


class OfficialSoftProjection(nn.Module):
    def __init__(self, group_size, initial_temperature=1.0, is_temperature_trainable=True, min_sigma=1e-4):
        super().__init__()
        self._group_size = group_size
        self._temperature = torch.nn.Parameter(
            torch.tensor(initial_temperature, requires_grad=is_temperature_trainable, dtype=torch.float32)
        )
        self._min_sigma = torch.tensor(min_sigma, dtype=torch.float32)

    def forward(self, point_cloud, query_cloud, point_features=None, action="project"):
        point_cloud = point_cloud.contiguous()
        query_cloud = query_cloud.contiguous()
        if action == "project":
            return self.project(point_cloud, query_cloud)
        if action == "propagate":
            return self.propagate(point_cloud, point_features, query_cloud)
        if action == "project_and_propagate":
            return self.project_and_propagate(point_cloud, point_features, query_cloud)
        raise ValueError("action")

    def _group_points(self, point_cloud, query_cloud, point_features=None):
        _, idx = _official_knn_point(self._group_size, point_cloud, query_cloud)
        idx = idx.permute(0, 2, 1).type(torch.int32)
        grouped_points = _official_group_point(point_cloud, idx)
        grouped_features = None if point_features is None else _official_group_point(point_features, idx)
        return grouped_points, grouped_features

    def _get_distances(self, grouped_points, query_cloud):
        deltas = grouped_points - query_cloud.unsqueeze(-1).expand_as(grouped_points)
        return torch.sum(deltas**2, dim=_axis_to_dim(3), keepdim=True) / self.sigma()

    def sigma(self):
        device = self._temperature.device
        return torch.max(self._temperature**2, self._min_sigma.to(device))

    def project_and_propagate(self, point_cloud, point_features, query_cloud):
        grouped_points, grouped_features = self._group_points(point_cloud, query_cloud, point_features)
        dist = self._get_distances(grouped_points, query_cloud)
        weights = torch.softmax(-dist, dim=_axis_to_dim(2))
        projected_points = torch.sum(grouped_points * weights, dim=_axis_to_dim(2))
        propagated_features = torch.sum(grouped_features * weights, dim=_axis_to_dim(2))
        return projected_points, propagated_features

    def propagate(self, point_cloud, point_features, query_cloud):
        grouped_points, grouped_features = self._group_points(point_cloud, query_cloud, point_features)
        dist = self._get_distances(grouped_points, query_cloud)
        weights = torch.softmax(-dist, dim=_axis_to_dim(2))
        return torch.sum(grouped_features * weights, dim=_axis_to_dim(2))

    def project(self, point_cloud, query_cloud, hard=False):
        grouped_points, _ = self._group_points(point_cloud, query_cloud)
        dist = self._get_distances(grouped_points, query_cloud)
        weights = torch.softmax(-dist, dim=_axis_to_dim(2))
        if hard:
            raise NotImplementedError
        weights = weights.repeat(1, 3, 1, 1)
        return torch.sum(grouped_points * weights, dim=_axis_to_dim(2))


# ------------------------------------------------------------------------------------------------


def _leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_() for t in tensors]


def _assert_grad_close(a, b):
    # Gradients sum many terms (and scatter over the queries) in another order than autograd's:
    # in float32 they agree to a few ulps of the largest gradient entry.
    if a.dtype == torch.float64:
        torch.testing.assert_close(a, b)
    else:
        scale = max(1.0, b.abs().max().item()) if b.numel() else 1.0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)


def _run(fn, query, points, t, features, weights):
    out = fn(query, points, t, features)
    if features is None:
        loss = (out * weights[0]).sum()
    else:
        loss = (out[0] * weights[0]).sum() + (out[1] * weights[1]).sum()
    inputs = [x for x in (query, points, t, features) if x is not None]
    grads = torch.autograd.grad(loss, inputs)
    return out, grads


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("layout", ["bnc", "bcn"])
@pytest.mark.parametrize("with_features", [False, True])
@pytest.mark.parametrize("per_cloud", [False, True])
@pytest.mark.parametrize("min_sigma", [None, 1e-2])
def test_soft_project_matches_reference(device, dtype, layout, with_features, per_cloud, min_sigma):
    B, M, N, K, F = 3, 17, 41, 5, 4
    query = torch.rand(B, M, 3, dtype=dtype, device=device)
    points = torch.rand(B, N, 3, dtype=dtype, device=device)
    feats = torch.randn(B, N, F, dtype=dtype, device=device) if with_features else None
    # Per cloud: the second cloud's sigma (0.0025) sits below min_sigma (clamp active there).
    t = torch.tensor([0.3, 0.05, 0.2], dtype=dtype, device=device) if per_cloud else torch.tensor(0.25, dtype=dtype, device=device)
    wq = torch.randn(B, M, 3, dtype=dtype, device=device)
    wf = torch.randn(B, M, F, dtype=dtype, device=device)

    def ours(q, p, tt, f):
        tr = (lambda x: x.transpose(1, 2)) if layout == "bcn" else (lambda x: x)
        out = soft_project(tr(q), tr(p), tt, K, None if f is None else tr(f), min_sigma=min_sigma, layout=layout)
        return tr(out) if f is None else (tr(out[0]), tr(out[1]))

    def reference(q, p, tt, f):
        return ref.soft_project(q, p, tt, K, f, min_sigma=min_sigma)

    out, grads = _run(ours, *_leaves(query, points, t, feats), (wq, wf))
    rout, rgrads = _run(reference, *_leaves(query, points, t, feats), (wq, wf))
    for a, b in zip(out if with_features else [out], rout if with_features else [rout]):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b)
    for a, b in zip(grads, rgrads):
        _assert_grad_close(a, b)
    if per_cloud and min_sigma is not None:
        assert grads[2][1] == 0  # clamp active: no gradient to that cloud's temperature
        assert grads[2][0] != 0


@pytest.mark.parametrize("K", [8, 15, 16, 17, 30])
def test_soft_project_neighbours_past_the_cache_match_reference(K):
    # soft_projection.h computes the first kSpCachedNeighbours (16) neighbours' distances and
    # weights once per query and recomputes the rest: values and gradients on both sides of it.
    g = torch.Generator().manual_seed(K)
    B, M, N, F = 2, 9, 40, 3
    query = torch.rand(B, M, 3, generator=g, dtype=torch.float64)
    points = torch.rand(B, N, 3, generator=g, dtype=torch.float64)
    feats = torch.randn(B, N, F, generator=g, dtype=torch.float64)
    t = torch.tensor([0.15, 0.4], dtype=torch.float64)
    wq, wf = torch.randn(B, M, 3, generator=g, dtype=torch.float64), torch.randn(B, M, F, generator=g, dtype=torch.float64)
    ours = lambda q, p, tt, f: soft_project(q, p, tt, K, f, min_sigma=1e-2)  # noqa: E731
    reference = lambda q, p, tt, f: ref.soft_project(q, p, tt, K, f, min_sigma=1e-2)  # noqa: E731
    out, grads = _run(ours, *_leaves(query, points, t, feats), (wq, wf))
    rout, rgrads = _run(reference, *_leaves(query, points, t, feats), (wq, wf))
    for a, b in zip(out, rout):
        torch.testing.assert_close(a, b)
    for a, b in zip(grads, rgrads):
        _assert_grad_close(a, b)


@pytest.mark.parametrize("action", ["project", "propagate", "project_and_propagate"])
@pytest.mark.parametrize("temperature, min_sigma", [(1.0, 1e-4), (0.1, 1e-2), (0.05, 1e-2), (0.2, 1e-4)])
def test_soft_project_equals_official_module(action, temperature, min_sigma):
    # Channels-first clouds, float32, as in SampleNet; gradients to the clouds, the features and t.
    B, M, N, K, F = 2, 32, 200, 8, 6
    points = torch.rand(B, 3, N)
    query = torch.rand(B, 3, M)
    feats = torch.randn(B, F, N)
    module = OfficialSoftProjection(K, temperature, min_sigma=min_sigma)
    p1, q1, f1 = _leaves(points, query, feats)
    expected = module(p1, q1, f1, action=action)
    expected = expected if isinstance(expected, tuple) else (expected,)

    t = torch.tensor(temperature, dtype=torch.float32, requires_grad=True)
    p2, q2, f2 = _leaves(points, query, feats)
    if action == "project":
        got = (soft_project(q2, p2, t, K, min_sigma=min_sigma, layout="bcn"),)
    else:
        got = soft_project(q2, p2, t, K, f2, min_sigma=min_sigma, layout="bcn")
        if action == "propagate":
            got = got[1:]
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b)

    ws = [torch.randn_like(e) for e in expected]
    sum((e * w).sum() for e, w in zip(expected, ws)).backward()
    sum((g * w).sum() for g, w in zip(got, ws)).backward()
    _assert_grad_close(q2.grad, q1.grad)
    _assert_grad_close(p2.grad, p1.grad)
    _assert_grad_close(t.grad, module._temperature.grad)
    if action != "project":
        _assert_grad_close(f2.grad, f1.grad)
    if temperature**2 < min_sigma:
        assert t.grad == 0 and module._temperature.grad == 0


def test_soft_project_official_example():
    # The self-test at the bottom of the official soft_projection.py (k = 3).
    query_cloud = torch.tensor(
        [[1, 0, 0], [0, 1, 0], [0, 0, 1], [5, 4, 4], [4, 5, 4], [4, 4, 5], [8, 7, 7], [7, 8, 7], [7, 7, 8]],
        dtype=torch.float32,
    )[None]
    point_cloud = torch.tensor([[0, 0, 0], [1, 0, 0], [2, 0, 0], [5, 5, 5], [7, 7, 8], [7, 7, 8.5]])[None]
    point_features = torch.arange(1, 31, dtype=torch.float32).reshape(1, 6, 5)
    expected_features = torch.tensor(
        [
            [6.0, 7.0, 8.0, 9.0, 10.0],
            [2.459, 3.459, 4.459, 5.459, 6.459],
            [2.459, 3.459, 4.459, 5.459, 6.459],
            [16.0, 17.0, 18.0, 19.0, 20.0],
            [16.0, 17.0, 18.0, 19.0, 20.0],
            [16.0, 17.0, 18.0, 19.0, 20.0],
            [22.113, 23.113, 24.113, 25.113, 26.113],
            [22.113, 23.113, 24.113, 25.113, 26.113],
            [23.189, 24.189, 25.189, 26.189, 27.189],
        ]
    )[None]
    _, feats = soft_project(query_cloud, point_cloud, torch.tensor(1.0), 3, point_features, min_sigma=1e-4)
    torch.testing.assert_close(feats, expected_features, atol=2e-3, rtol=0)
    # Roles swapped, t = 0.1.
    expected_cloud = torch.tensor(
        [[0.333, 0.333, 0.333], [1, 0, 0], [1, 0, 0], [4.333, 4.333, 4.333], [7, 7, 8], [7, 7, 8]]
    )[None]
    proj = soft_project(point_cloud, query_cloud, torch.tensor(0.1), 3, min_sigma=1e-4)
    torch.testing.assert_close(proj, expected_cloud, atol=2e-3, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_soft_project_tiny_sigma_is_stable_and_tends_to_the_nearest_neighbour(device, dtype):
    points = separated_cloud(2, 60, 3, dtype=dtype, device=device)
    query = torch.rand(2, 25, 3, dtype=dtype, device=device) * 0.2
    feats = torch.randn(2, 60, 4, dtype=dtype, device=device)
    nearest = knn_points(query, points, 1).idx[..., 0]
    batch = torch.arange(2, device=device)[:, None]
    q, p, f = _leaves(query, points, feats)
    t = torch.tensor(1e-4, dtype=dtype, device=device, requires_grad=True)  # sigma = 1e-8
    out, out_f = soft_project(q, p, t, 8, f)
    assert torch.isfinite(out).all() and torch.isfinite(out_f).all()
    torch.testing.assert_close(out, points[batch, nearest], rtol=0, atol=1e-6)
    torch.testing.assert_close(out_f, feats[batch, nearest], rtol=0, atol=1e-5)
    hard, hard_f = soft_project(query, points, t.detach(), 8, feats, hard=True)
    torch.testing.assert_close(out, hard, rtol=0, atol=1e-6)
    (out.sum() + out_f.sum()).backward()
    for g in (q.grad, p.grad, f.grad, t.grad):
        assert torch.isfinite(g).all()
    # The reference (torch.softmax also subtracts the maximum) agrees.
    torch.testing.assert_close(out, ref.soft_project(query, points, t.detach(), 8))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("t", [1e-10, 1e-15])
def test_soft_project_extreme_sigma_keeps_gradients_finite(device, dtype, t):
    # sigma = 1e-20 / 1e-30: (d - d_min) / sigma^2 overflows float32; the gradients stay finite.
    points = separated_cloud(2, 40, 3, dtype=dtype, device=device)
    q, p = _leaves(torch.rand(2, 10, 3, dtype=dtype, device=device) * 0.2, points)
    tt = torch.tensor(t, dtype=dtype, device=device, requires_grad=True)
    out = soft_project(q, p, tt, 6)
    (out * torch.randn_like(out)).sum().backward()
    for x in (out, q.grad, p.grad, tt.grad):
        assert torch.isfinite(x).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_soft_project_hard_mode(device, dtype):
    query = torch.rand(2, 20, 3, dtype=dtype, device=device)
    points = torch.rand(2, 30, 3, dtype=dtype, device=device)
    feats = torch.randn(2, 30, 3, dtype=dtype, device=device)
    nearest = knn_points(query, points, 1).idx[..., 0]
    batch = torch.arange(2, device=device)[:, None]
    q, p, f = _leaves(query, points, feats)
    t = torch.tensor(0.5, dtype=dtype, device=device, requires_grad=True)
    out, out_f = soft_project(q, p, t, 6, f, hard=True)
    assert torch.equal(out, points[batch, nearest])
    assert torch.equal(out_f, feats[batch, nearest])
    g, gf = torch.randn_like(out), torch.randn_like(out_f)
    ((out * g).sum() + (out_f * gf).sum()).backward()
    rq, rp, rf = _leaves(query, points, feats)
    rout, rout_f = ref.soft_project(rq, rp, t.detach(), 6, rf, hard=True)
    ((rout * g).sum() + (rout_f * gf).sum()).backward()
    torch.testing.assert_close(p.grad, rp.grad)
    torch.testing.assert_close(f.grad, rf.grad)
    assert (q.grad == 0).all() and t.grad == 0


@pytest.mark.parametrize("device", DEVICES)
def test_soft_project_k1_is_the_nearest_neighbour(device):
    query = torch.rand(3, 15, 3, device=device)
    points = torch.rand(3, 22, 3, device=device)
    nearest = knn_points(query, points, 1).idx[..., 0]
    q = query.clone().requires_grad_()
    t = torch.tensor(0.3, device=device, requires_grad=True)
    out = soft_project(q, points, t, 1)
    assert torch.equal(out, points[torch.arange(3, device=device)[:, None], nearest])
    out.sum().backward()
    assert (q.grad == 0).all() and t.grad == 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("per_cloud", [False, True])
@pytest.mark.parametrize("min_sigma", [None, 4e-3])
@pytest.mark.parametrize("hard", [False, True])
def test_soft_project_gradcheck(device, per_cloud, min_sigma, hard):
    query = separated_cloud(2, 7, 3, device=device, seed=3) + 0.011
    points = separated_cloud(2, 12, 3, device=device, seed=4)
    feats = torch.randn(2, 12, 2, dtype=torch.float64, device=device)
    t = torch.tensor([0.08, 0.05], dtype=torch.float64, device=device) if per_cloud else torch.tensor(0.07, dtype=torch.float64, device=device)
    inputs = [x.requires_grad_() for x in (query, points, t, feats)]

    def f(q, p, tt, ff):
        a, b = soft_project(q, p, tt, 4, ff, min_sigma=min_sigma, hard=hard)
        return a, b

    assert torch.autograd.gradcheck(f, inputs)

    def g(q, p, tt):
        return soft_project(q, p, tt, 3, min_sigma=min_sigma, hard=hard, layout="bcn")

    assert torch.autograd.gradcheck(g, [x.detach().transpose(1, 2).requires_grad_() if x.dim() == 3 else x for x in inputs[:3]])


def test_soft_project_opcheck():
    q = torch.rand(2, 9, 3, requires_grad=True)
    p = torch.rand(2, 11, 3, requires_grad=True)
    f = torch.rand(2, 11, 4, requires_grad=True)
    t = torch.tensor(0.3, requires_grad=True)
    tb = torch.tensor([0.3, 0.2], requires_grad=True)
    op = torch.ops.fastvision.soft_project
    torch.library.opcheck(op, (q, p, t, 3, None, None, False))
    torch.library.opcheck(op, (q, p, tb, 4, f, 1e-2, False))
    torch.library.opcheck(op, (q, p, t, 2, f, None, True))
    _, _, idx = op(q, p, t, 3, f, None, False)
    torch.library.opcheck(
        torch.ops.fastvision._soft_project_backward,
        (torch.rand(2, 9, 3), torch.rand(2, 9, 4), q.detach(), p.detach(), tb.detach(), idx, f.detach(), 1e-2, False),
    )
    torch.library.opcheck(
        torch.ops.fastvision._soft_project_backward,
        (torch.rand(2, 9, 3), None, q.detach(), p.detach(), t.detach(), idx, None, None, False),
    )


def test_soft_project_torch_compile_fullgraph():
    def f(q, p, t, feats):
        return soft_project(q, p, t, 5, feats, min_sigma=1e-3, layout="bcn")

    q, p, feats = torch.rand(2, 3, 16), torch.rand(2, 3, 40), torch.rand(2, 6, 40)
    t = torch.tensor(0.2)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    for out, expected in zip(compiled(q, p, t, feats), f(q, p, t, feats)):
        assert torch.equal(out, expected)


def test_soft_project_torch_compile_inductor_gradients():
    @torch.compile(fullgraph=True)
    def loss(q, p, t):
        return (soft_project(q, p, t, 4) ** 2).sum() + t**2

    q = torch.rand(2, 16, 3, requires_grad=True)
    p = torch.rand(2, 30, 3, requires_grad=True)
    t = torch.tensor(0.3, requires_grad=True)
    loss(q, p, t).backward()
    q2, p2, t2 = _leaves(q, p, t)
    ((soft_project(q2, p2, t2, 4) ** 2).sum() + t2**2).backward()
    torch.testing.assert_close(q.grad, q2.grad)
    torch.testing.assert_close(p.grad, p2.grad)
    torch.testing.assert_close(t.grad, t2.grad)


@pytest.mark.parametrize("device", DEVICES)
def test_soft_project_edge_sizes(device):
    t = torch.tensor(0.5, device=device)
    assert soft_project(torch.rand(0, 5, 3, device=device), torch.rand(0, 5, 3, device=device), torch.tensor(0.5, device=device), 2).shape == (0, 5, 3)
    out, of = soft_project(torch.rand(2, 0, 3, device=device), torch.rand(2, 5, 3, device=device), t, 2, torch.rand(2, 5, 3, device=device))
    assert out.shape == (2, 0, 3) and of.shape == (2, 0, 3)
    # One point, k = N = 1.
    p = torch.rand(1, 1, 3, device=device)
    assert torch.equal(soft_project(torch.rand(1, 4, 3, device=device), p, t, 1), p.expand(1, 4, 3))
    # k = N: every point weighs in; odd sizes; zero feature channels.
    q, p = torch.rand(3, 7, 3, device=device), torch.rand(3, 5, 3, device=device)
    out, of = soft_project(q, p, t, 5, torch.rand(3, 5, 0, device=device))
    assert of.shape == (3, 7, 0)
    torch.testing.assert_close(out, ref.soft_project(q, p, t, 5))
    # The query lies on an input point: it is reproduced for small sigma.
    out = soft_project(p[:, :2], p, torch.tensor(1e-3, device=device), 3)
    torch.testing.assert_close(out, p[:, :2])


def test_soft_project_non_contiguous_inputs():
    qb, pb, fb = torch.rand(2, 3, 30), torch.rand(2, 50, 6), torch.rand(2, 50, 8)
    q, p, f = qb.transpose(1, 2), pb[:, :, ::2], fb[:, :, 1::2]
    assert not q.is_contiguous() and not p.is_contiguous() and not f.is_contiguous()
    out, of = soft_project(q, p, torch.tensor([0.2, 0.3]), 6, f)
    rout, rof = ref.soft_project(q.contiguous(), p.contiguous(), torch.tensor([0.2, 0.3]), 6, f.contiguous())
    torch.testing.assert_close(out, rout)
    torch.testing.assert_close(of, rof)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_soft_project_half_precision_computes_in_float32(dtype):
    q = torch.rand(2, 20, 3).to(dtype)
    p = torch.rand(2, 30, 3).to(dtype)
    t = torch.tensor(0.3)
    out = soft_project(q, p, t, 4)
    assert out.dtype == dtype
    expected = ref.soft_project(q.float(), p.float(), t, 4)
    torch.testing.assert_close(out, expected.to(dtype))


def _q(*shape):
    return torch.rand(*shape)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: soft_project(_q(2, 5, 3), _q(2, 4, 3), torch.tensor(1.0), 5), ValueError, "k = 5 is larger"),
        (lambda: soft_project(_q(2, 5, 3), _q(2, 4, 3), torch.tensor(1.0), 0), ValueError, "k must be at least 1"),
        (lambda: soft_project(_q(2, 5, 3), _q(2, 4, 3), torch.tensor(1.0), 2.0), TypeError, "k must be an int"),
        (lambda: soft_project(_q(2, 5, 3), _q(2, 4, 3), torch.tensor(1.0), 2, layout="nbc"), ValueError, "layout must be 'bnc' or 'bcn'"),
        (lambda: soft_project(_q(2, 5, 3), _q(2, 4, 3), torch.tensor(1.0), 2, layout="bcn"), ValueError, r"query must have shape \(B, 3, N\) for layout='bcn'"),
        (lambda: soft_project(_q(2, 3, 5), _q(2, 3, 4), torch.tensor(1.0), 2), ValueError, r"query must have shape \(B, N, 3\)"),
        (lambda: soft_project(_q(5, 3), _q(2, 4, 3), torch.tensor(1.0), 1), ValueError, r"query must have shape"),
        (lambda: soft_project(_q(2, 5, 2), _q(2, 4, 2), torch.tensor(1.0), 1), ValueError, r"query must have shape \(B, N, 3\)"),
        (lambda: soft_project(_q(2, 5, 3), _q(3, 4, 3), torch.tensor(1.0), 1), RuntimeError, "same number of clouds"),
        (lambda: soft_project(_q(2, 5, 3), _q(2, 4, 3).double(), torch.tensor(1.0), 1), RuntimeError, "dtype of query"),
        (lambda: soft_project(torch.ones(2, 5, 3, dtype=torch.int32), _q(2, 4, 3), torch.tensor(1.0), 1), TypeError, "floating-point"),
        (lambda: soft_project(_q(2, 5, 3), _q(2, 4, 3), torch.tensor(float("nan")), 1), ValueError, "temperature must give a finite, nonzero sigma"),
        (lambda: soft_project(_q(2, 5, 3), _q(2, 4, 3), torch.tensor([1.0, float("inf")]), 1), ValueError, r"got t = inf .* for cloud 1"),
        (lambda: soft_project(_q(2, 5, 3), _q(2, 4, 3), torch.tensor(0.0), 1), ValueError, "finite, nonzero sigma"),
        (lambda: soft_project(_q(2, 5, 3), _q(2, 4, 3), torch.tensor([1.0, 2.0, 3.0]), 1), ValueError, r"temperature must be a scalar tensor or have shape \(B,\)"),
        (lambda: soft_project(_q(2, 5, 3), _q(2, 4, 3), torch.tensor(1), 1), TypeError, "temperature must be a floating-point"),
        (lambda: soft_project(_q(2, 5, 3), _q(2, 4, 3), torch.tensor(1.0), 1, min_sigma=-1.0), ValueError, "min_sigma must be a finite number >= 0"),
        (lambda: soft_project(_q(2, 5, 3), _q(2, 4, 3), torch.tensor(1.0), 1, _q(2, 5, 2)), RuntimeError, r"features must have shape \(B, N, F\) = \(2, 4, F\)"),
        (lambda: soft_project(_q(2, 5, 3), _q(2, 4, 3), torch.tensor(1.0), 1, _q(2, 4)), ValueError, r"features must have shape \(B, N, F\)"),
        (lambda: soft_project(_q(2, 5, 3), _q(2, 4, 3), torch.tensor(1.0), 1, _q(2, 4, 2).double()), RuntimeError, "features must have the dtype of query"),
        (lambda: soft_project(torch.full((2, 5, 3), float("nan")), _q(2, 4, 3), torch.tensor(1.0), 1), ValueError, "query contains NaN"),
        (lambda: soft_project(_q(2, 5, 3), _q(2, 4, 3), torch.tensor(1.0), 1, hard=1), TypeError, "hard must be a bool"),
    ],
)
def test_soft_project_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_soft_project_op_checks_sigma_itself():
    # The op (not only the wrapper) rejects a zero sigma on CPU, forward and backward.
    q, p = torch.rand(2, 5, 3), torch.rand(2, 4, 3)
    with pytest.raises(ValueError, match=r"got t = 0 \(sigma = 0\) for cloud 1"):
        torch.ops.fastvision.soft_project(q, p, torch.tensor([1.0, 0.0]), 2, None, None, False)
    _, _, idx = torch.ops.fastvision.soft_project(q, p, torch.tensor(1.0), 2, None, None, False)
    with pytest.raises(ValueError, match="finite, nonzero sigma"):
        torch.ops.fastvision._soft_project_backward(
            torch.rand(2, 5, 3), None, q, p, torch.tensor(float("nan")), idx, None, None, False
        )
    # A clamp makes a zero temperature valid.
    out = soft_project(q, p, torch.tensor(0.0), 2, min_sigma=1e-2)
    torch.testing.assert_close(out, ref.soft_project(q, p, torch.tensor(0.0), 2, min_sigma=1e-2))


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 3),
    M=st.integers(0, 20),
    N=st.integers(1, 30),
    F=st.integers(0, 3),
    data=st.data(),
)
def test_soft_project_property_against_reference(B, M, N, F, data):
    k = data.draw(st.integers(1, N))
    t = data.draw(st.floats(1e-3, 3.0))
    min_sigma = data.draw(st.sampled_from([None, 1e-4, 1e-2]))
    layout = data.draw(st.sampled_from(["bnc", "bcn"]))
    seed = data.draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(B, M, 3, generator=g, dtype=torch.float64)
    p = torch.rand(B, N, 3, generator=g, dtype=torch.float64)
    f = torch.randn(B, N, F, generator=g, dtype=torch.float64)
    temp = torch.tensor(t, dtype=torch.float64)
    tr = (lambda x: x.transpose(1, 2)) if layout == "bcn" else (lambda x: x)
    out, of = soft_project(tr(q), tr(p), temp, k, tr(f), min_sigma=min_sigma, layout=layout)
    rout, rof = ref.soft_project(q, p, temp, k, f, min_sigma=min_sigma)
    torch.testing.assert_close(tr(out), rout)
    torch.testing.assert_close(tr(of), rof)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k", [1, 3, 8, 16, 40])
@pytest.mark.parametrize("hard", [False, True])
def test_soft_project_cuda_equals_cpu(dtype, k, hard):
    B, M, N, F = 4, 300, 90, 5
    query = torch.rand(B, M, 3).to(dtype)
    points = torch.rand(B, N, 3).to(dtype)
    feats = torch.randn(B, N, F).to(dtype)
    t = torch.tensor([0.1, 0.05, 0.3, 0.01])
    wq, wf = torch.randn(B, M, 3), torch.randn(B, M, F)
    results = []
    for device in ("cpu", "cuda"):
        q, p, f = (x.to(device).requires_grad_() for x in (query, points, feats))
        tt = t.to(device).requires_grad_()
        out, of = soft_project(q, p, tt, k, f, min_sigma=1e-3, hard=hard)
        ((out.float() * wq.to(device)).sum() + (of.float() * wf.to(device)).sum()).backward()
        results.append([x.detach().cpu() for x in (out, of, q.grad, p.grad, f.grad, tt.grad)])
    cpu, cuda = results
    if dtype in (torch.float32, torch.float64):
        # Same arithmetic (soft_projection.h); the GPU contracts to FMAs and scatters with atomics.
        torch.testing.assert_close(cuda[0], cpu[0])
        torch.testing.assert_close(cuda[1], cpu[1])
        for a, b in zip(cuda[2:], cpu[2:]):
            _assert_grad_close(a, b)
    else:
        for a, b in zip(cuda, cpu):
            torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2)


# ------------------------------------------------------------------------------------------------
# Issue 13: neighbours at infinite distance (kNN index -1) and the backward's index validation.


def test_soft_project_overflowing_distances_are_a_clear_error():
    # Issue 13's reproducer: |3e19|^2 overflows float32, so kNN would return idx -1 for those
    # neighbours (which the shared header then weighs 0, as the emulated tests check with -1
    # indices fed in). The overflow contract of the point ops rejects such clouds up front.
    q = torch.zeros(1, 2, 3)
    p = torch.tensor([[[0.5, 0, 0], [3e19, 0, 0], [-3e19, 0, 0]]])
    with pytest.raises(ValueError, match=r"soft_project: points\[0, 1, 0\] = 3e\+19 is too large"):
        soft_project(q, p, torch.tensor(1.0), 2)
    with pytest.raises(ValueError, match="too large"):
        torch.ops.fastvision.soft_project(q, p, torch.tensor(1.0), 2, None, None, False)


@pytest.mark.parametrize("bad", [3, 7, -2])
def test_soft_project_backward_rejects_out_of_range_indices(bad):
    q, p = torch.rand(1, 2, 3), torch.rand(1, 3, 3)
    idx = torch.tensor([[[0, 1], [2, bad]]])
    with pytest.raises(ValueError, match=rf"_soft_project_backward: idx must hold -1 or indices in \[0, N = 3\), got {bad} at flat position 3"):
        torch.ops.fastvision._soft_project_backward(torch.rand(1, 2, 3), None, q, p, torch.tensor(1.0), idx, None, None, False)
    # -1 (no neighbour) is accepted and contributes nothing.
    idx[0, 1, 1] = -1
    gq, gp, _, _ = torch.ops.fastvision._soft_project_backward(torch.ones(1, 2, 3), None, q, p, torch.tensor(1.0), idx, None, None, False)
    assert gp[0, 2].tolist() == [1.0, 1.0, 1.0] and gq[0, 1].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.cuda
def test_soft_project_cuda_backward_is_deterministic():
    # Issue 13, 4.5 / issue 20, 4: the CUDA backward has no atomics (entries sorted stably by
    # neighbour, summed per point in the CPU's order), so it runs under deterministic mode and
    # repeats bit for bit; it also matches the CPU backward.
    g = torch.Generator().manual_seed(0)
    q, p = torch.rand(2, 300, 3, generator=g), torch.rand(2, 40, 3, generator=g)
    f = torch.randn(2, 40, 37, generator=g)

    def grads(device):
        qq, pp, ff = (t.to(device).requires_grad_() for t in (q, p, f))
        y, yf = soft_project(qq, pp, torch.tensor(0.5, device=device), 8, features=ff)
        (y.square().sum() + yf.sin().sum()).backward()
        return [t.grad.cpu() for t in (qq, pp, ff)]

    torch.use_deterministic_algorithms(True)
    try:
        first, second = grads("cuda"), grads("cuda")
    finally:
        torch.use_deterministic_algorithms(False)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    for a, b in zip(first, grads("cpu")):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
