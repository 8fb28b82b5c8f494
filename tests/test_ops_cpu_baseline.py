"""The portable x86-64 builds of the CPU kernels that also have an AVX2 + FMA build (patch ops,
PAD-Net encoder and decoder): on a machine with AVX2 the suite runs the AVX2 code, so this reruns those ops'
tests in a subprocess with FASTVISION_CPU_BASELINE=1, which forces the portable code."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastvision

TESTS = Path(__file__).parent


def test_build_info_reports_the_cpu_kernels():
    assert fastvision.build_info()["cpu_kernels"] in ("avx2+fma", "baseline")


@pytest.mark.skipif(fastvision.build_info()["cpu_kernels"] == "baseline",
                    reason="this machine runs the portable build already (the whole suite tests it)")
def test_portable_cpu_kernels_pass_the_op_tests():
    env = dict(os.environ, FASTVISION_CPU_BASELINE="1", OMP_NUM_THREADS="1")
    probe = subprocess.run([sys.executable, "-c", "import fastvision; print(fastvision.build_info()['cpu_kernels'])"],
                           env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "baseline"
    files = [str(TESTS / "test_ops_patch.py"), str(TESTS / "test_ops_padnet_encoder.py"),
             str(TESTS / "test_ops_padnet_decoder.py")]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *files],
                         env=env, capture_output=True, text=True, cwd=TESTS)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
