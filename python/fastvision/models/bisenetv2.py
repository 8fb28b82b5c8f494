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
"""

from __future__ import annotations

from typing import Dict, Tuple, Union

import torch
import torch.nn as nn

from ._registry import register_model
from .checkpoint import finish

__all__ = ["BiSeNetV2", "drop_booster_heads"]

AUX_MODES = ("train", "eval", "pred")
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
    """Bilateral guided aggregation of the detail (1/8) and semantic (1/32) features."""

    def __init__(self, channels: int = 128):
        super().__init__()
        c = channels
        self.left1 = nn.Sequential(*_conv_bn(c, c, 3, groups=c),
                                   nn.Conv2d(c, c, 1, bias=False))
        self.left2 = nn.Sequential(*_conv_bn(c, c, 3, stride=2),
                                   nn.AvgPool2d(kernel_size=3, stride=2, padding=1))
        self.right1 = nn.Sequential(*_conv_bn(c, c, 3))
        self.right2 = nn.Sequential(*_conv_bn(c, c, 3, groups=c),
                                    nn.Conv2d(c, c, 1, bias=False))
        self.up1 = nn.Upsample(scale_factor=4)
        self.up2 = nn.Upsample(scale_factor=4)
        self.conv = nn.Sequential(*_conv_bn(c, c, 3), nn.ReLU(inplace=True))

    def forward(self, x_d: torch.Tensor, x_s: torch.Tensor) -> torch.Tensor:
        detail_kept = self.left1(x_d) * torch.sigmoid(self.up1(self.right1(x_s)))
        semantic_kept = self.left2(x_d) * torch.sigmoid(self.right2(x_s))
        return self.conv(detail_kept + self.up2(semantic_kept))


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

    def __init__(self, num_classes: int = 19, aux_mode: str = "train"):
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if aux_mode not in AUX_MODES:
            raise ValueError(f"aux_mode must be one of {AUX_MODES}, got {aux_mode!r}")
        n = int(num_classes)
        self.aux_mode = aux_mode
        self.detail = DetailBranch()
        self.segment = SegmentBranch()
        self.bga = BGALayer(128)
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


@register_model(converter=convert_official)
def bisenetv2(*, num_classes: int = 19, aux_mode: str = "train", weights=None) -> BiSeNetV2:
    """BiSeNet V2, official CoinCheung layout; 5,231,487 params with the booster heads
    (``aux_mode="train"``), 3,358,627 without (19 classes)."""
    return finish(BiSeNetV2(num_classes, aux_mode), weights)
