"""Write the state-dict listings of mmsegmentation's Cityscapes BiSeNet V2 and HRNetV2 (FCN head)
models, built by mmsegmentation's own code from its own configs (not run in CI).

Writes ``tests/data/mmseg_state_dicts/<config>.txt.gz``: one ``key shape`` line per state-dict
entry of the whole ``EncoderDecoder`` (``backbone.*``, ``decode_head.*``, ``auxiliary_head.*``), in
state-dict order, as mmseg's training saves it under ``"state_dict"``. The tests convert a state
dict of exactly these keys and shapes with ``fastvision.models.convert_mmseg_state_dict`` and load
it into fastvision's model with ``strict=True``.

Needs mmsegmentation in a throwaway environment (never in the project's venv); what was run::

    python3 -m venv /tmp/mmseg && /tmp/mmseg/bin/pip install mmengine==0.10.7 mmcv-lite==2.1.0 \\
        mmsegmentation==1.2.2 ftfy regex     # + the same torch as the project's venv
    /tmp/mmseg/bin/python tools/gen_mmseg_keys.py [--compare]

Sources: mmsegmentation 1.2.2 as installed from the package registry (the same files as
``open-mmlab/mmsegmentation`` v1.2.2: ``mmseg/models/backbones/{bisenetv2,hrnet}.py``,
``mmseg/models/decode_heads/{fcn_head,decode_head}.py``), configs from the package's
``.mim/configs``: ``bisenetv2/bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py``,
``hrnet/fcn_hr18_4xb2-160k_cityscapes-512x1024.py``, ``hrnet/fcn_hr18s_4xb2-160k_cityscapes-512x1024.py``,
``hrnet/fcn_hr48_4xb2-160k_cityscapes-512x1024.py`` (the 40k / 80k schedules build the same model).

Shims, both documented here and nothing else changed:

* ``mmcv.ops`` is replaced by an empty module whose functions raise when called: mmcv-lite has no
  compiled ops, and mmseg imports ``mmcv.ops.point_sample`` at import time for heads and utilities
  these two models never run (the package ``mmcv`` with compiled ops needs a CUDA/C++ build of
  mmcv from source, which is not worth it for building two models);
* ``SyncBN`` in the configs is built as ``BN`` (SyncBN needs a process group; both have the same
  state-dict entries).

It also writes ``tests/data/mmseg_state_dicts/<config>.logits.pt``: mmseg's decode-head logits
(eval mode) for the input :func:`golden_input` with the weights :func:`golden_state_dict` (a
deterministic function of the listing), so that CI, without mmseg, checks that the converted
weights give mmseg's outputs (which a key-and-shape test cannot: BiSeNet V2's two BGA branches
have the same shapes).

With ``--compare`` (fastvision importable) it also converts each randomly initialised mmseg model
(BN statistics and affine parameters randomised) and reports the largest difference between
mmseg's logits (decode head, resized to the input size as ``EncoderDecoder`` does) and
fastvision's on random 64x128 inputs in eval mode. ``tests/test_models_mmseg.py`` runs the same
comparison when mmseg is importable.
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import sys
import types
import zlib
from pathlib import Path

import torch
import torch.nn as nn

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "mmseg_state_dicts"

# listing name -> (mmseg config under .mim/configs, fastvision model, its kwargs)
CONFIGS = {
    "bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024": (
        "bisenetv2/bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py", "bisenetv2",
        {"aux_mode": "eval", "bga": "mmseg"}),
    "fcn_hr18_4xb2-160k_cityscapes-512x1024": (
        "hrnet/fcn_hr18_4xb2-160k_cityscapes-512x1024.py", "hrnetv2_w18", {}),
    "fcn_hr18s_4xb2-160k_cityscapes-512x1024": (
        "hrnet/fcn_hr18s_4xb2-160k_cityscapes-512x1024.py", "hrnetv2_w18_small_v2", {}),
    "fcn_hr48_4xb2-160k_cityscapes-512x1024": (
        "hrnet/fcn_hr48_4xb2-160k_cityscapes-512x1024.py", "hrnetv2_w48", {}),
}


def install_shims() -> None:
    """The one import shim (see the module docstring): an ``mmcv.ops`` without compiled code."""
    if "mmcv.ops" in sys.modules:
        return
    ops = types.ModuleType("mmcv.ops")

    def missing(name):
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*args, **kwargs):
            raise RuntimeError(f"mmcv.ops.{name} is not available (mmcv-lite has no compiled ops)")
        return unavailable

    ops.__getattr__ = missing
    sys.modules["mmcv.ops"] = ops


def _sync_bn_to_bn(cfg):
    if isinstance(cfg, dict):
        return {k: ("BN" if k == "type" and v == "SyncBN" else _sync_bn_to_bn(v))
                for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_sync_bn_to_bn(v) for v in cfg)
    return cfg


def build_mmseg_model(name: str) -> nn.Module:
    """mmseg's ``EncoderDecoder`` of the listing ``name`` (randomly initialised, CPU)."""
    install_shims()
    import mmseg
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    # init_weights logs one INFO line per tensor to the current MMLogger: make a quiet one current
    if not MMLogger.check_instance_created("gen_mmseg_keys"):
        MMLogger.get_instance("gen_mmseg_keys", log_level="WARNING")
    config_dir = Path(mmseg.__file__).parent / ".mim" / "configs"
    cfg = Config.fromfile(str(config_dir / CONFIGS[name][0]))
    model_cfg = _sync_bn_to_bn(cfg.model.to_dict())
    model_cfg.pop("pretrained", None)  # an ImageNet checkpoint download
    if isinstance(model_cfg["backbone"].get("init_cfg"), dict):
        model_cfg["backbone"]["init_cfg"] = None
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def read_listing(path) -> list:
    """``[(key, shape), ...]`` of a listing file."""
    with gzip.open(path, "rt") as f:
        rows = [line.rstrip("\n").split(" ") for line in f]
    return [(key, tuple(int(s) for s in shape.split(",") if s)) for key, shape in rows]


def golden_state_dict(rows) -> dict:
    """Deterministic weights for a listing: each tensor drawn from a generator seeded by its key
    (fan-in scaled conv weights, BN statistics and affine parameters away from the identity)."""
    out = {}
    for key, shape in rows:
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            out[key] = torch.tensor(0)
        elif leaf == "running_var":
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) == 4:
            fan_in = math.prod(shape[1:])
            out[key] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        elif leaf == "weight":  # BN gamma
            out[key] = torch.rand(shape, generator=g) + 0.5
        else:  # biases, BN beta and running_mean
            out[key] = (torch.rand(shape, generator=g) - 0.5) * 0.4
    return out


def golden_input() -> torch.Tensor:
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(19))


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
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.uniform_(-0.2, 0.2)


def mmseg_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The decode head's logits resized to the input, as ``EncoderDecoder.encode_decode``."""
    from mmseg.models.utils import resize

    out = model.decode_head(model.extract_feat(x))
    return resize(out, size=x.shape[2:], mode="bilinear", align_corners=False)


def compare_outputs(name: str, model: nn.Module, size=(64, 128)) -> float:
    """Largest |mmseg - fastvision| over the logits (fastvision's HRNet logits at 1/4 resolution
    are resized to the input as mmseg does)."""
    import torch.nn.functional as F

    from fastvision.models import convert_mmseg_state_dict, get_model

    _, ours_name, kwargs = CONFIGS[name]
    randomize_bn(model)
    model.eval()
    ours = get_model(ours_name, **kwargs).eval()
    ours.load_state_dict(convert_mmseg_state_dict(ours_name, model.state_dict(), **kwargs),
                         strict=True)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        a = mmseg_logits(model, x)
        b = ours(x)
        if b.shape[-2:] != x.shape[-2:]:
            b = F.interpolate(b, size=x.shape[-2:], mode="bilinear", align_corners=False)
    if a.shape != b.shape:
        raise AssertionError(f"{name}: output shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a - b).abs().max()), float(a.abs().max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--compare", action="store_true",
                    help="also compare outputs with fastvision's converted models")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for name in CONFIGS:
        model = build_mmseg_model(name)
        path = args.out / f"{name}.txt.gz"
        # mtime=0 and no file name: the same model gives the same bytes on every run.
        with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                    mtime=0) as f:
            f.write(listing(model).encode())
        n = sum(p.numel() for p in model.parameters())
        print(f"{name}: {n} params, {len(model.state_dict())} keys -> {os.path.relpath(path)}")
        model.load_state_dict(golden_state_dict(read_listing(path)), strict=True)
        model.eval()
        with torch.no_grad():
            logits = model.decode_head(model.extract_feat(golden_input()))
        torch.save(logits.contiguous(), args.out / f"{name}.logits.pt")
        if args.compare:
            diff, scale = compare_outputs(name, model)
            print(f"  max |mmseg - fastvision| logits: {diff:.3g} (largest |logit| {scale:.3g})")


if __name__ == "__main__":
    main()
