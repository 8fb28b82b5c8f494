"""Differentiable point-cloud sampling operators: SampleNet's soft projection.

Conventions:

* Clouds are 3-D points, batched as ``(B, N, 3)`` (``layout="bnc"``, the default) or
  channels-first ``(B, 3, N)`` (``layout="bcn"``, as in the official SampleNet code).
* Neighbours are the k nearest points by squared Euclidean distance, ties to the lower index
  (the search of :func:`fastvision.ops.knn_points`). The selection itself is not differentiable.
* dtypes: float32 and float64 on CPU and CUDA; float16 and bfloat16 too (computed in float32).
* The op runs on CPU and CUDA, traces under ``torch.compile`` and never synchronises with the
  host. Backward recomputes the softmax weights from the saved ``(B, M, k)`` neighbour indices;
  no ``(B, M, k, 3)`` intermediate is stored.
"""

from __future__ import annotations

import numbers

import torch

from fastvision.ops._validation import check_int, check_same_device
from fastvision.ops.points import register_no_double_backward

__all__ = ["soft_project"]

_LAYOUTS = ("bnc", "bcn")


def _to_bnc(x: torch.Tensor, layout: str) -> torch.Tensor:
    return x.transpose(1, 2) if layout == "bcn" else x


def _check_points_tensor(x, op: str, name: str, layout: str) -> None:
    shape = "(B, 3, N)" if layout == "bcn" else "(B, N, 3)"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a tensor of shape {shape}, got {type(x).__name__}")
    channels = x.shape[1] if layout == "bcn" and x.dim() == 3 else (x.shape[-1] if x.dim() == 3 else None)
    if x.dim() != 3 or channels != 3:
        raise ValueError(
            f"{op}: {name} must have shape {shape} for layout={layout!r}, got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating-point tensor, got {x.dtype}")


def soft_project(
    query: torch.Tensor,
    points: torch.Tensor,
    temperature: torch.Tensor | float,
    k: int,
    features: torch.Tensor | None = None,
    min_sigma: float | None = None,
    hard: bool = False,
    layout: str = "bnc",
):
    """SampleNet's soft projection of query points onto a point cloud (Lang et al., CVPR 2020).

    For every query point ``q`` with its ``k`` nearest points ``p_j`` of ``points`` (squared
    distances ``d_j = |q - p_j|^2``, ties to the lower index)::

        sigma = max(t**2, min_sigma)          (t**2 when min_sigma is None)
        w_j   = softmax_j(-d_j / sigma)
        out   = sum_j w_j p_j                 (and sum_j w_j f_j for features)

    This is the official PyTorch ``SoftProjection`` (``registration/src/soft_projection.py``):
    its ``project`` (points), ``propagate`` (features) and ``project_and_propagate`` (both), fused
    into one kernel. The softmax is shifted by the smallest distance, so it stays finite and
    exact down to ``sigma = 1e-8`` and below (it tends to the nearest neighbour).

    Args:
        query: the points to project, ``(B, M, 3)`` (``"bnc"``) or ``(B, 3, M)`` (``"bcn"``).
        points: the cloud projected onto, ``(B, N, 3)`` or ``(B, 3, N)``; dtype and device of
            ``query``.
        temperature: ``t``, a scalar tensor or a ``(B,)`` tensor (one temperature per cloud), or a
            Python number; floating point, on the device of ``query``. Differentiable.
            ``sigma`` must be finite and nonzero (NaN, inf or a zero ``sigma`` raises: on CUDA as
            an asynchronous device-side assertion).
        k: neighbours per query (SampleNet's ``group_size``), ``1 <= k <= N``.
        features: optional features moved with the same weights, ``(B, N, F)`` for ``"bnc"``
            or ``(B, F, N)`` for ``"bcn"``; dtype and device of ``query``. Differentiable.
        min_sigma: lower clamp of ``sigma`` (the official PyTorch module's ``min_sigma``: 1e-4 by
            default there, 1e-2 in ``SampleNet``). ``None`` (default) does not clamp (the TF
            convention for ``sigma = t**2``). Where the clamp is active the gradient with respect
            to ``t`` is zero.
        hard: one-hot weights on the nearest neighbour (the TF ``hard=True``; the official
            PyTorch version raises NotImplementedError). Gradients then reach the nearest
            neighbours (and their features) only; none reaches ``query`` or ``temperature``.
        layout: ``"bnc"`` or ``"bcn"``, for ``query``, ``points``, ``features`` and the outputs.

    Returns:
        The projected points, ``(B, M, 3)`` (or ``(B, 3, M)``) in the dtype of ``query``; with
        ``features`` a tuple ``(projected, projected_features)``, the latter ``(B, M, F)`` (or
        ``(B, F, M)``). Differentiable with respect to ``query``, ``points``, ``temperature``
        and ``features`` (closed-form backward kernels).
    """
    op = "soft_project"
    if layout not in _LAYOUTS:
        raise ValueError(f"{op}: layout must be 'bnc' or 'bcn', got {layout!r}")
    _check_points_tensor(query, op, "query", layout)
    _check_points_tensor(points, op, "points", layout)
    check_int(k, op, "k", 1)
    n = points.shape[2] if layout == "bcn" else points.shape[1]
    if k > n:
        raise ValueError(f"{op}: k = {k} is larger than the number of points (N = {n})")
    if not isinstance(hard, bool):
        raise TypeError(f"{op}: hard must be a bool, got {type(hard).__name__} {hard!r}")
    if min_sigma is not None:
        if isinstance(min_sigma, bool) or not isinstance(min_sigma, numbers.Real):
            raise TypeError(f"{op}: min_sigma must be a number or None, got {min_sigma!r}")
        if not (float(min_sigma) >= 0.0 and float(min_sigma) < float("inf")):
            raise ValueError(f"{op}: min_sigma must be a finite number >= 0, got {min_sigma!r}")
        min_sigma = float(min_sigma)
    if isinstance(temperature, numbers.Real) and not isinstance(temperature, bool):
        temperature = torch.tensor(float(temperature), dtype=query.dtype, device=query.device)
    if not isinstance(temperature, torch.Tensor):
        raise TypeError(f"{op}: temperature must be a tensor or a number, got {temperature!r}")
    B = query.shape[0]
    if not temperature.is_floating_point():
        raise TypeError(f"{op}: temperature must be a floating-point tensor, got {temperature.dtype}")
    if not (temperature.dim() == 0 or (temperature.dim() == 1 and temperature.shape[0] == B)):
        raise ValueError(
            f"{op}: temperature must be a scalar tensor or have shape (B,) = ({B},), "
            f"got {tuple(temperature.shape)}"
        )
    if features is not None:
        if not isinstance(features, torch.Tensor) or features.dim() != 3:
            shape = "(B, F, N)" if layout == "bcn" else "(B, N, F)"
            got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(f"{op}: features must have shape {shape}, got {got}")
    # Finite, bounded coordinates (the overflow contract) are checked by the op itself.
    if temperature.device.type != "cpu" and temperature.numel() > 0:
        # The CPU kernel checks sigma itself (with the offending value in the message).
        t = temperature.to(torch.float32 if temperature.dtype in (torch.float16, torch.bfloat16) else temperature.dtype)
        sigma = t * t if min_sigma is None else torch.clamp_min(t * t, min_sigma)
        torch._assert_async(
            (torch.isfinite(sigma) & (sigma > 0)).all(),
            f"{op}: temperature must give a finite, nonzero sigma = max(t^2, min_sigma)",
        )
    q = _to_bnc(query, layout)
    p = _to_bnc(points, layout)
    f = None if features is None else _to_bnc(features, layout)
    projected, projected_features, _ = torch.ops.fastvision.soft_project(
        q, p, temperature, k, f, min_sigma, hard
    )
    projected = _to_bnc(projected, layout)
    if features is None:
        return projected
    return projected, _to_bnc(projected_features, layout)


# ---------------------------------------------------------------------------------------------
# Fake (meta) kernels and autograd registration.


@torch.library.register_fake("fastvision::soft_project")
def _soft_project_fake(query, points, temperature, k, features=None, min_sigma=None, hard=False):
    check_same_device("soft_project", "query", query, points=points, temperature=temperature,
                      features=features)
    torch._check(query.dim() == 3 and points.dim() == 3, lambda: "soft_project: query and points must be 3-D")
    torch._check(1 <= k, lambda: f"soft_project: k must be at least 1, got {k}")
    B, M = query.shape[0], query.shape[1]
    F = 0 if features is None else features.shape[2]
    return (
        query.new_empty((B, M, 3)),
        query.new_empty((B, M, F)),
        query.new_empty((B, M, k), dtype=torch.int64),
    )


@torch.library.register_fake("fastvision::_soft_project_backward")
def _soft_project_backward_fake(
    grad_projected, grad_projected_features, query, points, temperature, idx, features, min_sigma, hard
):
    check_same_device("_soft_project_backward", "query", query, grad_projected=grad_projected,
                      grad_projected_features=grad_projected_features, points=points,
                      temperature=temperature, idx=idx, features=features)
    B, N = points.shape[0], points.shape[1]
    grad_f = points.new_empty((B, N, 0)) if features is None else torch.empty_like(features)
    return torch.empty_like(query), torch.empty_like(points), torch.empty_like(temperature), grad_f


def _soft_project_setup_context(ctx, inputs, output):
    query, points, temperature, _, features, min_sigma, hard = inputs
    _, _, idx = output
    ctx.save_for_backward(query, points, temperature, idx, features)
    ctx.min_sigma = min_sigma
    ctx.hard = hard
    ctx.has_features = features is not None
    ctx.mark_non_differentiable(idx)


def _soft_project_backward(ctx, grad_projected, grad_projected_features, grad_idx):
    query, points, temperature, idx, features = ctx.saved_tensors
    if grad_projected is None:
        grad_projected = torch.zeros_like(query)
    gq, gp, gt, gf = torch.ops.fastvision._soft_project_backward(
        grad_projected.contiguous(),
        grad_projected_features.contiguous() if ctx.has_features and grad_projected_features is not None else None,
        query,
        points,
        temperature,
        idx,
        features,
        ctx.min_sigma,
        ctx.hard,
    )
    return gq, gp, gt, None, (gf if ctx.has_features else None), None, None


torch.library.register_autograd(
    "fastvision::soft_project", _soft_project_backward, setup_context=_soft_project_setup_context
)

register_no_double_backward("fastvision::_soft_project_backward", "soft_project")
