"""U-Net baseline of PAD-Net's Table 6 (``unet``): the paper gives only its size (0.0086M params,
4.4 MFLOPs); this is a textbook U-Net of widths 2-16 (up-conv + skip concat) that matches it
(counts in :mod:`fastvision.models.padnet`'s docstring and ``PAPER_COUNTS``)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ._registry import register_model
from .checkpoint import finish
from .flops import Resize

__all__ = ["UNetEncoder", "UNetUp", "UNetDecoder", "UNet", "unet"]


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(_conv_bn_relu(in_channels, out_channels),
                         _conv_bn_relu(out_channels, out_channels))


class UNetEncoder(nn.Module):
    """Level 0: double conv (3x3 conv + BN + ReLU, twice) at input resolution; level i > 0:
    MaxPool 2x2 (``ceil_mode``, so odd sizes keep every pixel), double conv to ``widths[i]``.
    Returns every level's output, finest first (the skips; the last one is the bottleneck)."""

    def __init__(self, widths: Sequence[int], in_channels: int = 1):
        super().__init__()
        self.in_channels = int(in_channels)
        self.widths = tuple(int(w) for w in widths)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.levels = nn.ModuleList(
            _double_conv(self.in_channels if i == 0 else self.widths[i - 1], w)
            for i, w in enumerate(self.widths))
        self.tap_channels = self.widths

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        taps = []
        for i, level in enumerate(self.levels):
            x = level(x if i == 0 else self.pool(x))
            taps.append(x)
        return tuple(taps)


class UNetUp(nn.Module):
    """U-Net decoder step: up-conv (bilinear x2 to the skip's size, 3x3 conv + BN + ReLU to the
    skip's width), Concat(skip, up), double conv to the skip's width."""

    def __init__(self, coarse_channels: int, skip_channels: int):
        super().__init__()
        self.upsample = Resize("bilinear")
        self.up_conv = _conv_bn_relu(coarse_channels, skip_channels)
        self.conv = _double_conv(2 * skip_channels, skip_channels)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.up_conv(self.upsample(coarse, skip.shape[-2:]))
        return self.conv(torch.cat([skip, up], dim=1))


class UNetDecoder(nn.Module):
    """One :class:`UNetUp` per skip, coarse to fine, then the head (conv with bias to 1 channel)."""

    def __init__(self, widths: Sequence[int], head_kernel: int = 1):
        super().__init__()
        if head_kernel not in (1, 3):
            raise ValueError(f"head_kernel must be 1 or 3, got {head_kernel}")
        widths = tuple(int(w) for w in widths)
        self.ups = nn.ModuleList(UNetUp(widths[i + 1], widths[i])
                                 for i in range(len(widths) - 2, -1, -1))
        self.head = nn.Conv2d(widths[0], 1, head_kernel, 1, head_kernel // 2, bias=True)

    def forward(self, taps: Sequence[torch.Tensor]):
        """Logits at the finest tap's resolution and the decoder steps' outputs, coarse to fine."""
        x, features = taps[-1], []
        for up, skip in zip(self.ups, reversed(taps[:-1])):
            x = up(x, skip)
            features.append(x)
        return self.head(x), tuple(features)


class UNet(nn.Module):
    """U-Net baseline of PAD-Net's Table 6 (paper 0.0086M / 4.4 MFLOPs at 112x48; the paper gives
    no architecture, the layers below are chosen to be a textbook U-Net of that size).

    Ronneberger et al. (MICCAI 2015) scaled down, with BN: ``len(widths)`` levels of double 3x3
    conv + BN + ReLU, 2x2 max-pool between levels, widths doubling (default 2, 4, 8, 16: three
    poolings, bottleneck at 1/8, 14x6 for a 112x48 pad); decoder: per level an up-conv halving the
    width (bilinear x2 + 3x3 conv + BN + ReLU, in place of Ronneberger's 2x2 transposed conv,
    which :mod:`fastvision.models.flops` does not count and which cannot restore odd sizes),
    Concat with the skip, double conv; head 1x1 conv with bias to one channel (``head_kernel``),
    no final activation. Same output convention as
    :class:`PADNet`: ``forward(x)`` -> particle-map logits (B, 1, H, W) at input resolution (any
    H, W >= 1: odd sizes are pooled with ``ceil_mode`` and upsampled to the skip's size);
    ``forward(x, return_features=True)`` -> ``(logits, features)`` with the decoder steps'
    outputs, coarse to fine (default widths 8, 4, 2 at 1/4, 1/2, 1/1, the resolutions of PAD-Net's
    three chains). ``model.encoder`` returns the skips, finest first.

    Why these numbers: at 112x48 this is 8,577 parameters (paper 0.0086M: -0.3%) and 4.424 MMACs
    (thop-style, :mod:`fastvision.models.flops`; paper 4.4 MFLOPs: +0.5%). Neighbouring textbook
    variants miss: without the up-conv (bilinear up + Concat directly) 7,793 / 3.81 (-9% / -13%);
    widths from 3 with single convs 8,668 / 5.08 (+15% MACs); 3 levels (4, 8, 16), single convs:
    3,721 / 6.04.

    It trains with the losses of :mod:`fastvision.losses.particles` (AAL) and is scored by
    :class:`fastvision.metrics.particles.ParticleMetrics` like PAD-Net; ``fastvision train
    padnet`` trains only the Table 1 widths (``--width``), as for the Table 2 encoders. There is
    no fused path (``use_fused`` does not apply). Measured on the embedded data (AAL, Adam 1e-3,
    batch 8, 6 epochs of the 1952 pads, first 100 test pads): F1 0.966 / MAE 1.5 and 1.2 at seeds
    1 and 2; at seed 0 (12 epochs) one of the two full-resolution channels died, the map topped
    out flat at sigmoid(head bias) = 0.78 and the flat tops gave duplicate peaks (precision
    0.60): a risk of so narrow a top level.
    """

    def __init__(self, widths: Sequence[int] = (2, 4, 8, 16), in_channels: int = 1,
                 head_kernel: int = 1):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"UNet: widths needs >= 2 levels of >= 1 channel, got {widths}")
        self.encoder = UNetEncoder(widths, in_channels)
        self.decoder = UNetDecoder(widths, head_kernel)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        if x.dim() != 4 or x.shape[1] != self.encoder.in_channels:
            raise ValueError(f"UNet: x must be (B, {self.encoder.in_channels}, H, W), "
                             f"got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"UNet: x must be a floating-point tensor, got {x.dtype}")
        logits, features = self.decoder(self.encoder(x))
        return (logits, features) if return_features else logits


@register_model()
def unet(*, widths: Sequence[int] = (2, 4, 8, 16), head_kernel: int = 1, weights=None) -> UNet:
    """Table 6's U-Net baseline (paper 0.0086M / 4.4 MFLOPs; layers chosen here, see
    :class:`UNet`): 8,577 parameters, 4.42 MMACs at 112x48."""
    return finish(UNet(widths, 1, head_kernel), weights)
