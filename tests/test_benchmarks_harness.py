"""fastvision.benchmarks.harness: the input factories and the timed callable that every family's
benchmark and the op tests share, and the measurement of a case."""

import os

import torch

import pytest

from fastvision.benchmarks.harness import (Case, Impl, device_tag, format_summary, format_table, make_clouds,
                                           make_pair, measure_case, summary_rows, timed, torch_threads)


def test_make_clouds_is_reproducible_and_uniform_in_the_unit_cube():
    a = make_clouds(3, 500, 4, seed=7)
    assert a.shape == (3, 500, 4) and a.dtype == torch.float32
    assert torch.equal(a, make_clouds(3, 500, 4, seed=7))
    assert not torch.equal(a, make_clouds(3, 500, 4, seed=8))
    assert 0 <= float(a.min()) and float(a.max()) < 1
    assert abs(float(a.mean()) - 0.5) < 0.02
    # the float64 draw is the float32 one before rounding: dtypes agree on the same seed
    torch.testing.assert_close(make_clouds(3, 500, 4, seed=7, dtype=torch.float64).float(), a)


def test_make_pair_draws_two_independent_batches():
    p1, p2 = make_pair(2, 10, 30, seed=3)
    assert p1.shape == (2, 10, 3) and p2.shape == (2, 30, 3)
    assert torch.equal(p1, make_clouds(2, 10, 3, seed=3))
    assert torch.equal(p2, make_clouds(2, 30, 3, seed=4))


def test_timed_returns_the_result_and_measure_case_reports_each_impl():
    calls = []

    def work():
        calls.append(1)
        return torch.ones(3).sum()

    fn = timed(work, "cpu")
    assert float(fn()) == 3.0 and calls == [1]
    case = Case("test", "sum", "sum", {})
    case.impls.append(Impl("fastvision", lambda: fn, None, role="fastvision"))
    rows = measure_case(case, "cpu", repeats=3, min_repeats=2, budget_s=0.01, memory=False)
    assert [r["impl"] for r in rows] == ["fastvision"]
    assert rows[0]["median_ms"] is not None and rows[0]["median_ms"] >= 0
    assert len(calls) >= 3  # warm-up + the timed repeats


def test_device_tag():
    assert device_tag("cpu") == f"cpu-{os.cpu_count()}core"
    if not torch.cuda.is_available():
        assert device_tag("cuda") == "cuda-cuda"


def test_rows_carry_cpu_time_load_average_and_threads():
    import time

    def spin():  # 2 ms of CPU time per call, whatever the load
        end = time.process_time() + 0.002
        while time.process_time() < end:
            pass

    def sleep():  # wall time without CPU time
        time.sleep(0.005)

    case = Case("test", "cpu", "cpu", {})
    case.impls.append(Impl("spin", lambda: spin, None, role="fastvision"))
    case.impls.append(Impl("sleep", lambda: sleep, None))
    with torch_threads(1):
        rows = measure_case(case, "cpu", repeats=3, min_repeats=3, budget_s=0.01, memory=False)
    spin_row, sleep_row = rows
    assert spin_row["threads"] == 1 and sleep_row["threads"] == 1
    assert spin_row["cpu_ms"] >= 2.0
    assert sleep_row["cpu_ms"] < 2.0 <= 5.0 <= sleep_row["median_ms"]
    for r in rows:
        assert r["load_average_start"] >= 0 and r["load_average_end"] >= 0
    table = format_table(rows)
    assert "CPU/call" in table and "load start/end" in table


def test_torch_threads_sets_and_restores_the_thread_count():
    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="torch_threads: n must be an int >= 1"):
            with torch_threads(bad):
                pass


def test_summary_compares_within_one_thread_count():
    # A run at 1 and 2 threads: fastvision at 1 thread must be compared with the competitor at
    # 1 thread, not with the competitor's faster 2-thread median.
    def row(impl, threads, ms, fastvision):
        return {"case": "c", "label": "case c", "impl": impl, "threads": threads, "status": "ok",
                "median_ms": ms, "peak_mem_mib": 1.0, "is_fastvision": fastvision,
                "role": "fastvision" if fastvision else "competitor",
                "check": "baseline" if fastvision else "exact"}

    rows = [row("fv", 1, 2.0, True), row("comp", 1, 8.0, False),
            row("fv", 2, 1.5, True), row("comp", 2, 3.0, False)]
    summary = summary_rows(rows)
    assert [(s["threads"], s["speedup"]) for s in summary] == [(1, 4.0), (2, 2.0)]
    lines = format_summary(rows).splitlines()
    assert "threads" in lines[0] and len(lines) == 4
    assert "| 1 " in lines[2] and "4.00x" in lines[2] and "| 2 " in lines[3] and "2.00x" in lines[3]
