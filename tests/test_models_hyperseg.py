"""fastvision.models.hyperseg: the five official HyperSeg configurations (layouts, parameter
counts, signal slicing, context head, decoder, flip inference) and a short training run.

The committed listings ``tests/data/official_state_dicts/hyperseg_*.txt.gz`` come from the
official code (``tools/gen_official_keys.py --only hyperseg``); the same tool's ``--compare``
loads each official (random, BN-randomised) state dict into these models and compares eval
outputs on 2x3x128x256: max |difference| 1.2e-7 (-M), 1.2e-7 (-S), 8.9e-8 (CamVid-S), 1.0e-7
(CamVid-L), 7.5e-8 (VOC-L). When the official repository's mirror is on this machine,
``test_matches_official_code`` repeats that comparison here.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from helpers import OFFICIAL_STATE_DICTS, listing, n_params, official_listing
from fastvision.cli import main
from fastvision.models import convert_official_state_dict, get_model, list_models
from fastvision.models.hyperseg import (
    HyperSeg,
    WeightMapper,
    divide_feature,
    divide_feature_legacy,
)

OFFICIAL = OFFICIAL_STATE_DICTS
NAMES = ["hyperseg_m_cityscapes", "hyperseg_s_cityscapes", "hyperseg_s_camvid",
         "hyperseg_l_camvid", "hyperseg_l_voc"]
# tools/gen_official_keys.py: the official models of configs/train/*.py (Cityscapes 19 classes,
# CamVid 12 = len(CamVidDataset.classes) incl. 'Void', VOC 21).
PARAMS = {
    "hyperseg_m_cityscapes": 10_311_214,
    "hyperseg_s_cityscapes": 10_041_398,
    "hyperseg_s_camvid": 9_949_064,
    "hyperseg_l_camvid": 9_969_104,
    "hyperseg_l_voc": 39_680_458,
}
CLASSES = {"hyperseg_m_cityscapes": 19, "hyperseg_s_cityscapes": 19, "hyperseg_s_camvid": 12,
           "hyperseg_l_camvid": 12, "hyperseg_l_voc": 21}


@functools.lru_cache(maxsize=None)
def meta_model(name, **kwargs):
    with torch.device("meta"):
        return get_model(name, **dict(kwargs))


def calibrated(model, x=None):
    """``model`` in eval mode with the BN statistics of one training batch. At the official
    (default PyTorch) initialisation with unit running variances, eval-mode decoder outputs
    shrink to float denormals (~1e-38), which would make every comparison trivially close."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 128) if x is None else x
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    for bn, mom in zip(bns, saved):
        bn.momentum = mom
    return model.eval()


@functools.lru_cache(maxsize=None)
def real_model(name):
    torch.manual_seed(0)
    return calibrated(get_model(name))


def test_registered():
    assert set(NAMES) <= set(list_models())


@pytest.mark.parametrize("name", NAMES)
def test_param_count_matches_official(name):
    assert n_params(meta_model(name)) == PARAMS[name]


def test_voc_weight_groups_option():
    # hyperseg_v0_1.hyperseg_efficientnet's default weight_groups=1 (the config passes 16).
    assert n_params(meta_model("hyperseg_l_voc", weight_groups=1)) == 48_959_130


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_matches_official_key_for_key(name):
    ours, official = listing(meta_model(name)), official_listing(name)
    assert [k for k, _ in ours] == [k for k, _ in official]
    assert ours == official


def test_num_classes_changes_only_the_decoder():
    m = meta_model("hyperseg_m_cityscapes", num_classes=5)
    assert m.decoder.level_4[0].bn3.num_features == 5
    a, b = dict(listing(m)), dict(listing(meta_model("hyperseg_m_cityscapes")))
    changed = [k for k in a if a[k] != b[k]]
    assert changed and all(k.startswith("decoder.") for k in changed)
    # the last layer's weight count changes, and with it (as officially) every layer's share of
    # the signal: divide_feature over the new per-layer weight counts
    groups = m.decoder.param_groups
    assert groups[:4] == [5248, 3008, 704, 2352] and groups[4] == 34 * 68 + 68 * 9 + 68 * 5
    assert [hi - lo for lo, hi in _slices(m)] == divide_feature(1280, groups, 32)


def test_backbone_feature_widths():
    assert meta_model("hyperseg_m_cityscapes").backbone.feat_channels == [16, 6, 10, 28, 80, 1280]
    assert meta_model("hyperseg_s_cityscapes").backbone.feat_channels == [16, 4, 8, 28, 128, 1280]
    assert meta_model("hyperseg_s_camvid").backbone.feat_channels == [4, 6, 10, 28, 80, 1280]
    assert meta_model("hyperseg_l_voc").backbone.feat_channels == [6, 8, 12, 34, 96, 1536]
    bn = meta_model("hyperseg_m_cityscapes").backbone._blocks[0]._bn1
    assert bn.eps == 1e-3 and bn.momentum == pytest.approx(0.01)
    # The official static "same" padding of the B1 nominal 240 px chain: stage 6's stride-2 5x5
    # conv pads (2, 2) (its nominal input is 15 px), stage 3's (1, 2).
    blocks = meta_model("hyperseg_m_cityscapes").backbone._blocks
    strided = [b._depthwise_conv.static_pad for b in blocks if b.stride == 2]
    assert strided == [(0, 1, 0, 1), (1, 2, 1, 2), (0, 1, 0, 1), (2, 2, 2, 2)]


def test_divide_feature_official_values():
    # HyperSeg-M: per-layer weight counts -> signal channels (min_unit = max(weight_groups) = 32)
    assert divide_feature(1280, [5248, 3008, 704, 2352, 4216], 32) == [416, 224, 128, 192, 320]
    # v0_1 Conv2dMulti of VOC-L (the state dict's conv_i widths x 16 groups)
    assert divide_feature_legacy(1536, [9408, 4496, 6624, 1728, 992, 912], 16) == \
        [592, 272, 416, 96, 48, 112]
    # equal weight counts get equal parts
    parts = divide_feature(256, [100, 100, 50], 8)
    assert parts[0] == parts[1] and sum(parts) == 256


def _slices(model):
    return [(m.signal_index, m.signal_index + m.signal_channels) for m in model.modules()
            if getattr(m, "signal2weights", None) is not None]


def test_signal_slicing_quirk_and_contiguous_option():
    # v1_0: every layer reads from channel 0 (official init_signal2weights recursion).
    assert _slices(meta_model("hyperseg_m_cityscapes")) == \
        [(0, 416), (0, 224), (0, 128), (0, 192), (0, 320)]
    fixed = meta_model("hyperseg_m_cityscapes", contiguous_signal=True)
    assert _slices(fixed) == [(0, 416), (416, 640), (640, 768), (768, 960), (960, 1280)]
    assert listing(fixed) == official_listing("hyperseg_m_cityscapes")
    # unify (HyperSeg-S Cityscapes): contiguous in the official code already.
    assert _slices(meta_model("hyperseg_s_cityscapes")) == \
        [(0, 576), (576, 704), (704, 768), (768, 1280)]


def test_v1_0_never_reads_the_context_up_path():
    """The quirk's consequence: -M uses signal channels < 416 only, so the whole up path of the
    context head (channels 640..1279) has no effect on the output and gets zero gradients."""
    torch.manual_seed(0)
    model = calibrated(get_model("hyperseg_m_cityscapes"))
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        before = model(x)
        for p in model.weight_mapper.up_blocks.parameters():
            p.add_(torch.randn_like(p))
        assert torch.equal(model(x), before)
        fixed = get_model("hyperseg_m_cityscapes", contiguous_signal=True).eval()
        fixed.load_state_dict(model.state_dict())
        assert not torch.allclose(fixed(x), before)
    model.train()
    model(torch.randn(2, 3, 64, 64)).square().mean().backward()
    assert all(torch.count_nonzero(p.grad) == 0 for p in model.weight_mapper.up_blocks.parameters())
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0
               for p in model.decoder.parameters())


def test_coordinate_buffers():
    model = real_model("hyperseg_m_cityscapes")
    names = [k for k in model.state_dict() if k.startswith("decoder.coord")]
    assert names == [f"decoder.coord{h}_{w}" for h, w in
                     [(512, 512), (256, 256), (128, 128), (64, 64), (32, 32),
                      (512, 1024), (256, 512), (128, 256), (64, 128), (32, 64)]]
    grid = model.decoder.coord32_64
    assert grid.shape == (1, 2, 32, 64)
    torch.testing.assert_close(grid[0, 0, 5], torch.linspace(-1, 1, 64))  # x along the width
    torch.testing.assert_close(grid[0, 1, :, 7], torch.linspace(-1, 1, 32))  # y along the height
    # not cached: computed on the fly with the same values
    torch.testing.assert_close(model.decoder.image_coordinates(2, 32, 64, grid), grid.expand(2, -1, -1, -1))
    torch.testing.assert_close(model.decoder.image_coordinates(1, 6, 10, grid)[0, 0, 0],
                               torch.linspace(-1, 1, 10))


@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes(name):
    model = real_model(name)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 128))
    assert out.shape == (2, CLASSES[name], 64, 128) and torch.isfinite(out).all()
    assert out.abs().max() > 1e-3  # calibrated: no vanishing activations


@pytest.mark.parametrize("name", ["hyperseg_m_cityscapes", "hyperseg_s_cityscapes", "hyperseg_l_voc"])
@pytest.mark.parametrize("size", [(32, 32), (96, 160), (160, 32)])
def test_any_multiple_of_32(name, size):
    # The official code needs multiples of 64 (VOC-L: 128) and crashes otherwise.
    model = real_model(name)
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, CLASSES[name], *size) and torch.isfinite(out).all()


def test_argument_errors():
    assert isinstance(real_model("hyperseg_l_voc"), HyperSeg) and real_model("hyperseg_l_voc").design == "v0_1"
    with pytest.raises(ValueError, match="design"):
        HyperSeg(design="v2")
    with pytest.raises(ValueError, match="unify_level"):
        HyperSeg(design="v1_0_unify")
    with pytest.raises(TypeError, match="unexpected keyword"):
        get_model("hyperseg_m_cityscapes", level_channels=(8, 8, 8, 8, 8))


def test_other_sizes_raise():
    model = real_model("hyperseg_s_camvid")
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.randn(1, 3, 64, 80))


def _official_mapper_forward(m: WeightMapper, x):
    """The official v1_0 WeightMapper.forward, for even-sized maps (nearest x2 up path)."""
    x = m.in_conv(x)
    feat = [x]
    for level in range(m.levels - 1):
        feat.append(m.down_blocks[level](feat[-1]))
    shape = feat[-1].shape
    if shape[-2:] != (1, 1):
        x = F.interpolate(F.adaptive_avg_pool2d(feat[-1], 1), shape[-2:], mode="nearest")
    for level in range(m.levels - 2, -1, -1):
        x = torch.cat((feat.pop(-1), x), dim=1)
        x = F.interpolate(m.up_blocks[level](x), scale_factor=2, mode="nearest")
    return torch.cat((feat.pop(-1), x), dim=1)


def test_context_head_equals_official_on_even_grids_and_runs_on_odd():
    torch.manual_seed(0)
    m = WeightMapper(64, levels=3).eval()
    for bn in (mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    with torch.no_grad():
        x = torch.randn(2, 64, 8, 12)
        torch.testing.assert_close(m(x), _official_mapper_forward(m, x), rtol=0, atol=0)
        for size in [(5, 7), (1, 1), (3, 2)]:
            y = m(torch.randn(2, 64, *size))
            assert y.shape == (2, 64, *size) and torch.isfinite(y).all()


def test_hflip_inference():
    torch.manual_seed(0)
    model = calibrated(get_model("hyperseg_s_camvid"))
    assert model.inference_hflip is True  # as in every config ...
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        plain = model.process_single_tensor(x)
        flipped = torch.flip(model.process_single_tensor(torch.flip(x, [-1])), [-1])
        assert not torch.allclose(plain, flipped)
        torch.testing.assert_close(model(x), plain, rtol=0, atol=0)  # ... a no-op on tensors
        torch.testing.assert_close(model(x, hflip=True), (plain + flipped) * 0.5)
        torch.testing.assert_close(model(x, hflip=False), plain, rtol=0, atol=0)
        # a list (image pyramid): the official path, flips combined with max, levels averaged
        small = F.interpolate(x, size=(32, 64), mode="bilinear", align_corners=False)
        s_plain = model.process_single_tensor(small)
        s_flip = torch.flip(model.process_single_tensor(torch.flip(small, [-1])), [-1])
        s = F.interpolate(torch.max(s_plain, s_flip), size=(64, 96), mode="bilinear", align_corners=False)
        torch.testing.assert_close(model([x, small]), (s + torch.max(plain, flipped)) * 0.5)
        torch.testing.assert_close(model([x], hflip=False), plain)


def test_official_checkpoint_loads(tmp_path):
    """Official checkpoints are ``{"state_dict": ..., "arch": ...}`` (hyperseg/train.py)."""
    src = real_model("hyperseg_s_cityscapes")
    path = tmp_path / "cityscapes_efficientnet_b1_hyperseg-s.pth"
    torch.save({"state_dict": src.state_dict(), "arch": "hyperseg_efficientnet(...)"}, path)
    model = get_model("hyperseg_s_cityscapes", weights=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x), rtol=0, atol=0)
    ckpt = torch.load(path, weights_only=True)
    for sd in (ckpt, ckpt["state_dict"]):
        converted = convert_official_state_dict("hyperseg_s_cityscapes", sd)
        assert list(converted) == list(src.state_dict())
        get_model("hyperseg_s_cityscapes").load_state_dict(converted, strict=True)


def test_train_mode_gradients_reach_every_used_parameter():
    torch.manual_seed(0)
    model = get_model("hyperseg_s_cityscapes").train()
    model(torch.randn(2, 3, 64, 64)).logsumexp(1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_cli_train_and_eval_on_embedded_data(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "segmentation", "--model", "hyperseg_m_cityscapes", "--image-size", "32x64",
                 "--train-samples", "4", "--val-samples", "2", "--num-classes", "5", "--epochs", "1",
                 "--batch-size", "2", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["history"][0]["step"] == 2 and record["model_spec"]["name"] == "hyperseg_m_cityscapes"
    assert torch.isfinite(torch.tensor(record["history"][0]["train_loss"]))
    ev = tmp_path / "eval"
    assert main(["eval", "segmentation", "--checkpoint", str(out / "model_best.pt"), "--image-size", "32x64",
                 "--val-samples", "2", "--num-classes", "5", "--flip", "--out", str(ev), "--quiet"]) == 0
    assert 0 <= json.loads((ev / "results.json").read_text())["miou"] <= 1


MIRROR = "/work/.mirror/YuvalNirkin+hyperseg/repo"


@pytest.mark.skipif(not os.path.isdir(MIRROR), reason="official HyperSeg repository not on this machine")
def test_matches_official_code(tmp_path):
    tool = os.path.join(os.path.dirname(__file__), "..", "tools", "gen_official_keys.py")
    if not os.path.isfile(tool):
        pytest.skip("tools/gen_official_keys.py not available")
    res = subprocess.run([sys.executable, tool, "--only", "hyperseg", "--compare", "--out",
                          str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    diffs = [float(line.rsplit(":", 1)[1]) for line in res.stdout.splitlines() if "difference" in line]
    assert len(diffs) == 5 and max(diffs) < 1e-5, res.stdout
    for name in NAMES:  # the listings it writes are the committed ones
        with gzip.open(tmp_path / f"{name}.txt.gz", "rt") as a, \
                gzip.open(os.path.join(OFFICIAL, f"{name}.txt.gz"), "rt") as b:
            assert a.read() == b.read(), name
