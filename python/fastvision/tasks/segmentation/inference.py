"""Segmentation inference shared by the recipe's validation, ``fastvision eval segmentation`` and
the demo sections: multi-scale + flip probabilities (CoinCheung's ``MscEvalV0``: softmax summed over
scales and flips at label resolution, inputs rounded up to multiples of 32), dataset mIoU, and
the overlay picture."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fastvision.engine import unwrap
from fastvision.losses.segmentation import upsample_logits
from fastvision.metrics.segmentation import SegmentationMetrics

__all__ = ["main_logits", "predict_probs", "evaluate_segmentation", "overlay"]


def main_logits(outputs) -> torch.Tensor:
    """The main logits of a model's output: the tensor itself or the first of a tuple / list."""
    if isinstance(outputs, (list, tuple)):
        outputs = outputs[0]
    if not isinstance(outputs, torch.Tensor) or outputs.dim() != 4:
        raise ValueError("a segmentation model must return (B, C, h, w) logits or a tuple / list "
                         "with those first")
    return outputs


@torch.no_grad()
def predict_probs(model: nn.Module, images: torch.Tensor, out_size, scales=(1.0,), flip: bool = False,
                  align_corners: bool = False, divisor: int = 32) -> torch.Tensor:
    """Softmax probabilities (B, C, *out_size) summed over ``scales`` (and horizontal flips):
    inputs resized to ``scale * size`` rounded up to a multiple of ``divisor``, logits upsampled
    bilinearly to ``out_size``."""
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be positive numbers, got {scales}")
    h, w = images.shape[-2:]
    total = None
    for scale in scales:
        size = (math.ceil(h * scale / divisor) * divisor, math.ceil(w * scale / divisor) * divisor)
        x = images if size == (h, w) else F.interpolate(images, size=size, mode="bilinear",
                                                        align_corners=align_corners)
        for flipped in ((False, True) if flip else (False,)):
            logits = main_logits(model(x.flip(-1) if flipped else x))
            logits = logits.flip(-1) if flipped else logits
            probs = F.softmax(upsample_logits(logits.float(), out_size, align_corners), dim=1)
            total = probs if total is None else total + probs
    return total


class _BoostersOff:
    """Evaluate BiSeNet V2 without its booster heads (the official ``aux_mode = 'eval'``)."""

    def __init__(self, model: nn.Module):
        self.model, self.saved = model, getattr(model, "aux_mode", None)

    def __enter__(self):
        if self.saved == "train":
            self.model.aux_mode = "eval"

    def __exit__(self, *exc):
        if self.saved == "train":
            self.model.aux_mode = self.saved


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, loader, device, num_classes: int, scales=(1.0,),
                          flip: bool = False, align_corners: bool = False, keep: int = 0):
    """Dataset-level metrics of ``model`` (eval mode) over ``loader``; returns the
    :class:`SegmentationMetrics` and the predicted label maps (uint8 CPU) of the first ``keep``
    images."""
    model = unwrap(model)
    metrics = SegmentationMetrics(num_classes)
    kept = []
    with _BoostersOff(model):
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            probs = predict_probs(model, images, labels.shape[-2:], scales, flip, align_corners)
            pred = probs.argmax(1)
            metrics.update(pred, labels)
            if len(kept) < keep:
                kept.extend(p.to(torch.uint8).cpu() for p in pred[:keep - len(kept)])
    return metrics, kept


def overlay(image: np.ndarray, label: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """The image, its colour-coded ground truth and prediction side by side (uint8 RGB)."""
    from fastvision.data.segmentation import colorize

    def blend(classes):
        return (0.45 * image + 0.55 * colorize(classes, num_classes)).astype(np.uint8)

    gap = np.full((image.shape[0], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([image, gap, blend(label), gap, blend(pred)], axis=1)
