"""BatchNorm folding, shared by the fused inference ops (``patch_inverted_residual`` and the
PAD-Net encoder) and the modules that call them."""

from __future__ import annotations

import torch

__all__ = ["fold_batch_norm"]


def fold_batch_norm(bn: torch.nn.BatchNorm2d,
                    dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` of a BatchNorm in eval mode: ``bn(y) = y * scale + shift`` with
    ``scale = weight / sqrt(running_var + eps)``, ``shift = bias - running_mean * scale`` (computed
    in float64, returned in ``dtype``, default the BN's). Differentiable in the BN's affine
    parameters."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("fold_batch_norm: the BatchNorm must track running statistics")
    dtype = bn.running_mean.dtype if dtype is None else dtype
    inv = torch.rsqrt(bn.running_var.double() + bn.eps)
    weight = bn.weight.double() if bn.weight is not None else torch.ones_like(inv)
    bias = bn.bias.double() if bn.bias is not None else torch.zeros_like(inv)
    scale = weight * inv
    return scale.to(dtype), (bias - bn.running_mean.double() * scale).to(dtype)
