"""The model registry shared by every model family: ``register_model``, ``get_model``,
``list_models`` and local checkpoint loading (``load_weights``, ``finish``)."""

from __future__ import annotations

import os
from typing import Callable, Dict, List

import torch.nn as nn

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
    for key in _COUNT_KWARGS:
        if key in kwargs:
            value = kwargs[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"get_model({name!r}): {key} must be an int, got "
                                f"{type(value).__name__} {value!r}")
            if value < 1:
                raise ValueError(f"get_model({name!r}): {key} must be at least 1, got {value}")
    return builder(**kwargs)


# Counts every builder that takes them needs positive (0 would build an empty head).
_COUNT_KWARGS = ("num_classes", "num_joints", "num_out_points")


_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


def load_weights(model: nn.Module, weights) -> nn.Module:
    """Load a local checkpoint into ``model`` with ``strict=True``; return the model.

    Raises FileNotFoundError for a missing file and RuntimeError (naming the file) for one that
    is not a readable torch checkpoint or does not match the model.
    """
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path!r}")
    from fastvision.weights import read_weights_file

    ckpt = read_weights_file(path)
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


def finish(model: nn.Module, weights) -> nn.Module:
    """Load ``weights`` (a local checkpoint path) into ``model`` when given; return the model."""
    if weights is not None:
        load_weights(model, weights)
    return model
