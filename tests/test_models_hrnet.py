"""fastvision.models.hrnet: HRNetV2 segmentation, HRNetV1 pose, HRNetV2p detection backbone."""

import copy
import functools
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from helpers import listing, n_params, official_listing
from fastvision.models import get_model, list_models
from fastvision.models.hrnet import (
    HighResolutionModule,
    HRNetV1Pose,
    HRNetV2p,
    HRNetV2Seg,
    strip_official_wrapper,
)


# Parameter counts of the official models (tools/gen_official_keys.py builds them from the
# official code; seg at 19 classes, pose at 17 joints, detection = backbone + HRFPN(256)).
OFFICIAL_PARAMS = {
    "hrnetv2_w18_small_v1": 1_540_819,
    "hrnetv2_w18_small_v2": 3_939_579,
    "hrnetv2_w18": 9_641_119,
    "hrnetv2_w32": 29_546_515,
    "hrnetv2_w40": 45_894_435,
    "hrnetv2_w48": 65_859_379,
    "hrnetv1_w32_pose": 28_536_113,
    "hrnetv1_w48_pose": 63_595_745,
    "hrnetv2p_w18": 12_582_036,
    "hrnetv2p_w32": 32_379_072,
    "hrnetv2p_w40": 48_625_472,
    "hrnetv2p_w48": 68_460_096,
}


def meta_model(name, **kwargs):
    # Shapes and counts only: the meta device skips allocation and initialisation.
    with torch.device("meta"):
        return get_model(name, **kwargs)


@functools.lru_cache(maxsize=None)
def shared_meta_model(name):
    """One meta build per variant for the tests that only read it."""
    return meta_model(name).eval()


def calibrated(model, x):
    """``model`` in eval mode with the BN statistics of batch ``x``. With the official
    N(0, 0.001) init and unit running variances, eval-mode activations of the segmentation and
    pose models shrink into float denormals, which are very slow on CPU."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    for bn in bns:
        bn.momentum = 0.1
    return model.eval()


# Real computation runs on the small configurations (the pose and detection classes take any
# HRNet configuration); the registered big variants are checked on the meta device.
@pytest.fixture(scope="module")
def small_v1():
    return calibrated(get_model("hrnetv2_w18_small_v1"), torch.randn(2, 3, 64, 64))


@pytest.fixture(scope="module")
def pose_small():
    return calibrated(HRNetV1Pose("w18_small_v1"), torch.randn(2, 3, 64, 64))


@pytest.fixture(scope="module")
def det_small():
    return HRNetV2p("w18_small_v1").eval()


def test_registered():
    assert set(OFFICIAL_PARAMS) <= set(list_models())


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_param_count_matches_official(name):
    assert n_params(shared_meta_model(name)) == OFFICIAL_PARAMS[name]


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_state_dict_matches_official_key_for_key(name):
    ours, official = listing(shared_meta_model(name)), official_listing(name)
    assert [k for k, _ in ours] == [k for k, _ in official]
    assert ours == official


def test_real_model_state_dict_matches_meta_build():
    # The meta-device builds above stand for the real ones.
    w48 = get_model("hrnetv2_w48")
    assert listing(w48) == official_listing("hrnetv2_w48")
    assert n_params(w48) == OFFICIAL_PARAMS["hrnetv2_w48"]


def test_class_count_options():
    m = meta_model("hrnetv2_w18_small_v1", num_classes=7)
    assert m.last_layer[-1].out_channels == 7
    # the head is the only place the class count enters: 271 weights + bias per class
    assert n_params(m) == OFFICIAL_PARAMS["hrnetv2_w18_small_v1"] - 12 * (240 + 1)
    p = meta_model("hrnetv1_w32_pose", num_joints=16)
    assert p.final_layer.out_channels == 16
    assert n_params(p) == OFFICIAL_PARAMS["hrnetv1_w32_pose"] - (32 + 1)


def test_seg_logits_at_quarter_resolution(small_v1):
    with torch.no_grad():
        # one input shape for every real forward here: oneDNN builds its kernels per shape
        assert small_v1(torch.randn(2, 3, 64, 64)).shape == (2, 19, 16, 16)
    # Shapes of the big models on the meta device (no compute). Sizes are matched by target
    # size, as in the official code, so any image size runs.
    m = shared_meta_model("hrnetv2_w48")
    assert m(torch.empty(2, 3, 64, 128, device="meta")).shape == (2, 19, 16, 32)
    assert m(torch.empty(1, 3, 70, 90, device="meta")).shape == (1, 19, 18, 23)


def test_seg_head_input_is_concat_of_four_branches(small_v1):
    # 15W channels for width W = 16 (Small-v1: 16 + 32 + 64 + 128 = 240)
    assert small_v1.last_layer[0].in_channels == 240
    assert small_v1.out_channels == [16, 32, 64, 128]


def test_eval_determinism_and_batch_independence(small_v1):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = small_v1(x), small_v1(x)
        swapped = small_v1(x.flip(0))
    assert torch.equal(a, b)
    torch.testing.assert_close(swapped, a.flip(0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["hrnetv1_w32_pose", "hrnetv1_w48_pose"])
@pytest.mark.parametrize("size", [(256, 192), (384, 288)])
def test_pose_heatmap_shapes(name, size):
    y = shared_meta_model(name)(torch.empty(1, 3, *size, device="meta"))
    assert y.shape == (1, 17, size[0] // 4, size[1] // 4)


def test_pose_forward(pose_small):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = pose_small(x)
        assert torch.equal(y, pose_small(x))
    assert y.shape == (2, 17, 16, 16) and torch.isfinite(y).all()


def test_pose_last_module_fuses_only_branch0():
    m = shared_meta_model("hrnetv1_w32_pose")
    assert len(m.stage4) == 3 and len(m.stage4[-1].fuse_layers) == 1
    assert all(len(module.fuse_layers) == 4 for module in m.stage4[:-1])
    assert m.final_layer.in_channels == 32 and m.final_layer.kernel_size == (1, 1)


def test_detection_levels(det_small):
    assert det_small.out_channels == 256
    with torch.no_grad():
        out = det_small(torch.randn(2, 3, 64, 64))
    assert isinstance(out, OrderedDict)
    assert list(out) == ["0", "1", "2", "3", "pool"]
    for level, stride in zip(out.values(), (4, 8, 16, 32, 64)):
        assert level.shape == (2, 256, 64 // stride, 64 // stride)
    for name in ("hrnetv2p_w18", "hrnetv2p_w48"):
        meta = shared_meta_model(name)(torch.empty(1, 3, 64, 96, device="meta"))
        assert [tuple(v.shape) for v in meta.values()] == [
            (1, 256, 64 // s, 96 // s) for s in (4, 8, 16, 32, 64)]


def test_hrfpn_levels_are_pooled_reduction():
    neck = HRNetV2p("w18_small_v1").neck.eval()
    feats = [torch.randn(1, c, 16 // 2**i, 16 // 2**i) for i, c in enumerate((16, 32, 64, 128))]
    with torch.no_grad():
        out = neck(feats)
        ups = [feats[0]] + [F.interpolate(f, scale_factor=2**i, mode="bilinear",
                                          align_corners=False) for i, f in enumerate(feats[1:], 1)]
        reduced = neck.reduction_conv(torch.cat(ups, 1))
        for i, level in enumerate(out):
            pooled = F.avg_pool2d(reduced, 2**i) if i else reduced
            torch.testing.assert_close(level, neck.fpn_conv[i](pooled))


def test_detection_out_channels_option():
    m = meta_model("hrnetv2p_w48", out_channels=128)
    assert m.out_channels == 128
    assert m(torch.empty(1, 3, 64, 64, device="meta"))["pool"].shape == (1, 128, 1, 1)


def test_detection_norm_eval_keeps_batchnorm_frozen():
    m = meta_model("hrnetv2p_w18").train()
    bns = [x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns) and m.neck.training
    m2 = meta_model("hrnetv2p_w18", norm_eval=False).train()
    assert all(x.training for x in m2.modules())


@pytest.mark.parametrize("name,mode", [
    ("hrnetv2_w48", "bilinear"), ("hrnetv2_w18_small_v1", "bilinear"),
    ("hrnetv1_w32_pose", "nearest"), ("hrnetv2p_w32", "nearest")])
def test_fuse_upsampling_mode_per_variant(name, mode):
    hr_modules = [x for x in shared_meta_model(name).modules()
                  if isinstance(x, HighResolutionModule)]
    assert hr_modules and {(x.upsample_mode, x.align_corners) for x in hr_modules} == {
        (mode, False if mode == "bilinear" else None)}


@pytest.mark.parametrize("mode,align", [("bilinear", False), ("nearest", None)])
def test_high_resolution_module_fusion(mode, align):
    torch.manual_seed(0)
    m = HighResolutionModule([1, 1, 1], [4, 8, 16], [4, 8, 16], upsample_mode=mode).eval()
    x = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4), torch.randn(2, 16, 2, 2)]
    with torch.no_grad():
        out = m(list(x))
        b = [branch(t) for branch, t in zip(m.branches, x)]
        f = m.fuse_layers

        def up(t, size):
            return F.interpolate(t, size=size, mode=mode, align_corners=align)

        expect0 = b[0] + up(f[0][1](b[1]), (8, 8)) + up(f[0][2](b[2]), (8, 8))
        expect1 = f[1][0](b[0]) + b[1] + up(f[1][2](b[2]), (4, 4))
        # j < i: a chain of two stride-2 convs, ReLU between them only
        down = f[2][0][1](torch.relu(f[2][0][0](b[0])))
        assert isinstance(f[2][0][0][-1], torch.nn.ReLU) and len(f[2][0][1]) == 2
        expect2 = down + f[2][1](b[1]) + b[2]
    for o, e in zip(out, (expect0, expect1, expect2)):
        torch.testing.assert_close(o, torch.relu(e))


def test_all_parameters_receive_gradients(small_v1):
    m = copy.deepcopy(small_v1).train()
    m(torch.randn(2, 3, 64, 64)).square().mean().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_weights_roundtrip(tmp_path, small_v1):
    path = tmp_path / "hrnet.pt"
    torch.save(small_v1.state_dict(), path)
    loaded = get_model("hrnetv2_w18_small_v1", weights=str(path)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), small_v1(x))


def test_official_checkpoint_wrappers_are_stripped(small_v1, det_small):
    sd = small_v1.state_dict()
    # HRNet-Semantic-Segmentation saves FullModel(model, loss): model.* and loss.* keys
    full = {f"model.{k}": v for k, v in sd.items()}
    full["loss.criterion.weight"] = torch.ones(19)
    stripped = strip_official_wrapper(full)
    assert list(stripped) == list(sd)
    HRNetV2Seg("w18_small_v1").load_state_dict(stripped, strict=True)
    # mmdetection saves the whole detector
    det_sd = det_small.state_dict()
    detector = dict(det_sd, **{"rpn_head.rpn_conv.weight": torch.zeros(1),
                               "bbox_head.fc_cls.weight": torch.zeros(1)})
    HRNetV2p("w18_small_v1").load_state_dict(strip_official_wrapper(detector), strict=True)
    # plain (pose) state dicts pass through
    assert strip_official_wrapper(sd).keys() == sd.keys()


@pytest.mark.parametrize("fixture", ["small_v1", "pose_small", "det_small"])
def test_wrong_channel_count_raises(request, fixture):
    model = request.getfixturevalue(fixture)
    with pytest.raises(ValueError, match=r"x must be .*\(1, 4, 64, 64\)"):
        model(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r"x must be .*\(3, 64, 64\)"):
        model(torch.randn(3, 64, 64))


@pytest.mark.parametrize("fixture", ["pose_small", "det_small"])
def test_size_not_divisible_by_32_raises(request, fixture):
    model = request.getfixturevalue(fixture)
    with pytest.raises(ValueError, match="divisible by 32, got 250x192"):
        model(torch.randn(1, 3, 250, 192))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="num_classes must be at least 1, got 0"):
        get_model("hrnetv2_w18_small_v1", num_classes=0)
    with pytest.raises(ValueError, match="num_joints must be at least 1, got 0"):
        get_model("hrnetv1_w32_pose", num_joints=0)
    with pytest.raises(ValueError, match="upsample_mode"):
        HighResolutionModule([1], [4], [4], upsample_mode="bicubic")


def test_plugs_into_torchvision_faster_rcnn():
    tv = pytest.importorskip(
        "torchvision", reason="torchvision is not installed (not a fastvision dependency)")
    det = tv.models.detection.FasterRCNN(get_model("hrnetv2p_w18"), num_classes=3,
                                         min_size=128, max_size=160)
    det.eval()
    with torch.no_grad():
        out = det([torch.rand(3, 120, 150)])
    assert set(out[0]) == {"boxes", "labels", "scores"}
