"""HyperSeg's dynamic patch-wise layers as modules, on the fastvision ops.

Attribute names, ``hyper_params``, ``init_signal2weights`` / ``apply_signal2weights`` and
``forward(x, s)`` follow the official ``hyperseg/models/hyperseg_v1_0.py`` (YuvalNirkin/hyperseg),
so the official state-dict keys (``signal2weights.weight``, ``bn1`` .. ``bn3``) and the way the
decoder wires the weight signal carry over. The signal ``s`` is the context head's output at the
patch-grid resolution; ``signal2weights`` (a grouped 1x1 conv, no bias) maps the layer's slice of
it to the per-patch kernels, used as they come (no permute / contiguous copies).

* :class:`HyperPatchNoPadding` and :class:`HyperPatchConv2d`: :func:`fastvision.ops.patch_conv2d`
  in training and in eval.
* :class:`HyperPatchInvertedResidual`: in eval mode (stride 1, 3x3, HyperSeg's case) the fused
  :func:`fastvision.ops.patch_inverted_residual` with the BatchNorms folded; in training mode
  HyperSeg's unfused formulation (:func:`fastvision.ops._reference.hyperpatch_inverted_residual_unfold`),
  whose BatchNorm batch statistics include the halo pixels, as the official ones do.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.modules.utils import _pair

from fastvision.ops import _reference
from fastvision.ops.patch import fold_batch_norm, patch_conv2d, patch_inverted_residual

__all__ = ["HyperPatchConv2d", "HyperPatchInvertedResidual", "HyperPatchNoPadding", "next_multiple",
           "set_fastvision_ops"]


def next_multiple(x: int, base: int) -> int:
    """The smallest multiple of ``base`` that is ``>= x`` (HyperSeg's ``next_multiply``)."""
    return -(-int(x) // int(base)) * int(base)


class _HyperPatchLayer(nn.Module):
    """The weight-signal plumbing shared by the dynamic layers."""

    hyper_params: int
    _round_signal2weights = True  # pad the signal2weights outputs to a multiple of its groups
    # False: run HyperSeg's own pad + unfold + grouped-conv + fold formulation instead of the
    # fastvision ops (the benchmarks' unfused baseline; stride 1, patch sizes dividing the input).
    use_fastvision_ops = True

    def _init_signal(self) -> None:
        self.signal_channels = None
        self.signal_index = None
        self.signal2weights = None

    def init_signal2weights(self, signal_channels: int, signal_index: int = 0, groups: int = 1) -> None:
        """Creates ``signal2weights``: a grouped 1x1 conv from ``signal_channels`` channels of the
        signal, starting at ``signal_index``, to this layer's per-patch weights."""
        self.signal_channels = int(signal_channels)
        self.signal_index = int(signal_index)
        out = next_multiple(self.hyper_params, groups) if self._round_signal2weights else self.hyper_params
        self.signal2weights = nn.Conv2d(self.signal_channels, out, 1, bias=False, groups=groups)

    def apply_signal2weights(self, s: torch.Tensor) -> torch.Tensor:
        """The per-patch weights ``(B, hyper_params, fh, fw)`` from the signal (``s`` itself when
        the layer has no ``signal2weights``: then ``s`` already is the weights)."""
        if self.signal2weights is None:
            return s
        i = self.signal_index
        return self.signal2weights(s[:, i:i + self.signal_channels])[:, :self.hyper_params]


class HyperPatchNoPadding(_HyperPatchLayer):
    """Per-patch convolution without padding (HyperSeg's 1x1 decoder layers)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, dilation=1, groups: int = 1):
        super().__init__()
        if in_channels % groups != 0:
            raise ValueError(f"HyperPatchNoPadding: in_channels ({in_channels}) must be divisible by groups ({groups})")
        if out_channels % groups != 0:
            raise ValueError(f"HyperPatchNoPadding: out_channels ({out_channels}) must be divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        self.hyper_params = out_channels * (in_channels // groups) * self.kernel_size[0] * self.kernel_size[1]
        self._init_signal()

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        weight = self.apply_signal2weights(s)
        if not self.use_fastvision_ops:
            return _reference.hyperpatch_conv2d_unfold(x, weight, self.kernel_size[0], 0, groups=self.groups)
        return patch_conv2d(x, weight, self.kernel_size, self.stride, 0, "zeros", self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, groups={self.groups}")


class HyperPatchConv2d(_HyperPatchLayer):
    """Per-patch convolution whose halo comes from the neighbouring patches, padded only at the
    image border (HyperSeg's ``HyperPatchConv2d``; its ``signal2weights`` has exactly
    ``hyper_params`` outputs, as the official)."""

    _round_signal2weights = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, padding_mode: str = "reflect"):
        super().__init__()
        if in_channels % groups != 0 or out_channels % groups != 0:
            raise ValueError(f"HyperPatchConv2d: in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must be divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        self.padding, self.padding_mode = _pair(padding), padding_mode
        self.hyper_params = out_channels * (in_channels // groups) * self.kernel_size[0] * self.kernel_size[1]
        self._init_signal()

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        weight = self.apply_signal2weights(s)
        if not self.use_fastvision_ops:
            return _reference.hyperpatch_conv2d_unfold(x, weight, self.kernel_size[0], self.padding[0],
                                                       self.padding_mode, self.groups)
        return patch_conv2d(x, weight, self.kernel_size, self.stride, self.padding, self.padding_mode,
                            self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, padding_mode={self.padding_mode}")


class HyperPatchInvertedResidual(_HyperPatchLayer):
    """HyperSeg's decoder block: per-patch 1x1 expand (``expand_ratio``), BN, act, per-patch
    depthwise ``kernel_size`` with a 1-pixel halo from the neighbouring patches (reflect at the
    image border), BN, act, per-patch 1x1 project, BN; residual when ``in_nc == out_nc`` at stride 1.

    Eval mode with ReLU6, stride 1 and a 3x3 kernel (every HyperSeg configuration) runs the fused
    :func:`fastvision.ops.patch_inverted_residual`; anything else (training, other settings) runs
    the official unfused formulation. Both need the patch grid to divide the input in training
    (HyperSeg's unfold); the fused path also takes ragged grids.
    """

    def __init__(self, in_nc: int, out_nc: int, kernel_size=3, stride: int = 1, expand_ratio=1,
                 norm_layer=nn.BatchNorm2d, act_layer=None, padding_mode: str = "reflect"):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"HyperPatchInvertedResidual: stride must be 1 or 2, got {stride}")
        self.stride = stride
        self.padding_mode = padding_mode
        self.padding = (1, 1)  # HyperSeg pads by one pixel whatever the kernel size
        self.in_nc, self.out_nc = in_nc, out_nc
        self.kernel_size = _pair(kernel_size)
        self.hidden_dim = int(round(in_nc * expand_ratio))
        self.use_res_connect = stride == 1 and in_nc == out_nc
        self.act_layer = act_layer if act_layer is not None else nn.ReLU6(inplace=True)
        self.bn1 = norm_layer(self.hidden_dim)
        self.bn2 = norm_layer(self.hidden_dim)
        self.bn3 = norm_layer(out_nc)
        kh, kw = self.kernel_size
        self._ranges = [0, in_nc * self.hidden_dim, in_nc * self.hidden_dim + self.hidden_dim * kh * kw]
        self._ranges.append(self._ranges[2] + self.hidden_dim * out_nc)
        self.hyper_params = self._ranges[3]
        self._init_signal()

    def _fusable(self) -> bool:
        return (self.use_fastvision_ops and not self.training and self.stride == 1 and self.kernel_size == (3, 3)
                and isinstance(self.act_layer, nn.ReLU6)
                and all(isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None
                        for bn in (self.bn1, self.bn2, self.bn3)))

    def conv(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        weight = self.apply_signal2weights(s)
        if self._fusable():
            bns = [tuple(t.to(x.dtype) for t in fold_batch_norm(bn)) for bn in (self.bn1, self.bn2, self.bn3)]
            return patch_inverted_residual(x, weight, self.hidden_dim, *bns, kernel_size=3,
                                           padding_mode=self.padding_mode)
        if self.stride != 1:
            return self._conv_strided(x, weight)
        return _reference.hyperpatch_inverted_residual_unfold(
            x, weight, self.hidden_dim, self.out_nc, self.bn1, self.bn2, self.bn3, act=self.act_layer,
            kernel_size=self.kernel_size[0], padding_mode=self.padding_mode)

    def _conv_strided(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # Stride 2 (unused by HyperSeg's configurations): the three per-patch convs as patch_conv2d;
        # BN statistics then exclude the halo.
        r0, r1, r2, r3 = self._ranges
        kh, kw = self.kernel_size
        y = patch_conv2d(x, weight[:, r0:r1], 1, padding=0)
        y = self.act_layer(self.bn1(y))
        y = patch_conv2d(y, weight[:, r1:r2], (kh, kw), self.stride, 1, self.padding_mode, groups=self.hidden_dim)
        y = self.act_layer(self.bn2(y))
        return self.bn3(patch_conv2d(y, weight[:, r2:r3], 1, padding=0))

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        out = self.conv(x, s)
        return x + out if self.use_res_connect else out

    def extra_repr(self) -> str:
        return (f"{self.in_nc}, {self.out_nc}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"hidden={self.hidden_dim}, padding_mode={self.padding_mode}")


def set_fastvision_ops(model: nn.Module, enabled: bool) -> nn.Module:
    """Switches every HyperSeg dynamic layer of ``model`` between the fastvision ops (``True``, the
    default) and HyperSeg's own unfused formulation (``False``); returns ``model``."""
    for m in model.modules():
        if isinstance(m, _HyperPatchLayer):
            m.use_fastvision_ops = bool(enabled)
    return model
