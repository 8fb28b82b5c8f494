"""fastvision.models: model registry and torchvision-style builders.

``get_model(name, **kwargs)`` builds a registered model; ``list_models()`` lists the names.
Every builder takes ``weights=`` (``None`` or a local checkpoint path: a state dict, or a dict
holding one under ``"state_dict"`` / ``"model_state_dict"`` / ``"model"``) loaded with
``strict=True``. Official pretrained weights cannot be downloaded here.
``convert_official_state_dict(name, sd, scope=...)`` turns the variables of an official TF
checkpoint (S-NET / SampleNet classification code) into a state dict for these models.

Registered (point-cloud sampling papers):

* ``pointnet_cls``: TF PointNet classifier of S-NET/SampleNet with input and feature T-nets
  (3,480,049 params at 40 classes); ``pointnet_cls_vanilla``: without T-nets (819,624).
* ``snet``: S-NET generator (``num_out_points``, ``bottleneck_size=128``, ``output_bn=True``).
* ``progressivenet``: the same generator producing 1024 ordered points by default.
* ``samplenet``: SampleNet in the official PyTorch layout (225,121 params at k = 32 incl. the
  temperature), soft projection by ``fastvision.ops.soft_project``, matching by ``nn_match``.

Registered (HRNet, BiSeNet V2; official layouts, state dicts key for key, see ``hrnet.py`` and
``bisenetv2.py``; ``hrnet.strip_official_wrapper`` unwraps official training checkpoints):

* ``hrnetv2_w18_small_v1``, ``hrnetv2_w18_small_v2``, ``hrnetv2_w18``, ``hrnetv2_w32``,
  ``hrnetv2_w40``, ``hrnetv2_w48``: HRNetV2 segmentation, Cityscapes configs, 19 classes,
  logits at 1/4 resolution (W48 65,859,379 params; W18 9,641,119; Small-v1 1,540,819).
* ``hrnetv1_w32_pose`` (28,536,113), ``hrnetv1_w48_pose``: HRNetV1 pose, 17 joint heatmaps at
  1/4 resolution; targets, loss and decoding in ``fastvision.data.pose_targets``.
* ``hrnetv2p_w18`` .. ``hrnetv2p_w48``: HRNetV2p backbone + HRFPN, an ``OrderedDict`` of five
  256-channel levels, a torchvision detection ``backbone``.
* ``bisenetv2``: BiSeNet V2 (CoinCheung code), ``aux_mode`` "train" (4 booster heads, 5,231,487
  params) / "eval" (3,358,627) / "pred".

Registered (HyperSeg, official ``YuvalNirkin/hyperseg`` layouts, see ``hyperseg.py``; official
checkpoints, ``{"state_dict": ...}``, load directly with ``weights=``):

* ``hyperseg_m_cityscapes`` (10,311,214 params), ``hyperseg_s_cityscapes`` (10,041,398),
  ``hyperseg_s_camvid`` (9,949,064 at 12 classes), ``hyperseg_l_camvid`` (9,969,104),
  ``hyperseg_l_voc`` (39,680,458 at 21 classes; 48,959,130 with ``weight_groups=1``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._registry import finish, get_model, list_models, load_weights, register_model
from .pointnet import PointNetCls, PointNetClsVanilla, TransformNet, pointnet_cls_loss
from .snet import SampleNet, SNet, SoftProjection

# Other model families register their builders (with register_model) when imported here.
from . import bisenetv2, hrnet  # noqa: F401
from . import padnet  # noqa: F401
from . import hyperseg  # noqa: F401

__all__ = [
    "get_model",
    "list_models",
    "register_model",
    "load_weights",
    "convert_official_state_dict",
    "PointNetCls",
    "PointNetClsVanilla",
    "TransformNet",
    "SNet",
    "SampleNet",
    "SoftProjection",
    "pointnet_cls_loss",
    "pointnet_cls",
    "pointnet_cls_vanilla",
    "snet",
    "progressivenet",
    "samplenet",
    "samplenet_progressive",
]

_TF_MODELS = ("pointnet_cls", "pointnet_cls_vanilla", "snet", "progressivenet")
_TF_SKIP_SUFFIXES = ("/Adam", "/Adam_1", "/Momentum")


def convert_official_state_dict(name: str, sd, *, scope: str = "", **model_kwargs) -> dict:
    """Convert an official checkpoint's variables to this package's ``state_dict`` for ``name``.

    * ``samplenet``: the official PyTorch state dict already has the same keys; returned as is.
    * ``hrnet*``: the official keys are ours; the training wrappers are removed
      (:func:`fastvision.models.hrnet.strip_official_wrapper`: ``model.``/``loss.`` of the
      segmentation ``FullModel``, the mmdetection detector around ``backbone.``/``neck.``).
    * ``bisenetv2``: same keys; with ``aux_mode="eval"`` (or ``"pred"``) the booster heads of
      a training checkpoint are dropped.
    * ``hyperseg_*``: the official keys are ours (coordinate-grid buffers included); ``sd`` may
      be the state dict or the official checkpoint ``{"state_dict": ..., "arch": ...}``.
    * ``pointnet_cls``, ``pointnet_cls_vanilla``, ``snet``, ``progressivenet``: ``sd`` maps the
      official TensorFlow variable names (e.g. from ``tf.train.load_checkpoint(path)``:
      ``{n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}``) to arrays.
      ``scope`` is the variable scope the network was built in (e.g. ``"sampler"``); variables
      outside it, optimizer slots and counters are ignored. Conv kernels ``[1, kw, cin, cout]``
      become Conv1d weights, FC ``[in, out]`` are transposed, ``bn/beta``/``bn/gamma`` are the BN
      bias/weight, the BN ``ExponentialMovingAverage`` of ``moments/Squeeze`` (``Squeeze_1``) the
      running mean (variance); the T-nets' constant identity is added to ``transform_XYZ`` /
      ``transform_feat`` biases. ``model_kwargs`` (``num_classes``, ``num_out_points``, ...) size
      the model; a missing variable or a shape mismatch raises ``KeyError``/``ValueError``.
    """
    if name in ("samplenet", "samplenet_progressive"):
        return dict(sd)
    if name.startswith(("hrnetv1_", "hrnetv2_", "hrnetv2p_")):
        from .hrnet import strip_official_wrapper

        return strip_official_wrapper(sd)
    if name.startswith("hyperseg_"):
        inner = sd.get("state_dict") if isinstance(sd, dict) else None
        return dict(inner if isinstance(inner, dict) else sd)
    if name == "bisenetv2":
        from .bisenetv2 import drop_booster_heads

        return drop_booster_heads(sd) if model_kwargs.get("aux_mode", "train") != "train" else dict(sd)
    if name not in _TF_MODELS:
        raise ValueError(f"no official checkpoint conversion for {name!r}; available: "
                         f"{', '.join(_TF_MODELS)}, samplenet, hrnet*, bisenetv2, hyperseg_*")
    target = get_model(name, **model_kwargs).state_dict()
    prefix = scope.strip("/") + "/" if scope.strip("/") else ""
    out = {}
    for key, value in sd.items():
        key = key[:-2] if key.endswith(":0") else key
        if not key.startswith(prefix) or key.endswith(_TF_SKIP_SUFFIXES):
            continue
        rel = key[len(prefix):]
        t = torch.as_tensor(value).detach().clone().float()
        if "/ExponentialMovingAverage" in rel:
            layer = rel.split("/bn/", 1)[0]
            leaf = "running_var" if "/moments/Squeeze_1/" in rel else "running_mean"
            mod_path, leaf_path = layer, ("bn", leaf)
        elif "/" in rel:
            mod_path, leaf = rel.rsplit("/", 1)
            if mod_path.endswith("/bn"):
                mod_path = mod_path[:-3]
                leaf_path = ("bn", {"beta": "bias", "gamma": "weight"}.get(leaf, leaf))
            else:
                leaf_path = ({"weights": "weight", "biases": "bias"}.get(leaf, leaf),)
        else:
            continue  # global counters (batch, global_step, ...)
        if leaf_path[-1] not in ("weight", "bias", "running_mean", "running_var"):
            continue
        is_tnet_out = mod_path.endswith(("transform_XYZ", "transform_feat"))
        mod_path = mod_path.replace("transform_XYZ", "transform").replace("transform_feat", "transform")
        base = mod_path.replace("/", ".")
        if leaf_path[0] == "bn":
            cands = [f"{base}.bn.{leaf_path[1]}", f"{base}_bn.{leaf_path[1]}"]
        else:
            cands = [f"{base}.conv.{leaf_path[0]}", f"{base}.fc.{leaf_path[0]}", f"{base}.{leaf_path[0]}"]
        tkey = next((c for c in cands if c in target), None)
        if tkey is None:
            raise KeyError(f"official variable {key!r} has no counterpart in {name}")
        if leaf_path == ("weight",):
            if t.dim() == 4:  # conv2d kernel [1, kw, cin, cout] -> Conv1d (cout, kw*cin, 1)
                t = t[0].reshape(-1, t.shape[-1]).t().unsqueeze(-1)
            elif t.dim() == 2:
                t = t.t()
        if is_tnet_out and leaf_path == ("bias",):
            k = int(round(t.numel() ** 0.5))
            t = t + torch.eye(k).flatten()
        if t.shape != target[tkey].shape:
            raise ValueError(f"official variable {key!r} has shape {tuple(t.shape)}, "
                             f"{tkey} expects {tuple(target[tkey].shape)}")
        out[tkey] = t.contiguous()
    for tkey, v in target.items():
        if tkey.endswith("num_batches_tracked"):
            out[tkey] = torch.zeros_like(v)
    missing = sorted(set(target) - set(out))
    if missing:
        raise KeyError(f"official checkpoint (scope {scope!r}) lacks variables for {name}: {missing}")
    return out


@register_model()
def pointnet_cls(*, num_classes: int = 40, weights=None, dropout: float = 0.3) -> PointNetCls:
    """PointNet with input/feature T-nets, TF layout of the sampling papers (B, N, 3) input."""
    return finish(PointNetCls(num_classes=num_classes, dropout=dropout), weights)


@register_model()
def pointnet_cls_vanilla(*, num_classes: int = 40, weights=None,
                         dropout: float = 0.3) -> PointNetClsVanilla:
    """PointNet without T-nets (``pointnet_cls_basic.py``), ProgressiveNet's task network."""
    return finish(PointNetClsVanilla(num_classes=num_classes, dropout=dropout), weights)


@register_model()
def snet(*, num_out_points: int = 64, bottleneck_size: int = 128, output_bn: bool = True,
         weights=None) -> SNet:
    """S-NET generator (official default k = 64 output points)."""
    return finish(SNet(num_out_points, bottleneck_size, output_bn), weights)


@register_model()
def progressivenet(*, num_out_points: int = 1024, bottleneck_size: int = 128,
                   output_bn: bool = True, weights=None) -> SNet:
    """ProgressiveNet: the S-NET network generating 1024 ordered points (prefixes = samples)."""
    return finish(SNet(num_out_points, bottleneck_size, output_bn), weights)


@register_model()
def samplenet(*, num_out_points: int = 64, bottleneck_size: int = 128, group_size: int = 8,
              initial_temperature: float = 1.0, is_temperature_trainable: bool = True,
              min_sigma: float | None = 1e-2, input_shape: str = "bcn", output_shape: str = "bcn",
              complete_fps: bool = True, skip_projection: bool = False, output_bn: bool = False,
              weights=None) -> SampleNet:
    """SampleNet, official PyTorch port defaults (``registration/src/samplenet.py``, ``sputils.py``:
    64 output points, group size 8, min_sigma 1e-2, no BN on the last FC)."""
    return finish(SampleNet(num_out_points, bottleneck_size, group_size, initial_temperature,
                             is_temperature_trainable, min_sigma, input_shape, output_shape,
                             complete_fps, skip_projection, output_bn), weights)


@register_model()
def samplenet_progressive(*, num_out_points: int = 1024, bottleneck_size: int = 128,
                          group_size: int = 7, initial_temperature: float = 1.0,
                          min_sigma: float | None = None, input_shape: str = "bnc",
                          output_shape: str = "bnc", output_bn: bool = True,
                          weights=None) -> SampleNet:
    """SampleNet-Progressive (``train_samplenet_progressive.py``, TF classification code): the
    SampleNet network generating 1024 ordered points whose prefixes are the samples of every size;
    classification defaults (projection group 7, no sigma clamp, BN on the output FC)."""
    return finish(SampleNet(num_out_points, bottleneck_size, group_size, initial_temperature,
                            True, min_sigma, input_shape, output_shape, True, False, output_bn),
                  weights)
