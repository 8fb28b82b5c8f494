"""The package's build information and its import-time checks of the compiled extension."""

import re
import subprocess
import sys
import textwrap

import torch

import fastvision


def _import_with_fake_extension(setup: str) -> subprocess.CompletedProcess:
    code = textwrap.dedent(setup) + "\nimport fastvision\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_build_info():
    info = fastvision.build_info()
    assert info["fastvision"] == fastvision.__version__
    assert info["built_with_torch"].split(".")[:2] == torch.__version__.split(".")[:2]
    assert isinstance(info["cuda_compiled"], bool)
    if info["cuda_compiled"]:
        # The default list (CMakeLists.txt) or TORCH_CUDA_ARCH_LIST: architectures like "7.5",
        # the newest possibly with "+PTX".
        archs = info["cuda_archs"].split()
        assert archs and all(re.fullmatch(r"\d+\.\d+(\+PTX)?", a) for a in archs), archs
    else:
        assert info["cuda_archs"] is None


def test_every_op_has_a_cpu_kernel_and_a_fake():
    for op in ("knn_points", "_knn_points_backward", "nn_distance", "farthest_point_sample"):
        table = torch._C._dispatch_dump_table(f"fastvision::{op}")
        lines = table.splitlines()
        assert any(line.startswith("CPU: registered") for line in lines), op
        assert any(line.startswith("Meta: registered") for line in lines), op
        if fastvision.build_info()["cuda_compiled"]:
            assert any(line.startswith("CUDA: registered") for line in lines), op


def test_missing_extension_fails_at_import_with_one_clear_sentence():
    result = _import_with_fake_extension(
        """
        import sys
        import torch
        sys.modules["fastvision._C"] = None  # makes `import fastvision._C` raise ImportError
        """
    )
    assert result.returncode != 0
    assert "fastvision's compiled extension (fastvision._C) could not be loaded" in result.stderr
    assert "pip install --no-build-isolation" in result.stderr


def test_mismatched_torch_fails_at_import_with_one_clear_sentence():
    result = _import_with_fake_extension(
        """
        import sys, types
        import torch
        fake = types.ModuleType("fastvision._C")
        fake.torch_version = "1.0.0+cpu"
        fake.version = "0.0.0"
        sys.modules["fastvision._C"] = fake
        """
    )
    assert result.returncode != 0
    assert "fastvision was compiled against torch 1.0.0+cpu but torch" in result.stderr
    assert "rebuild it" in result.stderr
