"""The pose recipe: the lr schedule, and `fastvision train pose` / `fastvision eval pose` end to
end."""

from __future__ import annotations

import json

import pytest
import torch

from fastvision.cli import main
from fastvision.engine import MultiStepDecay
from fastvision.tasks.pose.recipe import scaled_milestones


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
    assert "name its model with --model" in capsys.readouterr().err
    assert main(["eval", "pose", "--checkpoint", str(weights), "--model", "hrnetv1_w32_pose",
                 "--image-size", "32x64", "--flip", "--val-samples", "2", "--out", str(ev), "--quiet"]) == 0
    plain = json.loads((ev / "results.json").read_text())
    assert plain["AP"] == result["AP"] and plain["acc"] == result["acc"]
