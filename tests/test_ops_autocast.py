"""Autocast behaviour of every op (``fastvision.ops.autocast``): the policy is registered on the
CPU and CUDA autocast keys, each op gives float32's result (``"float32"`` ops: exactly, the inputs
being cast up losslessly) or float32's within bfloat16's tolerance (``"lower"`` ops) inside
``torch.autocast``, mixed low / float32 inputs work, float64 is never touched, gradients flow.

Tolerance of the ``"lower"`` ops: the largest error over the largest magnitude of the float32
output <= 2e-2 (bfloat16 rounds each input to 2^-9 relative; the kernels accumulate in float32).
"""

from __future__ import annotations

import pytest
import torch

from fastvision.ops import (
    autocast,
    chamfer_distance,
    farthest_point_sample,
    fold_batch_norm,
    knn_points,
    nn_distance,
    nn_match,
    padnet_encoder,
    patch_conv2d,
    patch_inverted_residual,
    soft_project,
)
from fastvision.ops.autocast import AUTOCAST_POLICY
from fastvision.ops.padnet import padnet_param_count

LOWER_TOL = 2e-2


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).abs().max() / want.double().abs().max().clamp_min(1e-30)).item()


def cpu_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_every_op_has_a_policy():
    schemas = {name.split("::", 1)[1] for name in torch._C._dispatch_get_all_op_names()
               if name.startswith("fastvision::")}
    assert schemas == set(AUTOCAST_POLICY)
    assert set(AUTOCAST_POLICY.values()) <= {"float32", "lower"}


@pytest.mark.parametrize("name", sorted(AUTOCAST_POLICY))
@pytest.mark.parametrize("key", ["AutocastCPU", "AutocastCUDA"])
def test_registered_on_both_autocast_keys(name, key):
    op = getattr(torch.ops.fastvision, name).default
    assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), key)
    assert op.has_kernel_for_dispatch_key(getattr(torch._C.DispatchKey, key))


@pytest.mark.parametrize("wrapper", [knn_points, nn_distance, chamfer_distance, farthest_point_sample,
                                     nn_match, soft_project, padnet_encoder, patch_conv2d,
                                     patch_inverted_residual])
def test_docstrings_state_the_policy(wrapper):
    assert "Autocast:" in wrapper.__doc__


def test_cast_rule():
    f32, bf16, f64 = torch.ones(2), torch.ones(2, dtype=torch.bfloat16), torch.ones(2, dtype=torch.float64)
    i64 = torch.ones(2, dtype=torch.int64)
    up = autocast.autocast_cast((f32, bf16, f64, i64, [bf16], 3), "cpu", "float32")
    assert [t.dtype for t in up[:4]] == [torch.float32, torch.float32, torch.float64, torch.int64]
    assert up[4][0].dtype == torch.float32 and up[5] == 3
    with cpu_autocast():
        down = autocast.autocast_cast((f32, bf16, f64, i64), "cpu", "lower")
    assert [t.dtype for t in down] == [torch.bfloat16, torch.bfloat16, torch.float64, torch.int64]
    # Tensors of another device type are left alone.
    assert autocast.autocast_cast(bf16, "cuda", "float32").dtype == torch.bfloat16


def test_knn_runs_in_float32():
    p1, p2 = torch.rand(2, 40, 3), torch.rand(2, 60, 3)
    want = knn_points(p1, p2, 5)
    with cpu_autocast():
        got = knn_points(p1, p2, 5)
        low = knn_points(p1.bfloat16(), p2, 5)  # mixed: a bfloat16 activation meets float32 points
    assert got.dists.dtype == torch.float32 and torch.equal(got.dists, want.dists)
    assert torch.equal(got.idx, want.idx)
    ref = knn_points(p1.bfloat16().float(), p2, 5)
    assert low.dists.dtype == torch.float32 and torch.equal(low.idx, ref.idx)
    assert torch.equal(low.dists, ref.dists)


def test_knn_backward_under_autocast():
    p1 = torch.rand(2, 20, 3, requires_grad=True)
    p2 = torch.rand(2, 30, 3, requires_grad=True)
    with cpu_autocast():
        d = knn_points(p1.bfloat16(), p2, 3).dists
        g1, g2 = torch.autograd.grad(d.sum(), (p1, p2))
    q1 = p1.detach().bfloat16().float().requires_grad_()
    r1, r2 = torch.autograd.grad(knn_points(q1, p2, 3).dists.sum(), (q1, p2))
    assert torch.allclose(g1, r1.bfloat16().float(), rtol=1e-2, atol=1e-3)
    assert torch.equal(g2, r2)


def test_float64_is_untouched():
    p1, p2 = torch.rand(1, 10, 3, dtype=torch.float64), torch.rand(1, 12, 3, dtype=torch.float64)
    with cpu_autocast():
        out = nn_distance(p1, p2)
        idx = farthest_point_sample(p2, 4)
    assert out.d12.dtype == torch.float64 and torch.equal(out.d12, nn_distance(p1, p2).d12)
    assert torch.equal(idx, farthest_point_sample(p2, 4))


def test_nn_distance_chamfer_fps_run_in_float32():
    p1, p2 = torch.rand(3, 30, 3), torch.rand(3, 25, 3)
    with cpu_autocast():
        nd = nn_distance(p1.bfloat16(), p2)
        ch = chamfer_distance(p1, p2)
        idx = farthest_point_sample(p2.bfloat16(), 8)
    ref = nn_distance(p1.bfloat16().float(), p2)
    assert nd.d12.dtype == torch.float32 and torch.equal(nd.d12, ref.d12) and torch.equal(nd.i21, ref.i21)
    assert ch.dtype == torch.float32 and torch.equal(ch, chamfer_distance(p1, p2))
    assert torch.equal(idx, farthest_point_sample(p2.bfloat16().float(), 8))


def test_nn_match_under_autocast():
    gen, pts = torch.rand(2, 16, 3), torch.rand(2, 64, 3)
    with cpu_autocast():
        got = nn_match(gen.bfloat16(), pts, 16)
    assert torch.equal(got, nn_match(gen.bfloat16().float(), pts, 16))


def test_soft_project_runs_in_float32_with_gradients():
    q = torch.rand(2, 16, 3, requires_grad=True)
    p = torch.rand(2, 64, 3, requires_grad=True)
    f = torch.rand(2, 64, 5)
    t = torch.tensor(0.3, requires_grad=True)
    with cpu_autocast():
        proj, feat = soft_project(q.bfloat16(), p, t, 4, features=f)
        grads = torch.autograd.grad((proj.sum() + feat.sum()), (q, p, t))
    q32 = q.detach().bfloat16().float().requires_grad_()
    rp, rf = soft_project(q32, p, t, 4, features=f)
    ref = torch.autograd.grad(rp.sum() + rf.sum(), (q32, p, t))
    assert proj.dtype == torch.float32 and torch.equal(proj, rp) and torch.equal(feat, rf)
    assert torch.allclose(grads[0], ref[0].bfloat16().float(), rtol=1e-2, atol=1e-3)
    for g, r in zip(grads[1:], ref[1:]):
        assert torch.equal(g, r)


@pytest.mark.parametrize("width", [1, 2])
def test_padnet_encoder_runs_in_float32(width):
    x = torch.rand(2, 1, 24, 16)
    params = torch.randn(padnet_param_count(width)) * 0.2
    want = padnet_encoder(x, params, width)
    with cpu_autocast():
        got = padnet_encoder(x.bfloat16(), params, width)
    ref = padnet_encoder(x.bfloat16().float(), params, width)
    for g, r in zip(got, ref):
        assert g.dtype == torch.float32 and torch.equal(g, r)
    with cpu_autocast():
        same = padnet_encoder(x, params, width)
    assert all(torch.equal(a, b) for a, b in zip(same, want))


@pytest.mark.parametrize("groups,stride,mode", [(1, 1, "reflect"), (2, 2, "zeros"), (4, 1, "replicate")])
def test_patch_conv2d_runs_in_bfloat16(groups, stride, mode):
    x = torch.randn(2, 4, 12, 12)
    w = torch.randn(2, 8 * (4 // groups) * 9, 3, 2)
    b = torch.randn(8)
    want = patch_conv2d(x, w, 3, stride=stride, padding_mode=mode, groups=groups, bias=b)
    with cpu_autocast():
        got = patch_conv2d(x, w, 3, stride=stride, padding_mode=mode, groups=groups, bias=b)
    assert got.dtype == torch.bfloat16
    assert rel_err(got, want) <= LOWER_TOL


def test_patch_conv2d_backward_under_autocast():
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    w = torch.randn(1, 4 * 4 * 9, 2, 2, requires_grad=True)
    with cpu_autocast():
        y = patch_conv2d(x, w, 3)
        gx, gw = torch.autograd.grad(y.float().pow(2).sum(), (x, w))
    rx, rw = torch.autograd.grad(patch_conv2d(x, w, 3).pow(2).sum(), (x, w))
    assert gx.dtype == torch.float32 and gw.dtype == torch.float32  # autograd casts to the leaves'
    assert rel_err(gx, rx) <= 5e-2 and rel_err(gw, rw) <= 5e-2


@pytest.mark.parametrize("mode,residual", [("reflect", True), ("zeros", False)])
def test_patch_inverted_residual_runs_in_bfloat16(mode, residual):
    cin, hid = 4, 8
    x = torch.randn(2, cin, 8, 8)
    w = torch.randn(2, cin * hid + hid * 9 + hid * cin, 2, 2) * 0.5
    bn = [fold_batch_norm(torch.nn.BatchNorm2d(c).eval()) for c in (hid, hid, cin)]
    want = patch_inverted_residual(x, w, hid, *bn, padding_mode=mode, residual=residual)
    with cpu_autocast():
        got = patch_inverted_residual(x, w, hid, *bn, padding_mode=mode, residual=residual)
    assert got.dtype == torch.bfloat16
    assert rel_err(got, want) <= LOWER_TOL


def test_without_autocast_nothing_changes():
    x = torch.randn(1, 4, 8, 8)
    w = torch.randn(1, 4 * 4 * 9, 2, 2)
    assert patch_conv2d(x, w, 3).dtype == torch.float32
    assert knn_points(torch.rand(1, 5, 3, dtype=torch.bfloat16), torch.rand(1, 6, 3, dtype=torch.bfloat16),
                      2).dists.dtype == torch.bfloat16


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast(dtype):
    p1, p2 = torch.rand(2, 40, 3, device="cuda"), torch.rand(2, 60, 3, device="cuda")
    x = torch.randn(2, 4, 12, 12, device="cuda")
    w = torch.randn(2, 4 * 4 * 9, 3, 2, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        knn = knn_points(p1.to(dtype), p2, 5)
        y = patch_conv2d(x, w, 3)
    assert knn.dists.dtype == torch.float32
    assert torch.equal(knn.idx, knn_points(p1.to(dtype).float(), p2, 5).idx)
    assert y.dtype == dtype and rel_err(y, patch_conv2d(x, w, 3)) <= LOWER_TOL
