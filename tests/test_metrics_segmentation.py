"""Segmentation metrics on constructed cases: confusion matrix, IoU, mIoU (absent classes
excluded, or as 0 like HRNet's testval), pixel accuracy, accumulation over batches and processes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from fastvision.metrics.segmentation import (
    SegmentationMetrics,
    confusion_matrix,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)

# 4 classes; class 3 never appears (in labels or predictions); one pixel ignored.
TARGET = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 0]])
PRED = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])


def test_confusion_matrix_by_hand():
    conf = confusion_matrix(PRED, TARGET, 4)
    expected = torch.tensor([[2, 1, 0, 0],   # label 0: pred 0, 1, 0
                             [0, 2, 0, 0],   # label 1: pred 1, 1
                             [1, 0, 1, 0],   # label 2: pred 2, 0 (the ignored pixel is left out)
                             [0, 0, 0, 0]])
    assert torch.equal(conf, expected)


def test_iou_miou_and_accuracy_by_hand():
    conf = confusion_matrix(PRED, TARGET, 4)
    iou = iou_per_class(conf)
    # class 0: tp 2, fp 1 (label 2), fn 1 -> 2/4; class 1: tp 2, fp 1 -> 2/3; class 2: tp 1, fn 1 -> 1/2
    torch.testing.assert_close(iou[:3], torch.tensor([0.5, 2 / 3, 0.5], dtype=torch.float64))
    assert math.isnan(iou[3])
    assert mean_iou(conf) == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert mean_iou(conf, absent="zero") == pytest.approx((0.5 + 2 / 3 + 0.5) / 4)
    assert pixel_accuracy(conf) == pytest.approx(5 / 7)


def test_absent_as_zero_is_hrnets_testval_formula():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 6, (3, 10, 12), generator=g)
    target[target == 4] = 255  # class 4 absent from the labels
    pred = torch.randint(0, 6, (3, 10, 12), generator=g)
    pred[pred == 4] = 5  # ... and from the predictions
    conf = confusion_matrix(pred, target, 6).numpy().astype(np.float64)
    pos, res, tp = conf.sum(1), conf.sum(0), np.diag(conf)
    official = (tp / np.maximum(1.0, pos + res - tp)).mean()
    assert mean_iou(torch.from_numpy(conf), absent="zero") == pytest.approx(official)
    assert pixel_accuracy(torch.from_numpy(conf)) == pytest.approx(tp.sum() / pos.sum())


def test_accumulates_over_batches_at_label_resolution():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 3, (4, 8, 8), generator=g)
    pred = torch.randint(0, 3, (4, 8, 8), generator=g)
    metrics = SegmentationMetrics(3)
    metrics.update(pred[:1], target[:1])
    metrics.update(pred[1:], target[1:])
    assert torch.equal(metrics.conf, confusion_matrix(pred, target, 3))
    # scores at 1/4 resolution, one class per 2x2 block: upsampled before the argmax
    low = torch.zeros(1, 3, 2, 2)
    low[0, 0, 0, :], low[0, 2, 1, :] = 5.0, 5.0  # top half class 0, bottom half class 2
    scores = SegmentationMetrics(3)
    label = torch.cat([torch.zeros(1, 4, 8), torch.full((1, 4, 8), 2)], 1).long()
    scores.update(low, label)
    assert scores.compute()["miou"] == pytest.approx(1.0) and scores.compute()["pixel_acc"] == 1.0


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"target holds 7, outside \[0, 4\)"):
        confusion_matrix(PRED, torch.full_like(TARGET, 7), 4)
    with pytest.raises(ValueError, match="pred and target must have the same shape"):
        confusion_matrix(PRED[:1], TARGET, 4)
    with pytest.raises(ValueError, match=r"scores must be \(B, 4, h, w\)"):
        SegmentationMetrics(4).update(torch.zeros(1, 3, 2, 2), TARGET[None])
    with pytest.raises(ValueError, match="absent must be 'exclude' or 'zero'"):
        mean_iou(torch.eye(2, dtype=torch.long), absent="nan")
    assert math.isnan(mean_iou(torch.zeros(3, 3, dtype=torch.long)))


def _reduce_worker(rank, tmp):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank,
                                         world_size=2)
    metrics = SegmentationMetrics(4)
    metrics.update(PRED if rank == 0 else TARGET.clamp(max=3), TARGET)
    metrics.all_reduce()
    torch.save(metrics.conf, f"{tmp}/conf{rank}.pt")
    torch.distributed.destroy_process_group()


def test_all_reduce_sums_the_processes(tmp_path):
    mp.spawn(_reduce_worker, args=(str(tmp_path),), nprocs=2)
    expected = confusion_matrix(PRED, TARGET, 4) + confusion_matrix(TARGET.clamp(max=3), TARGET, 4)
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path / f"conf{rank}.pt"), expected)
