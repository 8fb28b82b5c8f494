"""``fastvision eval pose-study`` at a tiny size, and the plain-argmax decoding it compares with
the official quarter-pixel refinement."""

import json

import pytest
import torch

from fastvision.cli import main
from fastvision.metrics.pose import get_final_preds, predict_people
from fastvision.tasks.pose.study import VARIANTS, PoseStudy, claims


def test_pose_study_end_to_end_and_cached(tmp_path):
    out = tmp_path / "pose"
    args = ["eval", "pose-study", "--out", str(out), "--image-size", "32x64", "--train-samples", "2",
            "--val-samples", "2", "--epochs", "1", "--batch-size", "2", "--backend", "fastvision",
            "--quiet"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["ap_backend"] == "fastvision"
    per_variant = results["seeds"]["0"]
    assert list(per_variant) == [v[0] for v in VARIANTS]
    for metrics in per_variant.values():
        assert 0 <= metrics["AP"] <= 1
    assert [c["claim"] for c in results["claims"]] == ["the flip test raises the AP",
                                                       "the quarter-pixel refinement raises the AP"]
    ckpt = out / "seed0" / "hrnetv1_w32_pose" / "checkpoint_last.pt"
    stamp = ckpt.stat().st_mtime_ns
    assert main(args) == 0 and ckpt.stat().st_mtime_ns == stamp
    assert "flip + refinement (official)" in (out / "results.md").read_text()


def test_claims_compare_against_the_right_variant():
    seeds = {"0": {"flip + refinement (official)": {"AP": 0.6}, "flip, argmax": {"AP": 0.5},
                   "no flip, refinement": {"AP": 0.65}, "no flip, argmax": {"AP": 0.4}}}
    flip, refine = claims({"seeds": seeds})
    assert flip["ap_gain_mean"] == pytest.approx(-0.05) and not flip["holds_on_average"]
    assert refine["ap_gain_mean"] == pytest.approx(0.1) and refine["holds_on_average"]


def test_argmax_decoding_skips_the_quarter_pixel_step():
    heatmaps = torch.zeros(1, 17, 16, 12)
    heatmaps[0, :, 5, 6] = 1.0
    heatmaps[0, :, 5, 7] = 0.5  # the right neighbour is higher: refinement moves x by +0.25
    meta = {"center": torch.tensor([[6.0, 8.0]]), "scale": torch.tensor([[12 / 200, 16 / 200]]),
            "image_id": torch.tensor([1]), "score": torch.tensor([1.0])}
    refined = predict_people(heatmaps, meta)[0]["keypoints"]
    plain = predict_people(heatmaps, meta, post_process=False)[0]["keypoints"]
    expected, _ = get_final_preds(heatmaps, meta["center"], meta["scale"], post_process=False)
    assert plain[:, :2] == pytest.approx(expected[0].numpy())
    assert refined[:, 0] - plain[:, 0] == pytest.approx([0.25] * 17)
    assert refined[:, 1] == pytest.approx(plain[:, 1])


def test_bad_options():
    with pytest.raises(ValueError, match="model must be one of"):
        PoseStudy(model="resnet")
    with pytest.raises(ValueError, match="backend must be"):
        PoseStudy(backend="coco")
