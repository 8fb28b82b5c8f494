"""Application code, one folder per model family (``tasks/<family>/``: training recipes, the
papers' experiments, benchmarks, the demo section and anything else only that family runs), and
:data:`FAMILIES`, the table that ``fastvision train|eval|bench|demo`` loop over."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from typing import Callable

from fastvision.benchmarks import harness

from .family import Family, Recipe

__all__ = ["FAMILIES", "Family", "Recipe", "recipes", "benchmark_names", "run_family"]

FAMILIES: tuple[Family, ...] = (
    Family("sampling", recipes=True,
           eval_help="accuracy vs sampling ratio: random, FPS, S-NET, ProgressiveNet, SampleNet "
                     "(trains what is missing)",
           benchmarks={"points": "bench_points", "sampling": "benchmark"},
           demo_title="Learned point-cloud sampling"),
    Family("padnet", recipes=True,
           eval_help="PAD-Net Tables 5/6: teacher, PAD-Net (KD), PAD-Net (x2, x4): params, MFLOPs, "
                     "MAE, RMSE, Precision, Recall",
           benchmarks={"padnet": "benchmark"},
           demo_title="Particle detection (PAD-Net)"),
    Family("segmentation", recipes=True,
           eval_help="mIoU table and prediction overlays of a trained segmentation checkpoint "
                     "(single or multi-scale, flip)",
           studies={"segmentation-study": (
               "study", "the papers' ablations on the embedded scenes: BiSeNet V2 with/without "
                        "boosters, HRNet V2 vs V1 head, HyperSeg dynamic vs static decoder "
                        "(trains what is missing; table and mIoU-vs-time plot)")},
           benchmarks={"segmentation": "benchmark"},
           demo_title="Semantic segmentation (BiSeNet V2, HRNetV2)"),
    Family("hyperseg", benchmarks={"hyperseg": "benchmark"},
           demo_title="HyperSeg (patch-wise dynamic convolution)"),
    Family("pose", recipes=True,
           eval_help="COCO OKS AP of a pose checkpoint (official post-processing, optional flip "
                     "test)",
           studies={"pose-study": (
               "study", "HRNet pose on the embedded stick figures: OKS AP with/without flip test, "
                        "quarter-pixel refinement vs argmax (trains what is missing)")}),
)


def recipes() -> dict:
    """Every ``fastvision train`` recipe by name, in the order of :data:`FAMILIES`."""
    out = {}
    for family in FAMILIES:
        if family.recipes:
            out.update(family.module("recipe").RECIPES)
    return out


def benchmark_names() -> list[str]:
    """The names ``fastvision bench --family`` accepts."""
    return [name for family in FAMILIES for name in family.benchmarks]


def _benchmark_module(name: str):
    for family in FAMILIES:
        if name in family.benchmarks:
            return family.module(family.benchmarks[name])
    raise ValueError(f"unknown benchmark family {name!r}; available: {', '.join(benchmark_names())}")


def run_family(
    family: str,
    size: str = "small",
    device: str = "cpu",
    out_dir: str | None = None,
    *,
    competitors: bool = True,
    repeats: int | None = None,
    only: list[str] | None = None,
    threads: list[int] | None = None,
    log: Callable[[str], None] | None = print,
) -> list[dict]:
    """Runs one benchmark family and returns its rows (one dict per case and implementation).

    ``only`` keeps the named cases; ``threads`` runs the whole family once per torch thread count
    (the rows say which in ``threads``), since a loaded 2-core machine hurts 2-thread
    implementations far more than single-threaded ones. With ``out_dir``, writes
    ``<family>-<device tag>-<date>[-small][-t<N>...].{md,json,png}`` there (a markdown table with
    medians and ratios against fastvision, the rows as JSON with the environment, a bar chart).
    Prints the summary and the full table through ``log``.
    """
    mod = _benchmark_module(family)
    if size not in ("small", "full"):
        raise ValueError(f"size must be 'small' or 'full', got {size!r}")
    if threads is not None and (not threads or any(not isinstance(n, int) or n < 1 for n in threads)):
        raise ValueError(f"threads must be a non-empty list of ints >= 1, got {threads!r}")
    env = harness.environment(device)
    env.update(family=family, size=size)
    rows: list[dict] = []
    for n in threads or [None]:
        with harness.torch_threads(n) if n is not None else contextlib.nullcontext():
            rows += mod.run(size=size, device=device, competitors=competitors, repeats=repeats,
                            only=only, log=log if size == "full" else None)
    if only and not rows:
        raise ValueError(f"no case of the {family} benchmarks is named in only={only!r}")
    if hasattr(os, "getloadavg"):
        env["load_average_at_end"] = list(os.getloadavg())
    title = f"fastvision {family} benchmarks ({size}, {device})"
    if out_dir is not None:
        stem = (f"{family}-{harness.device_tag(device)}-{_dt.date.today().isoformat()}"
                + ("-small" if size == "small" else "")
                + "".join(f"-t{n}" for n in threads or []))
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
