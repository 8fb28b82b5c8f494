"""Microbenchmarks of the fastvision ops against their references and the libraries users pick
instead: medians and ratios from one interleaved run, peak memory beside time.

``fastvision bench --family points|sampling|segmentation|padnet|hyperseg [--size small|full] [--device cpu|cuda] [--out DIR]`` calls
:func:`run_family`; ``python -m fastvision.tasks.sampling.bench_points`` does the same for one family.
The timing and memory methods are described in :mod:`fastvision.benchmarks.harness`.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from typing import Callable

from fastvision.benchmarks import harness

__all__ = ["FAMILIES", "run_family", "device_tag", "harness"]

FAMILIES = ("points", "sampling", "segmentation", "padnet", "hyperseg")


def _family_module(family: str):
    if family == "points":
        from fastvision.tasks.sampling import bench_points

        return bench_points
    if family == "sampling":
        from fastvision.tasks.sampling import benchmark

        return benchmark
    if family == "segmentation":
        from fastvision.tasks.segmentation import benchmark

        return benchmark
    if family == "padnet":
        from fastvision.tasks.padnet import benchmark

        return benchmark
    if family == "hyperseg":
        from fastvision.tasks.hyperseg import benchmark

        return benchmark
    raise ValueError(f"unknown benchmark family {family!r}; available: {', '.join(FAMILIES)}")


def device_tag(device: str) -> str:
    """A file-name tag for the machine: ``cpu-2core`` or the GPU name (``cuda-nvidia-h100...``)."""
    if str(device).startswith("cuda"):
        import torch

        name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cuda"
        return "cuda-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"cpu-{os.cpu_count()}core"


def run_family(
    family: str,
    size: str = "small",
    device: str = "cpu",
    out_dir: str | None = None,
    *,
    competitors: bool = True,
    repeats: int | None = None,
    only: list[str] | None = None,
    log: Callable[[str], None] | None = print,
) -> list[dict]:
    """Runs one benchmark family and returns its rows (one dict per case and implementation).

    With ``out_dir``, writes ``<family>-<device tag>-<date>[-small].{md,json,png}`` there (a
    markdown table with medians and ratios against fastvision, the rows as JSON with the
    environment, a bar chart). Prints the summary and the full table through ``log``.
    """
    mod = _family_module(family)
    if size not in ("small", "full"):
        raise ValueError(f"size must be 'small' or 'full', got {size!r}")
    env = harness.environment(device)
    env.update(family=family, size=size)
    rows = mod.run(size=size, device=device, competitors=competitors, repeats=repeats, only=only,
                   log=log if size == "full" else None)
    if hasattr(os, "getloadavg"):
        env["load_average_at_end"] = list(os.getloadavg())
    title = f"fastvision {family} benchmarks ({size}, {device})"
    if out_dir is not None:
        stem = f"{family}-{device_tag(device)}-{_dt.date.today().isoformat()}" + ("-small" if size == "small" else "")
        base = os.path.join(out_dir, stem)
        harness.write_table(rows, base + ".md", env, title)
        harness.write_json(rows, base + ".json", env)
        wrote_png = harness.write_plot(rows, base + ".png", title)
        if log:
            log(f"wrote {base}.md, {base}.json" + (f", {base}.png" if wrote_png else ""))
    if log:
        log(harness.format_summary(rows))
        log("")
        log(harness.format_table(rows))
    return rows
