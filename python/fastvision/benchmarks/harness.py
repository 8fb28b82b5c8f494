"""Microbenchmark harness: timing, peak memory, result rows and writers (table, JSON, PNG), and
the input factories and timed-callable wrapper that every family's benchmark (and the op tests)
use.

Timing
    Every implementation of a case is warmed up (one call, which also absorbs JIT compilation,
    lazy imports and first-touch page faults), then timed with ``time.perf_counter`` around one
    call of a *timed callable* that synchronises the device itself (``torch.cuda.synchronize()``
    on CUDA), so no asynchronous work escapes the measurement. The implementations of one case
    are timed *interleaved* (round robin: A, B, C, A, B, C, ...) rather than one after the other,
    so that load from other processes on a shared machine spreads over all of them alike; a
    call shorter than 50 ms is preceded by an untimed one, so that it runs with warm caches
    whatever ran before it. Each implementation gets as many repeats as fit its share of a time
    budget (at least ``min_repeats``, at most ``repeats``); the row reports the median, the
    interquartile range and the minimum.

Shared machines (every row, so that a figure can be judged)
    ``cpu_ms`` (CPU runs only): the median CPU time of the process, all threads together
    (``time.process_time``), over the same timed calls. On a loaded machine the wall time
    includes waiting for a core, the CPU time does not; uncontended it is about the wall time
    times the busy threads. OpenMP threads that spin while waiting count as busy, so a
    2-thread implementation on a loaded 2-core machine shows a high CPU time for little work.
    ``load_average_start`` / ``load_average_end``: the machine's 1-minute load average
    (``os.getloadavg``) when the case starts and ends. ``threads``: ``torch.get_num_threads()``
    during the case. To measure at several thread counts, run the case inside
    ``with torch_threads(n):`` once per count (:func:`torch_threads`; the benchmarks record 1 and
    2 threads, since a loaded 2-core machine hurts 2-thread implementations far more than
    single-threaded ones).

Peak memory (one extra, untimed call per implementation)
    CUDA: ``torch.cuda.max_memory_allocated()`` after ``torch.cuda.reset_peak_memory_stats()``,
    minus the memory allocated before the call: the bytes the call allocated through PyTorch's
    allocator at its peak (outputs included). Libraries that allocate device memory outside
    PyTorch (KeOps' own buffers) are undercounted.
    CPU: the rise of the process's peak resident set size (``VmHWM`` in ``/proc/self/status``)
    above the resident size before the call, after resetting the peak with
    ``echo 5 > /proc/self/clear_refs`` (Linux >= 4.0). This counts every allocation that is
    touched, whoever makes it (PyTorch tensors, ``std::vector`` inside a kernel, NumPy arrays
    of SciPy/FAISS/fpsample), outputs included, at page granularity. Just before the call,
    ``malloc_trim(0)`` hands the free memory of glibc's arenas back to the OS, so that memory
    left free by earlier calls is counted again when the measured call reuses it (the allocator's
    settings are not changed, so timings are those of a default process). The kernel's per-CPU
    RSS counters make the figure approximate to about 0.25 MiB; below that, read it as "no
    significant allocation". Where ``clear_refs`` cannot be written the row says so
    (``peak_mem_method``) and falls back to the growth of ``ru_maxrss``, which only sees new
    process-wide peaks.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import resource
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

__all__ = [
    "make_clouds",
    "make_pair",
    "timed",
    "device_tag",
    "Impl",
    "Case",
    "Skip",
    "measure_case",
    "torch_threads",
    "load_average",
    "peak_memory",
    "environment",
    "format_table",
    "summary_rows",
    "format_summary",
    "write_json",
    "write_table",
    "write_plot",
]


def make_clouds(
    B: int,
    P: int,
    D: int = 3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(B, P, D)`` points uniform in the unit cube, reproducible across devices (drawn on the
    CPU with a seeded generator, then moved)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, P, D, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)


def make_pair(
    B: int,
    P1: int,
    P2: int,
    D: int = 3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent batches of clouds: queries ``(B, P1, D)`` and points ``(B, P2, D)``."""
    return (make_clouds(B, P1, D, seed, device, dtype), make_clouds(B, P2, D, seed + 1, device, dtype))


def timed(f: Callable, device: str) -> Callable:
    """Wraps ``f`` into a timed callable: the call includes the device synchronisation."""
    cuda = str(device).startswith("cuda")

    def fn():
        out = f()
        if cuda:
            torch.cuda.synchronize()
        return out

    return fn


def device_tag(device: str) -> str:
    """A file-name tag for the machine: ``cpu-2core`` or the GPU name (``cuda-nvidia-h100...``)."""
    if str(device).startswith("cuda"):
        name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cuda"
        return "cuda-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"cpu-{os.cpu_count()}core"


class Skip(Exception):
    """Raised by an implementation's setup to skip it with a reason (not installed, too big...)."""


@dataclass
class Impl:
    """One implementation of a case.

    ``setup()`` prepares inputs (not timed) and returns the timed callable ``fn()``; ``fn`` must do
    the whole user-visible work (including any conversion a user would need) and synchronise the
    device. ``check(out)`` compares the result of one call with fastvision's and returns
    ``(verdict, detail)``; verdicts are ``"exact"``, ``"tie"``, ``"close"``, ``"differs"``.
    """

    name: str
    setup: Callable[[], Callable[[], Any]]
    check: Callable[[Any], tuple[str, str]] | None = None
    note: str = ""
    role: str = "competitor"  # "fastvision" (the baseline), "variant" (fastvision, forced method),
    #                           "reference" (fastvision's pure-PyTorch oracle) or "competitor"

    @property
    def is_fastvision(self) -> bool:
        return self.role == "fastvision"


@dataclass
class Case:
    family: str
    name: str  # short id, e.g. "knn_samplenet"
    label: str  # human label, e.g. "kNN SampleNet projection (32, 64, 1024, K=8)"
    params: dict
    impls: list[Impl] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Peak memory


def _release_free_memory() -> None:
    """Returns the free memory of every glibc arena to the OS (``malloc_trim(0)``), so that a
    measured call that reuses it faults its pages in again and is counted."""
    if platform.system() != "Linux":
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory(fn: Callable[[], Any], device: str) -> tuple[float | None, str]:
    """Peak extra memory (MiB) of one call of ``fn`` and the method used (see module docstring).
    Reference cycles are not collected here (``measure_case`` does it once per case)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del out
        return peak / 2**20, "cuda max_memory_allocated"
    _release_free_memory()
    if _reset_peak_rss():
        base = _status_kib("VmRSS")
        out = fn()
        peak = _status_kib("VmHWM")
        del out
        if base is not None and peak is not None:
            return max(peak - base, 0) / 1024, "peak RSS delta (clear_refs)"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = fn()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del out
    return (after - before) / 1024, "ru_maxrss growth (lower bound)"


# ---------------------------------------------------------------------------------------------
# Timing


def load_average() -> float | None:
    """The machine's 1-minute load average, None where the OS does not report one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


@contextmanager
def torch_threads(n: int):
    """Runs the block with ``torch.set_num_threads(n)`` (intra-op threads: ATen's and the
    ``at::parallel_for`` of fastvision's kernels), restoring the previous count afterwards."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"torch_threads: n must be an int >= 1, got {n!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)


def _quantiles(ts: list[float]) -> tuple[float, float]:
    if len(ts) < 4:
        return min(ts), max(ts)
    q = statistics.quantiles(ts, n=4, method="inclusive")
    return q[0], q[2]


def measure_case(
    case: Case,
    device: str = "cpu",
    *,
    repeats: int = 15,
    min_repeats: int = 3,
    budget_s: float = 2.0,
    slow_s: float = 5.0,
    rewarm_ms: float = 50.0,
    memory: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Times every implementation of ``case`` interleaved; returns one row (dict) per impl.

    ``budget_s`` is the time each implementation should spend in timed calls (it gets
    ``clamp(budget_s / warm-up time, min_repeats, repeats)`` repeats); an implementation whose
    warm-up call takes more than ``slow_s`` seconds is timed once more only. Implementations
    whose warm-up took less than ``rewarm_ms`` get one untimed call right before each timed one,
    so that every timed call finds its data in the caches whatever ran before it. Each row also
    carries ``cpu_ms``, ``load_average_start``, ``load_average_end`` and ``threads`` (module
    docstring).
    """
    cpu = not str(device).startswith("cuda")
    base = {"family": case.family, "case": case.name, "label": case.label, "device": device,
            **{f"param_{k}": v for k, v in case.params.items()},
            "threads": torch.get_num_threads(), "load_average_start": load_average()}
    rows: list[dict] = []
    live: list[tuple[Impl, Callable, dict, Any]] = []
    for impl in case.impls:
        row = dict(base, impl=impl.name, note=impl.note, role=impl.role, is_fastvision=impl.is_fastvision,
                   status="ok", median_ms=None, iqr_ms=None, min_ms=None, cpu_ms=None, repeats=0,
                   peak_mem_mib=None, peak_mem_method=None, check=None, check_detail="")
        rows.append(row)
        try:
            fn = impl.setup()
            t0 = time.perf_counter()
            out = fn()
            warm = time.perf_counter() - t0
        except Skip as e:
            row["status"] = f"skipped: {e}"
            continue
        except Exception as e:  # a competitor failing must not stop the run
            row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            continue
        n = 1 if warm > slow_s else int(min(repeats, max(min_repeats, math.ceil(budget_s / max(warm, 1e-6)))))
        row["repeats"] = n
        row["warmup_ms"] = warm * 1e3
        live.append((impl, fn, row, out))
        if log:
            log(f"  {case.name}: {impl.name} warm-up {warm * 1e3:.2f} ms, {n} repeats")

    # Correctness against fastvision (the first live fastvision impl is the baseline).
    for impl, _, row, out in live:
        if impl.check is not None and not impl.is_fastvision:
            try:
                row["check"], row["check_detail"] = impl.check(out)
            except Exception as e:
                row["check"], row["check_detail"] = "error", f"{type(e).__name__}: {e}"[:200]
        elif impl.is_fastvision:
            row["check"] = "baseline"
    live = [(impl, fn, row) for impl, fn, row, _ in live]
    gc.collect()

    times: dict[int, list[float]] = {id(r): [] for _, _, r in live}
    cpu_times: dict[int, list[float]] = {id(r): [] for _, _, r in live}
    for rnd in range(max((r["repeats"] for _, _, r in live), default=0)):
        for impl, fn, row in live:
            if rnd >= row["repeats"] or row["status"] != "ok":
                continue
            try:
                if row["warmup_ms"] < rewarm_ms:
                    fn()  # untimed: warms the caches the previous implementation evicted
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                times[id(row)].append(time.perf_counter() - t0)
                cpu_times[id(row)].append(time.process_time() - c0)
            except Exception as e:
                row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"

    for impl, fn, row in live:
        ts = times[id(row)]
        if row["status"] != "ok" or not ts:
            continue
        row["median_ms"] = statistics.median(ts) * 1e3
        q1, q3 = _quantiles(ts)
        row["iqr_ms"] = (q3 - q1) * 1e3
        row["min_ms"] = min(ts) * 1e3
        if cpu:
            row["cpu_ms"] = statistics.median(cpu_times[id(row)]) * 1e3
        if memory:
            try:
                mib, method = peak_memory(fn, device)
                row["peak_mem_mib"], row["peak_mem_method"] = mib, method
            except Exception as e:
                row["peak_mem_method"] = f"error: {type(e).__name__}"

    end_load = load_average()
    ref = next((r for r in rows if r["is_fastvision"] and r["median_ms"] is not None), None)
    for row in rows:
        row["load_average_end"] = end_load
        row["ratio_vs_fastvision"] = (
            row["median_ms"] / ref["median_ms"] if ref is not None and row["median_ms"] is not None else None
        )
    return rows


# ---------------------------------------------------------------------------------------------
# Environment


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: str = "cpu") -> dict:
    """Machine, library versions and thread count, stored beside the rows in the JSON."""
    import fastvision

    env = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "device": device,
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "fastvision": fastvision.__version__,
        "fastvision_build": fastvision.build_info(),
        "platform": platform.platform(),
        # Set by whoever runs from a source checkout (e.g. `git rev-parse --short HEAD`).
        "source_commit": os.environ.get("FASTVISION_SOURCE_COMMIT"),
        "load_average_1_5_15min": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    env["libraries"] = _versions(("numpy", "scipy", "faiss-cpu", "faiss-gpu", "pykeops", "fpsample",
                                  "pytorch3d", "matplotlib"))
    return env


def _versions(names: Iterable[str]) -> dict:
    """Installed versions (from package metadata, nothing is imported); absent ones are left out."""
    from importlib import metadata

    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


# ---------------------------------------------------------------------------------------------
# Writers


def _fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _fmt_mem(m: float | None) -> str:
    if m is None:
        return "-"
    return f"{m:.2f}" if m < 10 else f"{m:.0f}"


def _fmt_load(start: float | None, end: float | None) -> str:
    return "-" if start is None or end is None else f"{start:.1f} / {end:.1f}"


def _md_table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in body)])


def _cases(rows: list[dict]) -> list[str]:
    seen: list[str] = []
    for r in rows:
        if r["case"] not in seen:
            seen.append(r["case"])
    return seen


def format_table(rows: list[dict]) -> str:
    """Markdown table of every row, grouped by case; ratio = impl median / fastvision median
    (above 1: fastvision is faster)."""
    header = ["case", "implementation", "threads", "median", "IQR", "n", "CPU/call", "vs fastvision",
              "peak MiB", "same result", "load start/end"]
    body = []
    for c in _cases(rows):
        for r in (r for r in rows if r["case"] == c):
            ok = r["status"] == "ok"
            check = r["check"] or ""
            if r.get("check_detail") and check not in ("baseline", "exact"):
                check = f"{check} ({r['check_detail']})"
            body.append([
                r["label"],
                r["impl"] + (f" [{r['note']}]" if r.get("note") else ""),
                str(r.get("threads", "")),
                _fmt_ms(r["median_ms"]) if ok else r["status"],
                _fmt_ms(r["iqr_ms"]) if ok else "",
                str(r["repeats"]) if ok else "",
                _fmt_ms(r.get("cpu_ms")) if ok else "",
                _fmt_ratio(r["ratio_vs_fastvision"]) if ok else "",
                _fmt_mem(r["peak_mem_mib"]) if ok else "",
                check,
                _fmt_load(r.get("load_average_start"), r.get("load_average_end")),
            ])
    return _md_table(header, body)


_CORRECT = ("exact", "tie", "close", "other start", "baseline")


def _case_groups(rows: list[dict]) -> list[tuple[str, object]]:
    """(case, threads) pairs in first-seen order: a run at several thread counts compares
    implementations only within one count."""
    seen: list[tuple[str, object]] = []
    for r in rows:
        key = (r["case"], r.get("threads"))
        if key not in seen:
            seen.append(key)
    return seen


def summary_rows(rows: list[dict]) -> list[dict]:
    """Per case and thread count: fastvision's median, the fastest competitor giving the same
    result, their ratio."""
    out = []
    for c, threads in _case_groups(rows):
        rs = [r for r in rows if r["case"] == c and r.get("threads") == threads and r["status"] == "ok"]
        fv = next((r for r in rs if r["is_fastvision"]), None)
        others = [r for r in rs if r["role"] in ("competitor", "reference")]
        comp = [r for r in others if r["check"] in _CORRECT]
        best = min(comp, key=lambda r: r["median_ms"], default=None)
        fastest_any = min(others, key=lambda r: r["median_ms"], default=None)
        variants = [r for r in rs if r["role"] == "variant"]
        best_var = min(variants, key=lambda r: r["median_ms"], default=None)
        label = next(r["label"] for r in rows if r["case"] == c)
        out.append({
            "case": c,
            "threads": threads,
            "label": label,
            "fastvision_ms": fv["median_ms"] if fv else None,
            "fastvision_mem_mib": fv["peak_mem_mib"] if fv else None,
            "best_competitor": best["impl"] if best else None,
            "best_competitor_ms": best["median_ms"] if best else None,
            "best_competitor_mem_mib": best["peak_mem_mib"] if best else None,
            "speedup": (best["median_ms"] / fv["median_ms"]) if (best and fv) else None,
            "fastest_fastvision_method": best_var["impl"] if best_var else None,
            "fastest_fastvision_method_ms": best_var["median_ms"] if best_var else None,
            "fastest_incorrect": (fastest_any["impl"] if fastest_any and fastest_any is not best
                                  and fastest_any["median_ms"] < (best["median_ms"] if best else math.inf)
                                  else None),
        })
    return out


def format_summary(rows: list[dict]) -> str:
    """Short markdown table: fastvision vs the fastest competitor that gives the same answer."""
    header = ["case", "threads", "fastvision", "best competitor (same result)", "its median", "speed-up",
              "peak MiB fv / comp"]
    body = []
    for s in summary_rows(rows):
        body.append([
            s["label"],
            "" if s["threads"] is None else str(s["threads"]),
            _fmt_ms(s["fastvision_ms"]),
            s["best_competitor"] or "-",
            _fmt_ms(s["best_competitor_ms"]),
            _fmt_ratio(s["speedup"]),
            f"{_fmt_mem(s['fastvision_mem_mib'])} / {_fmt_mem(s['best_competitor_mem_mib'])}",
        ])
    return _md_table(header, body)


def write_json(rows: list[dict], path: str, env: dict | None = None) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"environment": env or {}, "summary": summary_rows(rows), "rows": rows}, f,
                  indent=1, default=str)


def write_table(rows: list[dict], path: str, env: dict | None = None, title: str = "") -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    parts = []
    if title:
        parts.append(f"# {title}\n")
    if env:
        parts.append(
            f"{env.get('date', '')}; {env.get('device', '')}; {env.get('cpu', '')}; "
            f"{env.get('torch_threads', '?')} torch threads; torch {env.get('torch', '')}; "
            f"fastvision {env.get('fastvision', '')}"
            + (f" (commit {env['source_commit']})" if env.get("source_commit") else "")
            + (f"; load average at the start {env['load_average_1_5_15min'][0]:.2f}"
               if env.get("load_average_1_5_15min") else "")
            + (f"; GPU {env['gpu']}" if env.get("gpu") else "") + "\n"
        )
        if env.get("libraries"):
            parts.append("Libraries: " + ", ".join(f"{k} {v}" for k, v in env["libraries"].items()) + "\n")
    if env and env.get("size") == "small":
        parts.append("Size `small` is a smoke run (1 to 3 timed calls, first-call costs of other "
                     "libraries included): its figures are indicative only; see the full run.\n")
    parts.append("## Summary (fastest competitor that gives the same result)\n")
    parts.append(format_summary(rows) + "\n")
    parts.append("## All implementations\n")
    parts.append("Medians of interleaved repeats; `CPU/call` = the process's CPU time per call, "
                 "all threads; `vs fastvision` = its median / fastvision's (above 1: fastvision "
                 "faster); peak MiB: see `fastvision.benchmarks.harness`; `load start/end` = the "
                 "1-minute load average when the case started and ended.\n")
    parts.append(format_table(rows) + "\n")
    with open(path, "w") as f:
        f.write("\n".join(parts))


def write_plot(rows: list[dict], path: str, title: str = "") -> bool:
    """One panel per case: horizontal bars of median time (log scale), fastvision highlighted.
    Returns False (and writes nothing) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    cases = _cases(rows)
    if not cases:
        return False
    ncol = 2 if len(cases) > 1 else 1
    nrow = math.ceil(len(cases) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(7 * ncol, 2.2 * nrow + 0.6), squeeze=False)
    for ax, c in zip(axes.flat, cases):
        rs = [r for r in rows if r["case"] == c and r["status"] == "ok"]
        rs.sort(key=lambda r: (not r["is_fastvision"], r["median_ms"]))
        names = [r["impl"] + ("" if r["is_fastvision"] or r["check"] in _CORRECT else " (!)") for r in rs]
        vals = [r["median_ms"] for r in rs]
        palette = {"fastvision": "tab:red", "variant": "lightsalmon", "reference": "tab:gray"}
        colors = [palette.get(r.get("role"), "tab:blue") for r in rs]
        ax.barh(range(len(rs)), vals, color=colors)
        ax.set_yticks(range(len(rs)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(next(r["label"] for r in rows if r["case"] == c), fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        for i, v in enumerate(vals):
            ax.text(v, i, " " + _fmt_ms(v), va="center", fontsize=6)
        ax.set_xlim(right=max(vals) * 4 if vals else 1)
    for ax in list(axes.flat)[len(cases):]:
        ax.axis("off")
    legend = ("median time, log scale (red: fastvision; salmon: its forced methods; grey: its PyTorch "
              "reference; blue: other libraries; (!): a different result)")
    fig.suptitle((title + "\n" if title else "") + legend,
                 fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
