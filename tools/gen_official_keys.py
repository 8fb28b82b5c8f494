"""Write the state-dict key listings of the official HRNet, BiSeNetV2 and HyperSeg models.

Builds the official model classes from the official repositories (CPU torch, no weights) and
writes ``tests/data/official_state_dicts/<model>.txt.gz``: one ``key shape`` line per state-dict
entry, in state-dict order (``shape`` comma-separated, empty for a scalar). The tests compare
fastvision's ``state_dict()`` against these files. Also prints each model's parameter count.

Sources (bare git directories as brought by the session's ``fetch`` tool; pass others with the
``--*-git`` options), files read at these commits:

* HRNet/HRNet-Semantic-Segmentation @ 0bbb2880446ddff2d78f8dd7e8c4c610151d5a51 (branch HRNet-OCR):
  ``lib/models/seg_hrnet.py``, ``lib/models/bn_helper.py``; configs from
  ``experiments/cityscapes/seg_hrnet_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml`` and
  (branch pytorch-v1.1 @ 88419ab) ``seg_hrnet_w18_small_v1/v2_512x1024_...yaml``; W18/W32/W40
  are the W48 config with the other widths (the repository has no Cityscapes config for them).
* HRNet/HRNet-Human-Pose-Estimation @ 00d7bf72f56382165e504b10ff0dddb82dca6fd2:
  ``lib/models/pose_hrnet.py``; ``experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml`` (W48:
  ``w48_256x192_adam_lr1e-3.yaml``).
* HRNet/HRNet-Object-Detection @ 34937519af50e3e6d1c9c9001e963e7d4bcf1ea2:
  ``mmdet/models/backbones/hrnet.py``, ``mmdet/models/necks/hrfpn.py``;
  ``configs/hrnet/faster_rcnn_hrnetv2p_w{18,32,40}_1x.py`` (W48: the same with widths 48..384).
  Keys are those of the detector's ``backbone`` and ``neck`` attributes.
* CoinCheung/BiSeNet @ 6b4b67a8e3eb0cc23b3d7a94843a7c3c11dedca8: ``lib/models/bisenetv2.py``,
  ``BiSeNetV2(19, aux_mode='train')`` (with the four booster heads) and ``aux_mode='eval'``.
* YuvalNirkin/hyperseg @ aedc58029893d2cdd2279fe95ef0e580ad843e9c: ``hyperseg/models/
  hyperseg_v1_0.py``, ``hyperseg_v1_0_unify.py``, ``hyperseg_v0_1.py``, ``layers/*.py``,
  ``backbones/efficientnet*.py``, ``utils/obj_factory.py``; the model arguments of
  ``configs/train/{cityscapes_efficientnet_b1_hyperseg-m,cityscapes_efficientnet_b1_hyperseg-s,
  camvid_efficientnet_b1_hyperseg-s,camvid_efficientnet_b1_hyperseg-l,
  vocsbd_efficientnet_b3_hyperseg-l}.py`` (``pretrained=False``), with the class counts
  ``train.py`` passes (``len(dataset.classes)``: Cityscapes 19, CamVid 12 incl. ``Void``, VOC 21).

Shims, so that the official files import unchanged: the stage configs are written out below
(the yacs/mmcv config objects are replaced by a dict with attribute access); ``numpy.int`` is
restored for ``seg_hrnet.py``; ``mmcv``'s init helpers and mmdet's registries are stubbed;
``BiSeNetV2.load_pretrain`` (which downloads ImageNet weights) is disabled; HyperSeg's
``hyperseg/utils/utils.py`` (which imports ``ffmpeg``) is replaced by the one function the
backbone imports from it (``init_weights``, unused when building).

With ``--compare`` (needs fastvision installed) it also loads each official model's (randomly
initialised, BN statistics randomised) state dict into the fastvision model with ``strict=True``
and reports the largest output difference of the two in eval mode on a random 64x64 image
(HyperSeg: 128x256, a size the official code runs at; the official v1_0 needs multiples of 64,
v0_1 of 128).

Usage: python tools/gen_official_keys.py [--out tests/data/official_state_dicts] [--compare]
       [--only seg|pose|det|bisenet|hyperseg]
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import os
import subprocess
import sys
import tempfile
import types

import numpy as np
import torch
import torch.nn as nn

MIRROR = "/work/.mirror"
HYPERSEG_GIT = f"{MIRROR}/YuvalNirkin+hyperseg/repo"
HYPERSEG_COMMIT = "aedc58029893d2cdd2279fe95ef0e580ad843e9c"
SEG_GIT = f"{MIRROR}/HRNet+HRNet-Semantic-Segmentation/repo"
SEG_COMMIT = "0bbb2880446ddff2d78f8dd7e8c4c610151d5a51"
POSE_GIT = f"{MIRROR}/HRNet+HRNet-Human-Pose-Estimation/repo"
POSE_COMMIT = "00d7bf72f56382165e504b10ff0dddb82dca6fd2"
DET_GIT = f"{MIRROR}/HRNet+HRNet-Object-Detection/repo/.git"
DET_COMMIT = "34937519af50e3e6d1c9c9001e963e7d4bcf1ea2"
BISENET_GIT = f"{MIRROR}/CoinCheung+BiSeNet/repo"
BISENET_COMMIT = "6b4b67a8e3eb0cc23b3d7a94843a7c3c11dedca8"


class AttrDict(dict):
    """The part of yacs' CfgNode the official model code uses: items as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _wrap(obj):
    if isinstance(obj, dict):
        return AttrDict({k: _wrap(v) for k, v in obj.items()})
    return obj


def git_show(git_dir: str, commit: str, path: str) -> str:
    return subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{commit}:{path}"],
                          check=True, capture_output=True, text=True).stdout


def write_package(root: str, files: dict) -> None:
    """files: relative path -> text; every folder on the way gets an ``__init__.py``."""
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        d = os.path.dirname(rel)
        while d:
            init = os.path.join(root, d, "__init__.py")
            if not os.path.exists(init):
                open(init, "w").close()
            d = os.path.dirname(d)
        with open(path, "w") as f:
            f.write(text)


def stage(n_branches, n_modules, blocks, channels, block="BASIC"):
    return {"NUM_MODULES": n_modules, "NUM_BRANCHES": n_branches, "BLOCK": block,
            "NUM_BLOCKS": [blocks] * n_branches, "NUM_CHANNELS": list(channels[:n_branches]),
            "FUSE_METHOD": "SUM"}


def hrnet_extra(width_cfg):
    """Stage configs (upper-case keys, as in the yaml files) of a named HRNet configuration."""
    if width_cfg == "w18_small_v1":
        c, s1, mods, blocks = (16, 32, 64, 128), (1, 32), (1, 1, 1), 2
    elif width_cfg == "w18_small_v2":
        c, s1, mods, blocks = (18, 36, 72, 144), (2, 64), (1, 3, 2), 2
    else:
        w = int(width_cfg[1:])
        c, s1, mods, blocks = (w, 2 * w, 4 * w, 8 * w), (4, 64), (1, 4, 3), 4
    return {
        "FINAL_CONV_KERNEL": 1,
        "STAGE1": {"NUM_MODULES": 1, "NUM_BRANCHES": 1, "BLOCK": "BOTTLENECK",
                   "NUM_BLOCKS": [s1[0]], "NUM_CHANNELS": [s1[1]], "FUSE_METHOD": "SUM"},
        "STAGE2": stage(2, mods[0], blocks, c),
        "STAGE3": stage(3, mods[1], blocks, c),
        "STAGE4": stage(4, mods[2], blocks, c),
    }


def lower_keys(d):
    return {k.lower(): (lower_keys(v) if isinstance(v, dict) else v) for k, v in d.items()}


def seg_models(tmp):
    write_package(tmp, {
        "official_seg/seg_hrnet.py": git_show(SEG_GIT, SEG_COMMIT, "lib/models/seg_hrnet.py"),
        "official_seg/bn_helper.py": git_show(SEG_GIT, SEG_COMMIT, "lib/models/bn_helper.py"),
    })
    if not hasattr(np, "int"):
        np.int = int  # removed from numpy 1.24; seg_hrnet.py uses it for the head width
    mod = importlib.import_module("official_seg.seg_hrnet")
    for cfg in ("w18_small_v1", "w18_small_v2", "w18", "w32", "w40", "w48"):
        config = _wrap({"MODEL": {"EXTRA": hrnet_extra(cfg), "ALIGN_CORNERS": False},
                        "DATASET": {"NUM_CLASSES": 19}})
        yield f"hrnetv2_{cfg}", mod.HighResolutionNet(config)


def pose_models(tmp):
    write_package(tmp, {
        "official_pose/pose_hrnet.py": git_show(POSE_GIT, POSE_COMMIT, "lib/models/pose_hrnet.py"),
    })
    mod = importlib.import_module("official_pose.pose_hrnet")
    for w in (32, 48):
        extra = hrnet_extra(f"w{w}")
        del extra["STAGE1"]  # the pose code hard-codes layer1 (4 Bottlenecks of 64 planes)
        extra["PRETRAINED_LAYERS"] = ["*"]
        config = _wrap({"MODEL": {"EXTRA": extra, "NUM_JOINTS": 17}})
        yield f"hrnetv1_w{w}_pose", mod.PoseHighResolutionNet(config)


def det_models(tmp):
    registry = (
        "class _Registry:\n"
        "    def register_module(self, cls):\n"
        "        return cls\n"
        "BACKBONES = _Registry()\nNECKS = _Registry()\n"
    )
    write_package(tmp, {
        "official_det/models/registry.py": registry,
        "official_det/models/backbones/hrnet.py":
            git_show(DET_GIT, DET_COMMIT, "mmdet/models/backbones/hrnet.py"),
        "official_det/models/necks/hrfpn.py":
            git_show(DET_GIT, DET_COMMIT, "mmdet/models/necks/hrfpn.py"),
    })
    mmcv = types.ModuleType("mmcv")
    mmcv_cnn = types.ModuleType("mmcv.cnn")
    mmcv_cnn.constant_init = mmcv_cnn.kaiming_init = lambda *a, **k: None
    mmcv_runner = types.ModuleType("mmcv.runner")
    mmcv_runner.load_checkpoint = lambda *a, **k: None
    mmcv.cnn, mmcv.runner = mmcv_cnn, mmcv_runner
    sys.modules.update({"mmcv": mmcv, "mmcv.cnn": mmcv_cnn, "mmcv.runner": mmcv_runner})
    backbone_mod = importlib.import_module("official_det.models.backbones.hrnet")
    neck_mod = importlib.import_module("official_det.models.necks.hrfpn")
    for w in (18, 32, 40, 48):
        detector = nn.Module()
        detector.backbone = backbone_mod.HighResolutionNet(lower_keys(hrnet_extra(f"w{w}")))
        detector.neck = neck_mod.HRFPN([w, 2 * w, 4 * w, 8 * w], 256)
        yield f"hrnetv2p_w{w}", detector


def bisenet_models(tmp):
    write_package(tmp, {
        "official_bisenet/bisenetv2.py":
            git_show(BISENET_GIT, BISENET_COMMIT, "lib/models/bisenetv2.py"),
    })
    mod = importlib.import_module("official_bisenet.bisenetv2")
    mod.BiSeNetV2.load_pretrain = lambda self: None  # downloads ImageNet backbone weights
    yield "bisenetv2", mod.BiSeNetV2(19, aux_mode="train")
    yield "bisenetv2_eval", mod.BiSeNetV2(19, aux_mode="eval")


# Model arguments of the official training configs (configs/train/*.py), by fastvision name.
HYPERSEG_CONFIGS = {
    "hyperseg_m_cityscapes": ("hyperseg_v1_0", dict(
        model_name="efficientnet-b1", levels=2, out_feat_scale=[1., 0.25, 0.25, 0.25, 0.25],
        kernel_sizes=[1, 1, 1, 3, 3], level_channels=[64, 32, 16, 16, 16], expand_ratio=2,
        with_out_fc=False, decoder_dropout=None, weight_groups=[32, 16, 8, 16, 4],
        decoder_groups=1, inference_hflip=True, coords_res=[(512, 512), (512, 1024)],
        num_classes=19)),
    "hyperseg_s_cityscapes": ("hyperseg_v1_0_unify", dict(
        model_name="efficientnet-b1", levels=2, out_feat_scale=[1., 0.166, 0.2, 0.25, 0.4],
        kernel_sizes=[1, 1, 1, 3, 3], level_channels=[32, 16, 8, 8, 8], expand_ratio=2,
        with_out_fc=False, decoder_dropout=None, weight_groups=[32, 16, 8, 16, 4],
        decoder_groups=1, inference_hflip=True, unify_level=4,
        coords_res=[(768, 768), (768, 1536)], num_classes=19)),
    "hyperseg_s_camvid": ("hyperseg_v1_0", dict(
        model_name="efficientnet-b1", levels=2, kernel_sizes=(1, 1, 1, 3, 3),
        level_channels=[64, 32, 16, 16, 16], expand_ratio=2, inference_hflip=True,
        with_out_fc=False, decoder_dropout=None, weight_groups=[64, 32, 32, 16, 8],
        coords_res=[(576, 576), (576, 768)], num_classes=12)),
    "hyperseg_l_camvid": ("hyperseg_v1_0", dict(
        model_name="efficientnet-b1", levels=2, kernel_sizes=(1, 1, 1, 3, 3, 3),
        level_channels=[64, 32, 16, 16, 16, 16], expand_ratio=2, inference_hflip=True,
        with_out_fc=False, decoder_dropout=None, weight_groups=[64, 32, 32, 16, 8, 8],
        coords_res=[(768, 768), (768, 1024)], num_classes=12)),
    "hyperseg_l_voc": ("hyperseg_v0_1", dict(
        model_name="efficientnet-b3", levels=3, kernel_sizes=(1, 1, 3, 3, 3, 3), expand_ratio=2,
        inference_hflip=True, with_out_fc=False, decoder_dropout=None, weight_groups=16,
        num_classes=21)),
}


def hyperseg_models(tmp):
    files = {f"hyperseg/models/{f}": git_show(HYPERSEG_GIT, HYPERSEG_COMMIT, f"hyperseg/models/{f}")
             for f in ("hyperseg_v1_0.py", "hyperseg_v1_0_unify.py", "hyperseg_v0_1.py",
                       "layers/meta_conv.py", "layers/meta_sequential.py", "layers/meta_patch.py",
                       "backbones/efficientnet.py", "backbones/efficientnet_utils.py")}
    files["hyperseg/utils/obj_factory.py"] = git_show(HYPERSEG_GIT, HYPERSEG_COMMIT,
                                                      "hyperseg/utils/obj_factory.py")
    files["hyperseg/utils/utils.py"] = "def init_weights(m, init_type='normal', gain=0.02):\n    pass\n"
    write_package(tmp, files)
    for name, (module, kwargs) in HYPERSEG_CONFIGS.items():
        mod = importlib.import_module(f"hyperseg.models.{module}")
        kwargs = {k: (list(v) if isinstance(v, list) else v) for k, v in kwargs.items()}
        model_name = kwargs.pop("model_name")
        yield name, mod.hyperseg_efficientnet(model_name, pretrained=False, **kwargs)


def listing(model: nn.Module) -> str:
    return "".join(f"{k} {','.join(str(s) for s in v.shape)}\n"
                   for k, v in model.state_dict().items())


def randomize_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, so that eval outputs test them."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def compare_outputs(name: str, official: nn.Module) -> float:
    from fastvision.models import get_model

    kwargs = {"aux_mode": "eval"} if name == "bisenetv2_eval" else {}
    ours = get_model(name.replace("_eval", ""), **kwargs)
    randomize_bn(official)
    ours.load_state_dict(official.state_dict(), strict=True)
    official.eval()
    ours.eval()
    if name.startswith("hrnetv2p"):
        official = nn.Sequential(official.backbone, official.neck)
    x = torch.randn(2, 3, 128, 256) if name.startswith("hyperseg") else torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = official(x), ours(x)
    a = list(a) if isinstance(a, (tuple, list)) else [a]
    b = list(b.values()) if isinstance(b, dict) else list(b) if isinstance(b, tuple) else [b]
    if len(a) != len(b) or any(u.shape != v.shape for u, v in zip(a, b)):
        raise AssertionError(f"{name}: output shapes differ: {[tuple(u.shape) for u in a]} vs "
                             f"{[tuple(v.shape) for v in b]}")
    return max(float((u - v).abs().max()) for u, v in zip(a, b))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data",
                                                  "official_state_dicts"))
    ap.add_argument("--compare", action="store_true",
                    help="also compare outputs with fastvision's models")
    ap.add_argument("--only", choices=("seg", "pose", "det", "bisenet", "hyperseg"),
                    help="only this family of models")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, tmp)
        families = (seg_models, pose_models, det_models, bisenet_models, hyperseg_models)
        if args.only:
            families = [f for f in families if f.__name__.startswith(args.only)]
        for family in families:
            for name, model in family(tmp):
                path = os.path.join(args.out, f"{name}.txt.gz")
                # mtime=0 and no file name: the same model gives the same bytes on every run.
                with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                            mtime=0) as f:
                    f.write(listing(model).encode())
                n = sum(p.numel() for p in model.parameters())
                print(f"{name}: {n} params, {len(model.state_dict())} keys -> {path}")
                if args.compare:
                    print(f"  max |official - fastvision| output difference: "
                          f"{compare_outputs(name, model):.3g}")


if __name__ == "__main__":
    main()
