"""The pose recipe: the official PCK accuracy, OKS, OKS-NMS and COCO keypoint AP (a hand-worked
example), the lr schedule, and `fastvision train pose` / `fastvision eval pose` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fastvision.cli import main
from fastvision.data.pose import COCO_KEYPOINT_SIGMAS
from fastvision.recipes.pose import (
    MultiStepDecay,
    keypoint_ap,
    oks,
    oks_nms,
    pck_accuracy,
    scaled_milestones,
)


def _heatmap_at(h, w, points):
    maps = torch.zeros(1, len(points), h, w)
    for j, (x, y) in enumerate(points):
        maps[0, j, y, x] = 1.0
    return maps


def test_pck_accuracy_is_the_official_one_with_its_normalisation():
    # 40x10 heatmaps: the official code divides x offsets by H / 10 = 4 and y offsets by W / 10 = 1.
    target = _heatmap_at(40, 10, [(5, 5), (5, 5), (1, 5), (5, 5)])
    output = _heatmap_at(40, 10, [(5, 5), (6, 5), (7, 7), (5, 6)])
    per_joint, avg, cnt = pck_accuracy(output, target)
    # joint 0: distance 0 -> hit; joint 1: dx 1 / 4 = 0.25 -> hit; joint 2: target x = 1 is not
    # > 1 -> left out; joint 3: dy 1 / 1 = 1 -> miss.
    assert per_joint.tolist() == [1.0, 1.0, -1.0, 0.0]
    assert cnt == 3 and avg == pytest.approx(2 / 3)


def _person(x0, y0, visible=range(17), shift=(0.0, 0.0)):
    kp = np.zeros((17, 3))
    for j in visible:
        kp[j] = [x0 + 3 * j + shift[0], y0 + 2 * j + shift[1], 2]
    return kp


def test_oks_of_one_labelled_keypoint_is_the_closed_form():
    gt = {"keypoints": _person(100, 100, visible=[0]).reshape(-1).tolist(), "area": 10000.0,
          "bbox": [90, 90, 40, 40]}
    det = _person(100, 100, visible=[0], shift=(5.2, 0.0))
    # e = d^2 / (2 sigma)^2 / area / 2 with sigma_nose = 0.026: 27.04 / 0.002704 / 10000 / 2 = 0.5.
    assert oks(gt, det.reshape(1, -1))[0] == pytest.approx(math.exp(-0.5), rel=1e-9)
    assert COCO_KEYPOINT_SIGMAS[0] == pytest.approx(0.026)


def test_keypoint_ap_hand_worked_example():
    """One image, two people: A (17 labelled joints) and B (nose only, area 10000).
    Detections: A exactly (score 0.9, OKS 1), one far away (0.8, OKS ~0), B's nose 5.2 px off
    (0.7, OKS exp(-0.5) = 0.6065: a true positive at OKS thresholds 0.50, 0.55, 0.60 only).
    Thresholds 0.50-0.60: TP, FP, TP -> recall 0.5, 0.5, 1; precision envelope 1, 2/3, 2/3 ->
    101-point AP = (51 * 1 + 50 * 2/3) / 101. Thresholds 0.65-0.95: TP, FP, FP -> AP = 51 / 101.
    AP@[.5:.95] = (3 * 0.834983 + 7 * 0.504950) / 10."""
    a = _person(200, 50)
    b = _person(100, 100, visible=[0])
    ground_truth = {"images": [{"id": 1, "width": 640, "height": 480}],
                    "categories": [{"id": 1, "name": "person"}],
                    "annotations": [
                        {"id": 1, "image_id": 1, "keypoints": a.reshape(-1).tolist(), "area": 5000.0,
                         "bbox": [200, 50, 48, 32], "iscrowd": 0, "num_keypoints": 17},
                        {"id": 2, "image_id": 1, "keypoints": b.reshape(-1).tolist(), "area": 10000.0,
                         "bbox": [90, 90, 40, 40], "iscrowd": 0, "num_keypoints": 1}]}
    far = _person(500, 400)
    detections = [{"image_id": 1, "keypoints": a, "score": 0.9},
                  {"image_id": 1, "keypoints": far, "score": 0.8},
                  {"image_id": 1, "keypoints": _person(100, 100, shift=(5.2, 0.0)), "score": 0.7}]
    stats = keypoint_ap(ground_truth, detections, backend="fastvision")
    ap_hit, ap_miss = (51 + 50 * 2 / 3) / 101, 51 / 101
    assert stats["AP50"] == pytest.approx(ap_hit)
    assert stats["AP75"] == pytest.approx(ap_miss)
    assert stats["AP"] == pytest.approx((3 * ap_hit + 7 * ap_miss) / 10)
    assert stats["AR50"] == pytest.approx(1.0) and stats["AR75"] == pytest.approx(0.5)
    assert stats["AR"] == pytest.approx((3 * 1.0 + 7 * 0.5) / 10)
    # Area ranges: A (5000) is medium, B (10000) large; every detection's keypoint extent is
    # 48x32 = 1536 (medium). Medium: A found at every threshold, B and the detection matching it
    # ignored -> 1. Large: only B counts, found at 0.50-0.60 only -> 3 / 10.
    assert stats["APm"] == pytest.approx(1.0) and stats["ARm"] == pytest.approx(1.0)
    assert stats["APl"] == pytest.approx(0.3) and stats["ARl"] == pytest.approx(0.3)
    # A crowd ground truth is ignored: B as crowd leaves A alone to find -> AP 1 at every threshold
    # (the far detection ranks below A, and the one matching the crowd is ignored).
    ground_truth["annotations"][1]["iscrowd"] = 1
    assert keypoint_ap(ground_truth, detections, backend="fastvision")["AP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not in the ground truth"):
        keypoint_ap(ground_truth, [{**detections[0], "image_id": 5}], backend="fastvision")


def test_oks_nms_drops_duplicates_only():
    one = {"keypoints": _person(100, 100), "score": 0.9, "area": 4000.0}
    twin = {"keypoints": _person(100, 100, shift=(0.5, 0.0)), "score": 0.8, "area": 4000.0}
    other = {"keypoints": _person(300, 100), "score": 0.7, "area": 4000.0}
    assert oks_nms([twin, one, other]) == [1, 2]


def test_lr_schedule_is_the_official_multistep():
    assert scaled_milestones(210) == (170, 200)
    assert scaled_milestones(4) == (3, 4)
    lr = MultiStepDecay(1e-3, (170 * 64, 200 * 64))
    assert lr(0) == 1e-3 and lr(170 * 64 - 1) == 1e-3
    assert lr(170 * 64) == pytest.approx(1e-4) and lr(200 * 64) == pytest.approx(1e-5)


def test_train_resume_and_eval_pose_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["train", "pose", "--out", str(out), "--batch-size", "2", "--max-steps-per-epoch", "1",
              "--train-samples", "4", "--val-samples", "2", "--image-size", "32x64", "--quiet"]
    assert main(common + ["--epochs", "1"]) == 0
    assert main(common + ["--epochs", "2", "--resume"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_AP", "val_AP50", "val_AR"):
        assert key in record["history"][-1]
    assert record["model_spec"]["image_size"] == [32, 64]
    assert (out / "checkpoint_last.pt").is_file() and (out / "curves.png").is_file()

    ev = tmp_path / "eval"
    assert main(["eval", "pose", "--checkpoint", str(out / "checkpoint_last.pt"), "--flip",
                 "--val-samples", "2", "--out", str(ev), "--quiet"]) == 0
    result = json.loads((ev / "results.json").read_text())
    assert result["image_size"] == [32, 64] and result["flip_test"] and result["people"] == 2
    assert 0.0 <= result["AP"] <= 1.0 and 0.0 <= result["acc"] <= 1.0
    detections = json.loads((ev / "keypoints_results.json").read_text())
    assert len(detections) == 2 and len(detections[0]["keypoints"]) == 51

    # A plain state dict needs --model (and an input size).
    weights = tmp_path / "plain.pt"
    ckpt = torch.load(out / "checkpoint_last.pt", weights_only=True)
    torch.save(ckpt["model"], weights)
    assert main(["eval", "pose", "--checkpoint", str(weights), "--out", str(ev), "--quiet"]) == 2
    assert "--model" in capsys.readouterr().err  # one error line (issue 15)
    assert main(["eval", "pose", "--checkpoint", str(weights), "--model", "hrnetv1_w32_pose",
                 "--image-size", "32x64", "--flip", "--val-samples", "2", "--out", str(ev), "--quiet"]) == 0
    plain = json.loads((ev / "results.json").read_text())
    assert plain["AP"] == result["AP"] and plain["acc"] == result["acc"]
