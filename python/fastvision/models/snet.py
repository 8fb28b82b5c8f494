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

from functools import partial

from ._registry import register_model
from .checkpoint import finish
from .pointnet import BN_EPS, _FC, _PointConv, _check_input, convert_tf_variables

__all__ = ["SNet", "SampleNet", "SoftProjection", "snet", "progressivenet", "samplenet",
           "samplenet_progressive"]


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


class SoftProjection(nn.Module):
    """Holder of SampleNet's temperature ``t``; projection by :func:`fastvision.ops.soft_project`.

    Mirrors the official PyTorch ``SoftProjection`` (``registration/src/soft_projection.py``):
    parameter ``_temperature`` (so official state dicts load), ``sigma() = max(t**2, min_sigma)``.
    As in the official code ``min_sigma`` is a plain attribute (not in the state dict) and
    ``nn.Parameter`` makes ``t`` trainable whatever ``is_temperature_trainable`` says (official
    quirk, reproduced); freeze it with ``_temperature.requires_grad_(False)``.
    """

    def __init__(self, group_size: int, initial_temperature: float = 1.0,
                 is_temperature_trainable: bool = True, min_sigma: float | None = 1e-4):
        super().__init__()
        if int(group_size) < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self._group_size = int(group_size)
        self.is_temperature_trainable = bool(is_temperature_trainable)  # ignored, see docstring
        self._temperature = nn.Parameter(torch.tensor(float(initial_temperature), dtype=torch.float32))
        self._min_sigma = min_sigma

    @property
    def group_size(self) -> int:
        return self._group_size

    def sigma(self) -> torch.Tensor:
        s = self._temperature ** 2
        if self._min_sigma is None:
            return s
        return torch.clamp(s, min=self._min_sigma)

    def forward(self, point_cloud: torch.Tensor, query_cloud: torch.Tensor) -> torch.Tensor:
        """Project ``query_cloud`` (B, 3, M) onto ``point_cloud`` (B, 3, N) ("bcn", as official)."""
        from fastvision.ops import soft_project

        return soft_project(query_cloud, point_cloud, self._temperature.to(query_cloud.dtype),
                            self._group_size, min_sigma=self._min_sigma, layout="bcn")


class SampleNet(nn.Module):
    """SampleNet network, PyTorch layout of ``itailang/SampleNet registration/src/samplenet.py``.

    Same layer names as the official module, so its state dicts load with ``strict=True``:
    ``conv1..conv5`` (Conv1d) + ``bn1..bn5``, ``fc1..fc4`` + ``bn_fc1..bn_fc3``, ``project._temperature``.
    BatchNorm uses the PyTorch defaults (eps 1e-5) as the official port does; there is no BN on
    ``fc4`` unless ``output_bn=True`` (then ``bn_fc4``, as in the TF classification code; not an
    official PyTorch key). Official quirk reproduced: ``fc4`` is viewed as (B, 3, k)
    (``y.view(-1, 3, k)``: coordinate-major), unlike the TF code's point-major (B, k, 3).

    ``forward(x)`` returns ``(simplified, projected)`` in training mode (``projected`` =
    ``simplified`` with ``skip_projection``) and ``(simplified, matched)`` in eval mode, where
    ``matched`` are the input points chosen by :func:`fastvision.ops.nn_match` (nearest input point
    of every simplified point, order-preserving unique, FPS completion when ``complete_fps``).
    Shapes follow ``input_shape``/``output_shape`` ("bcn" = (B, 3, N), "bnc" = (B, N, 3)).
    """

    def __init__(self, num_out_points: int, bottleneck_size: int = 128, group_size: int = 8,
                 initial_temperature: float = 1.0, is_temperature_trainable: bool = True,
                 min_sigma: float | None = 1e-2, input_shape: str = "bcn", output_shape: str = "bcn",
                 complete_fps: bool = True, skip_projection: bool = False, output_bn: bool = False):
        super().__init__()
        if int(num_out_points) < 1:
            raise ValueError(f"num_out_points must be >= 1, got {num_out_points}")
        for s in (input_shape, output_shape):
            if s not in ("bcn", "bnc"):
                raise ValueError(f"allowed shapes are 'bcn' and 'bnc', got {s!r}")
        self.num_out_points = int(num_out_points)
        self.name = "samplenet"
        self.conv1 = nn.Conv1d(3, 64, 1)
        self.conv2 = nn.Conv1d(64, 64, 1)
        self.conv3 = nn.Conv1d(64, 64, 1)
        self.conv4 = nn.Conv1d(64, 128, 1)
        self.conv5 = nn.Conv1d(128, bottleneck_size, 1)
        self.bn1 = nn.BatchNorm1d(64)
        self.bn2 = nn.BatchNorm1d(64)
        self.bn3 = nn.BatchNorm1d(64)
        self.bn4 = nn.BatchNorm1d(128)
        self.bn5 = nn.BatchNorm1d(bottleneck_size)
        self.fc1 = nn.Linear(bottleneck_size, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, 256)
        self.fc4 = nn.Linear(256, 3 * self.num_out_points)
        self.bn_fc1 = nn.BatchNorm1d(256)
        self.bn_fc2 = nn.BatchNorm1d(256)
        self.bn_fc3 = nn.BatchNorm1d(256)
        self.bn_fc4 = nn.BatchNorm1d(3 * self.num_out_points) if output_bn else None
        self.project = SoftProjection(group_size, initial_temperature, is_temperature_trainable,
                                      min_sigma)
        self.skip_projection = bool(skip_projection)
        self.complete_fps = bool(complete_fps)
        self.input_shape = input_shape
        self.output_shape = output_shape

    def simplify(self, x: torch.Tensor) -> torch.Tensor:
        """The generator alone: x (B, 3, N) -> simplified points (B, 3, k)."""
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = F.relu(self.bn3(self.conv3(y)))
        y = F.relu(self.bn4(self.conv4(y)))
        y = F.relu(self.bn5(self.conv5(y)))
        y = torch.max(y, 2)[0]
        y = F.relu(self.bn_fc1(self.fc1(y)))
        y = F.relu(self.bn_fc2(self.fc2(y)))
        y = F.relu(self.bn_fc3(self.fc3(y)))
        y = self.fc4(y)
        if self.bn_fc4 is not None:
            y = self.bn_fc4(y)
        return y.view(-1, 3, self.num_out_points)

    def forward(self, x: torch.Tensor):
        if x.dim() != 3:
            raise ValueError(f"expected a 3-d point cloud batch, got shape {tuple(x.shape)}")
        if self.input_shape == "bnc":
            x = x.permute(0, 2, 1)
        if x.shape[1] != 3:
            raise ValueError(f"shape of x must be [Batch x 3 x NumInPoints] after input_shape "
                             f"{self.input_shape!r}, got {tuple(x.shape)}")
        simp = self.simplify(x)  # B x 3 x k
        if self.training:
            out = simp if self.skip_projection else self.project(x, simp)
        else:
            from fastvision.ops import nn_match

            with torch.no_grad():
                idx = nn_match(simp.transpose(1, 2).contiguous(), x.transpose(1, 2).contiguous(),
                               self.num_out_points, complete="fps" if self.complete_fps else None)
                out = torch.gather(x, 2, idx.unsqueeze(1).expand(-1, 3, -1))  # B x 3 x k
        if self.output_shape == "bnc":
            simp = simp.permute(0, 2, 1)
            out = out.permute(0, 2, 1)
        return simp.contiguous(), out.contiguous()

    def get_projection_loss(self) -> torch.Tensor:
        """Official ``get_projection_loss``: sigma (clamped) in training, 0 otherwise."""
        sigma = self.project.sigma()
        if self.skip_projection or not self.training:
            return torch.zeros((), dtype=sigma.dtype, device=sigma.device)
        return sigma


def same_keys(sd, **model_kwargs) -> dict:
    """The converter of SampleNet: the official PyTorch state dict already has our keys."""
    return dict(sd)


@register_model(converter=partial(convert_tf_variables, "snet"))
def snet(*, num_out_points: int = 64, bottleneck_size: int = 128, output_bn: bool = True,
         weights=None) -> SNet:
    """S-NET generator (official default k = 64 output points)."""
    return finish(SNet(num_out_points, bottleneck_size, output_bn), weights)


@register_model(converter=partial(convert_tf_variables, "progressivenet"))
def progressivenet(*, num_out_points: int = 1024, bottleneck_size: int = 128,
                   output_bn: bool = True, weights=None) -> SNet:
    """ProgressiveNet: the S-NET network generating 1024 ordered points (prefixes = samples)."""
    return finish(SNet(num_out_points, bottleneck_size, output_bn), weights)


@register_model(converter=same_keys)
def samplenet(*, num_out_points: int = 64, bottleneck_size: int = 128, group_size: int = 8,
              initial_temperature: float = 1.0, is_temperature_trainable: bool = True,
              min_sigma: float | None = 1e-2, input_shape: str = "bcn", output_shape: str = "bcn",
              complete_fps: bool = True, skip_projection: bool = False, output_bn: bool = False,
              weights=None) -> SampleNet:
    """SampleNet, official PyTorch port defaults (``registration/src/samplenet.py``, ``sputils.py``:
    64 output points, group size 8, min_sigma 1e-2, no BN on the last FC)."""
    return finish(SampleNet(num_out_points, bottleneck_size, group_size, initial_temperature,
                             is_temperature_trainable, min_sigma, input_shape, output_shape,
                             complete_fps, skip_projection, output_bn), weights)


@register_model(converter=same_keys)
def samplenet_progressive(*, num_out_points: int = 1024, bottleneck_size: int = 128,
                          group_size: int = 7, initial_temperature: float = 1.0,
                          min_sigma: float | None = None, input_shape: str = "bnc",
                          output_shape: str = "bnc", output_bn: bool = True,
                          weights=None) -> SampleNet:
    """SampleNet-Progressive (``train_samplenet_progressive.py``, TF classification code): the
    SampleNet network generating 1024 ordered points whose prefixes are the samples of every size;
    classification defaults (projection group 7, no sigma clamp, BN on the output FC)."""
    return finish(SampleNet(num_out_points, bottleneck_size, group_size, initial_temperature,
                            True, min_sigma, input_shape, output_shape, True, False, output_bn),
                  weights)
