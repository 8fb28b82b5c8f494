"""``fastvision eval segmentation-study`` at a tiny size: every run of the study trains with its
recipe, is evaluated, cached and resumed; the table, claims and plot are written."""

import json

import pytest
import torch

from fastvision.cli import main
from fastvision.models import get_model
from fastvision.tasks.segmentation.study import (
    CLAIMS,
    RUN_KEYS,
    RUNS,
    SegmentationStudy,
    claim_verdicts,
    inference_model,
    run_dir,
)

TINY = ["--image-size", "64x64", "--train-samples", "2", "--val-samples", "2", "--epochs", "1",
        "--batch-size", "2", "--timing-rounds", "1", "--quiet"]


def test_every_run_end_to_end_cached_and_extended(tmp_path):
    out = tmp_path / "study"
    assert main(["eval", "segmentation-study", "--out", str(out), *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["runs"]) == list(RUN_KEYS)
    for run in RUNS:
        r = results["runs"][run.key]
        assert r["params"] > 0 and r["macs"] > 0 and r["ms_per_image"] > 0
        seed = r["seeds"]["0"]
        assert 0 <= seed["miou"] <= 1 and 0 <= seed["pixel_acc"] <= 1 and len(seed["iou"]) == 19
        spec = torch.load(run_dir(SegmentationStudy(out_dir=str(out)), run, 0) / "checkpoint_last.pt",
                          weights_only=True)["model_spec"]
        assert spec["name"] == run.model and spec["kwargs"] == {"num_classes": 19, **run.kwargs}
    # Boosters cost nothing at inference: same deployed parameters with and without them.
    assert results["runs"]["bisenetv2"]["params"] == results["runs"]["bisenetv2_no_boosters"]["params"]
    assert results["runs"]["hrnetv2_w18_small_v1"]["params"] == 1_540_819
    assert [c["claim"] for c in results["claims"]] == [c[0] for c in CLAIMS]
    table = (out / "results.md").read_text()
    assert all(run.label in table for run in RUNS) and (out / "miou_vs_time.png").stat().st_size > 0

    # Cached: nothing retrains; a second seed trains only its own runs.
    first = run_dir(SegmentationStudy(out_dir=str(out)), RUNS[0], 0) / "checkpoint_last.pt"
    stamp = first.stat().st_mtime_ns
    assert main(["eval", "segmentation-study", "--out", str(out), "--seeds", "0,1",
                 "--runs", "hrnetv2_w18_small_v1,hrnetv1_w18_small_v1", *TINY]) == 0
    assert first.stat().st_mtime_ns == stamp
    results = json.loads((out / "results.json").read_text())
    assert list(results["runs"]) == ["hrnetv2_w18_small_v1", "hrnetv1_w18_small_v1"]
    assert list(results["runs"]["hrnetv2_w18_small_v1"]["seeds"]) == ["0", "1"]
    assert len(results["claims"]) == 1 and len(results["claims"][0]["miou_better"]) == 2
    assert "±" in (out / "results.md").read_text()


def test_deployed_bisenet_drops_the_boosters_and_keeps_the_main_output():
    torch.manual_seed(0)
    trained = get_model("bisenetv2", num_classes=5).eval()
    deployed = inference_model(trained, {"name": "bisenetv2", "kwargs": {"num_classes": 5}})
    assert deployed.aux_mode == "eval"
    assert sum(p.numel() for p in deployed.parameters()) < sum(p.numel() for p in trained.parameters())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(deployed(x), trained(x)[0])
    other = get_model("hrnetv2_w18_small_v1", num_classes=5)
    assert inference_model(other, {"name": "hrnetv2_w18_small_v1"}) is other


def test_claim_verdicts_follow_the_numbers():
    study = SegmentationStudy(seeds=(0, 1), runs=("bisenetv2", "bisenetv2_no_boosters"))
    results = {"runs": {"bisenetv2": {"seeds": {"0": {"miou": 0.5}, "1": {"miou": 0.4}}},
                        "bisenetv2_no_boosters": {"seeds": {"0": {"miou": 0.45}, "1": {"miou": 0.42}}}}}
    (verdict,) = claim_verdicts(study, results)
    assert verdict["holds_on_average"] and not verdict["holds_in_every_seed"]
    assert verdict["difference_mean"] == pytest.approx(0.015)


def test_bad_options():
    with pytest.raises(ValueError, match="unknown study runs \\['resnet'\\]"):
        SegmentationStudy(runs=("resnet",))
    with pytest.raises(ValueError, match="image_size must be multiples of 32, got 100x256"):
        SegmentationStudy(image_size=(100, 256))
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        SegmentationStudy(epochs=0)
