"""fastvision.models: model registry and torchvision-style builders.

``get_model(name, **kwargs)`` builds a registered model; ``list_models()`` lists the names.
Every builder takes ``weights=``: ``None``, the name of shipped weights (``get_model("padnet",
weights="embedded")``; ``list_weights()`` lists them, ``get_weights(name)`` gives their recipe,
data, metrics and license; table in :mod:`fastvision.models.weights`, safetensors files checked
by sha256) or a local checkpoint path in any format that :mod:`fastvision.models.checkpoint`
reads (safetensors, ``.pt`` / ``.pth``), loaded with ``strict=True``; ``load_model(name or path)``
rebuilds the model of shipped weights, a training checkpoint or a fastvision safetensors file.
Official pretrained weights cannot be downloaded here. ``convert_official_state_dict(name, sd,
**kwargs)`` converts an official checkpoint by the converter registered beside the model (TF
variables of the sampling papers in ``pointnet.py``; HRNet's training wrappers in ``hrnet.py``;
BiSeNet V2's booster heads in ``bisenetv2.py``; HyperSeg's ``{"state_dict", "arch"}`` in
``hyperseg.py``); ``convert_mmseg_state_dict(name, sd, **kwargs)`` converts mmsegmentation's
Cityscapes BiSeNet V2 and HRNetV2 (FCN head) checkpoints (converters beside the models).

Registered (point-cloud sampling papers, ``pointnet.py``, ``snet.py``):

* ``pointnet_cls``: TF PointNet classifier of S-NET/SampleNet with input and feature T-nets
  (3,480,049 params at 40 classes); ``pointnet_cls_vanilla``: without T-nets (819,624).
* ``snet``: S-NET generator (``num_out_points``, ``bottleneck_size=128``, ``output_bn=True``).
* ``progressivenet``: the same generator producing 1024 ordered points by default.
* ``samplenet``: SampleNet in the official PyTorch layout (225,121 params at k = 32 incl. the
  temperature), soft projection by ``fastvision.ops.soft_project``, matching by ``nn_match``;
  ``samplenet_progressive``: the TF classification settings, 1024 ordered points.

Registered (HRNet, BiSeNet V2; official layouts, state dicts key for key, see ``hrnet.py`` and
``bisenetv2.py``):

* ``hrnetv2_w18_small_v1``, ``hrnetv2_w18_small_v2``, ``hrnetv2_w18``, ``hrnetv2_w32``,
  ``hrnetv2_w40``, ``hrnetv2_w48``: HRNetV2 segmentation, Cityscapes configs, 19 classes,
  logits at 1/4 resolution (W48 65,859,379 params; W18 9,641,119; Small-v1 1,540,819).
* ``hrnetv1_w32_pose`` (28,536,113), ``hrnetv1_w48_pose``: HRNetV1 pose, 17 joint heatmaps at
  1/4 resolution; targets in ``fastvision.data.pose_targets``, loss in
  ``fastvision.losses.pose``, decoding in ``fastvision.metrics.pose``.
* ``hrnetv2p_w18`` .. ``hrnetv2p_w48``: HRNetV2p backbone + HRFPN, an ``OrderedDict`` of five
  256-channel levels, a torchvision detection ``backbone``.
* ``bisenetv2``: BiSeNet V2 (CoinCheung code), ``aux_mode`` "train" (4 booster heads, 5,231,487
  params) / "eval" (3,358,627) / "pred".

Registered (HyperSeg, official ``YuvalNirkin/hyperseg`` layouts, see ``hyperseg.py``):

* ``hyperseg_m_cityscapes`` (10,311,214 params), ``hyperseg_s_cityscapes`` (10,041,398),
  ``hyperseg_s_camvid`` (9,949,064 at 12 classes), ``hyperseg_l_camvid`` (9,969,104),
  ``hyperseg_l_voc`` (39,680,458 at 21 classes; 48,959,130 with ``weight_groups=1``).

Registered (PAD-Net, no public code: the paper's counts, see ``padnet.py``; MobileNet blocks in
``fastvision.nn.mobilenet``):

* ``padnet``, ``padnet_x2``, ``padnet_x4`` (5,765 / 15,669 / 51,605 params), the fused encoder op
  in eval mode; ``padnet_teacher``: MobileNetV3-Small + LW-RefineNet, the distillation teacher.
* ``mv3_6bn``, ``mv3_11bn``, ``mv2_4bn``, ``mv2_7bn``: Table 2's comparison encoders with
  PAD-Net's decoder; ``unet`` (``unet.py``): Table 6's U-Net baseline (8,577 params).
"""

from __future__ import annotations

from ._registry import (convert_mmseg_state_dict, convert_official_state_dict, get_model, list_models,
                        register_model)
from .checkpoint import load_model, load_weights, read_checkpoint, write_safetensors
from .weights import WeightsEntry, get_weights, list_weights
from .pointnet import (PointNetCls, PointNetClsVanilla, TransformNet, pointnet_cls, pointnet_cls_loss,
                       pointnet_cls_vanilla)
from .snet import SampleNet, SNet, SoftProjection, progressivenet, samplenet, samplenet_progressive, snet

# The other model families register their builders (with register_model) when imported here.
from . import bisenetv2, hrnet  # noqa: F401
from . import padnet, unet  # noqa: F401
from . import hyperseg  # noqa: F401

__all__ = [
    "get_model",
    "list_models",
    "register_model",
    "load_weights",
    "load_model",
    "read_checkpoint",
    "write_safetensors",
    "list_weights",
    "get_weights",
    "WeightsEntry",
    "convert_official_state_dict",
    "convert_mmseg_state_dict",
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
