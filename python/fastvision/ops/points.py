"""Point-cloud neighbour operators: k nearest neighbours, nearest-neighbour distances (Chamfer),
farthest point sampling.

Conventions shared by every function here:

* Clouds are batched as ``(B, P, D)`` tensors (any ``D >= 1``; ``D = 3`` has fast paths).
  Ragged batches pass ``lengths`` (int64, ``(B,)``): points past a cloud's length are ignored.
* Distances are **squared** Euclidean (``norm=2``) or L1 (``norm=1``), computed directly as
  ``sum((a - b) ** 2)`` (never through the ``|a|^2 + |b|^2 - 2ab`` expansion that loses precision
  for nearby points). Ties between equal distances go to the lower point index.
* dtypes: float32 and float64 on CPU and CUDA; float16 and bfloat16 too (computed in float32).
  Indices are int64.
* Every op runs on CPU and CUDA, traces under ``torch.compile`` and never synchronises with the
  host; distances are differentiable with respect to both clouds.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from fastvision.ops._validation import (
    assert_lengths,
    check_cloud,
    check_int,
    check_same_device,
)

__all__ = [
    "KNN",
    "NNDistance",
    "knn_points",
    "knn_gather",
    "nn_distance",
    "chamfer_distance",
    "farthest_point_sample",
]

_METHODS = {"auto": -1, "brute_force": 0, "kdtree": 1}
_FPS_METHODS = {"auto": -1, "scan": 0, "buckets": 1}


class KNN(NamedTuple):
    dists: torch.Tensor
    idx: torch.Tensor


class NNDistance(NamedTuple):
    d12: torch.Tensor
    i12: torch.Tensor
    d21: torch.Tensor
    i21: torch.Tensor


def _method_code(method: str, table: dict, op: str) -> int:
    if method not in table:
        raise ValueError(f"{op}: method must be one of {sorted(table)}, got {method!r}")
    return table[method]


def _check_pair(p1, p2, lengths1, lengths2, op: str) -> None:
    check_cloud(p1, op, "p1")
    check_cloud(p2, op, "p2")
    check_same_device(op, "p1", p1, lengths1=lengths1, lengths2=lengths2)
    # Finite, bounded coordinates (the overflow contract) are checked by the op itself.
    assert_lengths(lengths1, p1.shape[1], op, "lengths1")
    assert_lengths(lengths2, p2.shape[1], op, "lengths2")


def knn_points(
    p1: torch.Tensor,
    p2: torch.Tensor,
    K: int,
    lengths1: torch.Tensor | None = None,
    lengths2: torch.Tensor | None = None,
    return_sorted: bool = True,
    *,
    norm: int = 2,
    method: str = "auto",
) -> KNN:
    """The K nearest points of ``p2`` for every point of ``p1``.

    Args:
        p1: queries, ``(B, P1, D)``.
        p2: the searched clouds, ``(B, P2, D)``, same dtype and device as ``p1``.
        K: neighbours per query, ``1 <= K <= P2`` (a larger K raises ``ValueError``).
        lengths1, lengths2: optional int64 ``(B,)`` valid lengths of each cloud.
        return_sorted: accepted for API compatibility; results are always sorted by ascending
            distance (then index), which costs nothing in these kernels.
        norm: 2 for squared Euclidean distances (default), 1 for L1 distances.
        method: CPU search: ``"auto"`` (a k-d tree built inside the op when ``D <= 8``,
            ``P1, P2 >= 128`` and ``P2 <= 16 * P1``; a vectorised blocked scan otherwise, since
            few queries do not pay for the tree's build), ``"brute_force"`` or ``"kdtree"``.
            All give bit-identical results. Ignored on CUDA.

    Returns:
        ``KNN(dists, idx)``: ``dists (B, P1, K)`` in the dtype of ``p1`` and ``idx (B, P1, K)``
        int64. Where a cloud of ``p2`` holds fewer than K points (``lengths2[b] < K``) the missing
        neighbours are padded with ``idx = -1`` and ``dists = +inf``; queries past
        ``lengths1[b]`` are padded the same way. ``dists`` is differentiable with respect to
        ``p1`` and ``p2`` (padding receives no gradient).
    """
    op = "knn_points"
    _check_pair(p1, p2, lengths1, lengths2, op)
    check_int(K, op, "K", 1)
    if norm not in (1, 2):
        raise ValueError(f"{op}: norm must be 1 or 2, got {norm!r}")
    dists, idx = torch.ops.fastvision.knn_points(
        p1, p2, lengths1, lengths2, K, norm, return_sorted, _method_code(method, _METHODS, op)
    )
    return KNN(dists, idx)


def knn_gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gathers the neighbours found by :func:`knn_points`.

    Args:
        x: ``(B, N, F)`` features (or points) of the searched clouds.
        idx: int64 ``(B, P, K)`` indices into ``x``; ``-1`` (padding) gathers zeros (exact zeros,
            whatever ``x`` holds, even with ``N = 0``); other entries must lie in ``[0, N)``.

    Returns:
        ``(B, P, K, F)``, differentiable with respect to ``x``.
    """
    op = "knn_gather"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: x must be a tensor of shape (B, N, F), got {type(x).__name__}")
    if not isinstance(idx, torch.Tensor):
        raise TypeError(f"{op}: idx must be an int64 tensor of shape (B, P, K), got {type(idx).__name__}")
    if x.dim() != 3:
        raise ValueError(f"{op}: x must have shape (B, N, F), got {tuple(x.shape)}")
    if idx.dim() != 3 or idx.shape[0] != x.shape[0]:
        raise ValueError(
            f"{op}: idx must have shape (B, P, K) with B = {x.shape[0]}, got {tuple(idx.shape)}"
        )
    if idx.dtype != torch.int64:
        raise ValueError(f"{op}: idx must be int64, got {idx.dtype}")
    if idx.device != x.device:
        raise ValueError(f"{op}: idx must be on the device of x ({x.device}), got {idx.device}")
    B, P, K = idx.shape
    if idx.numel() > 0:
        torch._assert_async(
            ((idx >= -1) & (idx < x.shape[1])).all(),
            f"{op}: idx entries must be -1 or lie in [0, {x.shape[1]})",
        )
    if x.shape[1] == 0:  # only padding can index an empty cloud
        return x.new_zeros((B, P, K, x.shape[2])) + x.sum() * 0
    valid = idx >= 0
    flat = idx.clamp(min=0).reshape(B, P * K, 1).expand(B, P * K, x.shape[2])
    out = x.gather(1, flat).reshape(B, P, K, x.shape[2])
    # where, not a multiplication by the mask: padding must give 0 even where x holds inf or NaN.
    return torch.where(valid.unsqueeze(-1), out, out.new_zeros(()))


def nn_distance(
    p1: torch.Tensor,
    p2: torch.Tensor,
    lengths1: torch.Tensor | None = None,
    lengths2: torch.Tensor | None = None,
    *,
    norm: int = 2,
    method: str = "auto",
) -> NNDistance:
    """Nearest-neighbour distances in both directions, from one pass over the pairs.

    The ``nn_distance`` of the S-NET code (Fan et al.'s Chamfer kernel), with ragged batches.

    Args:
        p1: ``(B, P1, D)``; p2: ``(B, P2, D)``, same dtype and device.
        lengths1, lengths2: optional int64 ``(B,)`` valid lengths.
        norm: 2 for squared Euclidean distances (default), 1 for L1.
        method: CPU search: ``"auto"`` (one pass over all pairs updating both minima; a k-d tree
            in each direction when both clouds hold 256 points or more and ``P1 * P2 >= 2**18``),
            ``"brute_force"`` or
            ``"kdtree"``; identical results. Ignored on CUDA.

    Returns:
        ``NNDistance(d12, i12, d21, i21)``: ``d12 (B, P1)`` distance from each point of ``p1`` to
        its nearest point of ``p2`` and ``i12`` its int64 index; ``d21 (B, P2)``/``i21`` the
        other way. Points past a cloud's length get distance 0 and index -1 (so sums over the
        padded tensor ignore them); a valid point whose other cloud is empty gets ``+inf`` and
        -1. Distances are differentiable with respect to ``p1`` and ``p2``.
    """
    op = "nn_distance"
    _check_pair(p1, p2, lengths1, lengths2, op)
    if norm not in (1, 2):
        raise ValueError(f"{op}: norm must be 1 or 2, got {norm!r}")
    out = torch.ops.fastvision.nn_distance(
        p1, p2, lengths1, lengths2, norm, _method_code(method, _METHODS, op)
    )
    return NNDistance(*out)


def masked_mean(d: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Mean over the valid points of each cloud: ``(B, P) -> (B,)`` (0 for an empty cloud)."""
    if lengths is None:
        return d.mean(dim=1) if d.shape[1] > 0 else d.new_zeros(d.shape[0])
    return d.sum(dim=1) / lengths.clamp(min=1).to(d.dtype)


def chamfer_distance(
    p1: torch.Tensor,
    p2: torch.Tensor,
    lengths1: torch.Tensor | None = None,
    lengths2: torch.Tensor | None = None,
    reduction: str = "mean",
    *,
    norm: int = 2,
) -> torch.Tensor:
    """Chamfer distance: ``mean_i min_j d(p1_i, p2_j) + mean_j min_i d(p2_j, p1_i)`` per cloud.

    Distances are squared Euclidean by default (as in S-NET/SampleNet and PyTorch3D). Means run
    over each cloud's valid points.

    Args:
        reduction: ``"mean"`` over the batch (default; 0 for an empty batch, as ``"sum"``),
            ``"sum"``, or ``"none"`` for ``(B,)``.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"chamfer_distance: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    d12, _, d21, _ = nn_distance(p1, p2, lengths1, lengths2, norm=norm)
    per_cloud = masked_mean(d12, lengths1) + masked_mean(d21, lengths2)
    if reduction == "mean":
        return per_cloud.sum() / max(per_cloud.shape[0], 1)
    if reduction == "sum":
        return per_cloud.sum()
    return per_cloud


def farthest_point_sample(
    points: torch.Tensor,
    K: int,
    lengths: torch.Tensor | None = None,
    start: int | str | torch.Tensor = 0,
    *,
    return_min_dists: bool = False,
    generator: torch.Generator | None = None,
    method: str = "auto",
):
    """Farthest point sampling: the classic greedy sequence, exactly.

    Each step picks the point whose squared distance to the already chosen set is largest; among
    equal distances the lowest index wins.

    Args:
        points: ``(B, P, D)``.
        K: points to choose per cloud. ``K`` larger than a cloud (``P``, or ``lengths[b]``) raises
            ``ValueError`` (on CUDA the check is asynchronous: a device-side assertion).
        lengths: optional int64 ``(B,)`` valid lengths.
        start: where to start: an int index (default 0) used for every cloud; ``"random"`` for a
            uniformly random start per cloud drawn on the points' device (``generator`` makes it
            reproducible; no host synchronisation); or an int64 ``(B, S)`` tensor of indices
            already chosen: they are output first, in order (``-1`` entries are skipped), and the
            sampling continues from them (SampleNet's matching completes its set this way). K
            counts the seeds.
        return_min_dists: also return, for each chosen point, its squared distance to the points
            chosen before it (``+inf`` for the first), i.e. the coverage radius at each step.
        method: CPU algorithm: ``"auto"`` (a k-d tree of buckets with bounding-box pruning
            when the cloud has 2048 points or more and ``K >= 256``, the vectorised scan
            otherwise), ``"scan"`` or ``"buckets"``: identical results. Ignored on CUDA.

    Returns:
        int64 ``(B, K)`` indices, or ``(idx, min_dists)`` with ``return_min_dists=True``.
    """
    op = "farthest_point_sample"
    check_cloud(points, op, "points")
    check_int(K, op, "K", 0)
    check_same_device(op, "points", points, lengths=lengths, start=start)
    B, P = points.shape[:2]
    assert_lengths(lengths, P, op, "lengths")
    if K > P:
        raise ValueError(f"{op}: K = {K} is larger than the clouds (P = {P})")
    if lengths is not None and K > 0 and lengths.numel() > 0:
        torch._assert_async((lengths >= K).all(), f"{op}: K = {K} is larger than a cloud (lengths < K)")
    if isinstance(start, str):
        if start != "random":
            raise ValueError(f"{op}: start must be an int, 'random' or a (B, S) tensor, got {start!r}")
        n = lengths if lengths is not None else torch.full((B,), P, device=points.device)
        u = torch.rand(B, generator=generator, device=points.device, dtype=torch.float64)
        seeds = (u * n).long().clamp(max=P - 1).unsqueeze(1) if P > 0 else u.long().unsqueeze(1)
    elif isinstance(start, torch.Tensor):
        if start.dim() != 2 or start.shape[0] != B or start.dtype != torch.int64:
            raise ValueError(
                f"{op}: a start tensor must be int64 of shape (B, S) = ({B}, S), got "
                f"{start.dtype} {tuple(start.shape)}"
            )
        seeds = start
    else:
        check_int(start, op, "start", 0)
        if P > 0 and start >= P:
            raise ValueError(f"{op}: start = {start} is not a point index (P = {P})")
        # Clouds without points (P = 0, hence K = 0) have no start.
        seeds = torch.full((B, 1), start if P > 0 else -1, dtype=torch.int64, device=points.device)
    if not isinstance(start, torch.Tensor) and lengths is not None:
        seeds = torch.where(lengths.unsqueeze(1) > 0, seeds, -1)  # an empty cloud has no start
    if seeds.device.type != "cpu" and seeds.numel() > 0:
        # The CPU kernel checks seeds itself (with the offending entry in the message).
        bound = (lengths if lengths is not None else torch.full((B,), P, device=seeds.device))
        torch._assert_async(
            ((seeds >= -1) & (seeds < bound.unsqueeze(1))).all(),
            f"{op}: start indices must be -1 (none) or lie in [0, length of their cloud)",
        )
    # Indices are not differentiable, and min_dists are reported, not a training signal.
    idx, min_dists = torch.ops.fastvision.farthest_point_sample(
        points.detach(), lengths, K, seeds, _method_code(method, _FPS_METHODS, op)
    )
    return (idx, min_dists) if return_min_dists else idx


# ---------------------------------------------------------------------------------------------
# Fake (meta) kernels and autograd registrations.


@torch.library.register_fake("fastvision::knn_points")
def _knn_points_fake(p1, p2, lengths1=None, lengths2=None, K=1, norm=2, return_sorted=True, method=-1):
    check_same_device("knn_points", "p1", p1, p2=p2, lengths1=lengths1, lengths2=lengths2)
    torch._check(p1.dim() == 3 and p2.dim() == 3, lambda: "knn_points: p1 and p2 must be (B, P, D)")
    torch._check(p1.shape[0] == p2.shape[0] and p1.shape[2] == p2.shape[2])
    torch._check(1 <= K, lambda: f"knn_points: K must be at least 1, got {K}")
    shape = (p1.shape[0], p1.shape[1], K)
    return p1.new_empty(shape), p1.new_empty(shape, dtype=torch.int64)


@torch.library.register_fake("fastvision::_knn_points_backward")
def _knn_points_backward_fake(p1, p2, idx, grad_dists, norm):
    check_same_device("_knn_points_backward", "p1", p1, p2=p2, idx=idx, grad_dists=grad_dists)
    return torch.empty_like(p1), torch.empty_like(p2)


@torch.library.register_fake("fastvision::nn_distance")
def _nn_distance_fake(p1, p2, lengths1=None, lengths2=None, norm=2, method=-1):
    check_same_device("nn_distance", "p1", p1, p2=p2, lengths1=lengths1, lengths2=lengths2)
    torch._check(p1.dim() == 3 and p2.dim() == 3, lambda: "nn_distance: p1 and p2 must be (B, P, D)")
    B, P1, P2 = p1.shape[0], p1.shape[1], p2.shape[1]
    return (
        p1.new_empty((B, P1)),
        p1.new_empty((B, P1), dtype=torch.int64),
        p1.new_empty((B, P2)),
        p1.new_empty((B, P2), dtype=torch.int64),
    )


@torch.library.register_fake("fastvision::farthest_point_sample")
def _fps_fake(points, lengths, K, start_idx, method=-1):
    check_same_device("farthest_point_sample", "points", points, lengths=lengths, start_idx=start_idx)
    B = points.shape[0]
    return points.new_empty((B, K), dtype=torch.int64), points.new_empty((B, K))


def _knn_setup_context(ctx, inputs, output):
    p1, p2, _, _, _, norm, _, _ = inputs
    _, idx = output
    ctx.save_for_backward(p1, p2, idx)
    ctx.norm = norm
    ctx.mark_non_differentiable(idx)


def _knn_backward(ctx, grad_dists, grad_idx):
    p1, p2, idx = ctx.saved_tensors
    g1, g2 = torch.ops.fastvision._knn_points_backward(
        p1, p2, idx, grad_dists.contiguous(), ctx.norm
    )
    return g1, g2, None, None, None, None, None, None


torch.library.register_autograd(
    "fastvision::knn_points", _knn_backward, setup_context=_knn_setup_context
)


def _nn_setup_context(ctx, inputs, output):
    p1, p2, _, _, norm, _ = inputs
    _, i12, _, i21 = output
    ctx.save_for_backward(p1, p2, i12, i21)
    ctx.norm = norm
    ctx.mark_non_differentiable(i12, i21)


def _nn_backward(ctx, g12, gi12, g21, gi21):
    p1, p2, i12, i21 = ctx.saved_tensors
    backward = torch.ops.fastvision._knn_points_backward
    # Each direction is a K = 1 neighbour search; its gradient is the kNN one.
    a1, a2 = backward(p1, p2, i12.unsqueeze(2), g12.contiguous().unsqueeze(2), ctx.norm)
    b2, b1 = backward(p2, p1, i21.unsqueeze(2), g21.contiguous().unsqueeze(2), ctx.norm)
    return a1 + b1, a2 + b2, None, None, None, None


torch.library.register_autograd(
    "fastvision::nn_distance", _nn_backward, setup_context=_nn_setup_context
)


def register_no_double_backward(backward_op: str, op: str) -> None:
    """Registers autograd for a backward op so that differentiating it raises (the semantics of
    ``torch.autograd.function.once_differentiable``) instead of giving ``None`` or zeros."""

    def backward(ctx, *grads):
        raise RuntimeError(
            f"{op}: double backward (differentiating the gradient, e.g. with create_graph=True) "
            "is not supported"
        )

    torch.library.register_autograd(backward_op, backward, setup_context=lambda ctx, inputs, output: None)


register_no_double_backward(
    "fastvision::_knn_points_backward", "knn_points / nn_distance / chamfer_distance"
)
