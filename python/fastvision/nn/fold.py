"""Convolution + BatchNorm folded into one convolution for inference.

In eval mode a BatchNorm after a convolution is a per-channel affine map, so the pair equals one
convolution with the scaled weight ``w * g / sqrt(var + eps)`` and the bias
``(b - mean) * g / sqrt(var + eps) + beta``. On the CPU the separate BatchNorm is a full extra
pass over a large activation (about a fifth of HyperSeg-M's backbone time at 1024x512).

The folded tensors are cached on the convolution (a plain attribute: the state dict and the
parameters are unchanged) and recomputed whenever a parameter or running statistic changes
(their version counters and storages are part of the cache key), or the dtype or device does.
Folding applies only where no gradient is recorded and nothing is being traced, compiled or
exported (those paths keep the modules as they are, so exported graphs keep their parameters);
elsewhere :func:`conv_bn` is ``bn(conv(x))``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["conv_bn", "folding_active", "folded_conv_bn_params"]

_CACHE_ATTR = "_fastvision_folded_bn"


def folding_active(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> bool:
    """Whether :func:`conv_bn` folds: both modules in eval mode, running statistics present, a
    zero-padded convolution, no gradient recorded and no tracing, compiling or exporting."""
    return (not conv.training and not bn.training and bn.track_running_stats
            and bn.running_mean is not None and bn.running_var is not None
            and conv.padding_mode == "zeros"
            and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling() and not torch.compiler.is_exporting()
            and not torch.jit.is_tracing() and not torch.jit.is_scripting()
            and not torch.onnx.is_in_onnx_export())


def _key(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple:
    tensors = (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
    return tuple(None if t is None else (t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape))
                 for t in tensors) + (bn.eps,)


def folded_conv_bn_params(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(weight, bias)`` of the convolution equal to ``bn(conv(x))`` in eval mode, cached."""
    key = _key(conv, bn)
    cached: Optional[tuple] = conv.__dict__.get(_CACHE_ATTR)
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    # Normal tensors even when called under inference_mode, so the cache stays usable outside it.
    with torch.inference_mode(False), torch.no_grad():
        scale = bn.running_var.double().add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        bias = -bn.running_mean.double() * scale
        if conv.bias is not None:
            bias = bias + conv.bias.double() * scale
        if bn.bias is not None:
            bias = bias + bn.bias.double()
        shape = (-1,) + (1,) * (conv.weight.dim() - 1)
        weight = (conv.weight.double() * scale.view(shape)).to(conv.weight.dtype)
        bias = bias.to(conv.weight.dtype)
    conv.__dict__[_CACHE_ATTR] = (key, weight, bias)
    return weight, bias


def conv_bn(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d, silu: bool = False) -> torch.Tensor:
    """``bn(conv(x))`` (``silu(bn(conv(x)))`` with ``silu=True``), as one folded convolution
    where :func:`folding_active` allows (the activation then runs in place on its output: no
    second large allocation). A ``conv`` with a ``static_pad`` (left, right, top, bottom;
    EfficientNet's same padding) is zero-padded first, as its own ``forward`` does (by the
    convolution itself when symmetric)."""
    if not folding_active(conv, bn):
        y = bn(conv(x))
        return F.silu(y) if silu else y
    padding = conv.padding
    static_pad = getattr(conv, "static_pad", None)
    if static_pad is not None and any(static_pad):
        left, right, top, bottom = static_pad
        if left == right and top == bottom and conv.padding == (0, 0):
            padding = (top, left)  # the convolution's own zero padding: no padded copy of x
        else:
            x = F.pad(x, static_pad)
    weight, bias = folded_conv_bn_params(conv, bn)
    y = F.conv2d(x, weight, bias, conv.stride, padding, conv.dilation, conv.groups)
    return F.silu(y, inplace=True) if silu else y
