"""BiSeNet V2 (Yu et al., "BiSeNet V2: Bilateral Network with Guided Aggregation for Real-time
Semantic Segmentation", IJCV 2021), laid out as the official ``CoinCheung/BiSeNet
lib/models/bisenetv2.py`` so that its checkpoints load with ``strict=True``.

Where that code departs from the paper, the code is followed:

* extra ReLUs "not shown in paper": after the expanding depthwise conv of the stride-1 GE layer,
  after the second depthwise conv of the stride-2 GE layer, and after the BGA output conv;
* the CE block's last 3x3 conv has BN + ReLU (the paper: a plain conv);
* the BGA upsamples the semantic features x4 with nearest-neighbour ``nn.Upsample`` (the paper
  and mmsegmentation: bilinear);
* the main segmentation head is 3x3 ConvBNReLU 128 -> 1024, Dropout(0.1), 1x1 conv (bias) to the
  classes, bilinear x8 (``align_corners=False``); the 1024-wide conv holds 1.2 M of the 3.36 M
  inference parameters;
* the booster (auxiliary) heads, on S2 (16 ch, x4), S3 (32, x8), S4 (64, x16) and S5_4 (128,
  x32), are 3x3 ConvBNReLU to 128, Dropout(0.1), nearest x2, 3x3 ConvBNReLU 128 -> up^2, 1x1
  conv to the classes, bilinear x up/2.

``aux_mode`` as official: ``"train"`` builds the booster heads and returns the main and the four
booster logits (main, S2, S3, S4, S5_4), all at input resolution; ``"eval"`` builds no booster
heads and returns the main logits (the official code returns them in a 1-tuple; here the tensor
itself); ``"pred"`` returns ``argmax`` class indices (int32, as the official export path).
Parameters at 19 classes: 3,358,627 without, 5,231,487 with the booster heads. An official
checkpoint saved in ``"train"`` mode loads into ``aux_mode="eval"`` after
``drop_booster_heads(state_dict)``.

Initialisation as official: Kaiming-normal (fan_out) convs, zero biases, BN weight 1 except the
last BN of each GE layer's main path (zero). Input height and width must be divisible by 32
(the BGA adds stride-8 and upsampled stride-32 features).

**mmsegmentation's BiSeNet V2** (``mmseg/models/backbones/bisenetv2.py`` + ``FCNHead``s, config
``bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py``; :func:`convert_mmseg`) is the same network
except where it changes outputs:

* its BGA resizes bilinearly (``align_corners=False``) to the detail size where CoinCheung
  upsamples x4 nearest, and its two 1x1 convs (the pointwise half of mmcv's
  ``DepthwiseSeparableConvModule`` without norm) have a bias: build with ``bga="mmseg"``;
* its main head (``FCNHead``: 3x3 ConvModule 128 -> 1024, Dropout(0.1), 1x1 ``conv_seg``; the
  segmentor resizes the 1/8 logits bilinearly to the input) is CoinCheung's ``head`` key for key;
* its four auxiliary heads are ``FCNHead``s with two 3x3 convs (16, 64, 256, 1024 channels) on the
  same stages, not CoinCheung's booster heads: training-only, they are dropped, so mmseg weights
  load into ``aux_mode="eval"`` / ``"pred"``;
* its input normalisation is ImageNet's, mean (123.675, 116.28, 103.53) and std (58.395, 57.12,
  57.375) in 0..255 units on RGB (``bgr_to_rgb=True``), i.e. ``IMAGENET_MEAN`` / ``IMAGENET_STD``
  on 0..1 images, where CoinCheung uses Cityscapes statistics (0.3257, 0.3690, 0.3223) /
  (0.2112, 0.2148, 0.2115).
"""

from __future__ import annotations

import re
from typing import Dict, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import register_mmseg_converter, register_model
from .checkpoint import finish

__all__ = ["BiSeNetV2", "drop_booster_heads", "convert_mmseg"]

AUX_MODES = ("train", "eval", "pred")
BGA_VARIANTS = ("coincheung", "mmseg")
_BOOSTER_HEADS = ("aux2", "aux3", "aux4", "aux5_4")


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout)]


def _last_bn(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    # Zero-initialised gamma: a GE layer starts as its shortcut.
    bn.last_bn = True
    return bn


class DetailBranch(nn.Module):
    """Wide and shallow: 3x3 convs 64, 64 | 64, 64, 64 | 128, 128, 128 (stride 8)."""

    def __init__(self):
        super().__init__()
        self.S1 = nn.Sequential(ConvBNReLU(3, 64, stride=2), ConvBNReLU(64, 64))
        self.S2 = nn.Sequential(ConvBNReLU(64, 64, stride=2), ConvBNReLU(64, 64),
                                ConvBNReLU(64, 64))
        self.S3 = nn.Sequential(ConvBNReLU(64, 128, stride=2), ConvBNReLU(128, 128),
                                ConvBNReLU(128, 128))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.S3(self.S2(self.S1(x)))


class StemBlock(nn.Module):
    """3x3 s2 conv to 16, then [1x1 -> 8, 3x3 s2 -> 16] and 3x3 s2 max-pool, concat, 3x3 -> 16."""

    def __init__(self):
        super().__init__()
        self.conv = ConvBNReLU(3, 16, stride=2)
        self.left = nn.Sequential(ConvBNReLU(16, 8, kernel=1), ConvBNReLU(8, 16, stride=2))
        self.right = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.fuse = ConvBNReLU(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))


class CEBlock(nn.Module):
    """Context embedding: global mean -> BN -> 1x1 ConvBNReLU, broadcast-added, 3x3 ConvBNReLU."""

    def __init__(self, channels: int = 128):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv_gap = ConvBNReLU(channels, channels, kernel=1)
        self.conv_last = ConvBNReLU(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.conv_gap(self.bn(torch.mean(x, dim=(2, 3), keepdim=True)))
        return self.conv_last(context + x)


class GELayerS1(nn.Module):
    """Gather-and-expansion, stride 1: 3x3 conv, depthwise 3x3 expanding x6 (+ReLU), 1x1 back,
    identity shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, expansion: int = 6):
        super().__init__()
        mid = cin * expansion
        self.conv1 = ConvBNReLU(cin, cin)
        self.dwconv = nn.Sequential(*_conv_bn(cin, mid, 3, groups=cin), nn.ReLU(inplace=True))
        conv, bn = _conv_bn(mid, cout, 1)
        self.conv2 = nn.Sequential(conv, _last_bn(bn))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.dwconv(self.conv1(x))) + x)


class GELayerS2(nn.Module):
    """Gather-and-expansion, stride 2: 3x3 conv, depthwise 3x3 s2 expanding x6, depthwise 3x3
    (+ReLU), 1x1 to ``cout``; shortcut depthwise 3x3 s2 + 1x1; sum, ReLU."""

    def __init__(self, cin: int, cout: int, expansion: int = 6):
        super().__init__()
        mid = cin * expansion
        self.conv1 = ConvBNReLU(cin, cin)
        self.dwconv1 = nn.Sequential(*_conv_bn(cin, mid, 3, stride=2, groups=cin))
        self.dwconv2 = nn.Sequential(*_conv_bn(mid, mid, 3, groups=mid), nn.ReLU(inplace=True))
        conv, bn = _conv_bn(mid, cout, 1)
        self.conv2 = nn.Sequential(conv, _last_bn(bn))
        self.shortcut = nn.Sequential(*_conv_bn(cin, cin, 3, stride=2, groups=cin),
                                      *_conv_bn(cin, cout, 1))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.dwconv2(self.dwconv1(self.conv1(x))))
        return self.relu(y + self.shortcut(x))


class SegmentBranch(nn.Module):
    """Semantic branch: stem (S1-S2, stride 4, 16 ch), GE stages S3 (32), S4 (64), S5_4 (128),
    CE block S5_5. Returns the features of S2, S3, S4, S5_4 and S5_5."""

    def __init__(self):
        super().__init__()
        self.S1S2 = StemBlock()
        self.S3 = nn.Sequential(GELayerS2(16, 32), GELayerS1(32, 32))
        self.S4 = nn.Sequential(GELayerS2(32, 64), GELayerS1(64, 64))
        self.S5_4 = nn.Sequential(GELayerS2(64, 128), GELayerS1(128, 128), GELayerS1(128, 128),
                                  GELayerS1(128, 128))
        self.S5_5 = CEBlock(128)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        f2 = self.S1S2(x)
        f3 = self.S3(f2)
        f4 = self.S4(f3)
        f5_4 = self.S5_4(f4)
        return f2, f3, f4, f5_4, self.S5_5(f5_4)


class BGALayer(nn.Module):
    """Bilateral guided aggregation of the detail (1/8) and semantic (1/32) features.
    ``variant="mmseg"``: bilinear resizing and biased 1x1 convs, as mmsegmentation's."""

    def __init__(self, channels: int = 128, variant: str = "coincheung"):
        super().__init__()
        c = channels
        self.variant = variant
        mmseg = variant == "mmseg"
        self.left1 = nn.Sequential(*_conv_bn(c, c, 3, groups=c),
                                   nn.Conv2d(c, c, 1, bias=mmseg))
        self.left2 = nn.Sequential(*_conv_bn(c, c, 3, stride=2),
                                   nn.AvgPool2d(kernel_size=3, stride=2, padding=1))
        self.right1 = nn.Sequential(*_conv_bn(c, c, 3))
        self.right2 = nn.Sequential(*_conv_bn(c, c, 3, groups=c),
                                    nn.Conv2d(c, c, 1, bias=mmseg))
        self.up1 = nn.Upsample(scale_factor=4)
        self.up2 = nn.Upsample(scale_factor=4)
        self.conv = nn.Sequential(*_conv_bn(c, c, 3), nn.ReLU(inplace=True))

    def _up(self, up: nn.Module, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if self.variant == "mmseg":
            return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)
        return up(x)

    def forward(self, x_d: torch.Tensor, x_s: torch.Tensor) -> torch.Tensor:
        detail = self.left1(x_d)
        detail_kept = detail * torch.sigmoid(self._up(self.up1, self.right1(x_s), detail))
        semantic_kept = self.left2(x_d) * torch.sigmoid(self.right2(x_s))
        return self.conv(detail_kept + self._up(self.up2, semantic_kept, detail_kept))


class SegmentHead(nn.Module):
    """3x3 ConvBNReLU -> Dropout(0.1) -> [booster: nearest x2, 3x3 ConvBNReLU to up^2] ->
    1x1 conv (bias) -> bilinear upsampling (x up, or x up/2 for a booster head)."""

    def __init__(self, cin: int, mid: int, num_classes: int, up_factor: int, booster: bool):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid)
        self.drop = nn.Dropout(0.1)
        if booster:
            mid_out = up_factor * up_factor
            pre = nn.Sequential(nn.Upsample(scale_factor=2), ConvBNReLU(mid, mid_out))
            up_factor //= 2
        else:
            mid_out, pre = mid, nn.Identity()
        self.conv_out = nn.Sequential(
            pre,
            nn.Conv2d(mid_out, num_classes, 1, bias=True),
            nn.Upsample(scale_factor=up_factor, mode="bilinear", align_corners=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.drop(self.conv(x)))


class BiSeNetV2(nn.Module):
    """BiSeNet V2 (CoinCheung layout); see the module docstring for ``aux_mode`` and the
    departures from the paper."""

    def __init__(self, num_classes: int = 19, aux_mode: str = "train", bga: str = "coincheung"):
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if aux_mode not in AUX_MODES:
            raise ValueError(f"aux_mode must be one of {AUX_MODES}, got {aux_mode!r}")
        if bga not in BGA_VARIANTS:
            raise ValueError(f"bga must be one of {BGA_VARIANTS}, got {bga!r}")
        n = int(num_classes)
        self.aux_mode = aux_mode
        self.detail = DetailBranch()
        self.segment = SegmentBranch()
        self.bga = BGALayer(128, bga)
        self.head = SegmentHead(128, 1024, n, up_factor=8, booster=False)
        if aux_mode == "train":
            self.aux2 = SegmentHead(16, 128, n, up_factor=4, booster=True)
            self.aux3 = SegmentHead(32, 128, n, up_factor=8, booster=True)
            self.aux4 = SegmentHead(64, 128, n, up_factor=16, booster=True)
            self.aux5_4 = SegmentHead(128, 128, n, up_factor=32, booster=True)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                if getattr(m, "last_bn", False):
                    nn.init.zeros_(m.weight)
                else:
                    nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """x: (B, 3, H, W), H and W divisible by 32 -> logits (B, num_classes, H, W): with
        ``aux_mode="train"`` a 5-tuple (main, S2, S3, S4, S5_4 booster logits)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be an image batch of shape (B, 3, H, W), got {shape}")
        h, w = x.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"x height and width must be divisible by 32, got {h}x{w}")
        if self.aux_mode not in AUX_MODES:
            raise ValueError(f"aux_mode must be one of {AUX_MODES}, got {self.aux_mode!r}")
        feat_d = self.detail(x)
        f2, f3, f4, f5_4, feat_s = self.segment(x)
        logits = self.head(self.bga(feat_d, feat_s))
        if self.aux_mode == "train":
            if not hasattr(self, "aux2"):
                raise ValueError("aux_mode='train' needs the booster heads; this model was built "
                                 "without them (build it with aux_mode='train')")
            return (logits, self.aux2(f2), self.aux3(f3), self.aux4(f4), self.aux5_4(f5_4))
        if self.aux_mode == "pred":
            return logits.argmax(dim=1).int()
        return logits


def drop_booster_heads(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The entries of a ``"train"``-mode state dict that an ``aux_mode="eval"`` model holds."""
    return {k: v for k, v in state_dict.items() if k.split(".", 1)[0] not in _BOOSTER_HEADS}


def convert_official(state_dict: Dict[str, torch.Tensor], aux_mode: str = "train",
                     **model_kwargs) -> Dict[str, torch.Tensor]:
    """The official CoinCheung state dict has our keys; for ``aux_mode`` "eval" or "pred" the
    booster heads of a training checkpoint are dropped."""
    return drop_booster_heads(state_dict) if aux_mode != "train" else dict(state_dict)


# mmseg key (after "backbone.") -> ours, first match wins; \g<n> are the regex groups.
_MMSEG_RULES = [(re.compile(pattern), repl) for pattern, repl in [
    (r"detail\.detail_branch\.(\d)\.(\d)\.", lambda m: f"detail.S{int(m[1]) + 1}.{m[2]}."),
    (r"semantic\.stage1\.conv_first\.", "segment.S1S2.conv."),
    (r"semantic\.stage1\.convs\.(\d)\.", r"segment.S1S2.left.\1."),
    (r"semantic\.stage1\.fuse_last\.", "segment.S1S2.fuse."),
    # stride-2 GE layers (the first of stages 2-4)
    (r"semantic\.stage(\d)\.0\.dwconv\.(\d)\.(conv|bn)\.",
     lambda m: f"{_stage(m[1])}.0.dwconv{int(m[2]) + 1}.{_pos(m[3])}."),
    (r"semantic\.stage(\d)\.0\.shortcut\.0\.(depthwise|pointwise)_conv\.(conv|bn)\.",
     lambda m: f"{_stage(m[1])}.0.shortcut.{(0 if m[2] == 'depthwise' else 2) + _pos(m[3])}."),
    # stride-1 GE layers
    (r"semantic\.stage(\d)\.(\d)\.dwconv\.0\.(conv|bn)\.",
     lambda m: f"{_stage(m[1])}.{m[2]}.dwconv.{_pos(m[3])}."),
    (r"semantic\.stage(\d)\.(\d)\.conv1\.", lambda m: f"{_stage(m[1])}.{m[2]}.conv1."),
    (r"semantic\.stage(\d)\.(\d)\.conv2\.0\.(conv|bn)\.",
     lambda m: f"{_stage(m[1])}.{m[2]}.conv2.{_pos(m[3])}."),
    (r"semantic\.stage4_CEBlock\.gap\.1\.", "segment.S5_5.bn."),
    (r"semantic\.stage4_CEBlock\.", "segment.S5_5."),
    (r"bga\.(detail|semantic)_dwconv\.0\.depthwise_conv\.(conv|bn)\.",
     lambda m: f"bga.{_BGA_SIDE[m[1]]}.{_pos(m[2])}."),
    (r"bga\.(detail|semantic)_dwconv\.0\.pointwise_conv\.conv\.",
     lambda m: f"bga.{_BGA_SIDE[m[1]]}.2."),
    (r"bga\.detail_down\.0\.(conv|bn)\.", lambda m: f"bga.left2.{_pos(m[1])}."),
    (r"bga\.semantic_conv\.0\.(conv|bn)\.", lambda m: f"bga.right1.{_pos(m[1])}."),
    (r"bga\.conv\.(conv|bn)\.", lambda m: f"bga.conv.{_pos(m[1])}."),
]]
_BGA_SIDE = {"detail": "left1", "semantic": "right2"}


def _stage(index: str) -> str:
    return f"segment.{('S3', 'S4', 'S5_4')[int(index) - 2]}"


def _pos(kind: str) -> int:
    """Position of a ConvModule's conv / bn in our ``nn.Sequential(conv, bn, ...)``."""
    return 0 if kind == "conv" else 1


def convert_mmseg(state_dict: Dict[str, torch.Tensor], aux_mode: str = "train",
                  bga: str = "coincheung", **model_kwargs) -> Dict[str, torch.Tensor]:
    """mmsegmentation's BiSeNet V2 (``EncoderDecoder`` state dict: ``backbone.*``,
    ``decode_head.*``, ``auxiliary_head.*``) -> ``BiSeNetV2(aux_mode="eval" or "pred",
    bga="mmseg")``. Every backbone and decode-head entry is mapped (module docstring: mmseg's
    ConvModule ``conv`` / ``bn`` become positions in our Sequentials, the stages are renamed);
    the auxiliary heads, which have no counterpart, are dropped; anything else is an error."""
    if bga != "mmseg":
        raise ValueError("mmsegmentation's BiSeNet V2 needs bga='mmseg' (its BGA resizes "
                         f"bilinearly and its 1x1 convs have biases), got bga={bga!r}")
    if aux_mode == "train":
        raise ValueError("mmsegmentation's auxiliary heads (FCNHeads) are not CoinCheung's booster "
                         "heads: load mmseg weights with aux_mode='eval' or 'pred'")
    out, unknown = {}, []
    for key, value in state_dict.items():
        if key.startswith("auxiliary_head."):
            continue
        if key.startswith("decode_head.convs.0."):
            out["head.conv." + key[len("decode_head.convs.0."):]] = value
            continue
        if key.startswith("decode_head.conv_seg."):
            out["head.conv_out.1." + key[len("decode_head.conv_seg."):]] = value
            continue
        rest = key[len("backbone."):] if key.startswith("backbone.") else None
        for pattern, repl in _MMSEG_RULES if rest is not None else ():
            match = pattern.match(rest)
            if match:
                new = repl(match) if callable(repl) else match.expand(repl)
                out[new + rest[match.end():]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"not an mmsegmentation BiSeNet V2 state dict: {len(unknown)} unknown "
                         f"key(s), e.g. {unknown[:3]}")
    return out


@register_model(converter=convert_official)
def bisenetv2(*, num_classes: int = 19, aux_mode: str = "train", bga: str = "coincheung",
              weights=None) -> BiSeNetV2:
    """BiSeNet V2, official CoinCheung layout; 5,231,487 params with the booster heads
    (``aux_mode="train"``), 3,358,627 without (19 classes). ``bga="mmseg"``: mmsegmentation's
    BGA (bilinear, biased 1x1 convs; +256 params), for its checkpoints (:func:`convert_mmseg`)."""
    return finish(BiSeNetV2(num_classes, aux_mode, bga), weights)


register_mmseg_converter("bisenetv2")(convert_mmseg)
