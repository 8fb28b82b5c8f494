"""fastvision.compat.pytorch3d: PyTorch3D's knn_points, knn_gather, chamfer_distance and
sample_farthest_points conventions, checked on CPU against naive oracles written here with plain
torch ops (the checks of PyTorch3D's test_knn.py, test_chamfer.py and
test_sample_farthest_points.py), plus a CUDA-vs-CPU comparison."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from fastvision.compat.pytorch3d import (
    KNN,
    chamfer_distance,
    knn_gather,
    knn_points,
    sample_farthest_points,
)

# ---------------------------------------------------------------------------------------------
# Oracles


def _full(lengths, N, P):
    return torch.full((N,), P, dtype=torch.int64) if lengths is None else lengths.cpu()


def naive_knn(p1, p2, lengths1, lengths2, K, norm=2):
    """Per-cloud sort of a dense distance matrix; PyTorch3D padding (0, 0). Differentiable."""
    N, P1, _ = p1.shape
    l1, l2 = _full(lengths1, N, P1), _full(lengths2, N, p2.shape[1])
    rows_d, rows_i = [], []
    for n in range(N):
        a, b = int(l1[n]), int(l2[n])
        diff = p1[n, :a, None, :] - p2[n, None, :b, :]
        d = (diff * diff).sum(-1) if norm == 2 else diff.abs().sum(-1)
        k = min(K, b)
        sd, si = d.sort(dim=1, stable=True)
        dists = F.pad(sd[:, :k], (0, K - k, 0, P1 - a))
        idx = F.pad(si[:, :k], (0, K - k, 0, P1 - a))
        rows_d.append(dists)
        rows_i.append(idx)
    return torch.stack(rows_d), torch.stack(rows_i)


def naive_gather(x, idx, lengths=None):
    N, L, K = idx.shape
    out = x.new_zeros(N, L, K, x.shape[2])
    lim = _full(lengths, N, x.shape[1])
    for n, l, k in itertools.product(range(N), range(L), range(K)):
        if k < lim[n] and idx[n, l, k] >= 0:
            out[n, l, k] = x[n, idx[n, l, k]]
    return out


def naive_terms(x, y, xl, yl, xn, yn, norm, abs_cosine):
    """Unreduced x -> y Chamfer terms ``(N, P1)`` and normal terms (or None), PyTorch3D's way: a
    point whose target cloud is empty gets distance 0 and is compared with a zero normal."""
    N, P1, _ = x.shape
    P2 = y.shape[1]
    diff = x[:, :, None, :] - y[:, None, :, :]
    d = (diff * diff).sum(-1) if norm == 2 else diff.abs().sum(-1)  # (N, P1, P2)
    col_ok = torch.arange(P2)[None, None, :] < yl[:, None, None]
    d = torch.where(col_ok, d, torch.full_like(d, float("inf")))
    if P2 > 0:
        dmin, amin = d.min(dim=2)
    else:
        dmin = torch.full((N, P1), float("inf"), dtype=x.dtype)
        amin = torch.zeros((N, P1), dtype=torch.long)
    row_pad = torch.arange(P1)[None, :] >= xl[:, None]
    empty = (yl == 0)[:, None].expand(N, P1)
    term = torch.where(row_pad | empty, torch.zeros_like(dmin), dmin)
    nterm = None
    if xn is not None and yn is not None:
        if P2 > 0:
            near = yn.gather(1, amin[..., None].expand(N, P1, yn.shape[2]))
        else:
            near = yn.new_zeros(N, P1, yn.shape[2])
        near = torch.where(empty[..., None], torch.zeros_like(near), near)
        cos = F.cosine_similarity(xn, near, dim=2, eps=1e-6)
        nterm = 1 - (cos.abs() if abs_cosine else cos)
        nterm = torch.where(row_pad, torch.zeros_like(nterm), nterm)
    return term, nterm


def naive_chamfer(x, y, xl, yl, xn=None, yn=None, weights=None, batch_reduction="mean",
                  point_reduction="mean", norm=2, single_directional=False, abs_cosine=True):
    N = x.shape[0]
    dirs = [(x, y, xl, yl, xn, yn)]
    if not single_directional:
        dirs.append((y, x, yl, xl, yn, xn))
    terms = []
    for a, b, la, lb, na, nb in dirs:
        t, nt = naive_terms(a, b, la, lb, na, nb, norm, abs_cosine)
        if weights is not None:
            t = t * weights[:, None]
            nt = None if nt is None else nt * weights[:, None]
        if point_reduction == "max":
            t = t.max(1).values
        elif point_reduction is not None:
            t = t.sum(1)
            nt = None if nt is None else nt.sum(1)
            if point_reduction == "mean":
                t = t / la.clamp(min=1)
                nt = None if nt is None else nt / la.clamp(min=1)
        terms.append((t, nt))
    if single_directional:
        loss, ln = terms[0]
    elif point_reduction is None:
        loss = (terms[0][0], terms[1][0])
        ln = None if terms[0][1] is None else (terms[0][1], terms[1][1])
    elif point_reduction == "max":
        loss, ln = torch.maximum(terms[0][0], terms[1][0]), None
    else:
        loss = terms[0][0] + terms[1][0]
        ln = None if terms[0][1] is None else terms[0][1] + terms[1][1]
    if batch_reduction is not None:
        div = 1.0
        if batch_reduction == "mean":
            div = max(N, 1) if weights is None else weights.sum()
        loss = loss.sum() / div
        ln = None if ln is None else ln.sum() / div
    return loss, ln


def naive_fps(points, lengths, Ks, starts):
    """The greedy sequence per cloud (lowest index on ties), -1 padding to max(Ks)."""
    N = points.shape[0]
    out = torch.full((N, max(Ks, default=0)), -1, dtype=torch.int64)
    pts = points.float()
    for n in range(N):
        m = int(lengths[n])
        k_n = min(Ks[n], m)
        if k_n == 0:
            continue
        cloud = pts[n, :m]
        sel = [int(starts[n])]
        mind = ((cloud - cloud[sel[0]]) ** 2).sum(1)
        while len(sel) < k_n:
            j = int(torch.argmax(mind))
            sel.append(j)
            mind = torch.minimum(mind, ((cloud - cloud[j]) ** 2).sum(1))
        out[n, :k_n] = torch.tensor(sel)
    return out


class FakePointclouds:
    """The three methods chamfer_distance reads from a PyTorch3D Pointclouds, built from lists
    (the padded tensors stay differentiable with respect to the list entries)."""

    def __init__(self, points, normals=None):
        self._points, self._normals = points, normals
        self._P = max((p.shape[0] for p in points), default=0)

    def _pad(self, items):
        if not items:
            return torch.zeros(0, self._P, 3)
        return torch.stack([F.pad(t, (0, 0, 0, self._P - t.shape[0])) for t in items])

    def points_padded(self):
        return self._pad(self._points)

    def normals_padded(self):
        return None if self._normals is None else self._pad(self._normals)

    def num_points_per_cloud(self):
        return torch.tensor([p.shape[0] for p in self._points], dtype=torch.int64)


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


def _grads(out, inputs):
    """Gradients of a fixed random projection of every tensor in ``out`` (tuples flattened)."""
    flat = [t for t in (out if isinstance(out, (tuple, list)) else [out]) if t is not None]
    flat = [u for t in flat for u in (t if isinstance(t, tuple) else (t,))]
    g = torch.Generator().manual_seed(123)
    total = sum((t * torch.rand(t.shape, generator=g, dtype=t.dtype)).sum() for t in flat)
    return torch.autograd.grad(total, inputs, allow_unused=True)


# ---------------------------------------------------------------------------------------------
# knn_points / knn_gather


@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("N,P1,P2,D,K", [(1, 8, 8, 3, 1), (3, 12, 9, 5, 3), (2, 10, 6, 3, 8)])
def test_knn_vs_oracle_with_gradients(norm, ragged, N, P1, P2, D, K):
    x = torch.randn(N, P1, D)
    y = torch.randn(N, P2, D)
    l1 = torch.randint(1, P1 + 1, (N,)) if ragged else None
    l2 = torch.randint(1, P2 + 1, (N,)) if ragged else None
    x1, y1, x2, y2 = _leaf(x), _leaf(y), _leaf(x), _leaf(y)
    want_d, want_i = naive_knn(x1, y1, l1, l2, K, norm)
    out = knn_points(x2, y2, lengths1=l1, lengths2=l2, norm=norm, K=K)
    assert isinstance(out, KNN) and out._fields == ("dists", "idx", "knn")
    assert out.knn is None
    assert out.dists.shape == (N, P1, K) and out.idx.dtype == torch.int64
    torch.testing.assert_close(out.dists, want_d)
    assert torch.equal(out.idx, want_i)
    g_want = _grads(want_d, [x1, y1])
    g_got = _grads(out.dists, [x2, y2])
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, atol=5e-6, rtol=1e-5)


def test_knn_padding_is_zero_dist_and_zero_idx():
    x = torch.rand(2, 4, 3)
    y = torch.rand(2, 5, 3)
    l1 = torch.tensor([2, 4])
    l2 = torch.tensor([1, 0])  # cloud 1 of y is empty
    out = knn_points(x, y, l1, l2, K=7)  # K > P2 as well
    assert out.dists.shape == (2, 4, 7)
    assert torch.all(out.dists[0, :2, 1:] == 0) and torch.all(out.idx[0, :2, 1:] == 0)
    assert torch.all(out.dists[0, 2:] == 0) and torch.all(out.idx[0, 2:] == 0)  # rows past l1
    assert torch.all(out.dists[1] == 0) and torch.all(out.idx[1] == 0)  # empty target cloud
    want = ((x[0, :2] - y[0, 0]) ** 2).sum(-1)
    torch.testing.assert_close(out.dists[0, :2, 0], want)
    # No neighbour at all (P2 = 0): all padding, still differentiable.
    xg = x.clone().requires_grad_(True)
    empty = knn_points(xg, torch.rand(2, 0, 3), K=2, return_nn=True)
    assert torch.all(empty.dists == 0) and torch.all(empty.idx == 0)
    assert empty.knn.shape == (2, 4, 2, 3) and torch.all(empty.knn == 0)
    empty.dists.sum().backward()
    assert torch.all(xg.grad == 0)


def test_knn_padding_gets_no_gradient():
    x = torch.rand(2, 5, 3, requires_grad=True)
    y = torch.rand(2, 4, 3, requires_grad=True)
    l1, l2 = torch.tensor([3, 5]), torch.tensor([4, 2])
    out = knn_points(x, y, l1, l2, K=3)
    out.dists.sum().backward()
    assert torch.all(x.grad[0, 3:] == 0)
    assert torch.all(y.grad[1, 2:] == 0)


@pytest.mark.parametrize("ragged", [False, True])
def test_knn_return_nn_and_gather(ragged):
    N, P1, P2, K, D = 3, 7, 6, 8, 3
    x, y = torch.rand(N, P1, D), torch.rand(N, P2, D)
    l1 = torch.tensor([7, 3, 5]) if ragged else None
    l2 = torch.tensor([6, 2, 5]) if ragged else None
    out = knn_points(x, y, l1, l2, K=K, return_nn=True)
    assert out.knn.shape == (N, P1, K, D)
    torch.testing.assert_close(out.knn, naive_gather(y, out.idx, l2))
    torch.testing.assert_close(out.knn, knn_gather(y, out.idx, l2))
    lim = _full(l2, N, P2)
    for n in range(N):
        assert torch.all(out.knn[n, :, int(lim[n]):] == 0)


def test_knn_gather_semantics_and_gradient():
    N, M, L, K, U = 3, 6, 4, 5, 2
    x = torch.rand(N, M, U, requires_grad=True)
    idx = torch.randint(0, M, (N, L, K))
    lengths = torch.tensor([6, 2, 0])
    out = knn_gather(x, idx, lengths)
    assert out.shape == (N, L, K, U)
    torch.testing.assert_close(out, naive_gather(x.detach(), idx, lengths))
    assert torch.all(out[1, :, 2:] == 0) and torch.all(out[2] == 0)
    out.sum().backward()
    want = torch.zeros(N, M, U)
    for n, l, k in itertools.product(range(N), range(L), range(K)):
        if k < lengths[n]:
            want[n, idx[n, l, k]] += 1
    torch.testing.assert_close(x.grad, want)
    # lengths=None: every slot kept; -1 entries (fastvision's native padding) gather zeros.
    idx[0, 0, 0] = -1
    out = knn_gather(x.detach(), idx)
    torch.testing.assert_close(out, naive_gather(x.detach(), idx))
    assert torch.all(out[0, 0, 0] == 0)


def test_knn_return_sorted_false_and_version_are_accepted():
    x, y = torch.rand(2, 6, 3), torch.rand(2, 9, 3)
    ref = knn_points(x, y, K=4)
    for version in (-1, 0, 1, 2, 3):
        out = knn_points(x, y, K=4, version=version, return_sorted=False)
        assert torch.equal(out.idx, ref.idx) and torch.equal(out.dists, ref.dists)
    assert torch.all(ref.dists[..., 1:] >= ref.dists[..., :-1])


def test_knn_float64_gradcheck():
    x = torch.rand(2, 5, 3, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 6, 3, dtype=torch.float64, requires_grad=True)
    l1, l2 = torch.tensor([5, 3]), torch.tensor([6, 2])
    for norm in (1, 2):
        torch.autograd.gradcheck(
            lambda a, b, n=norm: knn_points(a, b, l1, l2, norm=n, K=3).dists, (x, y)
        )


def test_knn_errors():
    x, y = torch.rand(2, 5, 3), torch.rand(2, 4, 3)
    with pytest.raises(ValueError, match="pts1 and pts2 must have the same batch dimension."):
        knn_points(x, torch.rand(3, 4, 3))
    with pytest.raises(ValueError, match="pts1 and pts2 must have the same point dimension."):
        knn_points(x, torch.rand(2, 4, 2))
    for norm in (0, 3):
        with pytest.raises(ValueError, match="Support for 1 or 2 norm."):
            knn_points(x, y, K=2, norm=norm)
    with pytest.raises(ValueError, match="x and idx must have same batch dimension."):
        knn_gather(y, torch.zeros(3, 5, 2, dtype=torch.int64))


# ---------------------------------------------------------------------------------------------
# chamfer_distance

REDUCTIONS = [
    ("mean", "mean"), ("mean", "sum"), ("mean", None),
    ("sum", "mean"), ("sum", "sum"), ("sum", None),
    ("max", "mean"), ("max", "sum"), ("max", None),
    (None, None),
]


def _assert_same(got, want, atol=1e-6):
    if want is None:
        assert got is None
        return
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for a, b in zip(got, want):
            _assert_same(a, b, atol)
        return
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=atol, rtol=1e-5)


@pytest.mark.parametrize("point_reduction,batch_reduction", REDUCTIONS)
def test_chamfer_vs_oracle_every_option(point_reduction, batch_reduction):
    N, P1, P2 = 4, 7, 9
    x, y = torch.rand(N, P1, 3), torch.rand(N, P2, 3)
    xn, yn = torch.randn(N, P1, 3), torch.randn(N, P2, 3)
    w = torch.rand(N)
    normal_opts = [False] if point_reduction == "max" else [False, True]
    for norm, ragged, use_n, use_w, single, abs_cos in itertools.product(
        [1, 2], [False, True], normal_opts, [False, True], [False, True], [True, False]
    ):
        if abs_cos is False and not use_n:
            continue
        xl = torch.tensor([7, 1, 4, 6]) if ragged else None
        yl = torch.tensor([9, 3, 9, 2]) if ragged else None
        leaves1 = [_leaf(x), _leaf(y), _leaf(xn), _leaf(yn)]
        leaves2 = [_leaf(x), _leaf(y), _leaf(xn), _leaf(yn)]
        kw = dict(weights=w if use_w else None, batch_reduction=batch_reduction,
                  point_reduction=point_reduction, norm=norm, single_directional=single,
                  abs_cosine=abs_cos)
        a, b, an, bn = leaves1
        got = chamfer_distance(a, b, xl, yl, an if use_n else None, bn if use_n else None, **kw)
        a, b, an, bn = leaves2
        want = naive_chamfer(a, b, _full(xl, N, P1), _full(yl, N, P2),
                             an if use_n else None, bn if use_n else None, **kw)
        assert isinstance(got, tuple) and len(got) == 2
        _assert_same(got[0], want[0])
        _assert_same(got[1], want[1])
        if not use_n:
            assert got[1] is None
        g_got = _grads(got, leaves1 if use_n else leaves1[:2])
        g_want = _grads(want, leaves2 if use_n else leaves2[:2])
        for gg, gw in zip(g_got, g_want):
            torch.testing.assert_close(gg, gw, atol=1e-5, rtol=1e-4)


def test_chamfer_pointclouds_like_heterogeneous():
    lens1, lens2 = [5, 1, 8], [3, 7, 6]
    p1 = [torch.rand(n, 3, requires_grad=True) for n in lens1]
    p2 = [torch.rand(n, 3, requires_grad=True) for n in lens2]
    n1 = [torch.randn(n, 3, requires_grad=True) for n in lens1]
    n2 = [torch.randn(n, 3, requires_grad=True) for n in lens2]
    c1, c2 = FakePointclouds(p1, n1), FakePointclouds(p2, n2)
    X, Y = _leaf(c1.points_padded()), _leaf(c2.points_padded())
    XN, YN = _leaf(c1.normals_padded()), _leaf(c2.normals_padded())
    xl, yl = torch.tensor(lens1), torch.tensor(lens2)
    for pr, br in [("mean", "mean"), ("sum", None), (None, None)]:
        # The objects' lengths and normals override the explicit arguments.
        got = chamfer_distance(c1, c2, x_lengths=torch.tensor([0, 0, 0]), x_normals=None,
                               point_reduction=pr, batch_reduction=br)
        want = chamfer_distance(X, Y, xl, yl, XN, YN, point_reduction=pr, batch_reduction=br)
        _assert_same(got[0], want[0])
        _assert_same(got[1], want[1])
        oracle = naive_chamfer(X, Y, xl, yl, XN, YN, point_reduction=pr, batch_reduction=br)
        _assert_same(want[0], oracle[0])
        _assert_same(want[1], oracle[1])
    # Gradients reach the list entries and equal those of the padded tensors (0 in padding).
    got = chamfer_distance(c1, c2)
    want = chamfer_distance(X, Y, xl, yl, XN, YN)
    g_list = _grads(got, p1 + p2 + n1 + n2)
    g_pad = _grads(want, [X, Y, XN, YN])
    flat_pad = [g[i, :n] for g, lens in zip(g_pad, [lens1, lens2, lens1, lens2])
                for i, n in enumerate(lens)]
    for a, b in zip(g_list, flat_pad):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert g_pad[0][1, 1:].abs().sum() == 0 and g_pad[3][0, 3:].abs().sum() == 0
    # Pointclouds without normals: loss_normals is None.
    assert chamfer_distance(FakePointclouds(p1), FakePointclouds(p2))[1] is None


def test_chamfer_empty_clouds_and_empty_batch():
    x = FakePointclouds([torch.zeros(0, 3), torch.zeros(10, 3)])
    y = FakePointclouds([torch.ones(40, 3), torch.ones(40, 3)])
    loss, ln = chamfer_distance(x, y, batch_reduction=None)
    torch.testing.assert_close(loss, torch.tensor([0.0, 6.0]))
    assert ln is None
    loss, _ = chamfer_distance(FakePointclouds([]), FakePointclouds([]))
    torch.testing.assert_close(loss, torch.tensor(0.0))
    # A point whose other cloud is empty: distance 0, normal term 1 (zero neighbour normal).
    xs, ys = torch.rand(1, 4, 3), torch.rand(1, 5, 3)
    loss, ln = chamfer_distance(xs, ys, y_lengths=torch.tensor([0]), x_normals=torch.randn(1, 4, 3),
                                y_normals=torch.randn(1, 5, 3), point_reduction=None,
                                batch_reduction=None)
    assert torch.all(loss[0] == 0) and torch.all(loss[1] == 0)
    torch.testing.assert_close(ln[0], torch.ones(1, 4))
    assert torch.all(ln[1] == 0)


def test_chamfer_zero_weights():
    N = 5
    x = torch.rand(N, 6, 3, requires_grad=True)
    y = torch.rand(N, 8, 3, requires_grad=True)
    w = torch.zeros(N)
    loss, ln = chamfer_distance(x, y, weights=w, batch_reduction="mean")
    assert loss.shape == () and loss.item() == 0 and loss.requires_grad
    assert ln is not None and ln.item() == 0 and ln.requires_grad
    loss, ln = chamfer_distance(x, y, weights=w, batch_reduction=None)
    assert loss.shape == (N, N) and torch.all(loss == 0) and loss.requires_grad
    assert ln.shape == (N, N) and ln.requires_grad
    loss, ln = chamfer_distance(x, y, weights=w, batch_reduction=None, point_reduction="max")
    assert loss.shape == (N, N) and ln is None


def test_chamfer_errors():
    x, y = torch.rand(3, 5, 3), torch.rand(3, 6, 3)
    cases = [
        (dict(batch_reduction="max"), 'batch_reduction must be one of \\["mean", "sum"\\] or None'),
        (dict(point_reduction="min"),
         'point_reduction must be one of \\["mean", "sum", "max"\\] or None'),
        (dict(point_reduction=None), "Batch reduction must be None if point_reduction is None"),
        (dict(norm=0), "Support for 1 or 2 norm."),
        (dict(norm=3), "Support for 1 or 2 norm."),
        (dict(point_reduction="max", x_normals=torch.rand(3, 5, 3)),
         'Normals must be None if point_reduction is "max"'),
        (dict(x_normals=torch.rand(1, 3, 5, 3)), "Expected normals to be of shape \\(N, P, 3"),
        (dict(x_lengths=torch.tensor([1, 2])), "Expected lengths to be of shape \\(N,\\)"),
        (dict(x_lengths=torch.tensor([1, 2, 6])), "A length value was too long"),
        (dict(weights=torch.ones(2)), "weights must be of shape \\(N,\\)."),
        (dict(weights=-torch.ones(3)), "weights cannot be negative."),
    ]
    for kwargs, msg in cases:
        with pytest.raises(ValueError, match=msg):
            chamfer_distance(x, y, **kwargs)
    with pytest.raises(ValueError, match="Expected points to be of shape"):
        chamfer_distance(x[None], y)
    with pytest.raises(ValueError, match="y does not have the correct shape."):
        chamfer_distance(x, torch.rand(2, 6, 3))
    with pytest.raises(ValueError, match="Pointclouds objects or torch.Tensor"):
        chamfer_distance([1, 1, 1], [1, 1, 1])


def test_chamfer_float64_gradcheck_with_normals():
    x = torch.rand(2, 4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 5, 3, dtype=torch.float64, requires_grad=True)
    xn = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    yn = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    xl, yl = torch.tensor([4, 2]), torch.tensor([3, 5])

    w = torch.tensor([0.3, 1.2], dtype=torch.float64)

    def f(a, b, an, bn):
        return chamfer_distance(a, b, xl, yl, an, bn, weights=w, abs_cosine=False)

    torch.autograd.gradcheck(f, (x, y, xn, yn))


# ---------------------------------------------------------------------------------------------
# sample_farthest_points


def test_fps_hand_example():
    # 1-D points on a line: start 0 -> farthest 10 (idx 2) -> 4 and 6 tie at squared distance 16:
    # the lower index (3) wins.
    pts = torch.tensor([[0.0], [1.0], [10.0], [4.0], [6.0]])[None]
    sel, idx = sample_farthest_points(pts, K=3)
    assert idx.tolist() == [[0, 2, 3]]
    torch.testing.assert_close(sel, torch.tensor([[[0.0], [10.0], [4.0]]]))
    _, idx = sample_farthest_points(pts, K=[5])
    assert idx.tolist() == [[0, 2, 3, 4, 1]]


@pytest.mark.parametrize("K_kind", ["int", "list", "tensor"])
def test_fps_vs_oracle_lengths_and_per_cloud_K(K_kind):
    N, P, D = 4, 20, 5
    points = torch.randn(N, P, D, requires_grad=True)
    lengths = torch.tensor([20, 7, 13, 1])
    Ks = [8, 9, 3, 4] if K_kind != "int" else [8] * N  # 9 > 7 and 4 > 1: padded with -1
    K = 8 if K_kind == "int" else (Ks if K_kind == "list" else torch.tensor(Ks))
    sel, idx = sample_farthest_points(points, lengths, K=K)
    want = naive_fps(points.detach(), lengths, Ks, [0] * N)
    assert idx.dtype == torch.int64 and torch.equal(idx, want)
    assert sel.shape == (N, max(Ks), D) and sel.dtype == torch.float32
    for n in range(N):
        valid = idx[n] >= 0
        assert valid.sum() == min(Ks[n], int(lengths[n]))
        torch.testing.assert_close(sel[n, valid], points[n, idx[n, valid]])
        assert torch.all(sel[n, ~valid] == 0)
        assert len(set(idx[n, valid].tolist())) == int(valid.sum())  # no duplicates
    # Gradient: each sampled point receives its output gradient; the padding none.
    g = torch.rand(sel.shape)
    (sel * g).sum().backward()
    want_g = torch.zeros(N, P, D)
    for n in range(N):
        for k in range(idx.shape[1]):
            if idx[n, k] >= 0:
                want_g[n, idx[n, k]] += g[n, k]
    torch.testing.assert_close(points.grad, want_g)


def test_fps_float32_conventions_and_gradcheck():
    pts = torch.randn(2, 10, 3, dtype=torch.float64)
    sel, idx = sample_farthest_points(pts, K=4)
    assert sel.dtype == torch.float32  # PyTorch3D samples and returns float32
    torch.testing.assert_close(idx, sample_farthest_points(pts.float(), K=4)[1])
    points = torch.randn(2, 10, 3, requires_grad=True)
    lengths = torch.tensor([9, 4])
    torch.autograd.gradcheck(
        lambda p: sample_farthest_points(p, lengths, 2)[0], (points,), eps=2e-3, atol=1e-3
    )


def test_fps_random_start():
    N, P, D, K = 6, 40, 5, 8
    points = torch.randn(N, P, D)
    torch.manual_seed(7)
    _, idx = sample_farthest_points(points, K=K, random_start_point=True)
    torch.manual_seed(7)
    starts = torch.randint(high=P, size=(N,))  # PyTorch3D's draw for equal lengths
    assert torch.equal(idx[:, 0], starts)
    assert idx[:, 0].sum() > 0 and not torch.all(idx[:, 0] == idx[0, 0])
    assert torch.equal(idx, naive_fps(points, torch.full((N,), P), [K] * N, starts.tolist()))
    # With lengths: start = int(lengths * U[0, 1)), always a valid index of its cloud.
    lengths = torch.tensor([40, 3, 1, 17, 2, 9])
    torch.manual_seed(8)
    _, idx = sample_farthest_points(points, lengths, K=K, random_start_point=True)
    torch.manual_seed(8)
    starts = (lengths * torch.rand(N)).long()
    assert torch.equal(idx[:, 0], starts)
    assert torch.all(idx[:, 0] < lengths)
    assert torch.equal(idx, naive_fps(points, lengths, [K] * N, starts.tolist()))


def test_fps_empty_cloud_and_zero_K():
    points = torch.rand(3, 6, 3)
    sel, idx = sample_farthest_points(points, torch.tensor([0, 6, 4]), K=[3, 0, 2])
    assert idx.tolist()[0] == [-1, -1, -1] and idx.tolist()[1] == [-1, -1, -1]
    assert idx.tolist()[2][2] == -1 and torch.all(sel[:2] == 0)
    sel, idx = sample_farthest_points(points, K=0)
    assert sel.shape == (3, 0, 3) and idx.shape == (3, 0)
    sel, idx = sample_farthest_points(points, K=9)  # K > P
    assert idx.shape == (3, 9) and torch.all(idx[:, 6:] == -1) and torch.all(idx[:, :6] >= 0)


def test_fps_errors():
    points = torch.randn(5, 40, 5)
    wrong = torch.randint(1, 8, (8,))
    with pytest.raises(ValueError, match="K and points must have the same batch dimension"):
        sample_farthest_points(points, K=wrong)
    with pytest.raises(ValueError, match="K and points must have the same batch dimension"):
        sample_farthest_points(points, K=[1, 2])
    with pytest.raises(ValueError, match="points and lengths must have same batch dimension."):
        sample_farthest_points(points, lengths=wrong, K=8)
    with pytest.raises(ValueError, match="A value in lengths was too large."):
        sample_farthest_points(points, lengths=torch.tensor([1, 2, 3, 4, 41]), K=8)


# ---------------------------------------------------------------------------------------------
# CUDA vs CPU


def _to_cpu(t):
    if isinstance(t, tuple):
        return tuple(_to_cpu(u) for u in t)
    return None if t is None else t.cpu()


@pytest.mark.cuda
def test_cuda_matches_cpu():
    N, P1, P2, D = 3, 300, 257, 3
    x, y = torch.rand(N, P1, D), torch.rand(N, P2, D)
    l1, l2 = torch.tensor([300, 17, 150]), torch.tensor([257, 3, 0])
    xn, yn = torch.randn(N, P1, D), torch.randn(N, P2, D)
    cpu = knn_points(x, y, l1, l2, K=5, return_nn=True)
    gpu = knn_points(x.cuda(), y.cuda(), l1.cuda(), l2.cuda(), K=5, return_nn=True)
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a)
    for pr, br in REDUCTIONS:
        use_n = pr != "max"
        kw = dict(point_reduction=pr, batch_reduction=br, weights=torch.rand(N))
        leaves_c = [_leaf(x), _leaf(y), _leaf(xn), _leaf(yn)]
        leaves_g = [_leaf(t.cuda()) for t in (x, y, xn, yn)]
        a, b, an, bn = leaves_c
        out_c = chamfer_distance(a, b, l1, l2, an if use_n else None, bn if use_n else None, **kw)
        a, b, an, bn = leaves_g
        kw["weights"] = kw["weights"].cuda()
        out_g = chamfer_distance(a, b, l1.cuda(), l2.cuda(), an if use_n else None,
                                 bn if use_n else None, **kw)
        _assert_same(_to_cpu(out_g[0]), out_c[0], atol=1e-5)
        _assert_same(_to_cpu(out_g[1]), out_c[1], atol=1e-5)
        gc = _grads(out_c, leaves_c if use_n else leaves_c[:2])
        gg = _grads(out_g, leaves_g if use_n else leaves_g[:2])
        for u, v in zip(gc, gg):
            torch.testing.assert_close(v.cpu(), u, atol=1e-5, rtol=1e-4)
    pts = torch.randn(N, 500, D)
    lengths = torch.tensor([500, 40, 1])
    for K in (64, [64, 50, 3]):
        sc, ic = sample_farthest_points(pts, lengths, K=K)
        sg, ig = sample_farthest_points(pts.cuda(), lengths.cuda(), K=K)
        assert torch.equal(ig.cpu(), ic)
        torch.testing.assert_close(sg.cpu(), sc)
    _, ig = sample_farthest_points(pts.cuda(), lengths.cuda(), K=8, random_start_point=True)
    assert torch.all(ig[:, 0].cpu() < lengths)
