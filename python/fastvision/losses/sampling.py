"""The S-NET sampling regularisation loss ("Learning to Sample", Dovrat et al., CVPR 2019, eqs. 2-5),
used by S-NET, ProgressiveNet and SampleNet.

With G the generated points, P the input cloud and d the squared Euclidean distance::

    L_f = 1/|G| sum_g min_p d(g, p)          (eq. 2)
    L_m = max_g min_p d(g, p)                 (eq. 3)
    L_b = 1/|P| sum_p min_g d(p, g)           (eq. 4)
    L_s = L_f + beta L_m + (gamma + delta |G|) L_b   (eq. 5)

Both nearest-neighbour directions come from one :func:`fastvision.ops.nn_distance` pass.
The official code (orendv/learning_to_sample ``get_sampling_loss``, itailang/SampleNet) averages each
term over the batch and fixes beta = 1; with ``reduction="mean"`` and equal cloud sizes this
function gives the same value.
"""

from __future__ import annotations

import torch

from fastvision.ops.points import masked_mean, nn_distance


def sampling_loss_terms(
    generated: torch.Tensor,
    points: torch.Tensor,
    lengths_generated: torch.Tensor | None = None,
    lengths_points: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(L_f, L_m, L_b)`` per cloud, each ``(B,)``, differentiable in both clouds.

    Args:
        generated: ``(B, G, 3)`` generated (or sampled) points.
        points: ``(B, N, 3)`` input clouds.
        lengths_generated, lengths_points: optional int64 ``(B,)`` valid lengths.
    """
    d_gp, _, d_pg, _ = nn_distance(generated, points, lengths_generated, lengths_points)
    l_f = masked_mean(d_gp, lengths_generated)
    # Padded rows hold distance 0, which never exceeds a real (non-negative) distance.
    l_m = d_gp.amax(dim=1) if d_gp.shape[1] > 0 else d_gp.new_zeros(d_gp.shape[0])
    l_b = masked_mean(d_pg, lengths_points)
    return l_f, l_m, l_b


def sampling_loss(
    generated: torch.Tensor,
    points: torch.Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    delta: float = 0.0,
    lengths_generated: torch.Tensor | None = None,
    lengths_points: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """S-NET sampling loss ``L_f + beta L_m + (gamma + delta |G|) L_b`` (eq. 5).

    ``|G|`` is the number of generated points per cloud (``G``, or ``lengths_generated``).
    Defaults are S-NET's (beta = 1, gamma = 1, delta = 0); ProgressiveNet uses gamma = 0.5,
    delta = 1/30. ``reduction``: ``"mean"`` over the batch (official), ``"sum"`` or ``"none"``.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"sampling_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    l_f, l_m, l_b = sampling_loss_terms(generated, points, lengths_generated, lengths_points)
    if lengths_generated is None:
        size = torch.full_like(l_f, generated.shape[1])
    else:
        size = lengths_generated.to(l_f.dtype)
    per_cloud = l_f + beta * l_m + (gamma + delta * size) * l_b
    if reduction == "mean":
        return per_cloud.mean()
    if reduction == "sum":
        return per_cloud.sum()
    return per_cloud
