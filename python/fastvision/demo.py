"""``fastvision demo``: the main job on embedded defaults.

Checks every operator against its pure-PyTorch reference (``fastvision.ops._reference``) or the
official formulation on generated data, on the CPU and on CUDA when available, runs the operator
microbenchmarks at a small size, runs each model family's section (``tasks/<family>/demo.py``,
in the order of ``fastvision.tasks.FAMILIES``) with its shipped embedded-data weights, and writes a report (Markdown + JSON + plots) into the
output folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

import fastvision
from fastvision.ops import _reference as ref
from fastvision.ops import chamfer_distance, farthest_point_sample, knn_points, nn_distance


def _compare(out, expected) -> tuple[bool, float]:
    """(indices equal, max |distance difference|) over matching outputs."""
    same_idx, max_diff = True, 0.0
    for a, b in zip(out, expected):
        a, b = a.cpu(), b.cpu()
        if a.dtype == torch.int64:
            same_idx &= bool(torch.equal(a, b))
        else:
            finite = torch.isfinite(b)
            same_idx &= bool(torch.equal(torch.isfinite(a), finite))
            if finite.any():
                max_diff = max(max_diff, float((a[finite] - b[finite]).abs().max()))
    return same_idx, max_diff


def point_op_checks(device: str) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    p1 = torch.rand(4, 500, 3, generator=g).to(device)
    p2 = torch.rand(4, 700, 3, generator=g).to(device)
    big = torch.rand(1, 6000, 3, generator=g).to(device)
    l1 = torch.tensor([500, 321, 17, 1], device=device)
    l2 = torch.tensor([700, 8, 450, 2], device=device)
    seeds = torch.zeros(4, 1, dtype=torch.int64, device=device)
    cases = [
        ("knn_points K=8", "(4,500)->(4,700)", lambda: knn_points(p1, p2, 8, l1, l2), lambda: ref.knn_points(p1, p2, 8, l1, l2)),
        ("knn_points K=4 k-d tree", "(1,6000) self", lambda: knn_points(big, big, 4), lambda: ref.knn_points(big, big, 4)),
        ("nn_distance", "(4,500)<->(4,700)", lambda: nn_distance(p1, p2, l1, l2), lambda: ref.nn_distance(p1, p2, l1, l2)),
        ("chamfer_distance", "(4,500)<->(4,700)", lambda: (chamfer_distance(p1, p2, l1, l2, reduction="none"),), lambda: (ref.chamfer_distance(p1, p2, l1, l2),)),
        ("farthest_point_sample", "(4,700)->64", lambda: farthest_point_sample(p2, 64, torch.full_like(l2, 700), return_min_dists=True), lambda: ref.farthest_point_sample(p2, 64, None, seeds)),
        ("farthest_point_sample buckets", "(1,6000)->100", lambda: farthest_point_sample(big, 100, return_min_dists=True, method="buckets"), lambda: ref.farthest_point_sample(big, 100, None, seeds[:1])),
    ]
    rows = []
    for name, shape, run, oracle in cases:
        start = time.perf_counter()
        out = run()
        seconds = time.perf_counter() - start
        same, diff = _compare(out, oracle())
        tol = 1e-5
        rows.append(
            {
                "op": name,
                "device": device,
                "shape": shape,
                "indices_equal": same,
                "max_abs_diff": diff,
                "ok": same and diff <= tol,
                "seconds": seconds,
            }
        )
    return rows


def _format_checks(rows: list[dict]) -> str:
    lines = [
        "| op | device | shape | indices equal | max abs diff | result |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['op']} | {r['device']} | {r['shape']} | {r['indices_equal']} | "
            f"{r['max_abs_diff']:.2e} | {'ok' if r['ok'] else 'MISMATCH'} |"
        )
    return "\n".join(lines)


def run_demo(out_dir: Path, device: str = "auto") -> bool:
    """Runs the demo; returns True when every check passed."""
    from fastvision.tasks import FAMILIES, run_family

    out_dir.mkdir(parents=True, exist_ok=True)
    devices = ["cpu"]
    if device in ("auto", "cuda") and torch.cuda.is_available():
        devices = ["cpu", "cuda"] if device == "auto" else ["cuda"]
    info = fastvision.build_info()
    print(f"fastvision {info['fastvision']} (torch {torch.__version__}, CUDA kernels compiled: "
          f"{info['cuda_compiled']}, threads: {torch.get_num_threads()})\n")

    print("1. Operators against their pure-PyTorch references")
    checks = [row for d in devices for row in point_op_checks(d)]
    table = _format_checks(checks)
    print(table + "\n")

    print("2. Point-op microbenchmarks (small sizes)")
    for d in devices:
        run_family("points", size="small", device=d, out_dir=out_dir / f"bench-{d}")

    sections_ok, section_lines = True, []
    demo_families = [f for f in FAMILIES if f.demo_title is not None]
    for number, family in enumerate(demo_families, start=3):
        print(f"\n{number}. {family.demo_title}")
        lines, rows, ok = family.module("demo").section(out_dir, devices)
        print(_format_checks(rows) + "\n")
        checks += rows
        section_lines += lines
        sections_ok &= ok

    ok = all(r["ok"] for r in checks) and sections_ok
    table = _format_checks(checks)
    report = [
        "# fastvision demo report",
        "",
        f"fastvision {info['fastvision']}, torch {torch.__version__}, CUDA kernels compiled: "
        f"{info['cuda_compiled']}, devices: {', '.join(devices)}",
        "",
        "## Operators against their references",
        "",
        table,
        "",
        "## Microbenchmarks",
        "",
        "Tables, JSON and plots: " + ", ".join(f"`bench-{d}/`" for d in devices),
        "",
        *section_lines,
        f"Result: {'all checks passed' if ok else 'SOME CHECKS FAILED'}",
    ]
    (out_dir / "report.md").write_text("\n".join(report) + "\n")
    (out_dir / "checks.json").write_text(json.dumps(checks, indent=2))
    print(f"\nReport: {out_dir / 'report.md'}")
    print("Result: " + ("all checks passed" if ok else "SOME CHECKS FAILED"))
    return ok
