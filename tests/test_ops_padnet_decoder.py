"""padnet_decoder (PAD-Net's fused MDR decoder, CPU inference): the decoder modules and the
reference for x1 / x2 / x4, decoder+, head 3x3, other chain depths, the model's fast path
(use_fused, fallbacks), opcheck, torch.compile, edge sizes, NaN propagation, errors, property
tests."""

import pytest
import torch
import torch.nn as nn
from helpers import FLOAT_DTYPES, HALF_DTYPES
from hypothesis import given, settings
from hypothesis import strategies as st

from fastvision.models import get_model
from fastvision.ops import _reference as ref
from fastvision.ops import pack_padnet_decoder, padnet_decoder
from fastvision.ops import padnet as padnet_ops

MODELS = ["padnet", "padnet_x2", "padnet_x4"]


def _model(name: str, dtype=torch.float32, seed=0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    model = get_model(name, **kwargs).to(dtype=dtype).eval()
    # The default init leaves the decoder's outputs tiny; scale the weights so that every path
    # (pools, chains, fusions) moves the logits by O(1).
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(3.0)
    return model


def _taps(model, B, H=112, W=48, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 1, H, W, generator=g, dtype=torch.float64).to(dtype)
    with torch.no_grad():
        return tuple(t.contiguous() for t in model.encoder(x))


def _modules(model, taps):
    with torch.no_grad():
        return model.decoder(taps)[0]


def _tol(dtype):
    # The order of the sums differs from oneDNN's: float32 rounding of values O(1-10).
    return {"rtol": 1e-9, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 5e-5}


@pytest.mark.parametrize("name", MODELS)
def test_equals_modules(name):
    model = _model(name, torch.float64)
    taps = _taps(model, 3, dtype=torch.float64)
    packed = pack_padnet_decoder(model.decoder)
    assert (packed.channels, packed.chain_stages, packed.head_kernel) == (4, 4, 1)
    assert packed.params.dtype == torch.float64
    assert packed.params.numel() == sum(p.numel() for p in model.decoder.parameters())
    got = padnet_decoder(*taps, packed.params, 4, 4, 1)
    expected = _modules(model, taps)
    assert got.shape == expected.shape == (3, 1, 112, 48) and got.dtype == torch.float64
    assert float(expected.std()) > 0.1  # the weights move the logits
    torch.testing.assert_close(got, expected, **_tol(torch.float64))


@pytest.mark.parametrize("name", MODELS)
def test_float32_is_as_accurate_as_the_modules(name):
    # The logits reach O(100) with these weights; float32 rounding depends on the order of the
    # sums, so both float32 decoders are compared with the float64 modules.
    exact = _model(name, torch.float64)
    taps = _taps(exact, 3, dtype=torch.float64)
    truth = _modules(exact, taps)
    model = _model(name, torch.float32)
    taps32 = tuple(t.float() for t in taps)
    packed = pack_padnet_decoder(model.decoder)
    assert packed.params.dtype == torch.float32
    got = padnet_decoder(*taps32, packed.params, 4, 4, 1)
    assert got.dtype == torch.float32
    err = float((got.double() - truth).abs().max())
    err_modules = float((_modules(model, taps32).double() - truth).abs().max())
    scale = float(truth.abs().max())
    assert err <= max(4 * err_modules, 1e-6 * scale), (err, err_modules, scale)


@pytest.mark.parametrize("kwargs", [dict(decoder_plus=True), dict(head_kernel=3), dict(chain_stages=1),
                                    dict(chain_stages=2, head_kernel=3)])
def test_decoder_options_equal_modules(kwargs):
    model = _model("padnet_x2", torch.float64, **kwargs)
    taps = _taps(model, 2, 37, 21, dtype=torch.float64)
    p = pack_padnet_decoder(model.decoder)
    got = padnet_decoder(*taps, p.params, p.channels, p.chain_stages, p.head_kernel)
    torch.testing.assert_close(got, _modules(model, taps), **_tol(torch.float64))
    torch.testing.assert_close(ref.padnet_decoder(*taps, p.params, p.channels, p.chain_stages,
                                                  p.head_kernel), got, **_tol(torch.float64))


@pytest.mark.parametrize("name", ["mv3_6bn", "mv2_4bn"])
def test_comparison_encoders_decoder(name):
    model = _model(name, torch.float64)
    taps = _taps(model, 1, 28, 12, dtype=torch.float64)
    p = pack_padnet_decoder(model.decoder)
    got = padnet_decoder(*taps, p.params, p.channels, p.chain_stages, p.head_kernel)
    torch.testing.assert_close(got, _modules(model, taps), **_tol(torch.float64))


def test_teacher_decoder_is_refused_and_keeps_modules(monkeypatch):
    model = _model("padnet_teacher")
    with pytest.raises(ValueError, match="pack_padnet_decoder: the chains must be MDR chains"):
        pack_padnet_decoder(model.decoder)
    calls = []
    monkeypatch.setattr(torch.ops.fastvision, "padnet_decoder",
                        lambda *a: calls.append(1) or torch.zeros(()))
    with torch.no_grad():
        model(torch.randn(1, 1, 28, 12))
    assert calls == []


@pytest.mark.parametrize("B,H,W", [(1, 1, 1), (2, 1, 7), (1, 5, 1), (3, 9, 13), (1, 4, 4), (0, 16, 8)])
def test_edge_sizes(B, H, W):
    model = _model("padnet", torch.float64)
    taps = _taps(model, B, H, W, dtype=torch.float64)
    p = pack_padnet_decoder(model.decoder).params
    got = padnet_decoder(*taps, p, 4, 4, 1)
    assert got.shape == (B, 1, H, W)
    torch.testing.assert_close(got, _modules(model, taps), **_tol(torch.float64))


def test_taps_of_any_size_are_upsampled_bilinearly():
    # The op takes the taps as given: coarse taps of arbitrary sizes (not halves) and equal sizes.
    model = _model("padnet", torch.float64)
    g = torch.Generator().manual_seed(3)
    for sizes in [((10, 7), (4, 5), (3, 2)), ((6, 6), (6, 6), (6, 6)), ((5, 9), (7, 2), (1, 1))]:
        taps = tuple(torch.randn(2, c, h, w, generator=g, dtype=torch.float64)
                     for c, (h, w) in zip((4, 8, 16), sizes))
        p = pack_padnet_decoder(model.decoder).params
        torch.testing.assert_close(padnet_decoder(*taps, p, 4, 4, 1), _modules(model, taps),
                                   **_tol(torch.float64))


def test_batch_independence_threads_and_non_contiguous_taps():
    model = _model("padnet_x2")
    taps = _taps(model, 5)
    p = pack_padnet_decoder(model.decoder).params
    full = padnet_decoder(*taps, p, 4, 4, 1)
    for b in range(5):
        one = padnet_decoder(*(t[b:b + 1] for t in taps), p, 4, 4, 1)
        assert torch.equal(one, full[b:b + 1])  # same code per image: bit for bit
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(padnet_decoder(*taps, p, 4, 4, 1), full)
    finally:
        torch.set_num_threads(previous)
    strided = tuple(torch.stack([t, t], dim=-1)[..., 0] for t in taps)
    assert not strided[0].is_contiguous()
    assert torch.equal(padnet_decoder(*strided, p, 4, 4, 1), full)


def test_nan_in_a_tap_propagates_like_the_modules():
    model = _model("padnet", torch.float64)
    taps = list(_taps(model, 1, 20, 12, dtype=torch.float64))
    taps[2][0, 3, 2, 1] = float("nan")
    p = pack_padnet_decoder(model.decoder).params
    got = padnet_decoder(*taps, p, 4, 4, 1)
    expected = _modules(model, tuple(taps))
    assert torch.equal(torch.isnan(got), torch.isnan(expected)) and bool(torch.isnan(got).any())
    torch.testing.assert_close(got, expected, equal_nan=True, **_tol(torch.float64))


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_half_inputs_computed_in_float32(dtype):
    model = _model("padnet")
    taps = _taps(model, 2)
    p = pack_padnet_decoder(model.decoder).params
    got = padnet_decoder(*(t.to(dtype) for t in taps), p.to(dtype), 4, 4, 1)
    expected = padnet_decoder(*(t.to(dtype).float() for t in taps), p.to(dtype).float(), 4, 4, 1)
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected.to(dtype))


def test_model_uses_the_fused_decoder_on_the_cpu(monkeypatch):
    model = _model("padnet_x4")
    x = torch.randn(2, 1, 56, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.use_fused = False
        eager = model(x)
        model.use_fused = True
        fused = model(x)
        logits, features = model(x, return_features=True)  # knowledge distillation: the modules
    torch.testing.assert_close(fused, eager, **_tol(torch.float32))
    torch.testing.assert_close(logits, eager, **_tol(torch.float32))
    assert len(features) == 3
    calls = []
    real = torch.ops.fastvision.padnet_decoder

    def spy(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(torch.ops.fastvision, "padnet_decoder", spy)
    with torch.inference_mode():
        model(x)
    assert calls == [1]
    with torch.no_grad():
        model(x, return_features=True)
        model.use_fused = False
        model(x)
    assert calls == [1]
    model.use_fused = True
    model(x).sum()  # grad mode on, parameters require grad: the modules
    model.train()
    with torch.no_grad():
        model(x)
    assert calls == [1]
    model.eval()
    handle = model.decoder.head.register_forward_hook(lambda *a: None)
    with torch.no_grad():
        model(x)
    handle.remove()
    assert calls == [1]


def test_model_repacks_after_a_weight_change():
    model = _model("padnet")
    x = torch.randn(1, 1, 28, 12)
    with torch.no_grad():
        before = model(x)
        model.decoder.head.bias.add_(1.0)
        after = model(x)
    torch.testing.assert_close(after, before + 1.0, **_tol(torch.float32))


def test_opcheck():
    model = _model("padnet")
    taps = _taps(model, 2, 20, 12)
    p = pack_padnet_decoder(model.decoder).params
    torch.library.opcheck(torch.ops.fastvision.padnet_decoder.default, (*taps, p, 4, 4, 1))


def test_torch_compile_fullgraph():
    model = _model("padnet")
    taps = _taps(model, 2, 20, 12)
    p = pack_padnet_decoder(model.decoder).params
    compiled = torch.compile(lambda *a: padnet_decoder(*a, 4, 4, 1), fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(*taps, p), padnet_decoder(*taps, p, 4, 4, 1))


def test_inference_only_error():
    model = _model("padnet")
    taps = _taps(model, 1, 20, 12)
    p = pack_padnet_decoder(model.decoder).params.requires_grad_()
    with pytest.raises(RuntimeError, match="padnet_decoder: inference only"):
        padnet_decoder(*taps, p, 4, 4, 1)
    out = torch.ops.fastvision.padnet_decoder(*taps, p, 4, 4, 1)
    with pytest.raises(RuntimeError, match="padnet_decoder: inference only"):
        out.sum().backward()


def test_bad_inputs():
    model = _model("padnet")
    fine, middle, deep = _taps(model, 2, 20, 12)
    p = pack_padnet_decoder(model.decoder).params
    with pytest.raises(ValueError, match=r"padnet_decoder: fine must have shape \(B, C, H, W\), got \(2, 4, 20\)"):
        padnet_decoder(fine[..., 0], middle, deep, p, 4, 4, 1)
    with pytest.raises(TypeError, match="padnet_decoder: deep must be a floating-point tensor, got torch.int64"):
        padnet_decoder(fine, middle, deep.long(), p, 4, 4, 1)
    with pytest.raises(ValueError, match="padnet_decoder: CPU only, got middle on meta"):
        padnet_decoder(fine, middle.to("meta"), deep, p, 4, 4, 1)
    for name, args in [("channels", (0, 4, 1)), ("chain_stages", (4, 0, 1)), ("channels", (True, 4, 1))]:
        with pytest.raises(ValueError, match=f"padnet_decoder: {name} must be an int >= 1"):
            padnet_decoder(fine, middle, deep, p, *args)
    with pytest.raises(ValueError, match="padnet_decoder: head_kernel must be 1 or 3, got 2"):
        padnet_decoder(fine, middle, deep, p, 4, 4, 2)
    with pytest.raises(ValueError, match=r"params must be a 1-D tensor of the 1349 decoder parameters.*got shape \(1348,\)"):
        padnet_decoder(fine, middle, deep, p[:-1], 4, 4, 1)
    with pytest.raises(ValueError, match=r"params must be a 1-D tensor of the 1381"):
        padnet_decoder(fine, middle, deep, p, 4, 4, 3)  # settings that do not fit the parameters
    # The raw op checks too (batch sizes, dtypes).
    with pytest.raises(RuntimeError, match=r"padnet_decoder: middle must have the batch size of fine \(2\)"):
        torch.ops.fastvision.padnet_decoder(fine, middle[:1], deep, p, 4, 4, 1)
    with pytest.raises(RuntimeError, match="padnet_decoder: params"):
        torch.ops.fastvision.padnet_decoder(fine, middle, deep, p.double(), 4, 4, 1)
    with pytest.raises(ValueError, match="padnet_decoder: head_kernel must be 1 or 3, got 5"):
        torch.ops.fastvision.padnet_decoder(fine, middle, deep, p, 4, 4, 5)


@settings(max_examples=15, deadline=None)
@given(B=st.integers(1, 3), H=st.integers(1, 30), W=st.integers(1, 30),
       name=st.sampled_from(["padnet", "padnet_x2"]), head_kernel=st.sampled_from([1, 3]),
       stages=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_property_matches_reference(B, H, W, name, head_kernel, stages, seed):
    model = _model(name, torch.float64, seed=seed, head_kernel=head_kernel, chain_stages=stages)
    taps = _taps(model, B, H, W, dtype=torch.float64, seed=seed)
    p = pack_padnet_decoder(model.decoder).params
    got = padnet_decoder(*taps, p, 4, stages, head_kernel)
    torch.testing.assert_close(got, ref.padnet_decoder(*taps, p, 4, stages, head_kernel),
                               **_tol(torch.float64))


def test_unpack_names_follow_the_module_parameters():
    model = _model("padnet", decoder_plus=True, head_kernel=3)
    p = pack_padnet_decoder(model.decoder)
    named = padnet_ops.unpack_padnet_decoder(p.params, 16, (4, 8, 16), 4, 3)
    assert list(named)[:3] == ["project", "chain1.0.dw", "chain1.0.pw"]
    assert [t.shape for t in named.values()] == [q.shape for q in model.decoder.parameters()]
    assert torch.equal(named["fusion2.merge"], model.decoder.fusion2.merge.weight.detach())
