"""The ONNX translation of every fastvision op (``fastvision.deploy.onnx_ops``): each op in a
one-op module, exported with a dynamic batch by the dynamo exporter, checked by ``onnx.checker``,
run on a stock onnxruntime at two batch sizes and compared with the op. Indices must be equal;
values within 1e-5 of the output's largest magnitude (float32: the translations sum in another
order than the kernels) or 1e-12 (float64). One case per op runs in the default selection; the
other cases (ragged clouds and grids, ties, strides, dilation, every padding mode) are ``slow``
(an export takes seconds)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnxruntime", reason="the deploy extra (also in [test]) is not installed")

import onnx  # noqa: E402

from fastvision.deploy.onnx import export_onnx, run_onnxruntime  # noqa: E402
from fastvision.ops import (  # noqa: E402
    farthest_point_sample,
    fold_batch_norm,
    knn_points,
    nn_distance,
    padnet_encoder,
    patch_conv2d,
    patch_inverted_residual,
    soft_project,
)
from fastvision.ops.padnet import padnet_param_count  # noqa: E402


def export_and_run(module, examples, batches, tmp_path, batch_axes=None):
    """Export ``module`` with dim 0 of every input dynamic, run the file at each batch size (the
    first ``b`` rows of the inputs), return [(torch outputs, onnxruntime outputs)]."""
    batch = torch.export.Dim("batch", min=1, max=64)
    axes = batch_axes or [0] * len(examples)
    shapes = tuple({a: batch} if a is not None else None for a in axes)
    with torch.no_grad():
        program = torch.export.export(module, tuple(examples), dynamic_shapes=shapes)
    path = tmp_path / "op.onnx"
    export_onnx(program, path)
    model = onnx.load(str(path))
    assert not any(n.domain not in ("", "ai.onnx") for n in model.graph.node)  # stock ops only
    results = []
    for b in batches:
        inputs = [t[:b] if a is not None else t for t, a in zip(examples, axes)]
        with torch.no_grad():
            want = torch.utils._pytree.tree_leaves(module(*inputs))
        results.append((want, run_onnxruntime(path, *inputs)))
    return results


def assert_close(want, got):
    assert len(want) == len(got)
    for w, g in zip(want, got):
        assert w.shape == g.shape and w.dtype == g.dtype, (w.shape, g.shape, w.dtype, g.dtype)
        if not w.is_floating_point():
            assert torch.equal(w, g)
            continue
        finite = torch.isfinite(w)
        assert torch.equal(finite, torch.isfinite(g))
        tol = 1e-12 if w.dtype == torch.float64 else 1e-5
        scale = w[finite].abs().max().clamp_min(1e-30) if finite.any() else 1.0
        assert ((w[finite] - g[finite]).abs().max() / scale if finite.any() else 0) <= tol


class Knn(torch.nn.Module):
    def __init__(self, K, norm, ragged):
        super().__init__()
        self.K, self.norm, self.ragged = K, norm, ragged

    def forward(self, p1, p2, lengths1, lengths2):
        if self.ragged:
            return tuple(knn_points(p1, p2, self.K, lengths1, lengths2, norm=self.norm))
        return tuple(knn_points(p1, p2, self.K, norm=self.norm))


@pytest.mark.parametrize("norm,ragged", [(2, False), pytest.param(1, True, marks=pytest.mark.slow)])
def test_knn_points(tmp_path, norm, ragged):
    p1, p2 = torch.rand(3, 20, 3), torch.rand(3, 30, 3)
    lengths1, lengths2 = torch.tensor([20, 7, 13]), torch.tensor([30, 3, 17])
    for want, got in export_and_run(Knn(4, norm, ragged), [p1, p2, lengths1, lengths2], (1, 3), tmp_path):
        assert_close(want, got)


@pytest.mark.slow
def test_knn_points_ties_go_to_the_lower_index(tmp_path):
    grid = torch.randint(0, 4, (2, 40, 3)).float()  # many equal distances
    for want, got in export_and_run(Knn(6, 2, False), [grid, grid.flip(1), torch.tensor([40, 40]),
                                                        torch.tensor([40, 40])], (2,), tmp_path):
        assert_close(want, got)


class NNDist(torch.nn.Module):
    def forward(self, p1, p2, lengths1, lengths2):
        return tuple(nn_distance(p1, p2, lengths1, lengths2))


def test_nn_distance_ragged_and_empty(tmp_path):
    p1, p2 = torch.rand(3, 16, 3, dtype=torch.float64), torch.rand(3, 12, 3, dtype=torch.float64)
    lengths1, lengths2 = torch.tensor([16, 5, 9]), torch.tensor([12, 0, 4])
    for want, got in export_and_run(NNDist(), [p1, p2, lengths1, lengths2], (1, 3), tmp_path):
        assert_close(want, got)


class FPS(torch.nn.Module):
    def __init__(self, K, mode):
        super().__init__()
        self.K, self.mode = K, mode

    def forward(self, points, lengths, seeds):
        if self.mode == "seeds":
            return farthest_point_sample(points, self.K, start=seeds, return_min_dists=True)
        if self.mode == "ragged":
            return farthest_point_sample(points, self.K, lengths, return_min_dists=True)
        return farthest_point_sample(points, self.K, start=3, return_min_dists=True)


@pytest.mark.parametrize("mode", [pytest.param("start", marks=pytest.mark.slow), "seeds",
                                  pytest.param("ragged", marks=pytest.mark.slow)])
def test_farthest_point_sample(tmp_path, mode):
    points = torch.rand(3, 50, 3, dtype=torch.float64)
    lengths = torch.tensor([50, 12, 31])
    seeds = torch.tensor([[4, -1, 9, 4], [-1, -1, -1, -1], [7, 1, -1, 30]])
    for want, got in export_and_run(FPS(10, mode), [points, lengths, seeds], (1, 3), tmp_path):
        assert_close(want, got)


class Soft(torch.nn.Module):
    def __init__(self, k, hard, with_features, min_sigma):
        super().__init__()
        self.k, self.hard, self.with_features, self.min_sigma = k, hard, with_features, min_sigma

    def forward(self, query, points, temperature, features):
        out = soft_project(query, points, temperature, self.k, features=features if self.with_features else None,
                           min_sigma=self.min_sigma, hard=self.hard)
        return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("hard,with_features,min_sigma", [
    (False, True, 1e-2),
    pytest.param(True, False, None, marks=pytest.mark.slow),
    pytest.param(False, False, None, marks=pytest.mark.slow),
])
def test_soft_project(tmp_path, hard, with_features, min_sigma):
    q, p, f = torch.rand(3, 12, 3), torch.rand(3, 40, 3), torch.rand(3, 40, 5)
    t = torch.tensor(0.4)
    for want, got in export_and_run(Soft(5, hard, with_features, min_sigma), [q, p, t, f], (1, 3), tmp_path,
                                    batch_axes=[0, 0, None, 0]):
        assert_close(want, got)


class Encoder(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.width = width
        self.register_buffer("params", torch.randn(padnet_param_count(width)) * 0.2)

    def forward(self, x):
        return padnet_encoder(x, self.params, self.width)


@pytest.mark.parametrize("width", [1, pytest.param(4, marks=pytest.mark.slow)])
def test_padnet_encoder(tmp_path, width):
    for want, got in export_and_run(Encoder(width), [torch.rand(3, 1, 24, 16)], (1, 3), tmp_path):
        assert_close(want, got)


class PatchConv(torch.nn.Module):
    def __init__(self, k, stride, dilation, groups, mode, bias):
        super().__init__()
        self.args = dict(kernel_size=k, stride=stride, dilation=dilation, groups=groups, padding_mode=mode)
        self.bias = torch.nn.Parameter(torch.randn(6)) if bias else None

    def forward(self, x, w):
        return patch_conv2d(x, w, bias=self.bias, **self.args)


@pytest.mark.parametrize("k,stride,dilation,groups,mode,grid", [
    (3, 1, 1, 1, "reflect", (2, 2)),
    pytest.param(3, 2, 1, 2, "zeros", (3, 2), marks=pytest.mark.slow),  # ragged grid, stride 2
    pytest.param(1, 1, 1, 1, "replicate", (4, 4), marks=pytest.mark.slow),
    pytest.param(3, 1, 2, 3, "replicate", (2, 3), marks=pytest.mark.slow),  # dilation, ragged
])
def test_patch_conv2d(tmp_path, k, stride, dilation, groups, mode, grid):
    cin = 6
    x = torch.randn(3, cin, 11, 13)
    w = torch.randn(3, 6 * (cin // groups) * k * k, *grid)
    module = PatchConv(k, stride, dilation, groups, mode, bias=mode != "zeros")
    for want, got in export_and_run(module, [x, w], (1, 3), tmp_path):
        assert_close(want, got)


class InvertedResidual(torch.nn.Module):
    def __init__(self, cin, cout, hid, k, mode, residual):
        super().__init__()
        self.hid, self.k, self.mode, self.residual = hid, k, mode, residual
        self.bn = torch.nn.ModuleList(torch.nn.BatchNorm2d(c) for c in (hid, hid, cout))
        for bn in self.bn:
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
        self.bn.eval()

    def forward(self, x, w):
        folded = [fold_batch_norm(bn) for bn in self.bn]
        return patch_inverted_residual(x, w, self.hid, *folded, kernel_size=self.k, padding_mode=self.mode,
                                       residual=self.residual)


@pytest.mark.parametrize("k,mode,residual,grid,size", [
    (3, "reflect", True, (2, 2), (8, 8)),
    pytest.param(3, "zeros", False, (3, 2), (10, 7), marks=pytest.mark.slow),  # ragged grid
    pytest.param(5, "replicate", True, (2, 4), (8, 12), marks=pytest.mark.slow),
])
def test_patch_inverted_residual(tmp_path, k, mode, residual, grid, size):
    cin, hid = 4, 8
    cout = cin if residual else 5
    x = torch.randn(3, cin, *size)
    w = torch.randn(3, cin * hid + hid * k * k + hid * cout, *grid) * 0.5
    module = InvertedResidual(cin, cout, hid, k, mode, residual)
    for want, got in export_and_run(module, [x, w], (1, 3), tmp_path):
        assert_close(want, got)
