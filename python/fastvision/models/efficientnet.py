"""EfficientNet feature extractor in the layout HyperSeg uses (``YuvalNirkin/hyperseg
hyperseg/models/backbones/efficientnet.py``, itself the lukemelas ``EfficientNet-PyTorch`` port
with a feature-pyramid output), so that the official HyperSeg state dicts load key for key.

What the official backbone does, reproduced here:

* TF-style "same" padding, computed once from the *nominal* image size of the variant (B1: 240,
  B3: 300) and kept fixed for every input (``Conv2dStaticSamePadding``). On inputs whose sizes
  differ from that nominal chain this is not TF "same" padding: e.g. B1's stride-2 5x5 conv of
  stage 6 pads (2, 2) on each side because the nominal feature there is 15 px, whatever the real
  size. The padding holds no state.
* BatchNorm momentum ``1 - 0.99`` and eps 1e-3 everywhere in the backbone; swish activations;
  squeeze-and-excitation with ``max(1, int(block_input * 0.25))`` channels and biased 1x1 convs.
* Stochastic depth ("drop connect") in training on the blocks with an identity skip, at rate
  ``0.2 * block_index / num_blocks``, as ``inputs / keep * floor(keep + U[0, 1))`` per sample.
* Features: the output of the last block of each resolution (strides 2, 4, 8, 16, 32), each
  optionally reduced by ``_feat_fc_i`` = 1x1 conv + BN (no activation) to
  ``int(round(C * out_feat_scale[i]))`` channels (no module where the scale is 1), followed by
  the head (1x1 conv to ``round_filters(1280)`` + BN + swish) at stride 32, passed through
  ``Dropout(dropout_rate)`` (active in training: B1 0.2, B3 0.3). ``forward`` returns the list
  of the six maps.
"""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..nn import fold

__all__ = ["EfficientNetFeatures", "efficientnet_params", "round_filters", "round_repeats"]

# (width, depth, nominal resolution, dropout) of the official efficientnet_params table.
_PARAMS = {
    "efficientnet-b0": (1.0, 1.0, 224, 0.2),
    "efficientnet-b1": (1.0, 1.1, 240, 0.2),
    "efficientnet-b2": (1.1, 1.2, 260, 0.3),
    "efficientnet-b3": (1.2, 1.4, 300, 0.3),
    "efficientnet-b4": (1.4, 1.8, 380, 0.4),
    "efficientnet-b5": (1.6, 2.2, 456, 0.4),
    "efficientnet-b6": (1.8, 2.6, 528, 0.5),
    "efficientnet-b7": (2.0, 3.1, 600, 0.5),
}

# The seven MBConv stages of EfficientNet-B0: repeats, kernel, stride, expansion, in, out (SE 0.25).
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_SE_RATIO = 0.25
_BN_MOMENTUM = 1 - 0.99  # TF's 0.99 decay, as the official code converts it (0.010000000000000009)
_BN_EPS = 1e-3
_DROP_CONNECT = 0.2


def efficientnet_params(name: str) -> Tuple[float, float, int, float]:
    try:
        return _PARAMS[name]
    except KeyError:
        raise ValueError(f"unknown EfficientNet {name!r}; available: {', '.join(_PARAMS)}") from None


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channel count scaled by ``width``, rounded to a multiple of ``divisor`` (never down >10%)."""
    scaled = filters * width
    out = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if out < 0.9 * scaled:
        out += divisor
    return int(out)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


def _same_pad(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SamePadConv2d(nn.Conv2d):
    """``nn.Conv2d`` with a fixed zero padding (left, right, top, bottom) applied before it: the
    official ``Conv2dStaticSamePadding`` for ``nominal_size`` (H, W) of the input."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 bias: bool = True, nominal_size: Tuple[int, int] = (1, 1)):
        super().__init__(cin, cout, kernel, stride, 0, 1, groups, bias)
        ph = _same_pad(nominal_size[0], kernel, stride)
        pw = _same_pad(nominal_size[1], kernel, stride)
        self.static_pad = (pw[0], pw[1], ph[0], ph[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.static_pad):
            x = F.pad(x, self.static_pad)
        return super().forward(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", static_pad={self.static_pad}"


def _conv_then_bn(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d, silu: bool = False) -> torch.Tensor:
    y = bn(conv(x))
    return F.silu(y) if silu else y


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, momentum=_BN_MOMENTUM, eps=_BN_EPS)


def _down(size: Tuple[int, int], stride: int) -> Tuple[int, int]:
    return (-(-size[0] // stride), -(-size[1] // stride))


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck with squeeze-and-excitation (official attribute names)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int,
                 nominal_size: Tuple[int, int]):
        super().__init__()
        self.cin, self.cout, self.stride, self.expand = cin, cout, stride, expand
        hidden = cin * expand
        if expand != 1:
            self._expand_conv = SamePadConv2d(cin, hidden, 1, bias=False, nominal_size=nominal_size)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SamePadConv2d(hidden, hidden, kernel, stride, groups=hidden,
                                             bias=False, nominal_size=nominal_size)
        self._bn1 = _bn(hidden)
        squeezed = max(1, int(cin * _SE_RATIO))
        self._se_reduce = nn.Conv2d(hidden, squeezed, 1)
        self._se_expand = nn.Conv2d(squeezed, hidden, 1)
        self._project_conv = nn.Conv2d(hidden, cout, 1, bias=False)
        self._bn2 = _bn(cout)

    def forward(self, inputs: torch.Tensor, drop_connect_rate: float = 0.0,
                fold_batchnorm: bool = False) -> torch.Tensor:
        conv_bn = fold.conv_bn if fold_batchnorm else _conv_then_bn
        # Where the pairs fold (no gradient recorded), every intermediate is this block's own
        # temporary: the gating and the skip run in place instead of allocating large maps.
        in_place = fold_batchnorm and fold.folding_active(self._project_conv, self._bn2)
        x = inputs
        if self.expand != 1:
            x = conv_bn(x, self._expand_conv, self._bn0, silu=True)
        x = conv_bn(x, self._depthwise_conv, self._bn1, silu=True)
        s = F.adaptive_avg_pool2d(x, 1)
        s = self._se_expand(F.silu(self._se_reduce(s)))
        x = x.mul_(torch.sigmoid(s)) if in_place else torch.sigmoid(s) * x
        x = conv_bn(x, self._project_conv, self._bn2)
        if self.stride == 1 and self.cin == self.cout:
            if drop_connect_rate and self.training:
                keep = 1.0 - drop_connect_rate
                mask = torch.floor(keep + torch.rand([x.shape[0], 1, 1, 1], dtype=x.dtype,
                                                     device=x.device))
                x = x / keep * mask
            x = x.add_(inputs) if in_place else x + inputs
        return x


class EfficientNetFeatures(nn.Module):
    """EfficientNet returning ``[f2, f4, f8, f16, f32, head]`` (strides 2..32, the head at 32).

    ``out_feat_scale``: a number or one per resolution (5 values); a scale of exactly 1 keeps
    the block output (no ``_feat_fc_i``). ``feat_channels`` lists the six output widths.
    """

    def __init__(self, name: str = "efficientnet-b1",
                 out_feat_scale: Union[float, Sequence[float], None] = 0.25):
        super().__init__()
        width, depth, res, dropout = efficientnet_params(name)
        self.name, self.dropout_rate = name, dropout
        size = (res, res)
        stem = round_filters(32, width)
        self._conv_stem = SamePadConv2d(3, stem, 3, 2, bias=False, nominal_size=size)
        self._bn0 = _bn(stem)
        size = _down(size, 2)

        self._blocks = nn.ModuleList()
        res_mask: List[bool] = []
        widths: List[int] = []
        for repeats, kernel, stride, expand, cin, cout in _STAGES:
            cin, cout = round_filters(cin, width), round_filters(cout, width)
            n = round_repeats(repeats, depth)
            if stride > 1:
                res_mask[-1] = True  # the previous block ends its resolution
            res_mask += [False] * n
            widths += [cout] * n
            self._blocks.append(MBConvBlock(cin, cout, kernel, stride, expand, size))
            size = _down(size, stride)
            for _ in range(n - 1):
                self._blocks.append(MBConvBlock(cout, cout, kernel, 1, expand, size))
        res_mask[-1] = True
        self._res_feat_mask = res_mask
        feat = [w for w, m in zip(widths, res_mask) if m]

        self._feat_fc_names: List[str | None] = []
        if out_feat_scale is not None:
            for i, cin in enumerate(feat):
                scale = (out_feat_scale[i] if isinstance(out_feat_scale, (list, tuple))
                         else out_feat_scale)
                cout = int(round(cin * scale))
                if scale != 1.0:
                    self.add_module(f"_feat_fc_{i}", nn.Sequential(
                        nn.Conv2d(cin, cout, 1, bias=False), _bn(cout)))
                    self._feat_fc_names.append(f"_feat_fc_{i}")
                else:
                    self._feat_fc_names.append(None)
                feat[i] = cout
        else:
            self._feat_fc_names = [None] * len(feat)
        head = round_filters(1280, width)
        self._conv_head = nn.Conv2d(widths[-1], head, 1, bias=False)
        self._bn1 = _bn(head)
        self.feat_channels = feat + [head]

    def forward(self, x: torch.Tensor, fold_batchnorm: bool = False) -> List[torch.Tensor]:
        """The six maps. ``fold_batchnorm=True`` runs every convolution + BatchNorm pair as one
        folded convolution where no gradient is recorded and the modules are in eval mode
        (:func:`fastvision.nn.fold.conv_bn`; the same function up to float rounding, faster on
        the CPU); elsewhere, and by default, the modules run as the official code does."""
        conv_bn = fold.conv_bn if fold_batchnorm else _conv_then_bn
        x = conv_bn(x, self._conv_stem, self._bn0, silu=True)
        feats = []
        n = len(self._blocks)
        for idx, block in enumerate(self._blocks):
            x = block(x, _DROP_CONNECT * idx / n, fold_batchnorm)
            if self._res_feat_mask[idx]:
                fc = self._feat_fc_names[len(feats)]
                if fc is not None:
                    conv, bn = getattr(self, fc)
                    feats.append(conv_bn(x, conv, bn))
                else:
                    feats.append(x)
        x = conv_bn(x, self._conv_head, self._bn1, silu=True)
        feats.append(F.dropout(x, self.dropout_rate, self.training))
        return feats
