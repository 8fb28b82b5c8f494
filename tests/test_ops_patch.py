"""patch_conv2d and patch_inverted_residual: the reference, HyperSeg's own unfold formulation,
ragged grids, padding modes, stride / dilation / groups, gradients (gradcheck, determinism),
opcheck, torch.compile, edge sizes, errors, property tests, the HyperSeg modules, CUDA vs CPU."""

import pytest
import torch
import torch.nn as nn
from helpers import FLOAT_DTYPES, HALF_DTYPES
from hypothesis import given, settings
from hypothesis import strategies as st

from fastvision.nn import HyperPatchConv2d, HyperPatchInvertedResidual, HyperPatchNoPadding
from fastvision.ops import _reference as ref
from fastvision.ops import fold_batch_norm, patch_conv2d, patch_inverted_residual

MODES = ["zeros", "reflect", "replicate"]


def _conv_inputs(B=2, C=4, H=9, W=7, cout=3, k=3, fh=2, fw=3, groups=1, dtype=torch.float64, device="cpu",
                 seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(B, C, H, W, generator=g, dtype=dtype).to(device)
    w = torch.randn(B, cout * C // groups * kh * kw, fh, fw, generator=g, dtype=dtype).to(device)
    b = torch.randn(cout, generator=g, dtype=dtype).to(device) if bias else None
    return x, w, b


def _ir_inputs(B=2, C=5, H=12, W=8, hidden=6, out=4, k=3, fh=3, fw=2, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=g, dtype=dtype).to(device)
    K = C * hidden + hidden * k * k + hidden * out
    w = (torch.randn(B, K, fh, fw, generator=g, dtype=dtype) * 0.5).to(device)
    bns = [((torch.rand(n, generator=g, dtype=dtype) + 0.5).to(device), torch.randn(n, generator=g, dtype=dtype).to(device))
           for n in (hidden, hidden, out)]
    return x, w, bns


# ------------------------------------------------------------------------------------------------
# patch_conv2d: values


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "shape",
    [
        dict(H=8, W=8, fh=2, fw=2),  # equal patches
        dict(H=9, W=7, fh=2, fw=3),  # ragged patches
        dict(H=5, W=6, fh=5, fw=6),  # 1x1 patches
        dict(H=6, W=6, fh=1, fw=1),  # one patch: an ordinary conv with a per-image kernel
    ],
)
def test_patch_conv2d_equals_reference(mode, shape):
    x, w, b = _conv_inputs(**shape)
    torch.testing.assert_close(patch_conv2d(x, w, 3, padding_mode=mode, bias=b),
                               ref.patch_conv2d(x, w, 3, padding_mode=mode, bias=b))


@pytest.mark.parametrize(
    "kw",
    [
        dict(k=3, stride=2),
        dict(k=3, dilation=2, H=11, W=10),
        dict(k=3, groups=2, C=4, cout=6),
        dict(k=(3, 1), padding=(1, 0)),
        dict(k=5, padding=1),  # "valid"-ish: output smaller than the input
        dict(k=1, padding=0, C=6, cout=6, groups=3),
        dict(k=3, stride=(2, 1), dilation=(1, 2), H=13, W=12, fh=3, fw=4),
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_patch_conv2d_stride_dilation_groups(kw, mode):
    kw = dict(kw)
    stride, dilation, padding = kw.pop("stride", 1), kw.pop("dilation", 1), kw.pop("padding", None)
    groups = kw.get("groups", 1)
    k = kw["k"]
    x, w, b = _conv_inputs(**kw)
    got = patch_conv2d(x, w, k, stride, padding, mode, dilation, groups, b)
    want = ref.patch_conv2d(x, w, k, stride, padding, mode, dilation, groups, b)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kw", [dict(H=9, W=7, fh=2, fw=3), dict(H=12, W=10, fh=3, fw=2, dilation=2),
                                dict(H=6, W=6, fh=6, fw=6), dict(H=40, W=36, fh=1, fw=2, k=5)])
def test_patch_conv2d_depthwise_direct_path(mode, kw):
    # One input and one output channel per group at stride 1: the CPU's padded-plane path
    # (patch_depthwise_cpu.h), CUDA's direct kernel.
    kw = dict(kw)
    dilation, k = kw.pop("dilation", 1), kw.pop("k", 3)
    x, w, b = _conv_inputs(B=2, C=5, cout=5, groups=5, k=k, **kw)
    args = (k, 1, None, mode, dilation, 5)
    torch.testing.assert_close(patch_conv2d(x, w, *args, bias=b), ref.patch_conv2d(x, w, *args, bias=b))
    x1, w1, b1 = (t[:1].clone().requires_grad_() if t.dim() == 4 else t.clone().requires_grad_() for t in (x, w, b))
    if x1.shape[2] <= 12:
        assert torch.autograd.gradcheck(lambda x, w, b: patch_conv2d(x, w, *args, bias=b), (x1, w1, b1))
    else:  # chunks of a tall cell: gradients against the reference's autograd
        g = torch.randn(1, 5, *x1.shape[2:], dtype=x1.dtype)
        ours = torch.autograd.grad(patch_conv2d(x1, w1, *args, bias=b1), (x1, w1, b1), g)
        theirs = torch.autograd.grad(ref.patch_conv2d(x1, w1, *args, bias=b1), (x1, w1, b1), g)
        for a, r in zip(ours, theirs):
            torch.testing.assert_close(a, r)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "kw",
    [
        # 45 columns: blocks of 4 vectors, single vectors and scalar columns (f32 and f64); ragged cells
        dict(H=11, W=45, fh=3, fw=7, k=3),
        # a tall asymmetric kernel, dilation on one axis, padding smaller than the kernel's half
        # (the output is smaller than the input) and none on the other axis
        dict(H=13, W=40, fh=2, fw=5, k=(5, 3), padding=(1, 0), dilation=(1, 2)),
        dict(H=10, W=21, fh=10, fw=21, k=3),  # 1-pixel cells
    ],
)
def test_patch_conv2d_depthwise_rows(kw, mode, dtype):
    # The padded-plane depthwise path row by row: forward, each gradient alone and both together,
    # through non-contiguous x (channels_last) and a sliced weight, against the reference.
    kw = dict(kw)
    k, padding, dilation = kw.pop("k"), kw.pop("padding", None), kw.pop("dilation", 1)
    C = 6
    x, w, b = _conv_inputs(B=2, C=C, cout=C, groups=C, k=k, dtype=dtype, **kw)
    args = (k, 1, padding, mode, dilation, C)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else {}
    xcl = x.to(memory_format=torch.channels_last)
    wide = torch.cat([w, torch.randn_like(w[:, :3])], 1)[:, : w.shape[1]]
    assert not xcl.is_contiguous() and not wide.is_contiguous()
    torch.testing.assert_close(patch_conv2d(xcl, wide, *args, bias=b), ref.patch_conv2d(x, w, *args, bias=b), **tol)
    out_shape = ref.patch_conv2d(x, w, *args).shape
    g = torch.randn(out_shape, dtype=dtype)
    for wants in ((True, True), (True, False), (False, True)):
        xs, ws = xcl.clone().requires_grad_(wants[0]), wide.clone().requires_grad_(wants[1])
        xr, wr = x.clone().requires_grad_(wants[0]), w.clone().requires_grad_(wants[1])
        inputs = [t for t, want in zip((xs, ws), wants) if want]
        ours = torch.autograd.grad(patch_conv2d(xs, ws, *args, bias=b), inputs, g)
        theirs = torch.autograd.grad(ref.patch_conv2d(xr, wr, *args, bias=b),
                                     [t for t, want in zip((xr, wr), wants) if want], g)
        for a, r in zip(ours, theirs):
            torch.testing.assert_close(a, r, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "kw",
    [
        dict(B=2, C=5, cout=3, fh=4, fw=11, H=4, W=11),  # 1-pixel cells, 8 + 3 cells per row (tail)
        dict(B=1, C=9, cout=6, fh=3, fw=17, H=6, W=34),  # 2x2 cells: tiles of 2 outputs x 4 pixels
        dict(B=2, C=3, cout=5, fh=2, fw=9, H=8, W=36),  # 4x4 cells
        dict(B=1, C=4, cout=7, fh=2, fw=5, H=6, W=15),  # 3x3 cells: a pixel tile tail
        dict(B=1, C=4, cout=2, fh=3, fw=4, H=3, W=20),  # 1x5 cells
    ],
)
def test_patch_conv2d_small_cell_1x1_path(kw, dtype):
    # 1x1, groups 1, cells of at most 16 pixels: the cell-vectorised kernels (patch_pointwise_cpu.h),
    # forward and both gradients against the reference, with and without bias; the same values
    # through a strided weight (the per-cell GEMM path) and a channels_last x (strided rows).
    x, w, b = _conv_inputs(k=1, dtype=dtype, **kw)
    g = torch.randn(x.shape[0], kw["cout"], x.shape[2], x.shape[3], dtype=dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else {}
    for bias in (b, None):
        results = []
        strided_w = w.transpose(2, 3).contiguous().transpose(2, 3)
        for fn, weight, xin in ((patch_conv2d, w, x), (ref.patch_conv2d, w, x),
                                (patch_conv2d, strided_w, x.to(memory_format=torch.channels_last))):
            xs, ws = xin.clone().requires_grad_(), weight.detach().clone().requires_grad_()
            out = fn(xs, ws, 1, padding=0, bias=bias)
            out.backward(g)
            results.append((out.detach(), xs.grad, ws.grad))
        for ours, want, strided in zip(*results):
            torch.testing.assert_close(ours, want, **tol)
            torch.testing.assert_close(strided, want, **tol)


@pytest.mark.parametrize("fh,fw,H,W", [(2, 9, 4, 18), (3, 2, 3, 2)])
def test_patch_conv2d_small_cell_1x1_path_gradcheck(fh, fw, H, W):
    x, w, b = _conv_inputs(B=1, C=3, cout=2, k=1, fh=fh, fw=fw, H=H, W=W)
    xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w, b: patch_conv2d(x, w, 1, padding=0, bias=b), (xs, ws, bs))


def test_patch_conv2d_one_patch_is_conv2d():
    # With a 1x1 grid and zero padding, the op is F.conv2d with each image's own kernel.
    x, w, b = _conv_inputs(B=1, C=4, H=7, W=9, cout=6, k=3, fh=1, fw=1, groups=2)
    got = patch_conv2d(x, w, 3, padding=1, padding_mode="zeros", groups=2, bias=b)
    want = torch.nn.functional.conv2d(x, w.view(6, 2, 3, 3), b, padding=1, groups=2)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
@pytest.mark.parametrize("k,groups", [(3, 1), (1, 1), (3, 4)])
def test_patch_conv2d_equals_hyperseg_unfold_formulation(mode, k, groups):
    # HyperSeg's HyperPatchConv2d (pad + unfold + grouped conv + fold) and HyperPatchNoPadding.
    x, w, _ = _conv_inputs(B=2, C=8, H=16, W=12, cout=4, k=k, fh=4, fw=3, groups=groups, bias=False)
    torch.testing.assert_close(patch_conv2d(x, w, k, padding_mode=mode, groups=groups),
                               ref.hyperpatch_conv2d_unfold(x, w, k, k // 2, mode, groups))


def test_patch_conv2d_halo_comes_from_the_neighbour():
    # An input spike in patch (0, 1) right at the border with patch (0, 0): patch (0, 0)'s output
    # next to the border sees it through patch (0, 0)'s own kernel.
    x = torch.zeros(1, 1, 4, 8, dtype=torch.float64)
    x[0, 0, 1, 4] = 1.0
    w = torch.zeros(1, 9, 1, 2, dtype=torch.float64)
    w[0, 5, 0, 0] = 2.0  # patch (0, 0): tap (ky=1, kx=2), reads x[y, x + 1]
    w[0, 4, 0, 1] = 3.0  # patch (0, 1): centre tap
    out = patch_conv2d(x, w, 3, padding_mode="zeros")
    expected = torch.zeros_like(out)
    expected[0, 0, 1, 3] = 2.0
    expected[0, 0, 1, 4] = 3.0
    torch.testing.assert_close(out, expected)


def test_patch_conv2d_reads_strided_views_without_copies():
    x, w, b = _conv_inputs(B=2, C=4, H=8, W=8, cout=2, fh=2, fw=2)
    xt = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    wide = torch.randn(2, w.shape[1] + 5, 2, 2, dtype=w.dtype)
    wide[:, : w.shape[1]] = w
    wv = wide[:, : w.shape[1]]  # a slice, as HyperSeg's apply_signal2weights returns
    assert not wv.is_contiguous() and not xt.is_contiguous()
    torch.testing.assert_close(patch_conv2d(xt, wv, 3, bias=b), patch_conv2d(x, w, 3, bias=b))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_patch_conv2d_dtypes(dtype):
    x, w, b = _conv_inputs(dtype=dtype)
    out = patch_conv2d(x, w, 3, bias=b)
    assert out.dtype == dtype
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else {}
    torch.testing.assert_close(out, ref.patch_conv2d(x, w, 3, bias=b), **tol)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_patch_conv2d_half_on_cpu_accumulates_in_float32(dtype):
    x, w, b = _conv_inputs(dtype=torch.float32)
    out = patch_conv2d(x.to(dtype), w.to(dtype), 3, bias=b.to(dtype))
    assert out.dtype == dtype
    want = ref.patch_conv2d(x.to(dtype).float(), w.to(dtype).float(), 3, bias=b.to(dtype).float())
    torch.testing.assert_close(out.float(), want.to(dtype).float(), rtol=2e-2, atol=2e-2)


def test_patch_conv2d_empty_batch():
    x, w, b = _conv_inputs(B=0)
    out = patch_conv2d(x, w, 3, bias=b)
    assert out.shape == (0, 3, 9, 7)
    x.requires_grad_()
    patch_conv2d(x, w, 3, bias=b).sum().backward()
    assert x.grad.shape == x.shape


# ------------------------------------------------------------------------------------------------
# patch_conv2d: gradients


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "kw",
    [
        dict(k=3, H=7, W=6, fh=2, fw=3, groups=2, C=4, cout=2),
        dict(k=3, H=5, W=5, fh=5, fw=5, C=2, cout=2),  # 1x1 patches: the small-chunk paths
        dict(k=1, H=8, W=8, fh=2, fw=2, C=3, cout=4),
        dict(k=3, H=20, W=20, fh=1, fw=1, C=2, cout=5),  # chunks of the large-chunk path
    ],
)
def test_patch_conv2d_gradcheck(mode, kw):
    kw = dict(kw)
    k, groups = kw["k"], kw.get("groups", 1)
    x, w, b = _conv_inputs(B=1, **kw)
    for t in (x, w, b):
        t.requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w, b: patch_conv2d(x, w, k, padding_mode=mode, groups=groups, bias=b),
                                    (x, w, b))


@pytest.mark.parametrize("kw", [dict(stride=2), dict(dilation=2), dict(stride=(1, 2), padding=(0, 2))])
def test_patch_conv2d_gradcheck_stride_dilation(kw):
    x, w, b = _conv_inputs(B=1, C=2, H=9, W=10, cout=2, fh=2, fw=2)
    for t in (x, w, b):
        t.requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w, b: patch_conv2d(x, w, 3, bias=b, **kw), (x, w, b))


def test_patch_conv2d_gradients_equal_reference_and_are_deterministic():
    x, w, b = _conv_inputs(B=2, C=6, H=32, W=24, cout=5, fh=4, fw=3, groups=1, dtype=torch.float32, seed=3)
    g = torch.randn(2, 5, 32, 24)
    grads = []
    for fn in (patch_conv2d, ref.patch_conv2d, patch_conv2d):
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
        fn(xs, ws, 3, bias=bs).backward(g)
        grads.append((xs.grad, ws.grad, bs.grad))
    for a, r in zip(grads[0], grads[1]):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)
    for a, again in zip(grads[0], grads[2]):
        assert torch.equal(a, again)  # bitwise: no atomics, fixed summation order


def test_patch_conv2d_backward_only_what_is_needed():
    x, w, b = _conv_inputs()
    w.requires_grad_()
    patch_conv2d(x, w, 3, bias=b).sum().backward()
    assert w.grad is not None and x.grad is None and b.grad is None


def test_patch_conv2d_opcheck():
    op = torch.ops.fastvision.patch_conv2d
    x, w, b = _conv_inputs(B=1, C=2, H=6, W=5, cout=2, fh=2, fw=2)
    for t in (x, w, b):
        t.requires_grad_()
    torch.library.opcheck(op, (x, w, b, [3, 3], [1, 1], [1, 1], [1, 1], 1, 1))
    torch.library.opcheck(op, (x, w.detach()[:, :4], None, [1, 1], [1, 1], [0, 0], [1, 1], 2, 0))
    torch.library.opcheck(op, (x, w, None, [3, 3], [2, 1], [1, 2], [1, 2], 1, 2))


def test_patch_conv2d_torch_compile_fullgraph():
    def f(x, w, b):
        return patch_conv2d(x, w, 3, bias=b).relu().sum()

    x, w, b = _conv_inputs(B=1, dtype=torch.float32)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    xs = x.clone().requires_grad_()
    compiled(xs, w, b).backward()
    xe = x.clone().requires_grad_()
    f(xe, w, b).backward()
    torch.testing.assert_close(xs.grad, xe.grad)


# ------------------------------------------------------------------------------------------------
# patch_conv2d: errors


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda x, w, b: (x[0], w, b, {}), "x must be 4-D"),
        (lambda x, w, b: (x, w[:, :-1], b, {}), "weight.size\\(1\\) must be a positive multiple"),
        (lambda x, w, b: (x, w[:1], b, {}), "weight must have the batch size of x"),
        (lambda x, w, b: (x, w, b[:-1], {}), "bias must have shape"),
        (lambda x, w, b: (x, w.float(), b, {}), "weight must have the dtype of x"),
        (lambda x, w, b: (x.long(), w.long(), None, {}), "x must be a floating-point tensor"),
        (lambda x, w, b: (x, w, b, {"padding_mode": "circular"}), "padding_mode must be one of"),
        (lambda x, w, b: (x, w, b, {"stride": 0}), "stride must be at least 1"),
        (lambda x, w, b: (x, w, b, {"padding": -1}), "padding must be at least 0"),
        (lambda x, w, b: (x, w, b, {"groups": 3}), "groups must be >= 1 and divide"),
        (lambda x, w, b: (x, w, b, {"padding": 9}), "reflect padding must be smaller than the input height"),
        (lambda x, w, b: (x[:, :, :2, :2], w, b, {"padding": 0, "padding_mode": "zeros"}),
         "padded input .* is smaller than the dilated kernel"),
        (lambda x, w, b: (x[:, :, :3], w.repeat(1, 1, 2, 1), b, {}), "patch grid of weight"),
    ],
)
def test_patch_conv2d_errors(mutate, match):
    x, w, b = _conv_inputs()
    x, w, b, kw = mutate(x, w, b)
    with pytest.raises((RuntimeError, ValueError, TypeError), match=match):
        patch_conv2d(x, w, 3, bias=b, **kw)


# ------------------------------------------------------------------------------------------------
# patch_conv2d: property test


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 2), C=st.integers(1, 4), cout=st.integers(1, 3), H=st.integers(1, 12), W=st.integers(1, 12),
    k=st.sampled_from([1, 2, 3]), stride=st.integers(1, 2), dilation=st.integers(1, 2),
    mode=st.sampled_from(MODES), data=st.data(),
)
def test_patch_conv2d_property(B, C, cout, H, W, k, stride, dilation, mode, data):
    pad = data.draw(st.integers(0, min(2, H - 1, W - 1) if mode == "reflect" else 2))
    span = dilation * (k - 1) + 1
    if H + 2 * pad < span or W + 2 * pad < span:
        return
    Ho, Wo = (H + 2 * pad - span) // stride + 1, (W + 2 * pad - span) // stride + 1
    fh, fw = data.draw(st.integers(1, Ho)), data.draw(st.integers(1, Wo))
    x, w, b = _conv_inputs(B=B, C=C, H=H, W=W, cout=cout, k=k, fh=fh, fw=fw, seed=data.draw(st.integers(0, 99)))
    torch.testing.assert_close(patch_conv2d(x, w, k, stride, pad, mode, dilation, bias=b),
                               ref.patch_conv2d(x, w, k, stride, pad, mode, dilation, bias=b))


# ------------------------------------------------------------------------------------------------
# patch_inverted_residual


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [dict(H=12, W=8, fh=3, fw=2), dict(H=13, W=9, fh=3, fw=2), dict(H=4, W=4, fh=4, fw=4)])
def test_patch_inverted_residual_equals_reference(mode, shape):
    x, w, bns = _ir_inputs(**shape)
    torch.testing.assert_close(patch_inverted_residual(x, w, 6, *bns, padding_mode=mode),
                               ref.patch_inverted_residual(x, w, 6, *bns, padding_mode=mode))


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_patch_inverted_residual_equals_hyperseg_unfold_formulation(mode):
    # HyperSeg's HyperPatchInvertedResidual.conv with the BatchNorms as folded affines.
    x, w, bns = _ir_inputs(H=16, W=12, fh=4, fw=3)
    affines = [lambda t, s=s, b=b: t * s.view(1, -1, 1, 1) + b.view(1, -1, 1, 1) for s, b in bns]
    torch.testing.assert_close(patch_inverted_residual(x, w, 6, *bns, padding_mode=mode),
                               ref.hyperpatch_inverted_residual_unfold(x, w, 6, 4, *affines, padding_mode=mode))


def test_patch_inverted_residual_residual_and_kernel_5():
    x, w, bns = _ir_inputs(C=4, out=4, k=5, H=10, W=10, fh=2, fw=2)
    got = patch_inverted_residual(x, w, 6, *bns, kernel_size=5, residual=True)
    torch.testing.assert_close(got, ref.patch_inverted_residual(x, w, 6, *bns, kernel_size=5, residual=True))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES + HALF_DTYPES)
def test_patch_inverted_residual_dtypes(dtype):
    x, w, bns = _ir_inputs(dtype=torch.float32)
    cast = [(s.to(dtype), b.to(dtype)) for s, b in bns]
    out = patch_inverted_residual(x.to(dtype), w.to(dtype), 6, *cast)
    assert out.dtype == dtype
    want = ref.patch_inverted_residual(x.to(dtype).float(), w.to(dtype).float(), 6,
                                       *[(s.float(), b.float()) for s, b in cast])
    tol = dict(rtol=2e-2, atol=5e-2) if dtype in HALF_DTYPES else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.float(), want, **tol)


def test_patch_inverted_residual_gradcheck():
    x, w, bns = _ir_inputs(B=1, C=2, H=6, W=4, hidden=3, out=2, fh=2, fw=2)
    flat = [x, w] + [t for pair in bns for t in pair]
    for t in flat:
        t.requires_grad_()

    def f(x, w, s1, b1, s2, b2, s3, b3):
        return patch_inverted_residual(x, w, 3, (s1, b1), (s2, b2), (s3, b3))

    assert torch.autograd.gradcheck(f, tuple(flat))


def test_patch_inverted_residual_opcheck_and_compile():
    op = torch.ops.fastvision.patch_inverted_residual
    x, w, bns = _ir_inputs(B=1, C=2, H=6, W=4, hidden=3, out=2, fh=2, fw=2, dtype=torch.float32)
    flat = [t for pair in bns for t in pair]
    torch.library.opcheck(op, (x, w, *flat, 3, 3, 1, False), test_utils=("test_schema", "test_faketensor"))
    compiled = torch.compile(lambda x, w: patch_inverted_residual(x, w, 3, *bns).relu(), fullgraph=True,
                             backend="aot_eager")
    torch.testing.assert_close(compiled(x, w), patch_inverted_residual(x, w, 3, *bns).relu())


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(trim=1), "weight.size\\(1\\) must be"),
        (dict(residual=True), "residual needs as many output as input channels"),
        (dict(kernel_size=4), "kernel_size must be a positive odd number"),
        (dict(bn1=(torch.ones(2), torch.zeros(2))), "bn1_scale must have shape"),
        (dict(padding_mode="circular"), "padding_mode must be one of"),
    ],
)
def test_patch_inverted_residual_errors(kw, match):
    x, w, bns = _ir_inputs()
    w = w[:, : w.shape[1] - kw.pop("trim", 0)]
    bn1 = kw.pop("bn1", bns[0])
    with pytest.raises((RuntimeError, ValueError), match=match):
        patch_inverted_residual(x, w, 6, bn1, bns[1], bns[2], **kw)


# ------------------------------------------------------------------------------------------------
# The HyperSeg modules


def _randomise_bn(m):
    g = torch.Generator().manual_seed(1)
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.weight.data.copy_(torch.randn(bn.num_features, generator=g))
            bn.bias.data.copy_(torch.randn(bn.num_features, generator=g))


def test_inverted_residual_module_eval_uses_the_fused_op_and_equals_the_unfused_block(monkeypatch):
    torch.manual_seed(0)
    m = HyperPatchInvertedResidual(24, 16, 3, expand_ratio=2)
    m.init_signal2weights(32, 8, 16)
    assert m.hyper_params == 24 * 48 + 48 * 9 + 48 * 16 == m.signal2weights.out_channels
    rounded = HyperPatchInvertedResidual(24, 16, 3, expand_ratio=2)
    rounded.init_signal2weights(35, 0, 5)  # HyperSeg's next_multiply: 2352 -> 2355 outputs
    assert rounded.signal2weights.out_channels == 2355
    _randomise_bn(m)
    x, s = torch.randn(2, 24, 16, 32), torch.randn(2, 48, 2, 4)
    m.eval()
    calls = []
    import fastvision.nn.patch as patch_module

    real = patch_module.patch_inverted_residual
    monkeypatch.setattr(patch_module, "patch_inverted_residual", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        fused = m(x, s)
        unfused = ref.hyperpatch_inverted_residual_unfold(x, m.apply_signal2weights(s), 48, 16, m.bn1, m.bn2, m.bn3,
                                                          act=m.act_layer)
    assert calls == [1]
    torch.testing.assert_close(fused, unfused, rtol=1e-4, atol=1e-4)


def test_inverted_residual_module_trains_with_halo_bn_statistics():
    torch.manual_seed(0)
    m = HyperPatchInvertedResidual(6, 6, 3, expand_ratio=2)  # in == out: residual
    m.init_signal2weights(8, 0, 1)
    x, s = torch.randn(2, 6, 8, 8), torch.randn(2, 8, 2, 2)
    out = m(x, s)
    unfused = ref.hyperpatch_inverted_residual_unfold(x, m.apply_signal2weights(s), 12, 6, m.bn1, m.bn2, m.bn3,
                                                      act=m.act_layer)
    out.sum().backward()
    assert m.signal2weights.weight.grad is not None and m.bn1.weight.grad is not None
    # The same batch statistics (halo included): equal up to BN's running-stat update.
    torch.testing.assert_close(out.detach(), (x + unfused).detach(), rtol=1e-5, atol=1e-5)


def test_patch_conv_modules():
    torch.manual_seed(0)
    x, s = torch.randn(2, 24, 8, 16), torch.randn(2, 32, 2, 4)
    n = HyperPatchNoPadding(24, 16, 1, groups=8)
    n.init_signal2weights(32, 0, 8)
    assert n.hyper_params == 48 and n.signal2weights.out_channels == 48
    w = n.apply_signal2weights(s)
    torch.testing.assert_close(n(x, s), ref.hyperpatch_conv2d_unfold(x, w, 1, 0, groups=8))
    c = HyperPatchConv2d(24, 8, 3, padding=1)
    c.init_signal2weights(28, 2, 4)  # HyperPatchConv2d: exactly hyper_params outputs (not rounded)
    assert c.signal2weights.out_channels == c.hyper_params == 8 * 24 * 9
    w = c.apply_signal2weights(torch.randn(2, 32, 2, 4))
    assert w.shape == (2, 8 * 24 * 9, 2, 4)


def test_fold_batch_norm():
    bn = nn.BatchNorm2d(5).eval()
    _randomise_bn(bn)
    scale, shift = fold_batch_norm(bn)
    y = torch.randn(3, 5, 4, 4)
    torch.testing.assert_close(bn(y), y * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))


# ------------------------------------------------------------------------------------------------
# CUDA vs CPU


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", MODES)
def test_patch_conv2d_cuda_equals_cpu(dtype, mode):
    x, w, b = _conv_inputs(B=2, C=4, H=13, W=11, cout=6, fh=3, fw=4, groups=2, dtype=dtype, seed=5)
    g = torch.randn(2, 6, 13, 11, dtype=dtype)
    results = []
    for device in ("cpu", "cuda"):
        xs, ws, bs = (t.to(device).requires_grad_() for t in (x, w, b))
        out = patch_conv2d(xs, ws, 3, padding_mode=mode, groups=2, bias=bs)
        out.backward(g.to(device))
        results.append([t.detach().cpu() for t in (out, xs.grad, ws.grad, bs.grad)])
    for c, r in zip(results[1], results[0]):
        torch.testing.assert_close(c, r, rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32] + HALF_DTYPES)
@pytest.mark.parametrize("mode", MODES)
def test_patch_inverted_residual_cuda_equals_cpu(dtype, mode):
    x, w, bns = _ir_inputs(H=13, W=9, dtype=torch.float32)
    cpu = patch_inverted_residual(x, w, 6, *bns, padding_mode=mode)
    cuda = patch_inverted_residual(x.cuda().to(dtype), w.cuda().to(dtype), 6,
                                   *[(s.cuda().to(dtype), b.cuda().to(dtype)) for s, b in bns], padding_mode=mode)
    tol = dict(rtol=2e-2, atol=1e-1) if dtype in HALF_DTYPES else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cuda.float().cpu(), cpu, **tol)


@pytest.mark.cuda
def test_patch_conv2d_device_mismatch():
    x, w, b = _conv_inputs()
    with pytest.raises(RuntimeError, match="weight must be on the same device as x"):
        patch_conv2d(x.cuda(), w, 3)


@pytest.mark.parametrize("axis", ["height", "width"])
def test_patch_conv2d_replicate_padding_of_an_empty_axis_is_an_error(axis):
    # Issue 13: it used to read out of bounds (a segfault on the CPU). Replicating nothing is
    # undefined, as in torch.nn.functional.pad; zeros padding of an empty axis stays valid.
    shape, padding = ((1, 1, 0, 4), (1, 0)) if axis == "height" else ((1, 1, 4, 0), (0, 1))
    x, w = torch.rand(shape), torch.rand(1, 1, 2, 1) if axis == "height" else torch.rand(1, 1, 1, 2)
    with pytest.raises(ValueError, match=f"patch_conv2d: replicate padding needs a non-empty input {axis}, got {axis} 0 with padding 1"):
        patch_conv2d(x, w, 1, padding=padding, padding_mode="replicate")
    with pytest.raises(ValueError, match="replicate padding needs a non-empty input"):
        torch.ops.fastvision._patch_conv2d_backward(
            torch.rand(1, 1, 2, 4) if axis == "height" else torch.rand(1, 1, 4, 2), x, w, [1, 1], [1, 1],
            list(padding), [1, 1], 1, 2, True, True, True)
    zeros = patch_conv2d(x, w, 1, padding=padding, padding_mode="zeros", bias=torch.tensor([0.5]))
    assert zeros.shape == ((1, 1, 2, 4) if axis == "height" else (1, 1, 4, 2)) and (zeros == 0.5).all()
