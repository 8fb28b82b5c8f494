"""fastvision.models: model registry and torchvision-style builders.

``get_model(name, **kwargs)`` builds a registered model; ``list_models()`` lists the names.
Every builder takes ``weights=`` (``None`` or a local checkpoint path: a state dict, or a dict
holding one under ``"state_dict"`` / ``"model_state_dict"`` / ``"model"``) loaded with
``strict=True``. Official pretrained weights cannot be downloaded here.

Registered (point-cloud sampling papers):

* ``pointnet_cls``: TF PointNet classifier of S-NET/SampleNet with input and feature T-nets
  (3,480,049 params at 40 classes); ``pointnet_cls_vanilla``: without T-nets (819,624).
* ``snet``: S-NET generator (``num_out_points``, ``bottleneck_size=128``, ``output_bn=True``).
* ``progressivenet``: the same generator producing 1024 ordered points by default.
* ``samplenet``: SampleNet in the official PyTorch layout (225,121 params at k = 32 incl. the
  temperature), soft projection by ``fastvision.ops.soft_project``, matching by ``nn_match``.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List

import torch
import torch.nn as nn

from .pointnet import PointNetCls, PointNetClsVanilla, TransformNet, pointnet_cls_loss
from .snet import SampleNet, SNet, SoftProjection

__all__ = [
    "get_model",
    "list_models",
    "register_model",
    "load_weights",
    "PointNetCls",
    "PointNetClsVanilla",
    "TransformNet",
    "SNet",
    "SampleNet",
    "SoftProjection",
    "pointnet_cls_loss",
    "pointnet_cls",
    "pointnet_cls_vanilla",
    "snet",
    "progressivenet",
    "samplenet",
]

_MODELS: Dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str | None = None):
    """Decorator registering a builder under ``name`` (default: the function's name)."""

    def deco(fn):
        key = name or fn.__name__
        if key in _MODELS:
            raise ValueError(f"model {key!r} is already registered")
        _MODELS[key] = fn
        return fn

    return deco


def list_models() -> List[str]:
    """Sorted names of the registered models."""
    return sorted(_MODELS)


def get_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with the builder's keyword arguments."""
    try:
        builder = _MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown model {name!r}; available models: {', '.join(list_models())}"
        ) from None
    return builder(**kwargs)


_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


def load_weights(model: nn.Module, weights) -> nn.Module:
    """Load a local checkpoint into ``model`` with ``strict=True``; return the model.

    Raises FileNotFoundError for a missing file and RuntimeError (naming the file) for one that
    is not a readable torch checkpoint or does not match the model.
    """
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path!r}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt / truncated / not a torch file
        raise RuntimeError(
            f"could not read weights file {path!r} as a torch checkpoint "
            f"({type(err).__name__}: {err})"
        ) from err
    if isinstance(ckpt, dict):
        for key in _STATE_DICT_KEYS:
            if key in ckpt and isinstance(ckpt[key], dict):
                ckpt = ckpt[key]
                break
    if not isinstance(ckpt, dict):
        raise RuntimeError(
            f"weights file {path!r} does not hold a state dict (got {type(ckpt).__name__})"
        )
    try:
        model.load_state_dict(ckpt, strict=True)
    except RuntimeError as err:
        raise RuntimeError(
            f"weights file {path!r} does not match {type(model).__name__}: {err}"
        ) from err
    return model


def _finish(model: nn.Module, weights) -> nn.Module:
    if weights is not None:
        load_weights(model, weights)
    return model


@register_model()
def pointnet_cls(*, num_classes: int = 40, weights=None, dropout: float = 0.3) -> PointNetCls:
    """PointNet with input/feature T-nets, TF layout of the sampling papers (B, N, 3) input."""
    return _finish(PointNetCls(num_classes=num_classes, dropout=dropout), weights)


@register_model()
def pointnet_cls_vanilla(*, num_classes: int = 40, weights=None,
                         dropout: float = 0.3) -> PointNetClsVanilla:
    """PointNet without T-nets (``pointnet_cls_basic.py``), ProgressiveNet's task network."""
    return _finish(PointNetClsVanilla(num_classes=num_classes, dropout=dropout), weights)


@register_model()
def snet(*, num_out_points: int = 64, bottleneck_size: int = 128, output_bn: bool = True,
         weights=None) -> SNet:
    """S-NET generator (official default k = 64 output points)."""
    return _finish(SNet(num_out_points, bottleneck_size, output_bn), weights)


@register_model()
def progressivenet(*, num_out_points: int = 1024, bottleneck_size: int = 128,
                   output_bn: bool = True, weights=None) -> SNet:
    """ProgressiveNet: the S-NET network generating 1024 ordered points (prefixes = samples)."""
    return _finish(SNet(num_out_points, bottleneck_size, output_bn), weights)


@register_model()
def samplenet(*, num_out_points: int = 64, bottleneck_size: int = 128, group_size: int = 8,
              initial_temperature: float = 1.0, is_temperature_trainable: bool = True,
              min_sigma: float | None = 1e-2, input_shape: str = "bcn", output_shape: str = "bcn",
              complete_fps: bool = True, skip_projection: bool = False, output_bn: bool = False,
              weights=None) -> SampleNet:
    """SampleNet, official PyTorch port defaults (``registration/src/samplenet.py``, ``sputils.py``:
    64 output points, group size 8, min_sigma 1e-2, no BN on the last FC)."""
    return _finish(SampleNet(num_out_points, bottleneck_size, group_size, initial_temperature,
                             is_temperature_trainable, min_sigma, input_shape, output_shape,
                             complete_fps, skip_projection, output_bn), weights)
