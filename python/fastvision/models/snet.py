"""S-NET / ProgressiveNet generator network ("Learning to Sample", Dovrat et al., CVPR 2019).

Port of ``orendv/learning_to_sample classification/models/snet_model.py get_model``:
per-point conv 64 (kernel [1, 3] on xyz = linear on 3 channels), 64, 64, 128, bottleneck
(default 128), each with bias + BN (eps 1e-3) + ReLU -> max-pool over points -> FC 256, 256, 256
(bias + BN + ReLU) -> FC 3k with bias and BN (``fc14b``, bn=True) and **no activation** ->
reshape (B, k, 3) (TF ``tf.reshape(net, [B, -1, 3])``: xyz of one point are consecutive).

Generated points are free in R^3; matching them to input points (``fastvision.ops.nn_match``)
and the sampling loss are separate. ProgressiveNet is the same network generating 1024 points
whose prefixes are the samples of every size.

``output_bn=False`` drops the BN on the last FC (the PyTorch SampleNet port has none there).
Input layout (B, N, 3), output (B, k, 3).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .pointnet import BN_EPS, _FC, _PointConv, _check_input

__all__ = ["SNet"]


class SNet(nn.Module):
    """S-NET generator. Params (bottleneck 128, output BN): 200,448 + 256*3k + 3k + 2*3k."""

    def __init__(self, num_out_points: int = 64, bottleneck_size: int = 128, output_bn: bool = True):
        super().__init__()
        if int(num_out_points) < 1:
            raise ValueError(f"num_out_points must be >= 1, got {num_out_points}")
        if int(bottleneck_size) < 1:
            raise ValueError(f"bottleneck_size must be >= 1, got {bottleneck_size}")
        self.num_out_points = int(num_out_points)
        self.bottleneck_size = int(bottleneck_size)
        self.output_bn = bool(output_bn)
        self.conv1 = _PointConv(3, 64)
        self.conv2 = _PointConv(64, 64)
        self.conv3 = _PointConv(64, 64)
        self.conv4 = _PointConv(64, 128)
        self.conv5 = _PointConv(128, self.bottleneck_size)
        self.fc11b = _FC(self.bottleneck_size, 256)
        self.fc12b = _FC(256, 256)
        self.fc13b = _FC(256, 256)
        self.fc14b = nn.Linear(256, 3 * self.num_out_points)
        self.fc14b_bn = nn.BatchNorm1d(3 * self.num_out_points, eps=BN_EPS) if self.output_bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, 3) input cloud -> (B, num_out_points, 3) generated points."""
        _check_input(x)
        y = x.transpose(1, 2)
        y = self.conv5(self.conv4(self.conv3(self.conv2(self.conv1(y)))))
        y = torch.max(y, dim=2)[0]
        y = self.fc13b(self.fc12b(self.fc11b(y)))
        y = self.fc14b(y)
        if self.fc14b_bn is not None:
            y = self.fc14b_bn(y)
        return y.view(-1, self.num_out_points, 3)
