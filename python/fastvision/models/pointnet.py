"""PointNet classifier as used by the point-cloud sampling papers (S-NET, SampleNet).

Layer-for-layer port of the TensorFlow PointNet in ``orendv/learning_to_sample`` /
``itailang/SampleNet`` (``classification/models/pointnet_cls.py``, ``transform_nets.py``,
``pointnet_cls_basic.py``):

* every shared-MLP "conv2d" is a 1x1 convolution (the first one, kernel [1, 3] on xyz, is a
  linear map of the 3 coordinates) with bias, BatchNorm (eps 1e-3) and ReLU;
* fully connected layers with BN have bias + BN + ReLU;
* the T-nets end with a zero-initialised linear layer whose bias is the flattened identity,
  so the predicted transform is exactly the identity at initialisation;
* dropout keep_prob 0.7 (``p = 0.3``).

Input layout is (B, N, 3) as in the official code. ``forward`` returns ``(logits, end_points)``;
``end_points["transform"]`` is the 64x64 feature transform used by :func:`pointnet_cls_loss`.

BatchNorm momentum: TF ``bn_decay=None`` means decay 0.9, i.e. torch momentum 0.1 (the default
here). The official training schedule ``bn_decay = min(0.99, 1 - 0.5 * 0.5**floor(step*B/decay_step))``
corresponds to ``momentum = 1 - bn_decay``; set it on the BN modules if you reproduce training.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import get_model, register_model
from .checkpoint import finish

BN_EPS = 1e-3

__all__ = ["PointNetCls", "PointNetClsVanilla", "TransformNet", "pointnet_cls_loss",
           "convert_tf_variables", "pointnet_cls", "pointnet_cls_vanilla"]


class _PointConv(nn.Module):
    """Shared per-point layer: 1x1 conv (with bias) + BN + ReLU, on (B, C, N)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, 1, bias=True)
        self.bn = nn.BatchNorm1d(cout, eps=BN_EPS)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class _FC(nn.Module):
    """Fully connected layer with bias + BN + ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.fc = nn.Linear(cin, cout, bias=True)
        self.bn = nn.BatchNorm1d(cout, eps=BN_EPS)

    def forward(self, x):
        return F.relu(self.bn(self.fc(x)))


class TransformNet(nn.Module):
    """T-net predicting a K x K transform from (B, C, N) features (C = K).

    Official: tconv 64, 128, 1024 -> max-pool -> tfc 512, 256 (BN, ReLU) -> 256 x K*K linear
    with zero weights and bias = eye(K) (``transform_nets.py``).
    """

    def __init__(self, k: int):
        super().__init__()
        self.k = k
        self.tconv1 = _PointConv(k, 64)
        self.tconv2 = _PointConv(64, 128)
        self.tconv3 = _PointConv(128, 1024)
        self.tfc1 = _FC(1024, 512)
        self.tfc2 = _FC(512, 256)
        self.transform = nn.Linear(256, k * k)
        self.reset_transform()

    def reset_transform(self):
        with torch.no_grad():
            self.transform.weight.zero_()
            self.transform.bias.copy_(torch.eye(self.k).flatten())

    def forward(self, x):  # x: (B, K, N)
        y = self.tconv3(self.tconv2(self.tconv1(x)))
        y = torch.max(y, dim=2)[0]
        y = self.tfc2(self.tfc1(y))
        return self.transform(y).view(-1, self.k, self.k)


def _check_input(x: torch.Tensor) -> None:
    if x.dim() != 3 or x.shape[2] != 3:
        raise ValueError(f"expected a point cloud of shape (B, N, 3), got {tuple(x.shape)}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"empty point cloud batch of shape {tuple(x.shape)}")


class PointNetCls(nn.Module):
    """PointNet classifier with input (3x3) and feature (64x64) T-nets (``pointnet_cls.py``).

    3,480,049 parameters with 40 classes.
    """

    def __init__(self, num_classes: int = 40, dropout: float = 0.3):
        super().__init__()
        self.num_classes = num_classes
        self.transform_net1 = TransformNet(3)
        self.conv1 = _PointConv(3, 64)
        self.conv2 = _PointConv(64, 64)
        self.transform_net2 = TransformNet(64)
        self.conv3 = _PointConv(64, 64)
        self.conv4 = _PointConv(64, 128)
        self.conv5 = _PointConv(128, 1024)
        self.fc1 = _FC(1024, 512)
        self.dp1 = nn.Dropout(dropout)
        self.fc2 = _FC(512, 256)
        self.dp2 = nn.Dropout(dropout)
        self.fc3 = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor):
        """x: (B, N, 3). Returns (logits (B, num_classes), end_points dict)."""
        _check_input(x)
        end_points = {}
        t_in = self.transform_net1(x.transpose(1, 2))  # (B, 3, 3)
        end_points["input_transform"] = t_in
        x = torch.bmm(x, t_in)  # (B, N, 3) @ (B, 3, 3), as tf.matmul(point_cloud, transform)
        y = self.conv2(self.conv1(x.transpose(1, 2)))  # (B, 64, N)
        t_feat = self.transform_net2(y)  # (B, 64, 64)
        end_points["transform"] = t_feat
        # tf.matmul(net (B, N, 64), transform) == (transform^T @ net (B, 64, N))
        y = torch.bmm(t_feat.transpose(1, 2), y)
        y = self.conv5(self.conv4(self.conv3(y)))  # (B, 1024, N)
        gfv, critical = torch.max(y, dim=2)
        end_points["critical_set_idx"] = critical
        end_points["GFV"] = gfv
        y = self.dp1(self.fc1(gfv))
        y = self.dp2(self.fc2(y))
        end_points["retrieval_vectors"] = y
        return self.fc3(y), end_points


class PointNetClsVanilla(nn.Module):
    """PointNet without T-nets (``pointnet_cls_basic.py``): task net of ProgressiveNet.

    convs 64, 64, 64, 128, 1024 -> max-pool -> FC 512, 256 (BN, ReLU) -> dropout (keep 0.7,
    once) -> FC num_classes. 819,624 parameters with 40 classes.
    """

    def __init__(self, num_classes: int = 40, dropout: float = 0.3):
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = _PointConv(3, 64)
        self.conv2 = _PointConv(64, 64)
        self.conv3 = _PointConv(64, 64)
        self.conv4 = _PointConv(64, 128)
        self.conv5 = _PointConv(128, 1024)
        self.fc1 = _FC(1024, 512)
        self.fc2 = _FC(512, 256)
        self.dp1 = nn.Dropout(dropout)
        self.fc3 = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor):
        """x: (B, N, 3). Returns (logits (B, num_classes), end_points dict)."""
        _check_input(x)
        end_points = {}
        y = x.transpose(1, 2)
        y = self.conv5(self.conv4(self.conv3(self.conv2(self.conv1(y)))))
        gfv, critical = torch.max(y, dim=2)
        end_points["critical_set_idx"] = critical
        end_points["GFV"] = gfv
        y = self.dp1(self.fc2(self.fc1(gfv)))
        return self.fc3(y), end_points


def pointnet_cls_loss(logits: torch.Tensor, labels: torch.Tensor, transform: torch.Tensor | None,
                      reg_weight: float = 0.001) -> torch.Tensor:
    """Official ``get_loss``: mean softmax CE + reg_weight * l2_loss(A A^T - I).

    ``l2_loss`` is TF's ``sum(x**2) / 2`` over the whole batch (not averaged). ``transform`` is
    the (B, K, K) feature transform (``end_points["transform"]``); pass ``None`` for the vanilla
    network (CE only, as ``pointnet_cls_basic.get_loss``).
    """
    loss = F.cross_entropy(logits, labels.long())
    if transform is None:
        return loss
    k = transform.shape[-1]
    eye = torch.eye(k, dtype=transform.dtype, device=transform.device)
    diff = torch.bmm(transform, transform.transpose(1, 2)) - eye
    return loss + reg_weight * (diff.pow(2).sum() / 2)


_TF_SKIP_SUFFIXES = ("/Adam", "/Adam_1", "/Momentum")


def convert_tf_variables(name: str, sd, *, scope: str = "", **model_kwargs) -> dict:
    """The converter of the TF models of the sampling papers (``pointnet_cls``,
    ``pointnet_cls_vanilla``, ``snet``, ``progressivenet``): the state dict of the registered
    model ``name`` from the variables of an official TF checkpoint.

    ``sd`` maps the official TensorFlow variable names (e.g. from ``tf.train.load_checkpoint(path)``:
    ``{n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}``) to arrays.
    ``scope`` is the variable scope the network was built in (e.g. ``"sampler"``); variables
    outside it, optimizer slots and counters are ignored. Conv kernels ``[1, kw, cin, cout]``
    become Conv1d weights, FC ``[in, out]`` are transposed, ``bn/beta``/``bn/gamma`` are the BN
    bias/weight, the BN ``ExponentialMovingAverage`` of ``moments/Squeeze`` (``Squeeze_1``) the
    running mean (variance); the T-nets' constant identity is added to ``transform_XYZ`` /
    ``transform_feat`` biases. ``model_kwargs`` (``num_classes``, ``num_out_points``, ...) size
    the model; a missing variable or a shape mismatch raises ``KeyError``/``ValueError``.
    """
    target = get_model(name, **model_kwargs).state_dict()
    prefix = scope.strip("/") + "/" if scope.strip("/") else ""
    out = {}
    for key, value in sd.items():
        key = key[:-2] if key.endswith(":0") else key
        if not key.startswith(prefix) or key.endswith(_TF_SKIP_SUFFIXES):
            continue
        rel = key[len(prefix):]
        t = torch.as_tensor(value).detach().clone().float()
        if "/ExponentialMovingAverage" in rel:
            layer = rel.split("/bn/", 1)[0]
            leaf = "running_var" if "/moments/Squeeze_1/" in rel else "running_mean"
            mod_path, leaf_path = layer, ("bn", leaf)
        elif "/" in rel:
            mod_path, leaf = rel.rsplit("/", 1)
            if mod_path.endswith("/bn"):
                mod_path = mod_path[:-3]
                leaf_path = ("bn", {"beta": "bias", "gamma": "weight"}.get(leaf, leaf))
            else:
                leaf_path = ({"weights": "weight", "biases": "bias"}.get(leaf, leaf),)
        else:
            continue  # global counters (batch, global_step, ...)
        if leaf_path[-1] not in ("weight", "bias", "running_mean", "running_var"):
            continue
        is_tnet_out = mod_path.endswith(("transform_XYZ", "transform_feat"))
        mod_path = mod_path.replace("transform_XYZ", "transform").replace("transform_feat", "transform")
        base = mod_path.replace("/", ".")
        if leaf_path[0] == "bn":
            cands = [f"{base}.bn.{leaf_path[1]}", f"{base}_bn.{leaf_path[1]}"]
        else:
            cands = [f"{base}.conv.{leaf_path[0]}", f"{base}.fc.{leaf_path[0]}", f"{base}.{leaf_path[0]}"]
        tkey = next((c for c in cands if c in target), None)
        if tkey is None:
            raise KeyError(f"official variable {key!r} has no counterpart in {name}")
        if leaf_path == ("weight",):
            if t.dim() == 4:  # conv2d kernel [1, kw, cin, cout] -> Conv1d (cout, kw*cin, 1)
                t = t[0].reshape(-1, t.shape[-1]).t().unsqueeze(-1)
            elif t.dim() == 2:
                t = t.t()
        if is_tnet_out and leaf_path == ("bias",):
            k = int(round(t.numel() ** 0.5))
            t = t + torch.eye(k).flatten()
        if t.shape != target[tkey].shape:
            raise ValueError(f"official variable {key!r} has shape {tuple(t.shape)}, "
                             f"{tkey} expects {tuple(target[tkey].shape)}")
        out[tkey] = t.contiguous()
    for tkey, v in target.items():
        if tkey.endswith("num_batches_tracked"):
            out[tkey] = torch.zeros_like(v)
    missing = sorted(set(target) - set(out))
    if missing:
        raise KeyError(f"official checkpoint (scope {scope!r}) lacks variables for {name}: {missing}")
    return out


@register_model(converter=partial(convert_tf_variables, "pointnet_cls"))
def pointnet_cls(*, num_classes: int = 40, weights=None, dropout: float = 0.3) -> PointNetCls:
    """PointNet with input/feature T-nets, TF layout of the sampling papers (B, N, 3) input."""
    return finish(PointNetCls(num_classes=num_classes, dropout=dropout), weights)


@register_model(converter=partial(convert_tf_variables, "pointnet_cls_vanilla"))
def pointnet_cls_vanilla(*, num_classes: int = 40, weights=None,
                         dropout: float = 0.3) -> PointNetClsVanilla:
    """PointNet without T-nets (``pointnet_cls_basic.py``), ProgressiveNet's task network."""
    return finish(PointNetClsVanilla(num_classes=num_classes, dropout=dropout), weights)
