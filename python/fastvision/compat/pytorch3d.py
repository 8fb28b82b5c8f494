"""PyTorch3D's point-cloud API on fastvision's kernels: switch with one import line.

Replace::

    from pytorch3d.ops import knn_points, knn_gather, sample_farthest_points
    from pytorch3d.loss import chamfer_distance

with::

    from fastvision.compat.pytorch3d import (
        knn_points, knn_gather, sample_farthest_points, chamfer_distance,
    )

Signatures, return types, padding values, gradients and error messages are PyTorch3D's (checked
against PyTorch3D's own test files). The conventions, in full:

``knn_points(p1, p2, lengths1=None, lengths2=None, norm=2, K=1, version=-1, return_nn=False,
return_sorted=True)``
    Returns the namedtuple ``KNN(dists, idx, knn)``. ``dists (N, P1, K)`` are *squared*
    Euclidean distances (``norm=2``) or L1 distances (``norm=1``) in the dtype of ``p1``;
    ``idx (N, P1, K)`` int64 indices into ``p2``, sorted by ascending distance. Padding is
    ``dists = 0`` and ``idx = 0`` (not -1, not inf) in every slot ``k >= lengths2[n]`` (so also
    for ``K > P2``) and in every slot of a query ``i >= lengths1[n]``. ``knn`` is ``None`` unless
    ``return_nn``; then it is ``knn_gather(p2, idx, lengths2)``, ``(N, P1, K, D)``. ``lengths``
    of ``None`` means "every cloud is full". ``dists`` is differentiable with respect to ``p1``
    and ``p2``; padding slots pass no gradient. Errors (``ValueError``): ``"pts1 and pts2 must
    have the same batch dimension."``, ``"pts1 and pts2 must have the same point dimension."``,
    ``"Support for 1 or 2 norm."``.

``knn_gather(x, idx, lengths=None)``
    ``x (N, M, U)``, ``idx (N, L, K)`` -> ``(N, L, K, U)`` with ``out[n, l, k] = x[n, idx[n, l,
    k]]`` and zeros wherever ``k >= lengths[n]`` (the *slot* position, as in PyTorch3D; ``None``
    means ``M``). Differentiable with respect to ``x``. ``ValueError("x and idx must have same
    batch dimension.")``.

``chamfer_distance(x, y, x_lengths=None, y_lengths=None, x_normals=None, y_normals=None,
weights=None, batch_reduction="mean", point_reduction="mean", norm=2, single_directional=False,
abs_cosine=True)``
    Returns ``(loss, loss_normals)``. Per direction the term of a point is its nearest-neighbour
    distance (squared L2 or L1) and, when *both* normal tensors are given, ``1 - |cos|``
    (``abs_cosine=True``) or ``1 - cos`` between its normal and its neighbour's normal
    (``F.cosine_similarity``, ``eps=1e-6``). Points past a cloud's length contribute 0; a point
    whose other cloud is empty gets distance 0 and normal term 1 (its neighbour normal is the
    zero vector), as in PyTorch3D. ``weights (N,)`` multiply the per-point terms.
    ``point_reduction``: ``"mean"`` (sum / ``max(length, 1)``), ``"sum"``, ``"max"`` (Hausdorff;
    the two directions combine with ``torch.maximum``; normals must be ``None``) or ``None``
    (``(term_x (N, P1), term_y (N, P2))`` tuples, or just ``term_x`` when
    ``single_directional``). ``batch_reduction``: ``"mean"`` (sum / ``max(N, 1)``, or /
    ``weights.sum()`` with weights), ``"sum"`` or ``None``; it must be ``None`` when
    ``point_reduction`` is. ``loss_normals`` is ``None`` without normals. ``single_directional``
    keeps only the x -> y direction. All-zero ``weights`` return zeros shaped as PyTorch3D does
    (``(N, N)`` before batch reduction, and ``loss_normals`` is then a zero tensor even without
    normals). Pointclouds-like objects (anything with ``points_padded()``,
    ``num_points_per_cloud()`` and ``normals_padded()``) are accepted for ``x``/``y``; their
    lengths and normals replace the ``*_lengths``/``*_normals`` arguments. Gradients flow to the
    points and the normals. Every ``ValueError`` message is PyTorch3D's (reductions, norm,
    ``'Normals must be None if point_reduction is "max"'``, point/lengths/normals shapes, ``"A
    length value was too long"``, ``"y does not have the correct shape."``, weights shape and
    sign, non-tensor inputs).

``sample_farthest_points(points, lengths=None, K=50, random_start_point=False)``
    Returns ``(selected_points, selected_indices)``. ``K`` is an int, a list or an ``(N,)``
    tensor (per-cloud counts); outputs have ``max(K)`` columns. Indices are int64, padded with -1
    where ``k >= min(K[n], lengths[n])``; selected points are gathered from the points cast to
    float32 (PyTorch3D computes and returns float32 for every input dtype) and padded with 0.0.
    The classic greedy sequence: start at index 0 (or a uniformly random valid index with
    ``random_start_point``), then repeatedly the point with the largest squared distance to
    the chosen set, lowest index on ties. ``selected_points`` is differentiable with respect to
    ``points`` (the indices are not). Errors (``ValueError``): ``"points and lengths must have
    same batch dimension."``, ``"A value in lengths was too large."``, ``"K and points must
    have the same batch dimension"``.

Deliberate differences (none changes a result PyTorch3D defines):

* No host synchronisation in ``knn_points``/``knn_gather`` (PyTorch3D syncs on
  ``lengths2.min() < K``), nor in ``chamfer_distance`` without ``lengths``/``weights`` (PyTorch3D
  syncs on "is the batch heterogeneous" in each direction). The remaining syncs are the value
  checks that raise ``ValueError`` (lengths too long; weights negative or all zero, one sync
  for both) and ``max(K)`` when ``K`` is a tensor (it sets the output shape, as in PyTorch3D).
  Random start points are drawn on the device.
* ``float64`` works on CPU for ``knn_points``/``chamfer_distance`` (PyTorch3D's CPU kernels take
  float32 only) and distances are computed in the input dtype. Bidirectional Chamfer uses
  fastvision's ``nn_distance``: both directions in one pass over the pairs.
* Results are always sorted: ``return_sorted=False`` is accepted (PyTorch3D's CPU kernel also
  sorts; its CUDA kernels may not, and nothing may rely on an unsorted order). ``version`` is
  accepted and ignored (it picks among PyTorch3D's CUDA kernels). Ties go to the lower index.
* ``norm=1`` gradients at exactly equal coordinates are 0 (the subgradient ``torch.abs`` uses);
  PyTorch3D's kernels use -1 there.
* ``knn_gather`` also zero-fills ``idx == -1`` entries (fastvision's native padding) where
  PyTorch3D's ``gather`` raises, and a ``K > P2`` / empty ``p2`` search returns padding where
  PyTorch3D's ``knn_gather`` would index an empty tensor.
* ``sample_farthest_points`` outputs only -1 for a cloud with ``lengths[n] == 0`` or
  ``K[n] == 0``; PyTorch3D writes its start index (0) into column 0 even then (an index into
  an empty cloud). Random starts use the same draws as PyTorch3D (``torch.randint`` without
  lengths, ``lengths * torch.rand`` with them), clamped to a valid index.
* ``point_reduction="max"`` with Pointclouds carrying normals raises the ``ValueError`` above
  (PyTorch3D fails an ``assert``). Lengths of any integer dtype are accepted (cast to int64);
  floating-point lengths raise ``ValueError`` (PyTorch3D truncates 2.7 to 2). The two
  too-long-lengths messages carry the function and argument name before PyTorch3D's text
  (``"chamfer_distance: x_lengths: A length value was too long"``).
* Points must be finite and within the overflow bound of fastvision's point ops (``|x| <=
  sqrt(max / D) / 4`` of float32, or float64 for float64 clouds: 2.66e18 for float32 3-D points):
  ``knn_points``, ``chamfer_distance`` and ``sample_farthest_points`` raise ``ValueError`` naming
  the entry (on CUDA: a device-side assertion) where PyTorch3D returns overflowed or NaN results;
  ``sample_farthest_points`` samples in float32, so float32's bound applies to it.
  ``knn_gather`` raises for indices outside ``[-1, M)`` (PyTorch3D's ``gather`` raises too).
"""

from __future__ import annotations

import operator
from collections import namedtuple
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

import fastvision  # noqa: F401  (loads the extension and registers the ops' autograd)

__all__ = [
    "KNN",
    "knn_points",
    "knn_gather",
    "chamfer_distance",
    "sample_farthest_points",
]

KNN = namedtuple("KNN", "dists idx knn")
_KNN = KNN  # PyTorch3D's private name for the same namedtuple

_AUTO = -1  # fastvision's method code: let the op pick its CPU algorithm


def _as_lengths(lengths: Optional[torch.Tensor], device: torch.device, op: str = "knn_points",
                name: str = "lengths") -> Optional[torch.Tensor]:
    if lengths is None:
        return None
    if not torch.is_tensor(lengths) or lengths.is_floating_point() or lengths.is_complex():
        got = lengths.dtype if torch.is_tensor(lengths) else type(lengths).__name__
        raise ValueError(f"{op}: {name} must be an integer tensor (a fraction is no length), got {got}")
    if lengths.device.type == "meta" and torch.device(device).type != "meta":
        raise ValueError(f"{op}: {name} is a meta tensor (no values) but the points are on {device}")
    return lengths.to(device=device, dtype=torch.int64)


def _as_int(value, op: str, name: str) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__} {value!r}") from None


def _check_rank3(t, op: str, name: str, shape: str) -> None:
    if not torch.is_tensor(t) or t.dim() != 3:
        got = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
        raise ValueError(f"{op}: {name} must be a tensor of shape {shape}, got {got}")


def _zeros_like_graph(p1: torch.Tensor, p2: torch.Tensor, shape) -> torch.Tensor:
    """Zeros of ``shape`` in p1's dtype, attached to the graph of p1 and p2 when they need grad
    (a sum over an empty slice: exactly 0, whatever the coordinates hold)."""
    z = p1.narrow(-1, 0, 0).sum() + p2.narrow(-1, 0, 0).sum()
    return z.expand(shape) if len(shape) else z


def _knn_padded(p1, p2, lengths1, lengths2, K: int, norm: int):
    """fastvision kNN with PyTorch3D's padding (dists 0, idx 0); ``K`` may exceed ``P2``."""
    N, P1, P2 = p1.shape[0], p1.shape[1], p2.shape[1]
    k_found = min(K, P2)
    if k_found > 0:
        dists, idx = torch.ops.fastvision.knn_points(
            p1, p2, lengths1, lengths2, k_found, norm, True, _AUTO
        )
        pad = idx < 0
        dists = torch.where(pad, dists.new_zeros(()), dists)
        idx = idx.masked_fill(pad, 0)
    else:
        # Nothing to search (K = 0 or an empty p2), but the inputs still get the op's checks
        # (devices, finite and bounded coordinates, lengths); an empty p2 costs O(P1).
        if P2 > 0:
            torch.ops.fastvision.knn_points(p1, p2, lengths1, lengths2, 1, norm, True, _AUTO)
        else:
            torch.ops.fastvision.nn_distance(p1, p2, lengths1, lengths2, norm, _AUTO)
        dists = _zeros_like_graph(p1, p2, (N, P1, 0))
        idx = torch.zeros((N, P1, 0), dtype=torch.int64, device=p1.device)
    if K > k_found:
        extra = K - k_found
        dists = torch.cat([dists, _zeros_like_graph(p1, p2, (N, P1, extra))], dim=2)
        idx = torch.cat([idx, idx.new_zeros((N, P1, extra))], dim=2)
    return dists, idx


def knn_points(
    p1: torch.Tensor,
    p2: torch.Tensor,
    lengths1: Union[torch.Tensor, None] = None,
    lengths2: Union[torch.Tensor, None] = None,
    norm: int = 2,
    K: int = 1,
    version: int = -1,
    return_nn: bool = False,
    return_sorted: bool = True,
) -> KNN:
    """PyTorch3D's ``knn_points``: the K nearest points of ``p2`` for each point of ``p1``.

    Args:
        p1: ``(N, P1, D)`` queries; p2: ``(N, P2, D)`` searched clouds.
        lengths1, lengths2: optional ``(N,)`` valid lengths (``None``: full clouds).
        norm: 2 (squared Euclidean distances) or 1 (L1 distances).
        K: neighbours per query (may exceed ``P2``: the extra slots are padding).
        version: accepted for compatibility and ignored.
        return_nn: also return the neighbours' coordinates.
        return_sorted: accepted; results are always sorted by ascending distance.

    Returns:
        ``KNN(dists (N, P1, K), idx (N, P1, K) int64, knn (N, P1, K, D) or None)``, padded with
        0 in slots ``k >= lengths2[n]`` and in rows ``i >= lengths1[n]``.
    """
    _check_rank3(p1, "knn_points", "p1", "(N, P1, D)")
    _check_rank3(p2, "knn_points", "p2", "(N, P2, D)")
    if p1.shape[0] != p2.shape[0]:
        raise ValueError("pts1 and pts2 must have the same batch dimension.")
    if p1.shape[2] != p2.shape[2]:
        raise ValueError("pts1 and pts2 must have the same point dimension.")
    if not ((norm == 1) or (norm == 2)):
        raise ValueError("Support for 1 or 2 norm.")
    K = _as_int(K, "knn_points", "K")
    if K < 0:
        raise ValueError(f"K must be a non-negative integer, got {K}")
    p1 = p1.contiguous()
    p2 = p2.contiguous()
    lengths1 = _as_lengths(lengths1, p1.device, "knn_points", "lengths1")
    lengths2 = _as_lengths(lengths2, p1.device, "knn_points", "lengths2")
    dists, idx = _knn_padded(p1, p2, lengths1, lengths2, K, int(norm))
    knn = knn_gather(p2, idx, lengths2) if return_nn else None
    return KNN(dists=dists, idx=idx, knn=knn)


def knn_gather(
    x: torch.Tensor, idx: torch.Tensor, lengths: Union[torch.Tensor, None] = None
) -> torch.Tensor:
    """PyTorch3D's ``knn_gather``: ``out[n, l, k] = x[n, idx[n, l, k]]``, ``(N, L, K, U)``.

    Slots ``k >= lengths[n]`` (``lengths=None``: ``M``) are zero-filled, and so are ``idx == -1``
    entries; other indices must lie in ``[0, M)`` (``0`` also when ``M = 0``: the padding of an
    empty search). Differentiable with respect to ``x``.
    """
    op = "knn_gather"
    _check_rank3(x, op, "x", "(N, M, U)")
    _check_rank3(idx, op, "idx", "(N, L, K)")
    if idx.dtype != torch.int64:
        raise ValueError(f"{op}: idx must be int64, got {idx.dtype}")
    N, M, U = x.shape
    _N, L, K = idx.shape
    if N != _N:
        raise ValueError("x and idx must have same batch dimension.")
    if idx.numel() > 0:
        torch._assert_async(
            ((idx >= -1) & (idx < max(M, 1))).all(),
            f"{op}: idx entries must be -1 (padding) or lie in [0, {M})",
        )
    lengths = _as_lengths(lengths, x.device, op, "lengths")
    slots = torch.arange(K, device=x.device)
    limit = lengths[:, None, None] if lengths is not None else M
    keep = (slots[None, None, :] < limit) & (idx >= 0)
    if M == 0:
        return _zeros_like_graph(x, x, (N, L, K, U))
    flat = idx.clamp(min=0).reshape(N, L * K, 1).expand(N, L * K, U)
    out = x.gather(1, flat).reshape(N, L, K, U)
    return torch.where(keep[..., None], out, out.new_zeros(()))


# ---------------------------------------------------------------------------------------------
# Chamfer distance


def _validate_chamfer_reductions(batch_reduction, point_reduction) -> None:
    if batch_reduction is not None and batch_reduction not in ["mean", "sum"]:
        raise ValueError('batch_reduction must be one of ["mean", "sum"] or None')
    if point_reduction is not None and point_reduction not in ["mean", "sum", "max"]:
        raise ValueError('point_reduction must be one of ["mean", "sum", "max"] or None')
    if point_reduction is None and batch_reduction is not None:
        raise ValueError("Batch reduction must be None if point_reduction is None")


def _is_pointclouds(obj) -> bool:
    return not torch.is_tensor(obj) and all(
        callable(getattr(obj, name, None))
        for name in ("points_padded", "num_points_per_cloud", "normals_padded")
    )


def _cloud_input(points, lengths, normals, lengths_name: str = "lengths"):
    """``(padded points, int64 lengths, normals or None)`` from a tensor or a Pointclouds-like."""
    if _is_pointclouds(points):
        X = points.points_padded()
        lengths = points.num_points_per_cloud()
        normals = points.normals_padded()
    elif torch.is_tensor(points):
        if points.ndim != 3:
            raise ValueError("Expected points to be of shape (N, P, D)")
        X = points
        if lengths is not None:
            _as_lengths(lengths, X.device, "chamfer_distance", lengths_name)
            if lengths.ndim != 1 or lengths.shape[0] != X.shape[0]:
                raise ValueError("Expected lengths to be of shape (N,)")
            # (a meta cloud has no values to check: its op call checks the devices)
            if lengths.numel() > 0 and X.device.type != "meta" and bool(lengths.max() > X.shape[1]):
                raise ValueError(f"chamfer_distance: {lengths_name}: A length value was too long")
        if normals is not None and normals.ndim != 3:
            raise ValueError("Expected normals to be of shape (N, P, 3")
    else:
        raise ValueError(
            "The input pointclouds should be either Pointclouds objects or torch.Tensor of "
            "shape (minibatch, num_points, 3)."
        )
    if lengths is None:
        lengths = torch.full((X.shape[0],), X.shape[1], dtype=torch.int64, device=X.device)
    else:
        lengths = lengths.to(device=X.device, dtype=torch.int64)
    return X, lengths, normals


def _nearest_one_way(x, y, x_lengths, y_lengths, norm):
    """Nearest neighbour of each point of x in y: ``(d, i)`` with ``i = -1`` where there is none
    (x padding, or an empty y cloud)."""
    N, P1 = x.shape[:2]
    if y.shape[1] == 0:
        d = _zeros_like_graph(x, y, (N, P1))
        return d, torch.full((N, P1), -1, dtype=torch.int64, device=x.device)
    d, i = torch.ops.fastvision.knn_points(x, y, x_lengths, y_lengths, 1, norm, True, _AUTO)
    return d[:, :, 0], i[:, :, 0]


def _direction_terms(x, x_lengths, x_normals, y_normals, y_lengths, d, i, weights,
                     point_reduction, abs_cosine):
    """One Chamfer direction from its nearest-neighbour search: ``(term, normal term or None)``,
    reduced over the points unless ``point_reduction`` is None."""
    N, P1 = x.shape[:2]
    cham = torch.where(i < 0, d.new_zeros(()), d)  # padding and empty targets count 0
    w = None if weights is None else weights.view(N, 1).to(cham.dtype)
    if w is not None:
        cham = cham * w
    cham_norm = None
    if x_normals is not None and y_normals is not None:
        near = knn_gather(y_normals, i.unsqueeze(2), y_lengths)[:, :, 0, :]
        cos = F.cosine_similarity(x_normals, near, dim=2, eps=1e-6)
        cham_norm = 1 - (torch.abs(cos) if abs_cosine else cos)
        x_pad = torch.arange(P1, device=x.device)[None] >= x_lengths[:, None]
        cham_norm = torch.where(x_pad, cham_norm.new_zeros(()), cham_norm)
        if w is not None:
            cham_norm = cham_norm * w.to(cham_norm.dtype)
    if point_reduction == "max":
        cham = cham.max(1).values
    elif point_reduction is not None:
        cham = cham.sum(1)
        if cham_norm is not None:
            cham_norm = cham_norm.sum(1)
        if point_reduction == "mean":
            count = x_lengths.clamp(min=1)
            cham = cham / count
            if cham_norm is not None:
                cham_norm = cham_norm / count
    return cham, cham_norm


def chamfer_distance(
    x,
    y,
    x_lengths=None,
    y_lengths=None,
    x_normals=None,
    y_normals=None,
    weights=None,
    batch_reduction: Union[str, None] = "mean",
    point_reduction: Union[str, None] = "mean",
    norm: int = 2,
    single_directional: bool = False,
    abs_cosine: bool = True,
):
    """PyTorch3D's ``chamfer_distance``: ``(loss, loss_normals)``; see the module docstring.

    Args:
        x, y: ``(N, P1, D)`` / ``(N, P2, D)`` tensors or Pointclouds-like objects.
        x_lengths, y_lengths: optional ``(N,)`` valid lengths.
        x_normals, y_normals: optional ``(N, P1, D)`` / ``(N, P2, D)``; the normal term needs both.
        weights: optional non-negative ``(N,)`` per-cloud weights.
        batch_reduction: ``"mean"``, ``"sum"`` or None. point_reduction: ``"mean"``, ``"sum"``,
            ``"max"`` or None.
        norm: 2 (squared Euclidean) or 1 (L1).
        single_directional: only the x -> y term.
        abs_cosine: ``1 - |cos|`` (orientation-free) rather than ``1 - cos``.
    """
    _validate_chamfer_reductions(batch_reduction, point_reduction)
    if not ((norm == 1) or (norm == 2)):
        raise ValueError("Support for 1 or 2 norm.")
    if point_reduction == "max" and (x_normals is not None or y_normals is not None):
        raise ValueError('Normals must be None if point_reduction is "max"')

    x, x_lengths, x_normals = _cloud_input(x, x_lengths, x_normals, "x_lengths")
    y, y_lengths, y_normals = _cloud_input(y, y_lengths, y_normals, "y_lengths")
    return_normals = x_normals is not None and y_normals is not None
    if point_reduction == "max" and return_normals:
        raise ValueError('Normals must be None if point_reduction is "max"')

    N, _, D = x.shape
    if y.shape[0] != N or y.shape[2] != D:
        raise ValueError("y does not have the correct shape.")
    all_zero = False
    if weights is not None:
        if weights.size(0) != N:
            raise ValueError("weights must be of shape (N,).")
        negative, all_zero = torch.stack(
            [torch.logical_not((weights >= 0).all()), weights.sum() == 0.0]
        ).tolist()
        if negative:
            raise ValueError("weights cannot be negative.")

    if all_zero:
        # PyTorch3D's convention for all-zero weights: zero terms of shape (N, N) for the
        # distances and the normals alike, still attached to the graph of the points.
        zx = (x.sum((1, 2)) * weights.view(N, 1)) * 0.0
        zy = (y.sum((1, 2)) * weights.view(N, 1)) * 0.0
        cham_x, norm_x, cham_y, norm_y = zx, zx, zy, zy
    else:
        norm = int(norm)
        if single_directional:
            d12, i12 = _nearest_one_way(x, y, x_lengths, y_lengths, norm)
        else:
            d12, i12, d21, i21 = torch.ops.fastvision.nn_distance(
                x, y, x_lengths, y_lengths, norm, _AUTO
            )
        cham_x, norm_x = _direction_terms(
            x, x_lengths, x_normals, y_normals, y_lengths, d12, i12, weights,
            point_reduction, abs_cosine,
        )
        if not single_directional:
            cham_y, norm_y = _direction_terms(
                y, y_lengths, y_normals, x_normals, x_lengths, d21, i21, weights,
                point_reduction, abs_cosine,
            )

    if single_directional:
        loss, loss_normals = cham_x, norm_x
    elif point_reduction == "max":
        loss, loss_normals = torch.maximum(cham_x, cham_y), None
    elif point_reduction is not None:
        loss = cham_x + cham_y
        loss_normals = None if norm_x is None else norm_x + norm_y
    else:
        loss = (cham_x, cham_y)
        loss_normals = None if norm_x is None else (norm_x, norm_y)

    if batch_reduction is None:
        return loss, loss_normals
    batch = loss.shape[0]
    loss = loss.sum()
    if loss_normals is not None:
        loss_normals = loss_normals.sum()
    if batch_reduction == "mean":
        if weights is None:
            div = max(batch, 1)
        elif all_zero:
            div = 1
        else:
            div = weights.sum()
        loss = loss / div
        if loss_normals is not None:
            loss_normals = loss_normals / div
    return loss, loss_normals


# ---------------------------------------------------------------------------------------------
# Farthest point sampling


def sample_farthest_points(
    points: torch.Tensor,
    lengths: Optional[torch.Tensor] = None,
    K: Union[int, List, torch.Tensor] = 50,
    random_start_point: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """PyTorch3D's ``sample_farthest_points``: ``(selected_points, selected_indices)``.

    Args:
        points: ``(N, P, D)``.
        lengths: optional ``(N,)`` valid lengths.
        K: samples per cloud: an int, or a list/``(N,)`` tensor of per-cloud counts.
        random_start_point: start each cloud at a uniformly random valid point instead of 0.

    Returns:
        ``selected_points (N, max(K), D)`` float32 (0.0 padding) and ``selected_indices
        (N, max(K))`` int64 (-1 padding where ``k >= min(K[n], lengths[n])``).
    """
    op = "sample_farthest_points"
    _check_rank3(points, op, "points", "(N, P, D)")
    N, P, D = points.shape
    device = points.device
    constant_length = lengths is None
    if lengths is None:
        lengths = torch.full((N,), P, dtype=torch.int64, device=device)
    else:
        _as_lengths(lengths, device, op, "lengths")
        if lengths.shape != (N,):
            raise ValueError("points and lengths must have same batch dimension.")
        if lengths.numel() > 0 and bool(lengths.max() > P):
            raise ValueError(f"{op}: lengths: A value in lengths was too large.")
        lengths = lengths.to(device=device, dtype=torch.int64)

    per_cloud = None
    if isinstance(K, (list, tuple)):
        per_cloud = torch.tensor([_as_int(k, op, "K") for k in K], dtype=torch.int64, device=device)
    elif torch.is_tensor(K):
        if K.is_floating_point() or K.is_complex():
            raise ValueError(f"{op}: K must be an int, a list of ints or an integer tensor, got {K.dtype}")
        per_cloud = K.to(device=device, dtype=torch.int64)
    else:
        K = _as_int(K, op, "K")
    if per_cloud is not None:
        if per_cloud.ndim != 1 or per_cloud.shape[0] != N:
            raise ValueError("K and points must have the same batch dimension")
        max_K = int(per_cloud.max()) if N > 0 else 0
    else:
        max_K = K
    if max_K < 0:
        raise ValueError(f"K must be non-negative, got {max_K}")

    # PyTorch3D samples in float32 whatever the input dtype, and returns float32 points.
    pts = points if points.dtype == torch.float32 else points.to(torch.float32)

    if random_start_point:
        if constant_length:
            start = (
                torch.randint(high=P, size=(N,), device=device)
                if P > 0
                else torch.zeros((N,), dtype=torch.int64, device=device)
            )
        else:
            start = (lengths * torch.rand(lengths.size(), device=device)).to(torch.int64)
            start = torch.minimum(start, (lengths - 1).clamp(min=0))
    else:
        start = torch.zeros((N,), dtype=torch.int64, device=device)
    seeds = torch.where(lengths > 0, start, torch.full_like(start, -1)).unsqueeze(1)

    with torch.no_grad():
        idx, _ = torch.ops.fastvision.farthest_point_sample(
            pts.detach().contiguous(), lengths, max_K, seeds, _AUTO
        )
    if per_cloud is not None:
        beyond = torch.arange(max_K, device=device)[None, :] >= per_cloud[:, None]
        idx = idx.masked_fill(beyond, -1)

    if P == 0:
        return _zeros_like_graph(pts, pts, (N, max_K, D)), idx
    gathered = pts.gather(1, idx.clamp(min=0).unsqueeze(2).expand(N, max_K, D))
    selected = torch.where((idx < 0).unsqueeze(2), gathered.new_zeros(()), gathered)
    return selected, idx
