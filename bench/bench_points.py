"""pytest-benchmark suite of the point ops: fastvision against its pure-PyTorch reference.

The cases, inputs and implementations are those of ``fastvision.tasks.sampling.bench_points`` (one source
for the CLI, the demo and this suite). Run from the repository root:

    .venv/bin/python -m pytest bench/bench_points.py --benchmark-only
    FASTVISION_BENCH_SIZE=small .venv/bin/python -m pytest bench/bench_points.py --benchmark-only
    FASTVISION_BENCH_COMPETITORS=1 ...   # also cdist/KeOps/cKDTree/FAISS/fpsample where installed
    FASTVISION_BENCH_DEVICE=cuda ...     # CUDA (skipped without a GPU)

It is not collected by the default test run (``testpaths = ["tests"]``). Each benchmark first
checks that the implementation gives fastvision's answer (or an equally near one), then times
it with ``benchmark.pedantic`` (one warm-up round; the device is synchronised inside the timed
callable). Benchmarks are grouped by case, so pytest-benchmark's table compares within a case.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from fastvision.benchmarks.harness import Skip
from fastvision.tasks.sampling.bench_points import CASES, build_cases

SIZE = os.environ.get("FASTVISION_BENCH_SIZE", "full")
DEVICE = os.environ.get("FASTVISION_BENCH_DEVICE", "cpu")
COMPETITORS = os.environ.get("FASTVISION_BENCH_COMPETITORS", "0") not in ("", "0", "false", "no")
CORRECT = ("exact", "tie", "close", "other start")

if DEVICE.startswith("cuda") and not torch.cuda.is_available():
    _CASES = []
else:
    _CASES = build_cases(SIZE, DEVICE, competitors=COMPETITORS, methods=False)

_PARAMS = [
    pytest.param(case, impl, id=f"{case.name}-{impl.name.replace(' ', '_')}")
    for case in _CASES
    for impl in case.impls
]
if not _PARAMS:
    _PARAMS = [pytest.param(None, None, id="no-cuda", marks=pytest.mark.skip(reason="no CUDA GPU"))]


@pytest.mark.parametrize(("case", "impl"), _PARAMS)
def test_points(benchmark, case, impl):
    if impl.name.startswith("KeOps") and SIZE == "small":
        pytest.skip("KeOps JIT-compiles on first use")
    try:
        fn = impl.setup()
    except Skip as e:
        pytest.skip(str(e))
    t0 = time.perf_counter()
    out = fn()
    warm = time.perf_counter() - t0
    if impl.check is not None:
        verdict, detail = impl.check(out)
        assert verdict in CORRECT or impl.role == "competitor", f"{impl.name}: {verdict} ({detail})"
        benchmark.extra_info["check"] = verdict
    benchmark.group = case.label
    benchmark.extra_info.update(case.params)
    rounds = 1 if warm > 5 else int(min(20, max(3, 2.0 / max(warm, 1e-6))))
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0 if warm > 5 else 1)


def test_sizes_listed():
    """The suite covers every case of the chosen size (a plain check, not a benchmark)."""
    assert SIZE in CASES
