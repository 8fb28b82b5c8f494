"""mmsegmentation checkpoints of BiSeNet V2 and HRNetV2 (FCN head): conversion key for key and
shape for shape against the listings that ``tools/gen_mmseg_keys.py`` generated from mmseg's own
code (mmsegmentation 1.2.2), and outputs equal to mmseg's (logits committed by the same tool; a
live comparison when mmseg is importable)."""

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fastvision.models import convert_mmseg_state_dict, get_model, load_model
from helpers import official_listing

TOOL = Path(__file__).resolve().parents[1] / "tools" / "gen_mmseg_keys.py"
DATA = Path(__file__).resolve().parent / "data" / "mmseg_state_dicts"


def _tool():
    spec = importlib.util.spec_from_file_location("gen_mmseg_keys", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _tool()
CONFIGS = gen.CONFIGS


def _listing(name):
    return gen.read_listing(DATA / f"{name}.txt.gz")


def _zeros(rows):
    return {k: torch.zeros(shape, dtype=torch.int64 if k.endswith("num_batches_tracked") else torch.float32)
            for k, shape in rows}


def _our_listing(model_name, kwargs):
    if model_name.startswith("hrnet"):
        # our HRNet state dicts are the official listings (tests/test_models_hrnet.py), and
        # building W48 costs seconds
        return set(official_listing(model_name))
    return {(k, tuple(v.shape)) for k, v in get_model(model_name, **kwargs).state_dict().items()}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_conversion_is_key_for_key_and_shape_for_shape(name):
    _, model_name, kwargs = CONFIGS[name]
    rows = _listing(name)
    converted = convert_mmseg_state_dict(model_name, _zeros(rows), **kwargs)
    assert {(k, tuple(v.shape)) for k, v in converted.items()} == _our_listing(model_name, kwargs)
    # every mmseg entry is used, except BiSeNet V2's auxiliary heads (training only)
    kept = [k for k, _ in rows if not k.startswith("auxiliary_head.")]
    extra = 1 if model_name.startswith("hrnet") else 0  # the zero bias of mmseg's biasless conv
    assert len(converted) == len(kept) + extra


@pytest.mark.parametrize("name", sorted(n for n in CONFIGS if "hr48" not in n))
def test_converted_weights_give_mmseg_outputs(name):
    """mmseg's decode-head logits for deterministic weights (committed by the tool) equal ours
    after conversion; this catches a swap of same-shaped tensors that the listing cannot."""
    _, model_name, kwargs = CONFIGS[name]
    state = gen.golden_state_dict(_listing(name))
    model = get_model(model_name, **kwargs).eval()
    model.load_state_dict(convert_mmseg_state_dict(model_name, state, **kwargs), strict=True)
    x = gen.golden_input()
    expected = torch.load(DATA / f"{name}.logits.pt", weights_only=True)
    with torch.no_grad():
        ours = model(x)
    if ours.shape[-2:] != expected.shape[-2:]:
        # BiSeNet V2's head upsamples x8 inside the model; mmseg's segmentor resizes afterwards
        expected = F.interpolate(expected, size=x.shape[-2:], mode="bilinear", align_corners=False)
    scale = expected.abs().max()
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max() <= 1e-4 * scale


def test_load_model_recognises_an_mmseg_checkpoint(tmp_path):
    name = "fcn_hr18s_4xb2-160k_cityscapes-512x1024"
    state = gen.golden_state_dict(_listing(name))
    # mmseg saves {"meta", "state_dict", "optimizer"}
    torch.save({"meta": {"CLASSES": ("road",) * 19, "iter": 160000}, "state_dict": state,
                "optimizer": {"state": {}, "param_groups": []}}, tmp_path / "fcn_hr18s.pth")
    model, meta = load_model(tmp_path / "fcn_hr18s.pth", model="hrnetv2_w18_small_v2", official=True)
    assert torch.equal(model.last_layer[3].weight, state["decode_head.conv_seg.weight"])
    assert torch.equal(model.last_layer[0].bias, torch.zeros(270))
    assert meta["model_spec"]["name"] == "hrnetv2_w18_small_v2"
    # without official=True the mmseg layout is refused
    with pytest.raises(RuntimeError, match="does not match hrnetv2_w18_small_v2"):
        load_model(tmp_path / "fcn_hr18s.pth", model="hrnetv2_w18_small_v2")


def test_bisenetv2_mmseg_options_are_required():
    rows = _listing("bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024")
    state = _zeros(rows)
    with pytest.raises(ValueError, match="needs bga='mmseg'"):
        convert_mmseg_state_dict("bisenetv2", state, aux_mode="eval")
    with pytest.raises(ValueError, match="aux_mode='eval' or 'pred'"):
        convert_mmseg_state_dict("bisenetv2", state, bga="mmseg")
    pred = get_model("bisenetv2", aux_mode="pred", bga="mmseg")
    pred.load_state_dict(convert_mmseg_state_dict("bisenetv2", state, aux_mode="pred", bga="mmseg"))


@pytest.mark.parametrize("model_name, kwargs, name", [
    ("bisenetv2", {"aux_mode": "eval", "bga": "mmseg"}, "bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024"),
    ("hrnetv2_w18", {}, "fcn_hr18_4xb2-160k_cityscapes-512x1024"),
])
def test_other_layouts_are_refused(model_name, kwargs, name):
    state = _zeros(_listing(name))
    state["decode_head.bottleneck.conv.weight"] = torch.zeros(1)  # another head's layout
    with pytest.raises(ValueError, match="unknown key.*decode_head.bottleneck.conv.weight"):
        convert_mmseg_state_dict(model_name, state, **kwargs)
    with pytest.raises(ValueError, match="no mmsegmentation checkpoint conversion for 'padnet'"):
        convert_mmseg_state_dict("padnet", state)


def test_bga_variant_is_checked():
    with pytest.raises(ValueError, match="bga must be one of"):
        get_model("bisenetv2", bga="bilinear")


@pytest.mark.parametrize("name", sorted(n for n in CONFIGS if "hr48" not in n))
def test_outputs_equal_mmseg_model(name):
    """Live comparison with mmseg's own model (random weights, BN statistics randomised): needs
    mmsegmentation, mmcv(-lite) and mmengine, which the project does not install; run with
    ``tools/gen_mmseg_keys.py --compare`` in a throwaway environment (see its docstring)."""
    pytest.importorskip("mmseg", reason="mmsegmentation is not installed (see tools/gen_mmseg_keys.py)")
    torch.manual_seed(0)
    diff, scale = gen.compare_outputs(name, gen.build_mmseg_model(name))
    assert diff <= 1e-4 * scale
