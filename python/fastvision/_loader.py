"""Loads the native extension once and checks that it fits the running torch.

A missing or mismatched extension fails here, at ``import fastvision``, with one sentence that says
what to do, never later with an obscure "operator fastvision::... does not exist".
"""

from __future__ import annotations

import importlib

import torch


class ExtensionError(ImportError):
    """The compiled part of fastvision is missing or does not fit this torch."""


def _torch_release(version: str) -> str:
    return version.split("+")[0]


def load_extension():
    try:
        native = importlib.import_module("fastvision._C")
    except ImportError as exc:
        raise ExtensionError(
            "fastvision's compiled extension (fastvision._C) could not be loaded "
            f"({exc}); reinstall it against the torch in this environment with "
            "`pip install --no-build-isolation .` from the fastvision source tree."
        ) from exc
    built = _torch_release(native.torch_version)
    running = _torch_release(torch.__version__)
    if built.split(".")[:2] != running.split(".")[:2]:
        raise ExtensionError(
            f"fastvision was compiled against torch {native.torch_version} but torch "
            f"{torch.__version__} is installed; rebuild it with "
            "`pip install --no-build-isolation --force-reinstall --no-deps .`."
        )
    if not hasattr(torch.ops.fastvision, "knn_points"):
        raise ExtensionError(
            "fastvision._C loaded but registered no operators; the build is broken, reinstall "
            "with `pip install --no-build-isolation --force-reinstall --no-deps .`."
        )
    return native
