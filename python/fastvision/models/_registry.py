"""The model registry shared by every model family: ``register_model`` (with the converter of
the model's official checkpoints, when it has one), ``get_model``, ``list_models`` and
``convert_official_state_dict``. Reading checkpoint files is :mod:`fastvision.models.checkpoint`."""

from __future__ import annotations

from typing import Callable, Dict, List

import torch.nn as nn

_MODELS: Dict[str, Callable[..., nn.Module]] = {}
# name -> converter(state_dict, **model_kwargs) -> state dict of the registered model.
_CONVERTERS: Dict[str, Callable[..., dict]] = {}


def register_model(name: str | None = None, converter: Callable[..., dict] | None = None):
    """Decorator registering a builder under ``name`` (default: the function's name).

    ``converter(sd, **model_kwargs)``, when given, turns the model's official checkpoint into its
    state dict (see :func:`convert_official_state_dict`); it lives beside the model."""

    def deco(fn):
        key = name or fn.__name__
        if key in _MODELS:
            raise ValueError(f"model {key!r} is already registered")
        _MODELS[key] = fn
        if converter is not None:
            _CONVERTERS[key] = converter
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


def convert_official_state_dict(name: str, sd, **kwargs) -> dict:
    """Convert an official checkpoint's variables ``sd`` to this package's ``state_dict`` for the
    registered model ``name``, by the converter registered beside that model (the model module's
    docstring says what it does); ``kwargs`` are the converter's options and the model's builder
    arguments (``num_classes``, ``aux_mode``, the TF ``scope``, ...)."""
    if name not in _CONVERTERS:
        raise ValueError(f"no official checkpoint conversion for {name!r}; available: "
                         f"{', '.join(sorted(_CONVERTERS))}")
    return _CONVERTERS[name](sd, **kwargs)
