"""HRNet (Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition",
TPAMI 2020): HRNetV1 for pose, HRNetV2 for segmentation, HRNetV2p + HRFPN for detection.

One set of building blocks serves the three variants, laid out as in the official code so that
official checkpoints load with ``strict=True`` (same module names, same ``None`` slots in the
transition and fuse ``ModuleList``s):

* stem: two 3x3 stride-2 convs 3->64->64 with BN + ReLU (stride 4);
* ``layer1``: Bottleneck blocks (x4 expansion), 1x1 conv + BN projection on the first block;
* ``transition1..3``: a 3x3 conv + BN + ReLU where an existing branch changes width, a 3x3
  stride-2 conv + BN + ReLU from the lowest-resolution branch for the new branch;
* ``stage2..4``: ``HighResolutionModule``s, BasicBlocks per branch then the multi-resolution
  fusion: for output i and input j, j > i: 1x1 conv + BN then upsampling by 2^(j-i); j < i:
  (i - j) 3x3 stride-2 convs + BN (ReLU on all but the last, the last one changing the width);
  sum, ReLU.

Differences between the three official code bases, reproduced per variant:

* fuse upsampling: bilinear (``align_corners=False`` as in the Cityscapes configs) in
  ``HRNet-Semantic-Segmentation lib/models/seg_hrnet.py``; nearest in
  ``HRNet-Human-Pose-Estimation lib/models/pose_hrnet.py`` and
  ``HRNet-Object-Detection mmdet/models/backbones/hrnet.py``. The slides describe the upsampling
  as "bilinear + 1x1"; the pose and detection code use nearest, and so do these variants.
* the pose model fuses only branch 0 in the last module of stage 4 (``multi_scale_output=False``).
* weight initialisation: segmentation N(0, 0.001) conv weights; pose N(0, 0.001) and zero conv
  biases; detection Kaiming-normal (fan_out) convs, HRFPN Kaiming-normal (a=1), zero biases.
* the pose and detection code feed every non-identity transition from the lowest-resolution
  branch; the segmentation code feeds a width-changing transition of an existing branch from that
  branch. No released configuration changes an existing branch's width, so the two agree on every
  model here; the segmentation rule is implemented.
* BN momentum is 0.1 (PyTorch convention) as on the ``HRNet-OCR`` branch of the segmentation code
  and in the pose/detection code; the older ``pytorch-v1.1`` segmentation branch used 0.01.

Official checkpoints: the segmentation and detection training scripts save the model inside a
wrapper (``model.*`` keys, the whole mmdetection detector); ``strip_official_wrapper`` returns
the entries these models load with ``strict=True``.

mmsegmentation's HRNetV2 + ``FCNHead`` segmentation checkpoints (``fcn_hr18``, ``fcn_hr18s``,
``fcn_hr48`` Cityscapes configs = ``hrnetv2_w18``, ``hrnetv2_w18_small_v2``, ``hrnetv2_w48``) load
through :func:`convert_mmseg`. Its backbone keys are the official ones under ``backbone.``; its
head, ``FCNHead(in_channels=[18, 36, 72, 144], input_transform="resize_concat", kernel_size=1,
num_convs=1, concat_input=False, dropout_ratio=-1)``, is the official ``last_layer`` (resize to
branch 0 bilinearly, concat, 1x1 conv, BN, ReLU, 1x1 ``conv_seg``) except that its first 1x1 conv
(a ConvModule with BN) has no bias: it becomes a zero bias. Outputs are the same for inputs
whose sides are multiples of 32; for other sizes mmseg's fuse layers upsample by the factor
2^(j-i) and then resize to the exact size (two bilinear steps) where the official code resizes
once. Its input normalisation is ImageNet's mean (123.675, 116.28, 103.53) / std (58.395, 57.12,
57.375) in 0..255 units on RGB, the official code's (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225)
on 0..1.

Input sizes: the segmentation model resizes by target size, so any image size works, as in the
official code; the pose and detection models upsample by fixed factors (as official) and need a
height and width divisible by 32.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import register_mmseg_converter, register_model
from .checkpoint import finish

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "HighResolutionModule",
    "HighResolutionNet",
    "HRNetV2Seg",
    "HRNetV1Pose",
    "HRFPN",
    "HRNetV2p",
    "strip_official_wrapper",
    "convert_mmseg",
]

BN_MOMENTUM = 0.1


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, relu: bool) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
              nn.BatchNorm2d(cout, momentum=BN_MOMENTUM)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, + shortcut, ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 conv-BN-ReLU, 3x3 conv-BN-ReLU (stride), 1x1 conv-BN to 4x planes, + shortcut, ReLU."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


def _residual_layer(block, inplanes: int, planes: int, num_blocks: int) -> nn.Sequential:
    """``num_blocks`` blocks; the first projects with 1x1 conv + BN when the width changes."""
    downsample = None
    if inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, kernel_size=1, bias=False),
            nn.BatchNorm2d(planes * block.expansion, momentum=BN_MOMENTUM),
        )
    layers = [block(inplanes, planes, 1, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks followed by the repeated multi-resolution fusion.

    ``upsample_mode`` is ``"bilinear"`` (segmentation, ``align_corners``) or ``"nearest"``
    (pose, detection). With ``multi_scale_output=False`` only branch 0 is produced.
    """

    def __init__(self, num_blocks: Sequence[int], in_channels: Sequence[int],
                 channels: Sequence[int], multi_scale_output: bool = True,
                 upsample_mode: str = "bilinear", align_corners: bool = False):
        super().__init__()
        if not len(num_blocks) == len(in_channels) == len(channels):
            raise ValueError(f"num_blocks {list(num_blocks)}, in_channels {list(in_channels)} and "
                             f"channels {list(channels)} must have one entry per branch")
        if upsample_mode not in ("bilinear", "nearest"):
            raise ValueError(
                f"upsample_mode must be 'bilinear' or 'nearest', got {upsample_mode!r}")
        self.num_branches = len(channels)
        self.upsample_mode = upsample_mode
        self.align_corners = align_corners if upsample_mode == "bilinear" else None
        self.branches = nn.ModuleList(
            _residual_layer(BasicBlock, cin, c, n)
            for cin, c, n in zip(in_channels, channels, num_blocks))
        self.out_channels = list(channels)
        self.fuse_layers = (self._make_fuse_layers(multi_scale_output)
                            if self.num_branches > 1 else None)
        self.relu = nn.ReLU(inplace=True)

    def _make_fuse_layers(self, multi_scale_output: bool) -> nn.ModuleList:
        c = self.out_channels
        fuse_layers = []
        for i in range(self.num_branches if multi_scale_output else 1):
            row: List[Optional[nn.Module]] = []
            for j in range(self.num_branches):
                if j > i:
                    row.append(_conv_bn(c[j], c[i], 1, 1, relu=False))
                elif j == i:
                    row.append(None)
                else:
                    steps = [_conv_bn(c[j], c[j], 3, 2, relu=True) for _ in range(i - j - 1)]
                    steps.append(_conv_bn(c[j], c[i], 3, 2, relu=False))
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(nn.ModuleList(row))
        return nn.ModuleList(fuse_layers)

    def forward(self, x: List[torch.Tensor]) -> List[torch.Tensor]:
        x = [branch(xi) for branch, xi in zip(self.branches, x)]
        if self.fuse_layers is None:
            return x
        out = []
        for i, row in enumerate(self.fuse_layers):
            # Summed in branch order, as the official code does (same rounding).
            y = None
            for j in range(self.num_branches):
                if j == i:
                    z = x[j]
                else:
                    z = row[j](x[j])
                    if j > i:
                        z = F.interpolate(z, size=x[i].shape[-2:], mode=self.upsample_mode,
                                          align_corners=self.align_corners)
                y = z if y is None else y + z
            out.append(self.relu(y))
        return out


def _make_transition(pre: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
    layers: List[Optional[nn.Module]] = []
    for i, c in enumerate(cur):
        if i < len(pre):
            layers.append(_conv_bn(pre[i], c, 3, 1, relu=True) if pre[i] != c else None)
        else:
            # The new branches are reached by a chain of stride-2 convs from the lowest resolution.
            steps = [_conv_bn(pre[-1], pre[-1], 3, 2, relu=True) for _ in range(i - len(pre))]
            steps.append(_conv_bn(pre[-1], c, 3, 2, relu=True))
            layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


def _apply_transition(transition: nn.ModuleList, y: List[torch.Tensor]) -> List[torch.Tensor]:
    out = []
    for i, t in enumerate(transition):
        if t is None:
            out.append(y[i])
        else:
            out.append(t(y[i] if i < len(y) else y[-1]))
    return out


def _check_image(x: torch.Tensor, divisor: int = 1) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be an image batch of shape (B, 3, H, W), got {shape}")
    h, w = x.shape[-2:]
    if h % divisor or w % divisor:
        raise ValueError(f"x height and width must be divisible by {divisor}, got {h}x{w}")


# (stage-1 Bottleneck planes, stage-1 blocks, [(modules, blocks per branch) for stages 2..4],
#  stage-4 branch widths); stage s uses the first s widths.
_HRNET_CONFIGS = {
    "w18_small_v1": (32, 1, [(1, 2), (1, 2), (1, 2)], (16, 32, 64, 128)),
    "w18_small_v2": (64, 2, [(1, 2), (3, 2), (2, 2)], (18, 36, 72, 144)),
    **{f"w{w}": (64, 4, [(1, 4), (4, 4), (3, 4)], (w, 2 * w, 4 * w, 8 * w))
       for w in (18, 32, 40, 48)},
}


class HighResolutionNet(nn.Module):
    """The HRNet backbone: stem, ``layer1`` and stages 2-4. ``forward`` returns the branch outputs
    (4 of them; only branch 0 when ``multi_scale_output=False``), highest resolution first."""

    def __init__(self, config: str = "w32", *, upsample_mode: str = "bilinear",
                 align_corners: bool = False, multi_scale_output: bool = True):
        super().__init__()
        if config not in _HRNET_CONFIGS:
            raise ValueError(f"config must be one of {sorted(_HRNET_CONFIGS)}, got {config!r}")
        planes1, blocks1, stages, widths = _HRNET_CONFIGS[config]
        self.config = config
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(64, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _residual_layer(Bottleneck, 64, planes1, blocks1)
        pre = [planes1 * Bottleneck.expansion]
        for s, (num_modules, num_blocks) in enumerate(stages, start=2):
            cur = list(widths[:s])
            setattr(self, f"transition{s - 1}", _make_transition(pre, cur))
            modules = []
            for m in range(num_modules):
                last = s == 4 and m == num_modules - 1
                modules.append(HighResolutionModule(
                    [num_blocks] * s, cur, cur,
                    multi_scale_output=multi_scale_output or not last,
                    upsample_mode=upsample_mode, align_corners=align_corners))
            setattr(self, f"stage{s}", nn.Sequential(*modules))
            pre = cur
        self.out_channels = list(widths) if multi_scale_output else [widths[0]]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        y = [self.layer1(x)]
        for transition, stage in ((self.transition1, self.stage2), (self.transition2, self.stage3),
                                  (self.transition3, self.stage4)):
            y = stage(_apply_transition(transition, y))
        return y


def _init_normal(model: nn.Module, zero_bias: bool) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.001)
            if zero_bias and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class HRNetV2Seg(HighResolutionNet):
    """HRNetV2 semantic segmentation (``seg_hrnet.py``).

    The four branch outputs are bilinearly upsampled to the 1/4-resolution branch
    (``align_corners=False``, the Cityscapes configs' ``ALIGN_CORNERS``), concatenated (15W
    channels for width W), then ``last_layer``: 1x1 conv (bias) -> BN -> ReLU -> 1x1 conv (bias)
    to ``num_classes``. The logits are returned at 1/4 of the input resolution, as the official
    model does: the official loss (``lib/core/criterion.py``) and evaluator
    (``lib/core/function.py``) upsample them bilinearly to the label size.

    The paper's head is "concatenate, then a 1x1 convolution"; the code's head (BN, ReLU and a
    second 1x1 convolution) is the one reproduced.
    """

    def __init__(self, config: str = "w48", num_classes: int = 19):
        super().__init__(config, upsample_mode="bilinear", align_corners=False)
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        c = sum(self.out_channels)
        self.last_layer = nn.Sequential(
            nn.Conv2d(c, c, kernel_size=1),
            nn.BatchNorm2d(c, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, int(num_classes), kernel_size=1),
        )
        _init_normal(self, zero_bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) -> logits (B, num_classes, ceil(H/4), ceil(W/4))."""
        _check_image(x)
        y = super().forward(x)
        size = y[0].shape[-2:]
        y = [y[0]] + [F.interpolate(t, size=size, mode="bilinear", align_corners=False)
                      for t in y[1:]]
        return self.last_layer(torch.cat(y, 1))


class HRNetV1Pose(HighResolutionNet):
    """HRNetV1 human pose estimation (``pose_hrnet.py``): the backbone with nearest-neighbour fuse
    upsampling, only branch 0 out of the last module, then ``final_layer``: a 1x1 conv (bias) to
    ``num_joints`` heatmaps at 1/4 of the input resolution (64x48 for a 256x192 input).
    H and W must be divisible by 32. Targets, loss and decoding: ``fastvision.data.pose_targets``."""

    def __init__(self, config: str = "w32", num_joints: int = 17):
        super().__init__(config, upsample_mode="nearest", multi_scale_output=False)
        if int(num_joints) < 1:
            raise ValueError(f"num_joints must be >= 1, got {num_joints}")
        self.final_layer = nn.Conv2d(self.out_channels[0], int(num_joints), kernel_size=1)
        _init_normal(self, zero_bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) -> heatmaps (B, num_joints, H/4, W/4)."""
        _check_image(x, 32)
        return self.final_layer(super().forward(x)[0])


class HRFPN(nn.Module):
    """HRFPN neck (``mmdet/models/necks/hrfpn.py``, ``share_conv=False``, average pooling).

    Branch i is bilinearly upsampled by 2^i (``align_corners=False``), the four are
    concatenated, a 1x1 conv (bias, no BN/activation) reduces them to ``out_channels``, average
    pooling with kernel = stride = 2^i (i = 0..4) makes five levels (strides 4..64 of the image),
    and a separate 3x3 conv (bias) is applied to each level.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, num_levels: int = 5):
        super().__init__()
        self.in_channels = list(in_channels)
        self.out_channels = int(out_channels)
        self.reduction_conv = nn.Sequential(nn.Conv2d(sum(self.in_channels), self.out_channels, 1))
        self.fpn_conv = nn.ModuleList(
            nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1)
            for _ in range(num_levels))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, inputs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"inputs must hold {len(self.in_channels)} feature maps, "
                             f"got {len(inputs)}")
        ups = [inputs[0]] + [F.interpolate(t, scale_factor=2 ** i, mode="bilinear",
                                           align_corners=False)
                             for i, t in enumerate(inputs[1:], start=1)]
        y = self.reduction_conv(torch.cat(ups, 1))
        levels = [y] + [F.avg_pool2d(y, kernel_size=2 ** i, stride=2 ** i)
                        for i in range(1, len(self.fpn_conv))]
        return [conv(level) for conv, level in zip(self.fpn_conv, levels)]


class HRNetV2p(nn.Module):
    """HRNetV2p detection backbone: HRNet (nearest fuse upsampling, all four branches) + HRFPN.

    ``forward`` returns an ``OrderedDict`` of five ``out_channels``-wide maps at strides 4, 8,
    16, 32, 64 keyed ``"0"``, ``"1"``, ``"2"``, ``"3"``, ``"pool"`` (torchvision's FPN keys, so
    the module is a drop-in ``backbone`` of ``torchvision.models.detection.FasterRCNN`` whose
    default RoI pooler reads ``"0"``..``"3"``, the strides 4..32 the official config pools from).
    H and W must be divisible by 32 (mmdetection pads images to a multiple of 32; torchvision's
    ``GeneralizedRCNNTransform`` does by default).

    State-dict keys are ``backbone.*`` and ``neck.*``, as in the official mmdetection detector.
    ``norm_eval=True`` (official default) keeps every BatchNorm in eval mode under ``train()``.
    """

    def __init__(self, config: str = "w32", out_channels: int = 256, norm_eval: bool = True):
        super().__init__()
        self.backbone = HighResolutionNet(config, upsample_mode="nearest")
        for m in self.backbone.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.neck = HRFPN(self.backbone.out_channels, out_channels)
        self.out_channels = int(out_channels)
        self.norm_eval = bool(norm_eval)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """x: (B, 3, H, W) -> OrderedDict of 5 maps (B, out_channels, H/s, W/s), s = 4..64."""
        _check_image(x, 32)
        levels = self.neck(self.backbone(x))
        return OrderedDict(zip(("0", "1", "2", "3", "pool"), levels))


def strip_official_wrapper(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The model's entries of an official HRNet checkpoint's state dict, for ``strict=True``.

    The model keys are the official ones; what differs is the wrapper the official training
    scripts saved around them:

    * segmentation (``HRNet-Semantic-Segmentation``): the trained model is saved inside
      ``FullModel`` (``lib/utils/utils.py``): keys ``model.*`` plus the loss's ``loss.*``
      (class weights); ``tools/test.py`` strips ``model.``. Here too, and ``loss.*`` is dropped.
    * detection (mmdetection): the whole detector is saved; the ``backbone.*`` and ``neck.*``
      entries are those of ``HRNetV2p``, the RPN / RoI head entries are dropped.
    * pose (``HRNet-Human-Pose-Estimation``) and plain state dicts: returned unchanged.
    """
    keys = list(state_dict)
    if keys and all(k.startswith(("model.", "loss.")) for k in keys):
        return {k[len("model."):]: v for k, v in state_dict.items() if k.startswith("model.")}
    if any(k.startswith("backbone.") for k in keys) and any(k.startswith("neck.") for k in keys):
        return {k: v for k, v in state_dict.items() if k.startswith(("backbone.", "neck."))}
    return dict(state_dict)


def convert_official(state_dict: Dict[str, torch.Tensor], **model_kwargs) -> Dict[str, torch.Tensor]:
    """The converter of every HRNet model: the official keys are ours, so only the training
    wrappers go (:func:`strip_official_wrapper`)."""
    return strip_official_wrapper(state_dict)


@register_mmseg_converter("hrnetv2_w18_small_v1", "hrnetv2_w18_small_v2", "hrnetv2_w18",
                          "hrnetv2_w32", "hrnetv2_w40", "hrnetv2_w48")
def convert_mmseg(state_dict: Dict[str, torch.Tensor], **model_kwargs) -> Dict[str, torch.Tensor]:
    """mmsegmentation's HRNetV2 + FCNHead (``EncoderDecoder`` state dict) -> ``HRNetV2Seg``:
    ``backbone.*`` keys are ours without the prefix; ``decode_head.convs.0.conv`` /
    ``.bn`` / ``conv_seg`` become ``last_layer.0`` (with a zero bias: mmseg's conv has none) /
    ``last_layer.1`` / ``last_layer.3``. Anything else (an auxiliary head, another head's
    layout) is an error."""
    out, unknown = {}, []
    head = {"decode_head.convs.0.conv.": "last_layer.0.", "decode_head.convs.0.bn.": "last_layer.1.",
            "decode_head.conv_seg.": "last_layer.3."}
    for key, value in state_dict.items():
        if key.startswith("backbone."):
            out[key[len("backbone."):]] = value
            continue
        prefix = next((p for p in head if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
            continue
        out[head[prefix] + key[len(prefix):]] = value
    if unknown:
        raise ValueError(f"not an mmsegmentation HRNetV2 + FCNHead state dict: {len(unknown)} "
                         f"unknown key(s), e.g. {unknown[:3]}")
    weight = out.get("last_layer.0.weight")
    if weight is not None and "last_layer.0.bias" not in out:
        out["last_layer.0.bias"] = torch.zeros(weight.shape[0], dtype=weight.dtype)
    return out


@register_model(converter=convert_official)
def hrnetv2_w18_small_v1(*, num_classes: int = 19, weights=None) -> HRNetV2Seg:
    """HRNetV2-W18-Small-v1 segmentation (Cityscapes ``seg_hrnet_w18_small_v1`` config:
    widths 16/32/64/128, 1 Bottleneck of 32 planes, one module per stage, 2 blocks per branch);
    1,540,819 params at 19 classes."""
    return finish(HRNetV2Seg("w18_small_v1", num_classes), weights)


@register_model(converter=convert_official)
def hrnetv2_w18_small_v2(*, num_classes: int = 19, weights=None) -> HRNetV2Seg:
    """HRNetV2-W18-Small-v2 segmentation (Cityscapes ``seg_hrnet_w18_small_v2`` config:
    widths 18/36/72/144, 2 Bottlenecks, 1/3/2 modules, 2 blocks per branch)."""
    return finish(HRNetV2Seg("w18_small_v2", num_classes), weights)


@register_model(converter=convert_official)
def hrnetv2_w18(*, num_classes: int = 19, weights=None) -> HRNetV2Seg:
    """HRNetV2-W18 segmentation: the W48 Cityscapes config with widths 18/36/72/144."""
    return finish(HRNetV2Seg("w18", num_classes), weights)


@register_model(converter=convert_official)
def hrnetv2_w32(*, num_classes: int = 19, weights=None) -> HRNetV2Seg:
    """HRNetV2-W32 segmentation: the W48 Cityscapes config with widths 32/64/128/256."""
    return finish(HRNetV2Seg("w32", num_classes), weights)


@register_model(converter=convert_official)
def hrnetv2_w40(*, num_classes: int = 19, weights=None) -> HRNetV2Seg:
    """HRNetV2-W40 segmentation: the W48 Cityscapes config with widths 40/80/160/320."""
    return finish(HRNetV2Seg("w40", num_classes), weights)


@register_model(converter=convert_official)
def hrnetv2_w48(*, num_classes: int = 19, weights=None) -> HRNetV2Seg:
    """HRNetV2-W48 segmentation (Cityscapes ``seg_hrnet_w48`` config); 65,859,379 params at 19
    classes."""
    return finish(HRNetV2Seg("w48", num_classes), weights)


@register_model(converter=convert_official)
def hrnetv1_w32_pose(*, num_joints: int = 17, weights=None) -> HRNetV1Pose:
    """HRNetV1-W32 pose (COCO ``w32_256x192`` / ``w32_384x288`` configs); 28,536,113 params."""
    return finish(HRNetV1Pose("w32", num_joints), weights)


@register_model(converter=convert_official)
def hrnetv1_w48_pose(*, num_joints: int = 17, weights=None) -> HRNetV1Pose:
    """HRNetV1-W48 pose (COCO ``w48_256x192`` / ``w48_384x288`` configs)."""
    return finish(HRNetV1Pose("w48", num_joints), weights)


@register_model(converter=convert_official)
def hrnetv2p_w18(*, out_channels: int = 256, norm_eval: bool = True, weights=None) -> HRNetV2p:
    """HRNetV2p-W18 backbone + HRFPN (``configs/hrnet/faster_rcnn_hrnetv2p_w18_1x.py``)."""
    return finish(HRNetV2p("w18", out_channels, norm_eval), weights)


@register_model(converter=convert_official)
def hrnetv2p_w32(*, out_channels: int = 256, norm_eval: bool = True, weights=None) -> HRNetV2p:
    """HRNetV2p-W32 backbone + HRFPN (``configs/hrnet/faster_rcnn_hrnetv2p_w32_1x.py``)."""
    return finish(HRNetV2p("w32", out_channels, norm_eval), weights)


@register_model(converter=convert_official)
def hrnetv2p_w40(*, out_channels: int = 256, norm_eval: bool = True, weights=None) -> HRNetV2p:
    """HRNetV2p-W40 backbone + HRFPN (``configs/hrnet/faster_rcnn_hrnetv2p_w40_1x.py``)."""
    return finish(HRNetV2p("w40", out_channels, norm_eval), weights)


@register_model(converter=convert_official)
def hrnetv2p_w48(*, out_channels: int = 256, norm_eval: bool = True, weights=None) -> HRNetV2p:
    """HRNetV2p-W48 backbone + HRFPN (the W32 config with widths 48/96/192/384; the official
    repository has no W48 detection config)."""
    return finish(HRNetV2p("w48", out_channels, norm_eval), weights)
