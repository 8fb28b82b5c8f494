"""MobileNet building blocks, shared by PAD-Net, its teacher and its Table 2 comparison encoders
(:mod:`fastvision.models.padnet`): the MobileNetV3 bneck in the layout of
``xiaolai-sqlai/mobilenetv3`` (SE on the block output, with BN inside; the layout that reproduces
PAD-Net's parameter counts, see that module's docstring) and the MobileNetV2 inverted residual,
with encoders that return tapped feature maps. Every BN is its own module (foldable).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

__all__ = [
    "SqueezeExcite",
    "Bneck",
    "MobileNetV3Encoder",
    "InvertedResidual",
    "MobileNetV2Encoder",
    "MOBILENETV3_SMALL_BNECKS",
    "MOBILENETV2_GROUPS",
]

# MobileNetV3-Small (Howard et al. 2019, Table 2), stride pattern of the original network.
MOBILENETV3_SMALL_BNECKS = (
    (3, 16, 16, 16, True, "RE", 2),
    (3, 16, 72, 24, False, "RE", 2),
    (3, 24, 88, 24, False, "RE", 1),
    (5, 24, 96, 40, True, "HS", 2),
    (5, 40, 240, 40, True, "HS", 1),
    (5, 40, 240, 40, True, "HS", 1),
    (5, 40, 120, 48, True, "HS", 1),
    (5, 48, 144, 48, True, "HS", 1),
    (5, 48, 288, 96, True, "HS", 2),
    (5, 96, 576, 96, True, "HS", 1),
    (5, 96, 576, 96, True, "HS", 1),
)


def _activation(name: str) -> nn.Module:
    if name == "RE":
        return nn.ReLU()
    if name == "HS":
        return nn.Hardswish()
    raise ValueError(f"nonlinearity must be 'RE' or 'HS', got {name!r}")


class SqueezeExcite(nn.Module):
    """SE of ``xiaolai-sqlai/mobilenetv3``: avg-pool, 1x1 (no bias) + BN + ReLU, 1x1 (no bias) + BN,
    h-sigmoid gate multiplied into the input."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        squeeze = channels // reduction
        if squeeze < 1:
            raise ValueError(f"SqueezeExcite: channels ({channels}) // reduction ({reduction}) must be >= 1")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze, 1, bias=False)
        self.reduce_bn = nn.BatchNorm2d(squeeze)
        self.reduce_act = nn.ReLU()
        self.expand = nn.Conv2d(squeeze, channels, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(channels)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.reduce_act(self.reduce_bn(self.reduce(self.pool(x))))
        return x * self.gate(self.expand_bn(self.expand(s)))


class Bneck(nn.Module):
    """MobileNetV3 bottleneck (layout in the module docstring)."""

    def __init__(self, kernel: int, in_channels: int, expansion: int, out_channels: int,
                 se: bool, nonlinearity: str, stride: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"Bneck: stride must be 1 or 2, got {stride}")
        self.stride = stride
        self.expand = nn.Conv2d(in_channels, expansion, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(expansion)
        self.expand_act = _activation(nonlinearity)
        self.depthwise = nn.Conv2d(expansion, expansion, kernel, stride, kernel // 2, groups=expansion,
                                   bias=False)
        self.depthwise_bn = nn.BatchNorm2d(expansion)
        self.depthwise_act = _activation(nonlinearity)
        self.project = nn.Conv2d(expansion, out_channels, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(out_channels)
        self.se = SqueezeExcite(out_channels) if se else None
        self.shortcut = None
        if stride == 1 and in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand_act(self.expand_bn(self.expand(x)))
        y = self.depthwise_act(self.depthwise_bn(self.depthwise(y)))
        y = self.project_bn(self.project(y))
        if self.se is not None:
            y = self.se(y)
        if self.stride == 1:
            y = y + (x if self.shortcut is None else self.shortcut(x))
        return y


class MobileNetV3Encoder(nn.Module):
    """Stem conv 3x3 + BN + h-swish, then bnecks; returns the outputs of the ``taps`` bnecks.

    Args:
        bnecks: bneck settings ``(kernel, in, exp, out, se, nl, stride)``.
        taps: indices of the bnecks whose outputs are returned, increasing, ending with the last.
        in_channels: image channels (1 for the grayscale pads).
        stem_stride: stride of the stem conv.
        strides: optional per-bneck strides overriding those in ``bnecks``.
    """

    def __init__(self, bnecks: Sequence[tuple], taps: Sequence[int], in_channels: int = 1,
                 stem_stride: int = 1, strides: Sequence[int] | None = None):
        super().__init__()
        bnecks = [tuple(b) for b in bnecks]
        if strides is not None:
            if len(strides) != len(bnecks):
                raise ValueError(f"strides has {len(strides)} entries, bnecks {len(bnecks)}")
            bnecks = [b[:6] + (int(s),) for b, s in zip(bnecks, strides)]
        taps = [int(t) for t in taps]
        if not taps or sorted(set(taps)) != taps or taps[0] < 0 or taps[-1] != len(bnecks) - 1:
            raise ValueError(f"taps must be increasing indices into the {len(bnecks)} bnecks, the "
                             f"last one {len(bnecks) - 1}, got {taps}")
        self.taps = tuple(taps)
        self.in_channels = int(in_channels)
        stem_out = bnecks[0][1]
        self.stem = nn.Conv2d(self.in_channels, stem_out, 3, stem_stride, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(stem_out)
        self.stem_act = nn.Hardswish()
        self.blocks = nn.ModuleList(Bneck(*b) for b in bnecks)
        self.tap_channels = tuple(bnecks[t][3] for t in self.taps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.stem_act(self.stem_bn(self.stem(x)))
        taps = []
        for i, block in enumerate(self.blocks):
            y = block(y)
            if i in self.taps:
                taps.append(y)
        return tuple(taps)


# MobileNetV2 bottleneck groups (t, c, n, s) (Sandler et al. 2018, Table 2).
MOBILENETV2_GROUPS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                      (6, 160, 3, 2), (6, 320, 1, 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block (torchvision layout): [expand 1x1 + BN + ReLU6] -> depthwise 3x3 + BN +
    ReLU6 -> project 1x1 + BN, residual when stride 1 and the widths agree."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand = nn.Conv2d(in_channels, hidden, 1, bias=False) if expand_ratio != 1 else None
        self.expand_bn = nn.BatchNorm2d(hidden) if expand_ratio != 1 else None
        self.expand_act = nn.ReLU6() if expand_ratio != 1 else None
        self.depthwise = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(hidden)
        self.depthwise_act = nn.ReLU6()
        self.project = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand_act(self.expand_bn(self.expand(x)))
        y = self.project_bn(self.project(self.depthwise_act(self.depthwise_bn(self.depthwise(y)))))
        return x + y if self.residual else y


class MobileNetV2Encoder(nn.Module):
    """Stem conv 3x3 -> 32 + BN + ReLU6, then the first ``len(strides)`` bottleneck groups of
    MobileNetV2 with the given group strides; returns the outputs of the ``taps`` groups."""

    def __init__(self, strides: Sequence[int], taps: Sequence[int], in_channels: int = 1,
                 stem_stride: int = 1):
        super().__init__()
        if not 1 <= len(strides) <= len(MOBILENETV2_GROUPS):
            raise ValueError(f"MobileNetV2Encoder: 1 to {len(MOBILENETV2_GROUPS)} group strides, "
                             f"got {len(strides)}")
        taps = [int(t) for t in taps]
        if not taps or sorted(set(taps)) != taps or taps[0] < 0 or taps[-1] != len(strides) - 1:
            raise ValueError(f"taps must be increasing indices into the {len(strides)} groups, the "
                             f"last one {len(strides) - 1}, got {taps}")
        self.taps = tuple(taps)
        self.in_channels = int(in_channels)
        self.stem = nn.Conv2d(self.in_channels, 32, 3, stem_stride, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(32)
        self.stem_act = nn.ReLU6()
        groups, cin = [], 32
        for (t, c, n, _), stride in zip(MOBILENETV2_GROUPS, strides):
            groups.append(nn.Sequential(*(InvertedResidual(cin if i == 0 else c, c, stride if i == 0 else 1, t)
                                          for i in range(n))))
            cin = c
        self.groups = nn.ModuleList(groups)
        self.tap_channels = tuple(MOBILENETV2_GROUPS[t][1] for t in self.taps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.stem_act(self.stem_bn(self.stem(x)))
        taps = []
        for i, group in enumerate(self.groups):
            y = group(y)
            if i in self.taps:
                taps.append(y)
        return tuple(taps)
