"""Operation counter: forward hooks on the leaf modules of a model, one forward pass.

Counting convention (multiply-accumulates, "MACs", the unit of the usual PyTorch counters such as
thop/ptflops that papers of this period report as "FLOPs"; PAD-Net's Tables 2-7 are reproduced
with it, see :mod:`fastvision.models.padnet`):

* ``Conv1d/2d``, ``Linear``: one per multiply-accumulate (output elements x input channels per
  group x kernel size), plus one per output element for a bias.
* ``BatchNorm``: two per element (the scale and the shift of inference-mode BN).
* Activations (``ReLU``, ``ReLU6``, ``Hardswish``, ``Hardsigmoid``, ``Sigmoid``, ...): zero, as in
  thop and ptflops (comparisons and clamps, not arithmetic); set ``activation_ops`` to count them.
* ``MaxPool``: zero (comparisons); ``AvgPool`` / ``AdaptiveAvgPool``: one per input element summed
  plus one division per output element.
* Upsampling (``nn.Upsample`` or :class:`Resize`): bilinear 4 multiply-accumulates per output
  element, nearest (and a resize to the same size) zero.

* HyperSeg's patch-wise dynamic layers (``fastvision.nn`` ``HyperPatchConv2d``,
  ``HyperPatchNoPadding``, ``HyperPatchInvertedResidual``): one per generated weight per output
  position (what the same convolution with a static kernel costs; stride 1), plus their BN and
  ``signal2weights`` children as above.

Tensor arithmetic outside modules (residual sums, the SE gating product, concatenation) is not
seen by module hooks and is not counted, as in thop.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..nn import HyperPatchConv2d, HyperPatchInvertedResidual, HyperPatchNoPadding

__all__ = ["Resize", "OpCount", "count_ops", "count_params"]

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.SiLU, nn.Tanh,
                nn.LeakyReLU, nn.GELU)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
_BILINEAR_MACS_PER_OUTPUT = 4
_DYNAMIC_LAYERS = (HyperPatchConv2d, HyperPatchInvertedResidual, HyperPatchNoPadding)


class Resize(nn.Module):
    """``F.interpolate`` to a size given at call time, as a module so that counters see it.

    ``mode`` is ``"bilinear"`` or ``"nearest"``; ``align_corners`` applies to bilinear only.
    """

    def __init__(self, mode: str = "bilinear", align_corners: bool = False):
        super().__init__()
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"Resize: mode must be 'bilinear' or 'nearest', got {mode!r}")
        self.mode = mode
        self.align_corners = align_corners if mode == "bilinear" else None

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x, size=tuple(size), mode=self.mode, align_corners=self.align_corners)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, align_corners={self.align_corners}"


@dataclass
class OpCount:
    """Result of :func:`count_ops`: ``total`` operations, split ``by_type`` (module class name)
    and ``by_module`` (qualified module name; a module called several times is summed)."""

    total: int
    by_type: Dict[str, int] = field(default_factory=dict)
    by_module: Dict[str, int] = field(default_factory=dict)

    @property
    def mega(self) -> float:
        """Total in millions (the papers' "MFLOPs")."""
        return self.total / 1e6


def _module_ops(m: nn.Module, inputs, output, activation_ops: int) -> int:
    if isinstance(m, _DYNAMIC_LAYERS):
        # Every output position multiplies by each of the layer's per-patch weights once.
        return output.shape[0] * output.shape[-2] * output.shape[-1] * int(m.hyper_params)
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        per_out = (m.in_channels // m.groups) * math.prod(m.kernel_size)
        return output.numel() * (per_out + (1 if m.bias is not None else 0))
    if isinstance(m, nn.Linear):
        return output.numel() * (m.in_features + (1 if m.bias is not None else 0))
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return 2 * output.numel()
    if isinstance(m, _ACTIVATIONS):
        return activation_ops * output.numel()
    if isinstance(m, _MAX_POOLS):
        return 0
    if isinstance(m, _AVG_POOLS):
        return inputs[0].numel() + output.numel()
    if isinstance(m, (nn.Upsample, Resize)):
        resized = inputs[0].shape != output.shape
        return _BILINEAR_MACS_PER_OUTPUT * output.numel() if resized and m.mode == "bilinear" else 0
    return 0


def count_ops(model: nn.Module, *inputs: torch.Tensor, activation_ops: int = 0) -> OpCount:
    """Count the operations of one ``model(*inputs)`` call (convention in the module docstring).

    The model runs under ``torch.no_grad()`` in its current train/eval mode; hooks are removed
    afterwards. ``activation_ops`` is the cost per element of an activation (default 0).
    """
    if int(activation_ops) < 0:
        raise ValueError(f"count_ops: activation_ops must be >= 0, got {activation_ops}")
    by_type: Dict[str, int] = defaultdict(int)
    by_module: Dict[str, int] = defaultdict(int)
    handles = []

    def make_hook(name: str):
        def hook(m, inp, out):
            ops = _module_ops(m, inp, out, int(activation_ops))
            by_type[type(m).__name__] += ops
            by_module[name] += ops

        return hook

    for name, m in model.named_modules():
        if isinstance(m, _DYNAMIC_LAYERS) or not any(True for _ in m.children()):
            handles.append(m.register_forward_hook(make_hook(name)))
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return OpCount(sum(by_type.values()), dict(by_type), dict(by_module))


def count_params(model: nn.Module) -> int:
    """Number of parameters (BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())
