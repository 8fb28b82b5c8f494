"""Matching generated points to an input cloud (S-NET / SampleNet inference).

The learned samplers generate points that are not in the input; at inference they are replaced by
input points: each generated point by its nearest input point, duplicates dropped (the first
occurrence in generation order wins), and the set completed to the requested size by farthest
point sampling seeded with the matched points. This is the official procedure
(orendv/learning_to_sample and itailang/SampleNet ``nn_matching`` / ``_unique`` /
``_fps_from_given_pc``), which copies to the host and loops in numpy; here it stays on the
tensor's device with no host synchronisation and returns indices, so features can be gathered too.
"""

from __future__ import annotations

import torch

from fastvision.ops._validation import assert_lengths, check_cloud, check_int
from fastvision.ops.points import farthest_point_sample, knn_points

__all__ = ["nn_match"]


def nn_match(
    generated: torch.Tensor,
    points: torch.Tensor,
    num_out: int,
    complete: str | None = "fps",
    lengths: torch.Tensor | None = None,
    *,
    return_num_unique: bool = False,
):
    """Indices of the input points matched to generated points.

    Args:
        generated: ``(B, M, D)`` generated points (e.g. S-NET's or SampleNet's output, "bnc").
        points: ``(B, N, D)`` input clouds.
        num_out: indices to return per cloud.
        complete: ``"fps"`` (default): nearest input point of each generated point, duplicates
            removed keeping the first occurrence in generation order, then completed to
            ``num_out`` by farthest point sampling seeded with the matched set (the official
            ``complete_fps=True``). ``None``: the nearest input point of each of the first
            ``num_out`` generated points, duplicates kept (the official ``complete_fps=False``).
        lengths: optional int64 ``(B,)`` valid lengths of ``points``.
        return_num_unique: also return the number of distinct matched points per cloud
            (int64 ``(B,)``), which the SampleNet evaluation reports.

    Returns:
        int64 ``(B, num_out)`` indices into ``points`` (or ``(idx, num_unique)``). With
        ``complete="fps"`` the FPS completion runs in float64, as the official numpy code does,
        so the indices equal the official ones.
    """
    op = "nn_match"
    check_cloud(generated, op, "generated")
    check_cloud(points, op, "points")
    check_int(num_out, op, "num_out", 0)
    if complete not in ("fps", None):
        raise ValueError(f"{op}: complete must be 'fps' or None, got {complete!r}")
    B, M = generated.shape[:2]
    N = points.shape[1]
    if N == 0:
        raise ValueError(f"{op}: points holds no points (N = 0)")
    assert_lengths(lengths, N, op, "lengths")
    if lengths is not None and lengths.numel() > 0:
        torch._assert_async(
            (lengths >= 1).all(), f"{op}: every entry of lengths must be at least 1 (an empty cloud has no point to match)"
        )
    if complete is None and num_out > M:
        raise ValueError(
            f"{op}: without completion num_out = {num_out} cannot exceed the generated points (M = {M})"
        )
    if complete == "fps" and num_out > N:
        raise ValueError(f"{op}: num_out = {num_out} is larger than the clouds (N = {N})")
    nearest = knn_points(generated.detach(), points.detach(), 1, lengths2=lengths).idx[..., 0]
    order = torch.arange(M, device=nearest.device).expand(B, M)
    # First occurrence of each matched point in generation order, without leaving the device.
    owner = torch.full((B, N), M, dtype=torch.int64, device=nearest.device)
    owner = owner.scatter_reduce(1, nearest, order, reduce="amin")
    first = owner.gather(1, nearest) == order
    if complete is None:
        idx = nearest[:, :num_out]
    else:
        seeds = torch.where(first, nearest, torch.full_like(nearest, -1))
        idx = farthest_point_sample(points.detach().double(), num_out, lengths, start=seeds)
    if return_num_unique:
        return idx, first.sum(dim=1)
    return idx
