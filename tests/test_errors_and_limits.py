"""Issue 15: every crash and silent wrong result of the adversarial run, now a clear error or the
right answer. One test per reproducer (or per family of them); the messages must name the op and
the argument."""

import math

import pytest
import torch

from fastvision.compat import pytorch3d as p3d
from fastvision.models import get_model
from fastvision.ops import (
    chamfer_distance,
    farthest_point_sample,
    knn_gather,
    knn_points,
    nn_distance,
    nn_match,
    patch_conv2d,
    soft_project,
)
from fastvision.ops import _reference as ref
from fastvision.ops.padnet import fold_padnet_encoder

RAW = torch.ops.fastvision


def float32_bound(D: int) -> float:
    """The documented overflow bound, recomputed: sqrt(FLT_MAX / D) / 4, 3 significant digits."""
    exact = math.sqrt(torch.finfo(torch.float32).max / D) / 4
    unit = 10.0 ** (math.floor(math.log10(exact)) - 2)
    return math.floor(exact / unit) * unit


# ---------------------------------------------------------------------------------------------
# The overflow contract of the point ops.


def _cloud_at_bound(D=3, P=300, B=2, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    pts = (torch.rand(B, P, D, generator=g) * 2 - 1) * float32_bound(D) * scale
    pts[:, 0, 0] = float32_bound(D) * scale  # one coordinate exactly at the bound
    return pts


def test_bound_value_matches_the_documented_number():
    assert float32_bound(3) == pytest.approx(2.66e18)


@pytest.mark.parametrize("D", [1, 3, 5])
def test_knn_paths_agree_at_the_coordinate_bound(D):
    p1, p2 = _cloud_at_bound(D, seed=1), _cloud_at_bound(D, seed=2)
    brute = knn_points(p1, p2, 4, method="brute_force")
    tree = knn_points(p1, p2, 4, method="kdtree")
    assert torch.isfinite(brute.dists).all() and (brute.idx >= 0).all()
    assert torch.equal(brute.idx, tree.idx) and torch.equal(brute.dists, tree.dists)
    oracle = ref.knn_points(p1.double(), p2.double(), 4)
    assert torch.equal(brute.idx, oracle[1])
    compat = p3d.knn_points(p1, p2, K=4)
    assert torch.equal(compat.idx, brute.idx)


def test_fps_and_nn_distance_agree_at_the_coordinate_bound():
    pts = _cloud_at_bound(3, P=2500, B=1)
    scan = farthest_point_sample(pts, 300, method="scan")
    buckets = farthest_point_sample(pts, 300, method="buckets")
    assert torch.equal(scan, buckets)
    assert len(set(scan[0].tolist())) == 300  # not the 0, 1, 2, ... of overflowed distances
    a, b = _cloud_at_bound(3, P=300, seed=3), _cloud_at_bound(3, P=300, seed=4)
    one_pass = nn_distance(a, b, method="brute_force")
    tree = nn_distance(a, b, method="kdtree")
    for u, v in zip(one_pass, tree):
        assert torch.equal(u, v)
    assert (one_pass.i12 >= 0).all() and torch.isfinite(one_pass.d12).all()


def _beyond_bound():
    pts = torch.rand(1, 6, 3)
    pts[0, 4, 1] = 2e19  # the range (1e19-3e19): finite, but (a - b)^2 overflows float32
    return pts


@pytest.mark.parametrize(
    "call",
    [
        lambda p: knn_points(p, torch.rand(1, 6, 3), 2),
        lambda p: knn_points(p, torch.rand(1, 600, 3), 2, method="kdtree"),
        lambda p: nn_distance(p, torch.rand(1, 6, 3)),
        lambda p: chamfer_distance(p, torch.rand(1, 6, 3)),
        lambda p: RAW.knn_points(p, torch.rand(1, 6, 3), None, None, 2, 2, True, -1),
        lambda p: RAW.nn_distance(p, torch.rand(1, 6, 3), None, None, 2, -1),
        lambda p: p3d.knn_points(p, torch.rand(1, 6, 3), K=2),
        lambda p: p3d.chamfer_distance(p, torch.rand(1, 6, 3)),
    ],
)
def test_coordinates_beyond_the_bound_raise_naming_the_entry(call):
    with pytest.raises(ValueError, match=r"p1\[0, 4, 1\] = 2e\+19 is too large: coordinates must lie within \+-2.66e\+18"):
        call(_beyond_bound())


@pytest.mark.parametrize("method", ["scan", "buckets"])
def test_fps_beyond_the_bound_raises(method):
    with pytest.raises(ValueError, match=r"farthest_point_sample: points\[0, 4, 1\] = 2e\+19 is too large"):
        farthest_point_sample(_beyond_bound(), 3, method=method)
    with pytest.raises(ValueError, match=r"farthest_point_sample: points\[0, 4, 1\]"):
        p3d.sample_farthest_points(_beyond_bound(), K=3)


def test_soft_project_beyond_the_bound_raises():
    with pytest.raises(ValueError, match=r"soft_project: points\[0, 4, 1\] = 2e\+19 is too large"):
        soft_project(torch.rand(1, 3, 3), _beyond_bound(), 1.0, 2)


def test_float64_clouds_have_the_float64_bound():
    pts = torch.rand(1, 6, 3, dtype=torch.float64) * 1e100  # far beyond float32, fine in float64
    assert torch.equal(knn_points(pts, pts, 1).idx[..., 0], torch.arange(6).unsqueeze(0))
    pts[0, 2, 2] = 1e160
    with pytest.raises(ValueError, match=r"float64 arithmetic, D = 3"):
        knn_points(pts, pts, 1)


def test_half_inputs_reject_infinity():
    pts = torch.rand(1, 4, 3).half()
    pts[0, 1, 0] = float("inf")
    with pytest.raises(ValueError, match=r"p2 contains NaN or infinite values \(p2\[0, 1, 0\] = inf\)"):
        knn_points(torch.rand(1, 2, 3).half(), pts, 1)


def test_nan_points_raise_in_the_raw_ops_and_the_compat_layer():
    pts = torch.arange(18, dtype=torch.float32).reshape(1, 6, 3)
    pts[0, 0, 0] = float("nan")
    seeds = torch.zeros(1, 1, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"farthest_point_sample: points contains NaN"):
        RAW.farthest_point_sample(pts, None, 3, seeds, -1)
    with pytest.raises(ValueError, match=r"farthest_point_sample: points contains NaN"):
        p3d.sample_farthest_points(pts, K=3)
    with pytest.raises(ValueError, match=r"nn_distance: p1 contains NaN"):
        p3d.chamfer_distance(pts, torch.rand(1, 3, 3))


# ---------------------------------------------------------------------------------------------
# Devices: a meta tensor among CPU ones dispatches to the fake kernels, which must refuse it.


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: knn_points(torch.rand(2, 4, 3), torch.rand(2, 5, 3), 2, lengths2=torch.tensor([3, 5], device=m)),
         "knn_points: lengths2 must be on the device of p1"),
        (lambda m: RAW.knn_points(torch.rand(2, 4, 3), torch.rand(2, 5, 3, device=m), None, None, 2, 2, True, -1),
         "knn_points: p2 must be on the device of p1"),
        (lambda m: RAW.nn_distance(torch.rand(2, 4, 3), torch.rand(2, 5, 3, device=m), None, None, 2, -1),
         "nn_distance: p2 must be on the device of p1"),
        (lambda m: RAW.farthest_point_sample(torch.rand(2, 4, 3), None, 2, torch.zeros(2, 1, dtype=torch.int64, device=m), -1),
         "farthest_point_sample: start_idx must be on the device of points"),
        (lambda m: soft_project(torch.rand(2, 4, 3), torch.rand(2, 5, 3, device=m), 1.0, 2),
         "soft_project: points must be on the device of query"),
        (lambda m: soft_project(torch.rand(2, 4, 3), torch.rand(2, 5, 3), torch.tensor(1.0, device=m), 2),
         "soft_project: temperature must be on the device of query"),
        (lambda m: RAW.patch_conv2d(torch.randn(1, 2, 8, 8), torch.randn(1, 18, 2, 2, device=m), None,
                                    [3, 3], [1, 1], [1, 1], [1, 1], 1, 0),
         "patch_conv2d: weight must be on the device of x"),
        (lambda m: RAW.patch_conv2d(torch.randn(1, 2, 8, 8), torch.randn(1, 18, 2, 2), torch.zeros(1, device=m),
                                    [3, 3], [1, 1], [1, 1], [1, 1], 1, 0),
         "patch_conv2d: bias must be on the device of x"),
    ],
)
def test_meta_tensors_mixed_with_cpu_tensors_raise(call, message):
    with pytest.raises(RuntimeError, match=message):
        call("meta")


def test_padnet_encoder_meta_params_raise():
    folded = fold_padnet_encoder(get_model("padnet").eval().encoder)
    with pytest.raises(RuntimeError, match="padnet_encoder: params must be on the device of x"):
        RAW.padnet_encoder(torch.rand(1, 1, 8, 8), folded.params.to("meta"), 1)


# ---------------------------------------------------------------------------------------------
# patch_conv2d shape arithmetic.


@pytest.mark.parametrize("which", ["stride", "padding", "dilation"])
def test_patch_conv2d_huge_geometry_raises_instead_of_overflowing(which):
    args = {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1]}
    args[which] = [2**62, 1]
    with pytest.raises(ValueError, match=rf"patch_conv2d: {which} must be at most 1048576 \(2\^20\), got \[4611686018427387904, 1\]"):
        RAW.patch_conv2d(torch.randn(1, 2, 8, 8), torch.randn(1, 54, 2, 2), None, [3, 3],
                         args["stride"], args["padding"], args["dilation"], 1, 0)


def test_patch_conv2d_dilated_span_limit_and_zero_channels():
    with pytest.raises(ValueError, match=r"patch_conv2d: the dilated kernel .* must be at most 1048576"):
        RAW.patch_conv2d(torch.randn(1, 1, 8, 8), torch.randn(1, 9, 1, 1), None, [3, 3], [1, 1],
                         [0, 0], [2**20, 1], 1, 0)
    with pytest.raises(ValueError, match=r"patch_conv2d: x must have at least one channel, got shape \[1, 0, 8, 8\]"):
        patch_conv2d(torch.randn(1, 0, 8, 8), torch.randn(1, 6, 2, 2), 3)


# ---------------------------------------------------------------------------------------------
# Double backward raises (once_differentiable semantics) instead of None or zeros.


def _second_derivative(make_output, leaf):
    first, = torch.autograd.grad(make_output().sum(), leaf, create_graph=True)
    return torch.autograd.grad((first * first).sum(), leaf)


def test_double_backward_raises_for_every_op_with_a_backward():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 2 * 2 * 9, 2, 2, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="patch_conv2d: double backward .* is not supported"):
        _second_derivative(lambda: patch_conv2d(x, w, 3), x)
    a = torch.rand(1, 4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.rand(1, 5, 3, dtype=torch.float64)
    for make in (lambda: knn_points(a, b, 2).dists, lambda: nn_distance(a, b).d12,
                 lambda: chamfer_distance(a, b)):
        with pytest.raises(RuntimeError, match="knn_points / nn_distance / chamfer_distance: double backward"):
            _second_derivative(make, a)
    with pytest.raises(RuntimeError, match="soft_project: double backward"):
        _second_derivative(lambda: soft_project(a, b, 0.5, 2), a)


def test_first_derivatives_with_create_graph_still_work():
    a = torch.rand(1, 4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.rand(1, 5, 3, dtype=torch.float64)
    first, = torch.autograd.grad(knn_points(a, b, 1).dists.sum(), a, create_graph=True)
    oracle = 2 * (a - b[0, knn_points(a, b, 1).idx[0, :, 0]].unsqueeze(0))
    assert torch.allclose(first, oracle)


def test_raw_padnet_encoder_backward_raises():
    folded = fold_padnet_encoder(get_model("padnet").eval().encoder)
    x = torch.rand(1, 1, 16, 16, requires_grad=True)
    taps = RAW.padnet_encoder(x, folded.params, folded.width)
    with pytest.raises(RuntimeError, match="padnet_encoder: inference only"):
        taps[0].sum().backward()


# ---------------------------------------------------------------------------------------------
# knn_gather, chamfer, FPS, nn_match edge cases.


def test_knn_gather_padding_is_zero_whatever_x_holds():
    x = torch.tensor([[[float("nan"), float("inf")], [1.0, 2.0]]])
    out = knn_gather(x, torch.tensor([[[-1, 1, 0]]]))
    assert torch.equal(out[0, 0, :2], torch.tensor([[0.0, 0.0], [1.0, 2.0]]))
    assert torch.isnan(out[0, 0, 2, 0]) and out[0, 0, 2, 1] == float("inf")  # a real neighbour


def test_knn_gather_empty_cloud_with_padding():
    x = torch.rand(2, 0, 3, requires_grad=True)
    out = knn_gather(x, torch.full((2, 4, 2), -1))
    assert out.shape == (2, 4, 2, 3) and (out == 0).all()
    out.sum().backward()
    assert x.grad.shape == x.shape


def test_knn_gather_rejects_bad_indices_and_non_tensors():
    with pytest.raises(RuntimeError, match=r"knn_gather: idx entries must be -1 or lie in \[0, 3\)"):
        knn_gather(torch.rand(1, 3, 2), torch.tensor([[[-3]]]))
    with pytest.raises(TypeError, match="knn_gather: x must be a tensor"):
        knn_gather([[1.0]], torch.zeros(1, 1, 1, dtype=torch.int64))
    with pytest.raises(RuntimeError, match=r"knn_gather: idx entries must be -1 \(padding\) or lie in \[0, 3\)"):
        p3d.knn_gather(torch.rand(1, 3, 2), torch.tensor([[[-3]]]))
    with pytest.raises(ValueError, match=r"knn_gather: x must be a tensor of shape \(N, M, U\), got \(3, 2\)"):
        p3d.knn_gather(torch.rand(3, 2), torch.zeros(1, 1, 1, dtype=torch.int64))


def test_chamfer_of_an_empty_batch_is_zero():
    for reduction in ("mean", "sum"):
        assert chamfer_distance(torch.rand(0, 3, 3), torch.rand(0, 4, 3), reduction=reduction).item() == 0.0
    assert chamfer_distance(torch.rand(0, 3, 3), torch.rand(0, 4, 3), reduction="none").shape == (0,)
    assert p3d.chamfer_distance(torch.rand(0, 3, 3), torch.rand(0, 4, 3))[0].item() == 0.0


def test_compat_rejects_fractional_lengths_and_k():
    pts = torch.rand(2, 5, 3)
    with pytest.raises(ValueError, match="sample_farthest_points: lengths must be an integer tensor"):
        p3d.sample_farthest_points(pts, lengths=torch.tensor([2.7, 3.0]), K=2)
    with pytest.raises(ValueError, match="chamfer_distance: x_lengths must be an integer tensor"):
        p3d.chamfer_distance(pts, pts, x_lengths=torch.tensor([2.7, 3.0]))
    with pytest.raises(ValueError, match="knn_points: lengths2 must be an integer tensor"):
        p3d.knn_points(pts, pts, lengths2=torch.tensor([2.7, 3.0]))
    with pytest.raises(TypeError, match="knn_points: K must be an int, got float 2.5"):
        p3d.knn_points(pts, pts, K=2.5)
    with pytest.raises(TypeError, match="sample_farthest_points: K must be an int, got float 1.5"):
        p3d.sample_farthest_points(pts, K=1.5)
    with pytest.raises(ValueError, match=r"sample_farthest_points: points must be a tensor of shape \(N, P, D\)"):
        p3d.sample_farthest_points(torch.rand(3, 2), K=1)
    # Integer lengths of any dtype still work.
    idx = p3d.sample_farthest_points(pts, lengths=torch.tensor([2, 3], dtype=torch.int32), K=2)[1]
    assert idx.shape == (2, 2)


def test_lengths_given_as_a_list_raise_a_type_error():
    with pytest.raises(TypeError, match=r"knn_points: lengths2 must be a 1-D int64 tensor of cloud lengths, got list \[3, 5\]"):
        knn_points(torch.rand(2, 4, 3), torch.rand(2, 5, 3), 2, lengths2=[3, 5])
    with pytest.raises(TypeError, match="nn_distance: lengths1 must be a 1-D int64 tensor"):
        nn_distance(torch.rand(2, 4, 3), torch.rand(2, 5, 3), lengths1=[3, 5])


def test_fps_of_empty_clouds_needs_no_start():
    assert farthest_point_sample(torch.rand(2, 0, 3), 0).shape == (2, 0)
    with pytest.raises(ValueError, match=r"farthest_point_sample: K = 1 is larger than the clouds \(P = 0\)"):
        farthest_point_sample(torch.rand(2, 0, 3), 1)


def test_nn_match_with_an_empty_cloud_raises_clearly():
    with pytest.raises(RuntimeError, match="nn_match: every entry of lengths must be at least 1"):
        nn_match(torch.rand(2, 3, 3), torch.rand(2, 5, 3), 2, lengths=torch.tensor([0, 5]))


def test_patch_inverted_residual_supports_double_backward():
    """Its backward recomputes with the reference, so the second derivative is the reference's
    (it used to fail with "element 0 of tensors does not require grad")."""
    from fastvision.ops import patch_inverted_residual

    g = torch.Generator().manual_seed(3)
    C, hidden, k = 2, 4, 3
    x = torch.randn(1, C, 6, 6, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(1, C * hidden + hidden * k * k + hidden * C, 2, 2, dtype=torch.float64, generator=g,
                    requires_grad=True)
    bns = [(torch.rand(n, dtype=torch.float64, generator=g) + 0.5, torch.rand(n, dtype=torch.float64, generator=g))
           for n in (hidden, hidden, C)]

    def second(fn):
        first, = torch.autograd.grad(fn(x, w).pow(2).sum(), w, create_graph=True)
        return torch.autograd.grad(first.pow(2).sum(), x)[0]

    got = second(lambda a, b: patch_inverted_residual(a, b, hidden, *bns))
    want = second(lambda a, b: ref.patch_inverted_residual(a, b, hidden, *bns))
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9 * float(want.abs().max()))
