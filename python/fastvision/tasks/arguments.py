"""Argument types shared by the ``fastvision`` subcommands of several families."""

from __future__ import annotations

import argparse

__all__ = ["name_list", "int_list", "height_width"]


def name_list(text: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]`` (``--only``, ``--runs``)."""
    return [v for v in text.split(",") if v]


def int_list(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (``--seeds``, ``--ratios``)."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def height_width(text: str) -> tuple[int, int]:
    """``"128x256"`` -> ``(128, 256)``: a positive height and width."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 128x256), got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return h, w
