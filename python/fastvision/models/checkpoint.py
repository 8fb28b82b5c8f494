"""Reading every checkpoint format the project accepts, with one set of error messages.

* **named shipped weights** (``padnet.embedded``; the table is :mod:`fastvision.models.weights`):
  a safetensors file in ``fastvision/weights/`` whose sha256 is checked against the table before
  anything is parsed, and whose header names the model it was made for;
* a **safetensors file** (``*.safetensors``, recognised by its content): its tensors, plus, when
  its header metadata holds a ``"fastvision"`` entry (what :func:`write_safetensors` writes), the
  ``model_spec`` it rebuilds and its other metadata;
* a **training checkpoint** (``checkpoint_last.pt`` / ``model_best.pt`` written by
  :func:`fastvision.engine.fit`): a dict with ``"model_spec"`` (``{"name", "kwargs", ...}``) and
  ``"model"`` (the state dict); the model is rebuilt from the spec;
* a **plain state dict** (``.pt`` / ``.pth``), or a dict holding one under ``"state_dict"`` /
  ``"model_state_dict"`` / ``"model"``: the model is named by the caller;
* an **official checkpoint** of a registered model: read as a plain state dict, then converted by
  that model's registered converter (:func:`fastvision.models.convert_official_state_dict`); an
  **mmsegmentation checkpoint** (``backbone.*`` + ``decode_head.*`` keys) of a model with an
  mmseg converter is recognised and converted by :func:`fastvision.models.convert_mmseg_state_dict`.

Pickled files are read with ``torch.load(..., weights_only=True)`` (tensors and plain containers
only: no code runs while reading); safetensors files hold no code at all.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from ._registry import convert_mmseg_state_dict, convert_official_state_dict, get_model, has_mmseg_converter
from .weights import WeightsEntry, resolve_weights

__all__ = ["read_checkpoint", "read_shipped", "write_safetensors", "load_weights", "load_model",
           "finish"]

_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")
# Entries of a training checkpoint that are not metadata.
_NOT_METADATA = ("model", "optimizer", "training_model")
# The safetensors header entry holding fastvision's metadata (a JSON object).
_METADATA_KEY = "fastvision"
_SAFETENSORS_MAX_HEADER = 100_000_000  # as the safetensors format itself


def _looks_like_safetensors(head: bytes) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then the JSON header."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 0 < int.from_bytes(head[:8], "little") <= _SAFETENSORS_MAX_HEADER


def _parse_safetensors(data: bytes, what: str) -> dict:
    """The tensors of safetensors bytes, with the ``"fastvision"`` header metadata merged in as a
    spec checkpoint (``{"model": tensors, "model_spec": ..., ...}``) when there is one."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    try:
        tensors = load_safetensors(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
        meta = (header.get("__metadata__") or {}).get(_METADATA_KEY)
        meta = json.loads(meta) if meta is not None else None
    except (SafetensorError, ValueError, UnicodeDecodeError) as err:
        raise RuntimeError(f"could not read {what} as safetensors ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''})") from err
    if meta is None:
        return tensors
    if not isinstance(meta, dict) or not isinstance(meta.get("model_spec"), dict):
        raise RuntimeError(f"{what}: its safetensors metadata {_METADATA_KEY!r} has no model_spec")
    return {**meta, "model": tensors}


def read_checkpoint(path) -> object:
    """The object stored in the file ``path``, on the CPU: a safetensors file (by content) as
    described in the module docstring, anything else through ``torch.load`` with
    ``weights_only=True``.

    FileNotFoundError for a missing file; RuntimeError naming the file when it is neither
    (corrupt, truncated, or pickling other objects than tensors and plain containers).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        # A bare word may have been meant as a weights name: say where the names are.
        hint = ("" if os.sep in path else
                " (nor is it the name of shipped weights: `fastvision weights` lists them)")
        raise FileNotFoundError(f"checkpoint not found: {path!r}{hint}")
    with open(path, "rb") as f:
        head = f.read(9)
    if _looks_like_safetensors(head):
        with open(path, "rb") as f:
            return _parse_safetensors(f.read(), f"checkpoint {path!r}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RuntimeError(f"could not read checkpoint {path!r} as a torch checkpoint of tensors "
                           f"and plain containers ({_load_failure(err)})") from err


def read_shipped(entry: WeightsEntry) -> dict:
    """The spec checkpoint (``{"model", "model_spec", "recipe", "metrics", ...}``) of the shipped
    weights ``entry``, after checking the file's sha256 against the table and the model its
    header names against the table's."""
    what = f"shipped weights {entry.name!r} ({entry.path})"
    if not entry.path.is_file():
        raise FileNotFoundError(f"{what}: the file is missing; the installation is broken "
                                "(reinstall fastvision)")
    data = entry.path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise RuntimeError(f"{what}: the file is corrupt or was changed: sha256 {digest}, "
                           f"expected {entry.sha256} (reinstall fastvision)")
    ckpt = _parse_safetensors(data, what)
    spec = ckpt.get("model_spec") if isinstance(ckpt, dict) else None
    if spec != entry.model_spec:
        raise RuntimeError(f"{what}: the file was made for {spec!r}, the table says "
                           f"{entry.model_spec!r}")
    return ckpt


def write_safetensors(path, state: dict, metadata: dict) -> None:
    """Write the state dict ``state`` to the safetensors file ``path`` with ``metadata`` (which
    must hold ``model_spec``: ``{"name", "kwargs"}``) as the header's ``"fastvision"`` JSON, so
    that :func:`load_model` rebuilds the model from the file alone."""
    from safetensors.torch import save_file

    if not isinstance(metadata.get("model_spec"), dict):
        raise ValueError("metadata must hold model_spec ({'name', 'kwargs'})")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    save_file(tensors, os.fspath(path), metadata={_METADATA_KEY: json.dumps(metadata, sort_keys=True)})


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


def _load_strict(model: nn.Module, state: dict, what: str, name: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise RuntimeError(f"{what} does not match {name}: {err}") from err


def _resolve(source, model: Optional[str] = None):
    """``(shipped entry, None)`` for a weights name, ``(None, path)`` for anything else. A string
    is a name when the table has it (a tag of ``model``, or a full name), else a path; a
    ``pathlib.Path`` is always a path."""
    if isinstance(source, WeightsEntry):
        return source, None
    if isinstance(source, str):
        entry = resolve_weights(source, model)
        if entry is not None:
            return entry, None
    return None, os.fspath(source)


def load_weights(model: nn.Module, weights) -> nn.Module:
    """Load ``weights`` into ``model`` with ``strict=True``; returns the model. ``weights``: the
    full name of shipped weights (``"padnet.embedded"``; :func:`fastvision.models.get_model`
    also takes the tag, ``"embedded"``) or a checkpoint file in any format above. What the
    builders' ``weights=`` argument does."""
    entry, path = _resolve(weights)
    if entry is not None:
        _load_strict(model, read_shipped(entry)["model"], f"shipped weights {entry.name!r}",
                     type(model).__name__)
        return model
    ckpt = read_checkpoint(path)
    state = ckpt["model"] if _is_spec_checkpoint(ckpt) else _state_dict(ckpt, path)
    _load_strict(model, state, f"checkpoint {path!r}", type(model).__name__)
    return model


def _is_mmseg_state_dict(state: dict) -> bool:
    return any(k.startswith("decode_head.") for k in state) and any(
        k.startswith("backbone.") for k in state)


def load_model(source, device: str | torch.device = "cpu", *, model: str | None = None,
               official: bool = False, **model_kwargs) -> tuple[nn.Module, dict]:
    """Build a model and load ``source`` into it; returns ``(model in eval mode on device,
    metadata)``.

    ``source``: the name of shipped weights (``"padnet.embedded"``, or a tag of ``model``), or a
    checkpoint file. Shipped weights, a training checkpoint and a safetensors file written by
    :func:`write_safetensors` rebuild the model of their ``model_spec`` (``model``, when given,
    must name the same model); the metadata is their other entries (``model_spec``, ``recipe``,
    ``metrics``, ..., plus ``weights``: the name, for shipped weights). A plain state dict needs
    ``model`` (the registered name) and ``model_kwargs``; with ``official=True`` it is first
    converted from the official layout, or from mmsegmentation's when it has mmseg's keys (see
    :func:`fastvision.models.convert_mmseg_state_dict`). Its metadata is
    ``{"model_spec": {"name", "kwargs"}}``.
    """
    entry, path = _resolve(source, model)
    if entry is not None:
        ckpt, what = read_shipped(entry), f"shipped weights {entry.name!r}"
    else:
        ckpt, what = read_checkpoint(path), f"checkpoint {path!r}"
    if _is_spec_checkpoint(ckpt):
        spec = ckpt["model_spec"]
        if model is not None and model != spec["name"]:
            raise ValueError(f"model {model!r} does not match the checkpoint's model "
                             f"{spec['name']!r} ({what})")
        if official:
            raise ValueError(f"{what} is a fastvision checkpoint of {spec['name']!r}, "
                             "not an official one: load it without official=True")
        net = get_model(spec["name"], **spec.get("kwargs", {}))
        _load_strict(net, ckpt["model"], what, spec["name"])
        meta = {k: v for k, v in ckpt.items() if k not in _NOT_METADATA}
        if entry is not None:
            meta["weights"] = entry.name
    else:
        if model is None:
            raise ValueError(f"{what} is a plain state dict, which does not say its "
                             "model: name the model")
        state = _state_dict(ckpt, path)
        if official and _is_mmseg_state_dict(state) and has_mmseg_converter(model):
            state = convert_mmseg_state_dict(model, state, **model_kwargs)
        elif official:
            state = convert_official_state_dict(model, state, **model_kwargs)
        net = get_model(model, **model_kwargs)
        _load_strict(net, state, what, model)
        meta = {"model_spec": {"name": model, "kwargs": dict(model_kwargs)}}
    return net.to(device).eval(), meta


def finish(model: nn.Module, weights) -> nn.Module:
    """A builder's last step: load ``weights`` (a shipped weights name or entry, or a checkpoint
    path) into ``model`` when given."""
    if weights is not None:
        load_weights(model, weights)
    return model
