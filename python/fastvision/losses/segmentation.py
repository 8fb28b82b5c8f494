"""Segmentation losses of HyperSeg, HRNetV2 and BiSeNet V2, as their official code computes them.

Every loss takes logits ``(B, C, h, w)`` and labels ``(B, H, W)`` (int64, ``ignore_index`` 255 for
void). Logits at a lower resolution than the labels are upsampled bilinearly inside the loss, as
HRNet's official criterion does (``align_corners`` per family: HRNet's Cityscapes configs and
BiSeNet V2's heads use ``False``).

* :func:`bootstrapped_cross_entropy` -- HyperSeg (``hyperseg/losses/bootstrapped_ce_loss.py``):
  per image, the per-pixel CE losses (ignored pixels count as 0) sorted in descending order; when
  the (k+1)-th largest is above ``threshold`` every loss above the threshold is kept, else the top
  ``k``; the mean over the kept ones, averaged over the images. k 4096, threshold 0.3 (a loss
  value, not a probability).
* :func:`ohem_cross_entropy` -- HRNet (``lib/core/criterion.py`` ``OhemCrossEntropy``): among the
  valid pixels, keep those whose probability of the true class is below
  ``max(threshold, p_(min_kept))`` (``p_(m)`` the (m+1)-th smallest such probability); mean of
  their (optionally class-weighted) CE.
* :func:`ohem_cross_entropy_bisenet` -- BiSeNet V2 (CoinCheung ``lib/ohem_ce_loss.py``
  ``OhemCELoss``): keep the pixel losses above ``-log(threshold)``; if fewer than
  ``n_min = #valid // 16``, the top ``n_min`` losses (ignored pixels included, at 0) instead; mean.
* :func:`class_weighted_cross_entropy` -- HRNet's ``CrossEntropy`` with the Cityscapes class
  weights (weighted mean over valid pixels).

Where the official code would return NaN (an image or batch with nothing to keep, e.g. every
pixel ignored) these return a zero that still carries the graph, so a training step never dies
on a fully void crop.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "IGNORE_INDEX",
    "CITYSCAPES_CLASS_WEIGHTS",
    "upsample_logits",
    "bootstrapped_cross_entropy",
    "ohem_cross_entropy",
    "ohem_cross_entropy_bisenet",
    "class_weighted_cross_entropy",
    "multi_output_loss",
]

IGNORE_INDEX = 255

# HRNet-Semantic-Segmentation lib/datasets/cityscapes.py (train ids 0..18).
CITYSCAPES_CLASS_WEIGHTS = (0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786,
                            1.0023, 0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529,
                            1.0507)


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B, C, h, w), got shape {tuple(logits.shape)}")
    if target.dim() != 3 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must be (B, H, W) with B = {logits.shape[0]}, got shape "
                         f"{tuple(target.shape)}")
    if target.dtype != torch.long:
        raise ValueError(f"target must be int64 class indices, got {target.dtype}")


def upsample_logits(logits: torch.Tensor, size: Sequence[int], align_corners: bool = False) -> torch.Tensor:
    """``logits`` bilinearly resized to ``size`` (H, W); unchanged when already that size."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)


def _weight(weight, logits: torch.Tensor):
    if weight is None:
        return None
    weight = torch.as_tensor(weight, dtype=logits.dtype, device=logits.device)
    if weight.shape != (logits.shape[1],):
        raise ValueError(f"weight must have one entry per class ({logits.shape[1]}), got shape "
                         f"{tuple(weight.shape)}")
    return weight


def _pixel_losses(logits, target, weight, ignore_index, align_corners):
    _check(logits, target)
    logits = upsample_logits(logits, target.shape[-2:], align_corners)
    losses = F.cross_entropy(logits, target, weight=_weight(weight, logits),
                             ignore_index=ignore_index, reduction="none")
    return logits, losses


def _zero(logits: torch.Tensor) -> torch.Tensor:
    return logits.sum() * 0.0


def bootstrapped_cross_entropy(logits: torch.Tensor, target: torch.Tensor, k: int = 4096,
                               threshold: float = 0.3, weight=None, ignore_index: int = IGNORE_INDEX,
                               align_corners: bool = False) -> torch.Tensor:
    """HyperSeg's bootstrapped CE (see the module docstring). An image with at most ``k`` pixels
    (the official code indexes past its end there) keeps all of them."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    _, losses = _pixel_losses(logits, target, weight, ignore_index, align_corners)
    total = _zero(logits)
    for image_losses in losses.flatten(1):
        ranked = torch.sort(image_losses, descending=True).values
        if ranked.numel() > k and ranked[k] > threshold:
            kept = ranked[ranked > threshold]
        else:
            kept = ranked[:k]
        total = total + kept.mean()
    return total / losses.shape[0]


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.7,
                       min_kept: int = 100_000, weight=None, ignore_index: int = IGNORE_INDEX,
                       align_corners: bool = False) -> torch.Tensor:
    """HRNet's OHEM CE over the whole batch (defaults: ``OhemCrossEntropy``'s signature; the
    Cityscapes OHEM config uses threshold 0.9, min_kept 131072)."""
    min_kept = max(1, int(min_kept))
    logits, losses = _pixel_losses(logits, target, weight, ignore_index, align_corners)
    valid = target != ignore_index
    if not valid.any():
        return _zero(logits)
    true_class = target.masked_fill(~valid, 0).unsqueeze(1)
    prob = F.softmax(logits, dim=1).gather(1, true_class).squeeze(1)[valid]
    # kthvalue is 1-based: the official sorted[min(min_kept, n - 1)] is the (that + 1)-th smallest.
    rank = min(min_kept, prob.numel() - 1) + 1
    cut = max(float(torch.kthvalue(prob.detach(), rank).values), threshold)
    kept = losses[valid][prob < cut]
    return kept.mean() if kept.numel() else _zero(logits)


def ohem_cross_entropy_bisenet(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.7,
                               ignore_index: int = IGNORE_INDEX,
                               align_corners: bool = False) -> torch.Tensor:
    """BiSeNet V2's OHEM CE (CoinCheung ``OhemCELoss``; see the module docstring)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be a probability in (0, 1], got {threshold}")
    _, losses = _pixel_losses(logits, target, None, ignore_index, align_corners)
    n_min = int((target != ignore_index).sum()) // 16
    losses = losses.flatten()
    hard = losses[losses > -math.log(threshold)]
    if hard.numel() < n_min:
        hard = losses.topk(n_min).values
    return hard.mean() if hard.numel() else _zero(logits)


def class_weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                                 weight=CITYSCAPES_CLASS_WEIGHTS, ignore_index: int = IGNORE_INDEX,
                                 align_corners: bool = False) -> torch.Tensor:
    """HRNet's ``CrossEntropy``: CE weighted per class, mean weighted by the valid pixels' class
    weights (``weight=None``: plain CE)."""
    _check(logits, target)
    logits = upsample_logits(logits, target.shape[-2:], align_corners)
    if not (target != ignore_index).any():
        return _zero(logits)
    return F.cross_entropy(logits, target, weight=_weight(weight, logits), ignore_index=ignore_index)


def multi_output_loss(outputs, target: torch.Tensor, criterion: Callable, aux_weight: float = 1.0
                      ) -> tuple[torch.Tensor, dict]:
    """``criterion(main) + aux_weight * sum(criterion(aux))`` for a model that returns one logits
    tensor or a tuple / list (main first, then auxiliary heads: BiSeNet V2's boosters, weight 1
    in the official ``train_amp.py``); returns the loss and ``{"main_loss", "aux_loss"}``."""
    if isinstance(outputs, torch.Tensor):
        outputs = [outputs]
    if not isinstance(outputs, (list, tuple)) or not outputs:
        raise ValueError(f"model outputs must be a tensor or a non-empty tuple/list of tensors, "
                         f"got {type(outputs).__name__}")
    main = criterion(outputs[0], target)
    logs = {"main_loss": main.detach()}
    if len(outputs) == 1:
        return main, logs
    aux = sum(criterion(o, target) for o in outputs[1:])
    logs["aux_loss"] = aux.detach()
    return main + aux_weight * aux, logs
