"""Small trained weights shipped with the package (embedded-data models only).

Each ``<name>.pt`` holds ``{"model_spec", "model" (float16 state dict), "recipe", "metrics"}``;
``tools/make_shipped_weights.py`` made them from training runs of the committed recipes (it says
which command). Official pretrained weights are not shipped (they cannot be downloaded here).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

__all__ = ["available", "shipped_path", "load_shipped"]

_DIR = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the shipped weight files."""
    return sorted(p.stem for p in _DIR.glob("*.pt"))


def read_weights_file(path) -> object:
    """``torch.load(path, weights_only=True)`` on CPU. A file that is not a weights-only torch file
    (corrupt, truncated, or pickling arbitrary objects) raises ``RuntimeError`` naming it; the
    message never suggests ``weights_only=False``, which would execute code from the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt / truncated / not a torch file / foreign pickled objects
        raise RuntimeError(
            f"could not read weights file {str(path)!r} as a weights-only torch checkpoint "
            f"({type(err).__name__}); "
            "fastvision reads tensors, numbers and containers only and never unpickles other objects"
        ) from None


def shipped_path(name: str) -> Path:
    path = _DIR / f"{name}.pt"
    if not path.is_file():
        raise ValueError(f"no shipped weights named {name!r}; available: {', '.join(available()) or 'none'}")
    return path


def load_shipped(name: str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Build the model of shipped weights ``name``, load them (cast to float32), eval mode.
    Returns ``(model, metadata)`` with the recipe and the metrics of the run that made them."""
    from fastvision.models import get_model

    bundle = torch.load(shipped_path(name), map_location="cpu", weights_only=True)
    spec = bundle["model_spec"]
    model = get_model(spec["name"], **spec.get("kwargs", {}))
    state = {k: v.float() if v.is_floating_point() else v for k, v in bundle["model"].items()}
    model.load_state_dict(state, strict=True)
    meta = {k: v for k, v in bundle.items() if k != "model"}
    return model.to(device).eval(), meta
