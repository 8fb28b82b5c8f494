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
