"""HyperSeg benchmarks: the `fastvision bench --family hyperseg` command at the smoke size, and
the full-size cases' shapes (HyperSeg-M's decoder at 1024x512)."""

import json

from fastvision.tasks import benchmark_names
from fastvision.tasks.hyperseg.benchmark import CASES, build_case
from fastvision.cli import main


def test_hyperseg_family_small_writes_table_and_checks_results(tmp_path):
    assert "hyperseg" in benchmark_names()
    assert main(["bench", "--family", "hyperseg", "--size", "small", "--out", str(tmp_path)]) == 0
    (js,) = tmp_path.glob("hyperseg-cpu-*-small.json")
    rows = json.loads(js.read_text())["rows"]
    assert {r["case"] for r in rows} == {f"{n}_{m}" for n, m in CASES["small"]}
    for r in rows:
        assert r["status"] == "ok", r
        if not r["is_fastvision"]:
            assert r["check"] == "close", r


def test_full_cases_are_hyperseg_m_decoder_shapes():
    # Built, not run: level 4 is the stride-2 map of a 1024x512 input with 16x16-pixel patches.
    case = build_case("level4_dw", "fwd+bwd", "cpu")
    assert (case.params["height"], case.params["width"], case.params["fh"], case.params["fw"]) == (256, 512, 16, 32)
    assert [i.name for i in case.impls] == ["patch_conv2d", "HyperSeg unfold formulation"]
    assert ("model", "fwd") in CASES["full"] and ("level0", "fwd+bwd") in CASES["full"]
