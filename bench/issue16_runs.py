"""Issue 16 items 2-3: the interleaved benchmark runs committed under bench/results/, at 1 and 2
torch threads, each case with the 1-minute load average before and after it and the process CPU
time per timed call (median) beside the wall time.

    python bench/issue16_runs.py sampling|hyperseg [--threads 1 2] [--repeats 15]

Writes bench/results/issue16-<family>-cpu-<threads>t-<date>.{md,json}. (A stop-gap until the
shared harness records CPU time and load itself.)
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time

import torch

from fastvision.benchmarks.harness import environment, measure_case, write_json, write_table


def _with_cpu_time(case, cpu: dict):
    """Wraps every implementation so that each call's process CPU time is recorded."""
    for impl in case.impls:
        setup = impl.setup

        def wrapped(setup=setup, name=impl.name):
            fn = setup()

            def timed_fn():
                c0 = time.process_time()
                out = fn()
                cpu.setdefault(name, []).append(time.process_time() - c0)
                return out

            return timed_fn

        impl.setup = wrapped


def _cases(family: str, model: bool = True):
    if family == "sampling":
        from fastvision.tasks.sampling import bench_points
        from fastvision.tasks.sampling.benchmark import CASES, _soft_project_case

        out = [_soft_project_case(n, label, p, "cpu") for n, label, p in CASES["full"] if n.startswith("soft_project_fwd")
               and p["N"] == 1024]
        out += bench_points.build_cases("full", "cpu", True, False, only=["knn_samplenet"])
        return out
    from fastvision.tasks.hyperseg.benchmark import build_case

    names = [(f"level{i}", m) for i in range(3) for m in ("fwd", "fwd+bwd")] + ([("model", "fwd")] if model else [])
    return [build_case(n, m, "cpu") for n, m in names]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("family", choices=["sampling", "hyperseg"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--no-model", action="store_true", help="hyperseg: the decoder levels only")
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    date = datetime.date.today().isoformat()
    for n in args.threads:
        torch.set_num_threads(n)
        rows = []
        for case in _cases(args.family, not args.no_model):
            cpu: dict = {}
            _with_cpu_time(case, cpu)
            load0 = os.getloadavg()[0]
            rs = measure_case(case, "cpu", repeats=args.repeats, min_repeats=5, budget_s=2.0, slow_s=float("inf"),
                              memory=False)
            load1 = os.getloadavg()[0]
            for r in rs:
                ts = cpu.get(r["impl"], [])[1:]  # the first call is the warm-up
                r["cpu_ms"] = statistics.median(ts) * 1e3 if ts else None
                r["load_avg_start"], r["load_avg_end"] = load0, load1
                r["threads"] = n
                r["note"] = (r.get("note") or "") + (
                    f" cpu {r['cpu_ms']:.2f} ms/call; load {load0:.1f}->{load1:.1f}" if r["cpu_ms"] else "")
                print(f"{n}t {r['case']:28s} {r['impl'][:40]:40s} {r['median_ms'] or float('nan'):9.3f} ms "
                      f"ratio {r.get('ratio_vs_fastvision') or float('nan'):6.2f} {r['check']} {r['note']}", flush=True)
            rows += rs
        env = environment("cpu")
        env["size"] = "full"
        base = os.path.join(os.path.dirname(__file__), "results", f"issue16-{args.family}-cpu-{n}t-{date}")
        write_json(rows, base + ".json", env)
        write_table(rows, base + ".md", env, title=f"issue 16: {args.family} at {n} torch thread(s), CPU time and load per row")


if __name__ == "__main__":
    main()
