"""Segmentation inference benchmarks: the `fastvision bench --family segmentation` command at the
small size writes its table, JSON and plot; variants are checked against eager."""

from __future__ import annotations

import json

import pytest
import torch

from fastvision.tasks import benchmark_names
from fastvision.tasks.segmentation.benchmark import CASES, build_case
from fastvision.cli import main


def test_family_is_registered_and_full_cases_cover_the_issue():
    assert "segmentation" in benchmark_names()
    full = {(m, w, h) for m, w, h in CASES["full"]}
    for model in ("hrnetv2_w18_small_v1", "hrnetv2_w48", "bisenetv2"):
        assert {(model, 1024, 512), (model, 2048, 1024)} <= full


def test_bench_small_writes_rows_with_fps_and_checks(tmp_path):
    assert main(["bench", "--family", "segmentation", "--size", "small", "--out", str(tmp_path)]) == 0
    (js,) = tmp_path.glob("segmentation-cpu-*-small.json")
    assert js.with_suffix(".md").is_file()
    rows = json.loads(js.read_text())["rows"]
    assert {r["case"] for r in rows} == {"hrnetv2_w18_small_v1_128x64", "bisenetv2_128x64"}
    for r in rows:
        assert r["status"] == "ok" and r["median_ms"] > 0
        assert r["fps"] == pytest.approx(1000 / r["median_ms"])
        assert r["cpu_ms"] > 0
        assert r["check"] == ("baseline" if r["impl"] == "eager" else "close")
    # The benchmark flushes denormals while it runs and restores the default afterwards.
    assert float(torch.tensor([1e-39]) * 1.0) != 0.0


def test_compiled_variant_is_listed_and_checked_against_eager():
    case = build_case("bisenetv2", 64, 64, "cpu", compile_model=True)
    names = [i.name for i in case.impls]
    assert names == ["eager", "channels_last", "torch.compile"]
    eager = case.impls[0].setup()()
    assert eager.shape == (1, 19, 64, 64)
    verdict, detail = case.impls[1].check(eager + eager.abs().max())
    assert verdict == "differs" and "max rel. err" in detail
