"""The `fastvision` command: info, bench and demo, through the console script and `python -m`."""

import json
import shutil
import subprocess
import sys

import pytest

from fastvision.cli import main


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"fastvision", "torch", "cuda_compiled", "cuda_archs", "threads", "operators"} <= set(info)
    # every public operator, not only those already looked up in this process
    assert {"knn_points", "nn_distance", "farthest_point_sample", "soft_project", "padnet_encoder",
            "patch_conv2d", "patch_inverted_residual"} <= set(info["operators"])
    assert not any(name.startswith("_") for name in info["operators"])
    assert info["cpu_kernels"] in ("avx2+fma", "baseline")
    assert info["cuda_ptx_embedded"] == ("+PTX" in (info["cuda_archs"] or ""))


def test_python_dash_m_and_console_script():
    out = subprocess.run([sys.executable, "-m", "fastvision", "info"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "cuda_compiled" in out.stdout and "threads" in out.stdout
    script = shutil.which("fastvision", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert script is not None, "the fastvision console script is not installed next to python"
    out = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "demo" in out.stdout


def test_cuda_device_without_gpu_is_a_clear_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["bench", "--device", "cuda", "--size", "small"]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["points", "sampling"])
def test_bench_small_writes_table_json_and_plot(tmp_path, family):
    assert main(["bench", "--family", family, "--size", "small", "--out", str(tmp_path)]) == 0
    files = {p.suffix for p in tmp_path.rglob("*") if p.is_file()}
    assert {".json", ".png"} <= files
    rows = json.loads(next(tmp_path.rglob("*.json")).read_text())
    assert rows, "the benchmark wrote no rows"
    assert family in next(tmp_path.rglob("*.md")).name


@pytest.mark.slow  # ~1-2 min; CI runs it, and the README's demo command, every time
def test_demo_runs_checks_and_writes_report(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out
    report = (tmp_path / "report.md").read_text()
    assert "knn_points" in report and "farthest_point_sample" in report
    assert "soft_project" in report and "nn_match" in report
    assert "## Learned point-cloud sampling" in report
    checks = json.loads((tmp_path / "checks.json").read_text())
    assert checks and all(row["ok"] for row in checks)
    # the shipped embedded-data samplers ran against random sampling and FPS
    assert "| SampleNet |" in report and "| FPS |" in report
    assert (tmp_path / "sampling.png").stat().st_size > 0
    assert "## Semantic segmentation" in report
    assert (tmp_path / "segmentation-bisenetv2-cpu.png").stat().st_size > 0
    assert "## HyperSeg" in report and "patch_inverted_residual vs HyperSeg block" in report
    assert (tmp_path / "hyperseg-m-cpu.png").stat().st_size > 0


def test_bench_threads_and_only_select_and_tag_the_rows(tmp_path):
    assert main(["bench", "--family", "sampling", "--size", "small", "--out", str(tmp_path),
                 "--only", "nn_match", "--threads", "1,2"]) == 0
    (path,) = tmp_path.glob("sampling-*-small-t1-t2.json")
    data = json.loads(path.read_text())
    rows = data["rows"] if isinstance(data, dict) else data
    assert {r["case"] for r in rows} == {"nn_match"}
    assert sorted({r["threads"] for r in rows}) == [1, 2]


@pytest.mark.parametrize("args, message", [
    (["--only", "no_such_case"], "no case of the sampling benchmarks is named in only=['no_such_case']"),
    (["--threads", "0"], "threads must be a non-empty list of ints >= 1, got [0]"),
])
def test_bench_bad_selection_is_a_clear_error(tmp_path, capsys, args, message):
    assert main(["bench", "--family", "sampling", "--size", "small", "--out", str(tmp_path), *args]) == 2
    assert f"fastvision bench --family sampling: error: {message}" in capsys.readouterr().err
