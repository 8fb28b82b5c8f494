"""Semantic-segmentation metrics: a dataset-level confusion matrix, IoU per class, mIoU, pixel
accuracy, all at label resolution.

The confusion matrix (rows: label, columns: prediction; ignored pixels left out) is accumulated
over every batch and, under ``torch.distributed``, summed over the processes before the metrics
are read, as HRNet (``reduce_tensor`` of the matrix) and BiSeNet V2 (``all_reduce`` in
``Metrics.compute_metrics``) do.

A class that appears in neither the labels nor the predictions has no IoU: it is NaN here and
``mean_iou`` leaves it out (``absent="exclude"``, torchvision's reference / HyperSeg's ``ConfMat``
would give NaN for the whole mean). HRNet's ``testval`` divides by ``max(1, union)`` and averages
over all classes, so an absent class counts as 0: ``absent="zero"`` reproduces that.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from fastvision.losses.segmentation import IGNORE_INDEX, upsample_logits

__all__ = ["confusion_matrix", "iou_per_class", "mean_iou", "pixel_accuracy", "SegmentationMetrics"]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, ``[label, prediction]``, of the non-ignored pixels."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    keep = target != ignore_index
    label, pred = target[keep].long(), pred[keep].long()
    bad = (label < 0) | (label >= num_classes)
    if bad.any():
        raise ValueError(f"target holds {int(label[bad][0])}, outside [0, {num_classes}) and not "
                         f"the ignore index {ignore_index}")
    if ((pred < 0) | (pred >= num_classes)).any():
        raise ValueError(f"pred holds values outside [0, {num_classes})")
    counts = torch.bincount(label * num_classes + pred, minlength=num_classes ** 2)
    return counts.reshape(num_classes, num_classes)


def iou_per_class(conf: torch.Tensor) -> torch.Tensor:
    """``tp / (tp + fp + fn)`` per class (float64); NaN for a class with an empty union."""
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))


def mean_iou(conf: torch.Tensor, absent: str = "exclude") -> float:
    """mIoU; ``absent`` classes (empty union) are left out (``"exclude"``) or count as 0
    (``"zero"``, HRNet's ``testval``). NaN when every class is absent and ``"exclude"``."""
    iou = iou_per_class(conf)
    if absent == "exclude":
        return float(iou.nanmean()) if not iou.isnan().all() else math.nan
    if absent == "zero":
        return float(iou.nan_to_num(0.0).mean())
    raise ValueError(f"absent must be 'exclude' or 'zero', got {absent!r}")


def pixel_accuracy(conf: torch.Tensor) -> float:
    """Correct non-ignored pixels / non-ignored pixels (NaN when there are none)."""
    total = float(conf.sum())
    return float(conf.diag().sum()) / total if total else math.nan


class SegmentationMetrics:
    """Accumulates the confusion matrix over batches; :meth:`compute` gives the metrics."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, align_corners: bool = False):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes, self.ignore_index, self.align_corners = num_classes, ignore_index, align_corners
        self.conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """``pred``: class indices (B, H, W) or scores (B, C, h, w), upsampled to the label size
        (bilinear, ``align_corners`` as set) before the argmax; ``target``: (B, H, W)."""
        if pred.is_floating_point():
            if pred.dim() != 4 or pred.shape[1] != self.num_classes:
                raise ValueError(f"scores must be (B, {self.num_classes}, h, w), got shape "
                                 f"{tuple(pred.shape)}")
            pred = upsample_logits(pred, target.shape[-2:], self.align_corners).argmax(1)
        self.conf += confusion_matrix(pred, target, self.num_classes, self.ignore_index).cpu()

    def all_reduce(self) -> None:
        """Sum the matrices of every process (no-op outside ``torch.distributed``)."""
        if dist.is_available() and dist.is_initialized():
            backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
            conf = self.conf.to(backend_device)
            dist.all_reduce(conf, op=dist.ReduceOp.SUM)
            self.conf = conf.cpu()

    def compute(self, absent: str = "exclude") -> dict:
        """``{"miou", "pixel_acc", "iou": [per class, NaN if absent]}`` of what was accumulated."""
        return {"miou": mean_iou(self.conf, absent), "pixel_acc": pixel_accuracy(self.conf),
                "iou": iou_per_class(self.conf).tolist()}
