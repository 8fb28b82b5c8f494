"""HyperSeg benchmarks: the `fastvision bench --family hyperseg` command at the smoke size, and
the full-size cases' shapes (HyperSeg-M's decoder at 1024x512)."""

import json

import pytest
import torch

from fastvision.ops import patch_conv2d
from fastvision.tasks import benchmark_names
from fastvision.tasks.hyperseg.benchmark import CASES, build_case, grouped_conv_formulation
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


@pytest.mark.parametrize("B,cin,cout,fh,fw,ph,pw", [(1, 5, 3, 2, 3, 1, 1), (2, 4, 6, 3, 2, 2, 2), (1, 3, 2, 2, 2, 4, 3)])
def test_grouped_conv_competitor_equals_patch_conv2d(B, cin, cout, fh, fw, ph, pw):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, cin, fh * ph, fw * pw, generator=g, dtype=torch.float64)
    w = torch.randn(B, cout * cin, fh, fw, generator=g, dtype=torch.float64)
    torch.testing.assert_close(grouped_conv_formulation(x, w), patch_conv2d(x, w, 1), rtol=1e-12, atol=1e-12)


def test_1x1_levels_have_the_grouped_conv_competitor():
    case = build_case("level1", "fwd+bwd", "cpu", scale=8)
    assert [i.name for i in case.impls] == ["patch_conv2d", "HyperSeg unfold formulation",
                                            "grouped conv2d (view + permute)"]
