"""The model registry shared by every model family: ``register_model`` (with the converter of
the model's official checkpoints, when it has one), ``register_mmseg_converter``, ``get_model``,
``list_models``, ``convert_official_state_dict`` and ``convert_mmseg_state_dict``. Reading
checkpoint files is :mod:`fastvision.models.checkpoint`; the table of named shipped weights is
:mod:`fastvision.models.weights`."""

from __future__ import annotations

from typing import Callable, Dict, List

import torch.nn as nn

from .weights import resolve_weights

_MODELS: Dict[str, Callable[..., nn.Module]] = {}
# name -> converter(state_dict, **model_kwargs) -> state dict of the registered model.
_CONVERTERS: Dict[str, Callable[..., dict]] = {}
# name -> converter of mmsegmentation's checkpoints of that model (same signature).
_MMSEG_CONVERTERS: Dict[str, Callable[..., dict]] = {}


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
    """Build the registered model ``name`` with the builder's keyword arguments.

    ``weights`` may name shipped weights of this model by tag (``get_model("padnet",
    weights="embedded")``) or full name (``"padnet.embedded"``); their builder arguments are
    used (an argument given here must agree with them). Any other ``weights`` is a checkpoint
    path (see :mod:`fastvision.models.checkpoint`)."""
    try:
        builder = _MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown model {name!r}; available models: {', '.join(list_models())}"
        ) from None
    weights = kwargs.get("weights")
    entry = resolve_weights(weights, name) if isinstance(weights, str) else None
    if entry is not None:
        for key, value in entry.kwargs.items():
            if key in kwargs and kwargs[key] != value:
                raise ValueError(f"get_model({name!r}): {key}={kwargs[key]!r} does not match the "
                                 f"weights {entry.name!r}, made with {key}={value!r}")
        kwargs = {**entry.kwargs, **kwargs, "weights": entry}
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


def register_mmseg_converter(*names: str):
    """Decorator registering ``converter(sd, **model_kwargs)`` as the converter of
    mmsegmentation's checkpoints for the registered models ``names``."""

    def deco(fn):
        for key in names:
            if key in _MMSEG_CONVERTERS:
                raise ValueError(f"model {key!r} already has an mmseg converter")
            _MMSEG_CONVERTERS[key] = fn
        return fn

    return deco


def has_mmseg_converter(name: str) -> bool:
    return name in _MMSEG_CONVERTERS


def convert_mmseg_state_dict(name: str, sd, **kwargs) -> dict:
    """Convert the state dict ``sd`` of an mmsegmentation checkpoint (the ``"state_dict"`` of
    its ``EncoderDecoder``: ``backbone.*``, ``decode_head.*``, ``auxiliary_head.*``) to this
    package's ``state_dict`` for the registered model ``name``, by the converter registered
    beside that model (its docstring says what mmseg's model does differently); ``kwargs`` are
    the model's builder arguments."""
    if name not in _MMSEG_CONVERTERS:
        raise ValueError(f"no mmsegmentation checkpoint conversion for {name!r}; available: "
                         f"{', '.join(sorted(_MMSEG_CONVERTERS))}")
    return _MMSEG_CONVERTERS[name](sd, **kwargs)
