"""The loss of HRNet top-down pose estimation (``lib/core/loss.py`` of
``HRNet/HRNet-Human-Pose-Estimation``)."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["JointsMSELoss"]


class JointsMSELoss(nn.Module):
    """Official heatmap loss: for each joint 0.5 * MSE(pred * w, gt * w) over batch and pixels,
    averaged over joints (= 0.5 * the mean over everything, since every joint has the same
    number of pixels). ``use_target_weight=False`` ignores the weights."""

    def __init__(self, use_target_weight: bool = True):
        super().__init__()
        self.use_target_weight = bool(use_target_weight)

    def forward(self, output: torch.Tensor, target: torch.Tensor,
                target_weight: torch.Tensor) -> torch.Tensor:
        if output.dim() != 4 or output.shape != target.shape:
            raise ValueError(f"output and target must be (B, J, H, W) heatmaps of one shape, "
                             f"got {tuple(output.shape)} and {tuple(target.shape)}")
        diff = output - target
        if self.use_target_weight:
            b, j = output.shape[:2]
            if target_weight.numel() != b * j:
                raise ValueError(f"target_weight must hold B*J = {b * j} weights, got shape "
                                 f"{tuple(target_weight.shape)}")
            diff = diff * target_weight.reshape(b, j, 1, 1)
        return 0.5 * diff.square().mean()
