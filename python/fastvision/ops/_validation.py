"""Input checks shared by the Python wrappers of the ops.

Checks on values (lengths in range, finite coordinates, indices in range) use
``torch._assert_async``: on CPU it raises at once, on CUDA it fails at the next synchronisation
without forcing one, and under ``torch.compile`` it traces without a graph break.
"""

from __future__ import annotations

import torch


def assert_finite(x: torch.Tensor, op: str, name: str) -> None:
    if x.numel() > 0:
        torch._assert_async(
            torch.isfinite(x).all(), f"{op}: {name} contains NaN or infinite values"
        )


def assert_lengths(lengths: torch.Tensor | None, size: int, op: str, name: str) -> None:
    if lengths is None:
        return
    if not isinstance(lengths, torch.Tensor):
        raise TypeError(
            f"{op}: {name} must be a 1-D int64 tensor of cloud lengths, got {type(lengths).__name__} "
            f"{lengths!r}"
        )
    if lengths.dim() != 1:
        raise ValueError(f"{op}: {name} must be a 1-D int64 tensor of cloud lengths, got shape {tuple(lengths.shape)}")
    if lengths.dtype != torch.int64:
        raise ValueError(f"{op}: {name} must be int64, got {lengths.dtype}")
    if lengths.numel() == 0:
        return
    torch._assert_async(
        ((lengths >= 0) & (lengths <= size)).all(),
        f"{op}: every entry of {name} must lie in [0, {size}]",
    )


def check_int(value, op: str, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{op}: {name} must be at least {minimum}, got {value}")
    return value


def check_cloud(x, op: str, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a tensor of shape (B, P, D), got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"{op}: {name} must have shape (B, P, D), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating-point tensor, got {x.dtype}")


def check_same_device(op: str, ref_name: str, ref: torch.Tensor, **others) -> None:
    """Every tensor in ``others`` (None skipped) on the device of ``ref``. Also called by the fake
    kernels: a ``meta`` tensor among CPU ones dispatches to them, and they must not hand back
    uninitialised CPU memory."""
    for name, t in others.items():
        if isinstance(t, torch.Tensor) and t.device != ref.device:
            raise RuntimeError(
                f"{op}: {name} must be on the device of {ref_name} ({ref.device}), got {t.device}"
            )
