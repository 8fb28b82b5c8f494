"""padnet_encoder (PAD-Net's fused encoder, inference): the eval-mode modules and the reference for
x1 / x2 / x4, folding, the model hook (use_fused), opcheck, torch.compile, edge sizes, errors,
property tests, CUDA vs CPU."""

import pytest
import torch
import torch.nn as nn
from helpers import DEVICES, FLOAT_DTYPES, HALF_DTYPES
from hypothesis import given, settings
from hypothesis import strategies as st

from fastvision.models import get_model
from fastvision.ops import _reference as ref
from fastvision.ops import fold_padnet_encoder, padnet_encoder
from fastvision.ops.padnet import padnet_param_count

MODELS = [("padnet", 1), ("padnet_x2", 2), ("padnet_x4", 4)]


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    # Fresh BNs fold to the identity; random statistics and affines make the folding matter.
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def _model(name: str, dtype=torch.float32, device="cpu", seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return _randomise_bn(get_model(name)).to(device=device, dtype=dtype).eval()


def _image(B, H=112, W=48, dtype=torch.float32, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 1, H, W, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


def _tol(dtype):
    # Folding and the order of the sums differ from the modules': float32 rounding of values O(1).
    return {"rtol": 1e-9, "atol": 1e-11} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 5e-6}


@pytest.mark.parametrize("name,width", MODELS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_equals_modules_in_eval_mode(name, width, dtype):
    model = _model(name, dtype)
    x = _image(3, dtype=dtype)
    folded = fold_padnet_encoder(model.encoder)
    assert folded.width == width and folded.params.dtype == dtype
    with torch.no_grad():
        expected = model.encoder(x)
        got = padnet_encoder(x, folded.params, width)
    assert len(got) == 3
    for g, e, c in zip(got, expected, (4 * width, 8 * width, 16 * width)):
        assert g.shape == e.shape and g.shape[1] == c and g.dtype == dtype
        torch.testing.assert_close(g, e, **_tol(dtype))


@pytest.mark.parametrize("name,width", MODELS)
def test_equals_reference(name, width):
    model = _model(name, torch.float64)
    x = _image(2, 37, 21, dtype=torch.float64)
    p = fold_padnet_encoder(model.encoder).params
    for g, e in zip(padnet_encoder(x, p, width), ref.padnet_encoder(x, p, width)):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-13)


def test_fold_is_exact_in_float64():
    # The reference on the folded parameters equals the unfolded modules: the folding is right.
    model = _model("padnet_x2", torch.float64)
    x = _image(2, 30, 18, dtype=torch.float64)
    p = fold_padnet_encoder(model.encoder).params
    with torch.no_grad():
        for g, e in zip(ref.padnet_encoder(x, p, 2), model.encoder(x)):
            torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-13)


def test_param_count_matches_folding_and_model():
    for name, width in MODELS:
        model = get_model(name)
        p = fold_padnet_encoder(model.encoder).params
        assert p.numel() == padnet_param_count(width)
        # Folding removes the BN weights / biases / statistics and adds one bias per conv.
        convs = [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]
        expected = sum(m.weight.numel() + m.out_channels for m in convs)
        assert p.numel() == expected


def test_fold_casts_dtype():
    model = _model("padnet")
    assert fold_padnet_encoder(model.encoder, torch.float64).params.dtype == torch.float64


@pytest.mark.parametrize("name,width", MODELS)
def test_model_uses_fused_op_in_eval(name, width, monkeypatch):
    model = _model(name)
    x = _image(2)
    calls = []
    import fastvision.ops.padnet as padnet_ops

    real = padnet_ops.padnet_encoder

    def spy(x, params, width):
        calls.append(width)
        return real(x, params, width)

    monkeypatch.setattr(padnet_ops, "padnet_encoder", spy)
    with torch.no_grad():
        fused = model(x, return_features=True)
        assert calls == [width]
        model.use_fused = False
        modules = model(x, return_features=True)
        assert calls == [width]
    torch.testing.assert_close(fused[0], modules[0], rtol=1e-5, atol=2e-5)
    for a, b in zip(fused[1], modules[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-5)


def test_model_hook_runs_modules_when_training_or_grad_is_needed(monkeypatch):
    model = _model("padnet")
    x = _image(2)
    import fastvision.ops.padnet as padnet_ops

    def fail(*args):
        raise AssertionError("the fused op must not run here")

    monkeypatch.setattr(padnet_ops, "fused_encoder_taps", fail)
    out = model(x)  # eval, grad mode on, parameters require grad: the modules run
    out.sum().backward()
    assert model.encoder.stem.weight.grad is not None
    model.train()
    with torch.no_grad():
        model(x)


def test_model_hook_runs_modules_under_forward_hooks(monkeypatch):
    model = _model("padnet")
    seen = []
    model.encoder.blocks[3].depthwise.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    import fastvision.ops.padnet as padnet_ops

    def fail(*args):
        raise AssertionError("the fused op must not run here")

    monkeypatch.setattr(padnet_ops, "fused_encoder_taps", fail)
    with torch.no_grad():
        model(_image(1, 16, 8))
    assert seen == [(1, 16, 8, 4)]


def test_model_hook_refolds_after_weight_change():
    model = _model("padnet")
    x = _image(2)
    with torch.no_grad():
        before = model(x)
        model.encoder.stem_bn.running_mean.add_(0.25)
        after = model(x)
        model.use_fused = False
        modules = model(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, modules, rtol=1e-5, atol=2e-5)


def test_teacher_keeps_modules():
    model = get_model("padnet_teacher").eval()
    with torch.no_grad():
        a = model(_image(1, 32, 16))
        model.use_fused = False
        b = model(_image(1, 32, 16))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("B,H,W", [(0, 112, 48), (1, 1, 1), (2, 2, 3), (1, 5, 7), (3, 17, 9)])
def test_edge_sizes(B, H, W):
    model = _model("padnet", torch.float64)
    x = _image(B, H, W, dtype=torch.float64)
    p = fold_padnet_encoder(model.encoder).params
    with torch.no_grad():
        expected = model.encoder(x) if B > 0 else ref.padnet_encoder(x, p, 1)
    for g, e in zip(padnet_encoder(x, p, 1), expected):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_batch_independence_and_non_contiguous_input():
    model = _model("padnet_x2", torch.float64)
    p = fold_padnet_encoder(model.encoder).params
    x = _image(4, 20, 12, dtype=torch.float64)
    full = padnet_encoder(x, p, 2)
    perm = torch.tensor([2, 0, 3, 1])
    permuted = padnet_encoder(x[perm], p, 2)
    for a, b in zip(full, permuted):
        torch.testing.assert_close(a[perm], b, rtol=0, atol=0)
    xt = x.transpose(2, 3).contiguous().transpose(2, 3)
    assert not xt.is_contiguous()
    for a, b in zip(padnet_encoder(xt, p, 2), full):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_half_inputs_computed_in_float32(dtype):
    model = _model("padnet")
    p = fold_padnet_encoder(model.encoder).params
    x = _image(2, 24, 16).to(dtype)
    got = padnet_encoder(x, p.to(dtype), 1)
    expected = padnet_encoder(x.float(), p.to(dtype).float(), 1)
    for g, e in zip(got, expected):
        assert g.dtype == dtype
        torch.testing.assert_close(g, e.to(dtype), rtol=0, atol=0)


def test_opcheck():
    model = _model("padnet")
    p = fold_padnet_encoder(model.encoder).params
    torch.library.opcheck(torch.ops.fastvision.padnet_encoder, (_image(2, 16, 12), p, 1))
    p4 = fold_padnet_encoder(_model("padnet_x4").encoder).params
    torch.library.opcheck(torch.ops.fastvision.padnet_encoder, (_image(1, 9, 7), p4, 4))


def test_torch_compile_fullgraph():
    model = _model("padnet_x2")
    p = fold_padnet_encoder(model.encoder).params
    x = _image(2, 24, 16)

    def f(x, p):
        t1, t2, t3 = padnet_encoder(x, p, 2)
        return t1.sum() + t2.mean() + t3.amax()

    with torch.no_grad():
        compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(x, p), f(x, p))


def test_inference_only_error():
    model = _model("padnet")
    p = fold_padnet_encoder(model.encoder).params
    x = _image(1, 8, 8).requires_grad_()
    with pytest.raises(RuntimeError, match="padnet_encoder: inference only"):
        padnet_encoder(x, p, 1)
    with pytest.raises(RuntimeError, match="padnet_encoder: inference only"):
        padnet_encoder(x.detach(), p.clone().requires_grad_(), 1)
    with torch.no_grad():
        padnet_encoder(x, p, 1)


def test_bad_inputs():
    p = fold_padnet_encoder(_model("padnet").encoder).params
    x = _image(1, 8, 8)
    with pytest.raises(ValueError, match=r"width must be 1, 2 or 4, got 3"):
        padnet_encoder(x, p, 3)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, H, W\), got \(1, 2, 8, 8\)"):
        padnet_encoder(x.expand(1, 2, 8, 8), p, 1)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, H, W\), got \(8, 8\)"):
        padnet_encoder(x[0, 0], p, 1)
    with pytest.raises(TypeError, match="x must be a floating-point tensor, got torch.int64"):
        padnet_encoder(x.long(), p, 1)
    with pytest.raises(ValueError, match=r"4065 folded parameters of a width-1.*got shape \(4064,\)"):
        padnet_encoder(x, p[:-1], 1)
    with pytest.raises(ValueError, match=r"13506 folded parameters of a width-2"):
        padnet_encoder(x, p, 2)
    # Checks of the C++ kernel itself (reached through torch.ops).
    op = torch.ops.fastvision.padnet_encoder
    with pytest.raises(RuntimeError, match="padnet_encoder: params must have the dtype of x"):
        op(x, p.double(), 1)
    with pytest.raises(RuntimeError, match=r"at least one row and one column, got shape \[1, 1, 0, 8\]"):
        op(x[:, :, :0], p, 1)
    with pytest.raises(ValueError, match="padnet_encoder: width must be 1, 2 or 4, got 8"):
        op(x, p, 8)
    with pytest.raises(RuntimeError, match=r"params must be a 1-D tensor of the 4065"):
        op(x, p[:100], 1)


def test_fold_rejects_other_encoders():
    with pytest.raises(ValueError, match="fold_padnet_encoder: the stem must have 2, 4 or 8 output channels"):
        fold_padnet_encoder(get_model("padnet_teacher").encoder)
    with pytest.raises(ValueError, match="encoder must be a MobileNetV3Encoder, got MobileNetV2Encoder"):
        fold_padnet_encoder(get_model("mv2_4bn").encoder)
    model = get_model("padnet")
    model.encoder.blocks[2].stride = 1
    with pytest.raises(ValueError, match="the bnecks must be PAD-Net's Table 1 at width 1"):
        fold_padnet_encoder(model.encoder)


@pytest.mark.parametrize("width", [1, 2, 4])
@pytest.mark.parametrize("H,W", [(1, 1), (2, 9), (5, 10), (7, 11), (9, 17), (12, 18), (6, 19),
                                 (11, 33), (4, 40), (3, 47)])
def test_float32_matches_float64_reference(width, H, W):
    # float32 takes the AVX2 + FMA kernels where the CPU has them (vector columns, the overlapping
    # last vector and scalar borders at both strides, depending on the width W).
    g = torch.Generator().manual_seed(H * 100 + W)
    p = torch.randn(padnet_param_count(width), generator=g, dtype=torch.float64) * 0.3
    x = torch.randn(2, 1, H, W, generator=g, dtype=torch.float64)
    got = padnet_encoder(x.float(), p.float(), width)
    for a, b in zip(got, ref.padnet_encoder(x.float().double(), p.float().double(), width)):
        assert a.dtype == torch.float32 and a.shape == b.shape
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=5e-6)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_small_batch_split_over_threads_equals_per_image(dtype):
    # Batches smaller than the thread count split each image over the threads; the values must be
    # those of the one-image-per-thread path exactly.
    model = _model("padnet_x4", dtype)
    p = fold_padnet_encoder(model.encoder).params
    x = _image(4, 37, 29, dtype=dtype)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        full = padnet_encoder(x, p, 4)
        for i in (0, 3):
            for a, b in zip(padnet_encoder(x[i : i + 1], p, 4), full):
                torch.testing.assert_close(a, b[i : i + 1], rtol=0, atol=0)
    finally:
        torch.set_num_threads(threads)


@settings(max_examples=15, deadline=None)
@given(width=st.sampled_from([1, 2, 4]), B=st.integers(0, 3), H=st.integers(1, 24),
       W=st.integers(1, 24), seed=st.integers(0, 1000))
def test_property_matches_reference(width, B, H, W, seed):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(padnet_param_count(width), generator=g, dtype=torch.float64) * 0.3
    x = torch.randn(B, 1, H, W, generator=g, dtype=torch.float64)
    for a, b in zip(padnet_encoder(x, p, width), ref.padnet_encoder(x, p, width)):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOAT_DTYPES + HALF_DTYPES)
@pytest.mark.parametrize("name,width", MODELS)
def test_cuda_matches_cpu(name, width, dtype):
    model = _model(name)
    p = fold_padnet_encoder(model.encoder).params
    x = _image(5, 112, 48)
    cpu = padnet_encoder(x.to(dtype), p.to(dtype), width)
    gpu = padnet_encoder(x.to("cuda", dtype), p.to("cuda", dtype), width)
    tol = {"rtol": 1e-2, "atol": 1e-2} if dtype in HALF_DTYPES else _tol(dtype)
    for c, g in zip(cpu, gpu):
        torch.testing.assert_close(g.cpu(), c, **tol)


@pytest.mark.parametrize("device", DEVICES)
def test_model_forward_on_device(device):
    model = _model("padnet_x4", device=device)
    x = _image(2, device=device)
    with torch.no_grad():
        fused = model(x)
        model.use_fused = False
        modules = model(x)
    torch.testing.assert_close(fused, modules, rtol=1e-5, atol=2e-5)


def test_bench_family_small_writes_rows(tmp_path):
    import json

    from fastvision.tasks import benchmark_names
    from fastvision.tasks.padnet.benchmark import CASES
    from fastvision.cli import main

    assert "padnet" in benchmark_names()
    full = set(CASES["full"])
    for name in ("padnet", "padnet_x2", "padnet_x4"):
        for scope in ("encoder", "model"):
            assert {(name, b, 112, 48, scope, t) for b in (1, 256) for t in (1, 2)} <= full
    assert {("padnet", 256, 112, 48, "detect", t) for t in (1, 2)} <= full
    assert main(["bench", "--family", "padnet", "--size", "small", "--out", str(tmp_path)]) == 0
    (js,) = tmp_path.glob("padnet-cpu-*-small.json")
    rows = json.loads(js.read_text())["rows"]
    assert {r["case"] for r in rows} == {"padnet_encoder_b2_t1", "padnet_model_b2_t1", "padnet_detect_b2_t1"}
    for r in rows:
        assert r["status"] == "ok" and r["median_ms"] > 0 and r["cpu_ms"] > 0 and r["threads"] == 1
        assert r["images_per_s"] == pytest.approx(2000 / r["median_ms"])
        expected = "exact" if r["case"] == "padnet_detect_b2_t1" else "close"
        assert r["check"] == ("baseline" if r["is_fastvision"] else expected)
    # Denormals are flushed while the benchmark runs only.
    assert float(torch.tensor([1e-39]) * 1.0) != 0.0
