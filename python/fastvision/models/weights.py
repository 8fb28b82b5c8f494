"""Named weights, torchvision / timm style: the table of the weights shipped with the package.

Each entry of ``fastvision/weights/index.json`` (one row per shipped file, written by
``tools/make_shipped_weights.py``) names a set of weights ``MODEL.TAG`` (``padnet.embedded``) and
records the model it builds (registered name + keyword arguments), the safetensors file beside
the table, its sha256, the recipe command that made it, the training data, the metrics of its
committed evaluation and a license note. Reading and checking the file is
:mod:`fastvision.models.checkpoint`'s job (the one checkpoint reader); this module only knows the
table, so the registry can resolve names without reading files.

``get_model("padnet", weights="embedded")`` (the tag of that model) or ``weights="padnet.embedded"``
(the full name) loads an entry; :func:`list_weights` lists the names, :func:`get_weights` returns
an entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional

__all__ = ["WeightsEntry", "list_weights", "get_weights", "find_weights", "resolve_weights", "SHIPPED_DIR", "INDEX_FILE"]

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "weights"
INDEX_FILE = SHIPPED_DIR / "index.json"
# The fields every row of the table must have (the others are optional notes).
_REQUIRED = ("file", "sha256", "model", "kwargs", "recipe", "data", "metrics", "license")


@dataclass(frozen=True)
class WeightsEntry:
    """One shipped set of weights (a row of ``fastvision/weights/index.json``)."""

    name: str                       # MODEL.TAG, e.g. "padnet.embedded"
    file: str                       # safetensors file name in fastvision/weights/
    sha256: str                     # of the whole file, checked on every load
    model: str                      # registered model name
    kwargs: Dict[str, object]       # its builder arguments
    recipe: str                     # the command that made it
    data: str                       # what it was trained on
    metrics: Dict[str, object]      # of its committed evaluation
    license: str
    evaluation: str = ""            # what the metrics were measured on
    extra: Dict[str, object] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return self.name[len(self.model) + 1:]

    @property
    def path(self) -> Path:
        return SHIPPED_DIR / self.file

    @property
    def model_spec(self) -> dict:
        return {"name": self.model, "kwargs": dict(self.kwargs)}


def _entry(name: str, row: dict) -> WeightsEntry:
    missing = [k for k in _REQUIRED if k not in row]
    if missing:
        raise RuntimeError(f"{INDEX_FILE}: weights {name!r} lacks {missing}")
    if not name.startswith(row["model"] + "."):
        raise RuntimeError(f"{INDEX_FILE}: weights {name!r} must be named {row['model']}.TAG")
    known = set(_REQUIRED) | {"evaluation"}
    return WeightsEntry(name=name, evaluation=row.get("evaluation", ""),
                        extra={k: v for k, v in row.items() if k not in known},
                        **{k: row[k] for k in _REQUIRED})


@lru_cache(maxsize=None)
def _table() -> Dict[str, WeightsEntry]:
    if not INDEX_FILE.is_file():
        return {}
    rows = json.loads(INDEX_FILE.read_text())
    return {name: _entry(name, row) for name, row in rows.items()}


def list_weights(model: Optional[str] = None) -> List[str]:
    """Sorted full names (``MODEL.TAG``) of the shipped weights, of ``model`` only when given."""
    return sorted(n for n, e in _table().items() if model is None or e.model == model)


def find_weights(name: str, model: Optional[str] = None) -> Optional[WeightsEntry]:
    """The entry named ``name`` (full name, or a tag of ``model`` when ``model`` is given), or
    ``None`` when there is none: a caller then treats ``name`` as a file path."""
    table = _table()
    if name in table and (model is None or table[name].model == model):
        return table[name]
    if model is not None:
        return table.get(f"{model}.{name}")
    return None


def resolve_weights(name: str, model: Optional[str] = None) -> Optional[WeightsEntry]:
    """:func:`find_weights`, but ``ValueError`` when ``name`` is the full name of another model's
    weights (rather than a file path that does not exist)."""
    entry = find_weights(name, model)
    other = find_weights(name) if entry is None and model is not None else None
    if other is not None:
        raise ValueError(f"weights {name!r} are for model {other.model!r}, not {model!r}")
    return entry


def get_weights(name: str, model: Optional[str] = None) -> WeightsEntry:
    """The entry named ``name`` (see :func:`find_weights`); ``ValueError`` listing the available
    names otherwise."""
    entry = resolve_weights(name, model)
    if entry is None:
        available = list_weights(model)
        where = f" for model {model!r}" if model is not None else ""
        raise ValueError(f"no shipped weights named {name!r}{where}; available: "
                         f"{', '.join(available) or 'none'}")
    return entry
