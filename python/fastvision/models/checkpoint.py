"""Reading every checkpoint format the project accepts, with one set of error messages.

* a **training checkpoint** (``checkpoint_last.pt`` / ``model_best.pt`` written by
  :func:`fastvision.engine.fit`) or a **shipped weights file** (``fastvision/weights/<name>.pt``,
  float16 weights): a dict with ``"model_spec"`` (``{"name", "kwargs", ...}``) and ``"model"``
  (the state dict); the model is rebuilt from the spec;
* a **plain state dict**, or a dict holding one under ``"state_dict"`` / ``"model_state_dict"`` /
  ``"model"``: the model is named by the caller;
* an **official checkpoint** of a registered model: read as a plain state dict, then converted by
  that model's registered converter (:func:`fastvision.models.convert_official_state_dict`).

Every file is read once, with ``torch.load(..., weights_only=True)`` (tensors and plain
containers only: no code runs while reading).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from ._registry import convert_official_state_dict, get_model

__all__ = ["read_checkpoint", "load_weights", "load_model", "finish", "shipped_path", "shipped_weights"]

_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")
# Entries of a training checkpoint that are not metadata.
_NOT_METADATA = ("model", "optimizer", "training_model")
_SHIPPED_DIR = Path(__file__).resolve().parent.parent / "weights"


def read_checkpoint(path) -> object:
    """The object stored in ``path`` (``torch.load`` with ``weights_only=True``, on the CPU).

    FileNotFoundError for a missing file; RuntimeError naming the file when it is not a torch
    checkpoint of tensors and plain containers (corrupt, truncated, or pickling other objects).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path!r}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RuntimeError(f"could not read checkpoint {path!r} as a torch checkpoint of tensors "
                           f"and plain containers ({_load_failure(err)})") from err


def _load_failure(err: Exception) -> str:
    """What went wrong, without torch's advice to load with ``weights_only=False`` (which would
    run whatever code the file carries)."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1].strip()
        text = text.split(" Please use", 1)[0].split("\n\n", 1)[0].strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def _is_spec_checkpoint(ckpt) -> bool:
    return isinstance(ckpt, dict) and "model_spec" in ckpt and isinstance(ckpt.get("model"), dict)


def _state_dict(ckpt, path: str) -> dict:
    if isinstance(ckpt, dict):
        for key in _STATE_DICT_KEYS:
            if isinstance(ckpt.get(key), dict):
                return ckpt[key]
        if all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            return ckpt
    raise RuntimeError(f"checkpoint {path!r} does not hold a state dict (got {type(ckpt).__name__}"
                       + (f" with keys {sorted(map(str, ckpt))[:8]}" if isinstance(ckpt, dict) else "")
                       + ")")


def _load_strict(model: nn.Module, state: dict, path: str, name: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise RuntimeError(f"checkpoint {path!r} does not match {name}: {err}") from err


def load_weights(model: nn.Module, weights) -> nn.Module:
    """Load the state dict of the checkpoint file ``weights`` (any format above) into ``model``
    with ``strict=True``; returns the model. What the builders' ``weights=`` argument does."""
    path = os.fspath(weights)
    ckpt = read_checkpoint(path)
    state = ckpt["model"] if _is_spec_checkpoint(ckpt) else _state_dict(ckpt, path)
    _load_strict(model, state, path, type(model).__name__)
    return model


def load_model(path, device: str | torch.device = "cpu", *, model: str | None = None,
               official: bool = False, **model_kwargs) -> tuple[nn.Module, dict]:
    """Build a model and load the checkpoint file ``path`` into it; returns ``(model in eval mode
    on device, metadata)``.

    A training checkpoint or shipped weights file rebuilds the model of its ``model_spec``
    (``model``, when given, must name the same model); the metadata is the file's other entries
    (``model_spec``, ``epoch``, ``metrics``, ``recipe``, ...). A plain state dict needs ``model``
    (the registered name) and ``model_kwargs``; with ``official=True`` it is first converted from
    the official layout. Its metadata is ``{"model_spec": {"name", "kwargs"}}``.
    """
    path = os.fspath(path)
    ckpt = read_checkpoint(path)
    if _is_spec_checkpoint(ckpt):
        spec = ckpt["model_spec"]
        if model is not None and model != spec["name"]:
            raise ValueError(f"model {model!r} does not match the checkpoint's model "
                             f"{spec['name']!r} ({path!r})")
        if official:
            raise ValueError(f"checkpoint {path!r} is a fastvision checkpoint of {spec['name']!r}, "
                             "not an official one: load it without official=True")
        net = get_model(spec["name"], **spec.get("kwargs", {}))
        _load_strict(net, ckpt["model"], path, spec["name"])
        meta = {k: v for k, v in ckpt.items() if k not in _NOT_METADATA}
    else:
        if model is None:
            raise ValueError(f"checkpoint {path!r} is a plain state dict, which does not say its "
                             "model: name the model")
        state = _state_dict(ckpt, path)
        if official:
            state = convert_official_state_dict(model, state, **model_kwargs)
        net = get_model(model, **model_kwargs)
        _load_strict(net, state, path, model)
        meta = {"model_spec": {"name": model, "kwargs": dict(model_kwargs)}}
    return net.to(device).eval(), meta


def shipped_weights() -> list[str]:
    """Names of the weights shipped with the package (small models trained on the embedded data
    by the committed recipes; ``tools/make_shipped_weights.py`` made them)."""
    return sorted(p.stem for p in _SHIPPED_DIR.glob("*.pt"))


def shipped_path(name: str) -> Path:
    """The file of the shipped weights ``name``, for :func:`load_model`."""
    path = _SHIPPED_DIR / f"{name}.pt"
    if not path.is_file():
        raise ValueError(f"no shipped weights named {name!r}; available: "
                         f"{', '.join(shipped_weights()) or 'none'}")
    return path


def finish(model: nn.Module, weights) -> nn.Module:
    """A builder's last step: load ``weights`` (a checkpoint path) into ``model`` when given."""
    if weights is not None:
        load_weights(model, weights)
    return model
