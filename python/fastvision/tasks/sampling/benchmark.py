"""Benchmarks of SampleNet's soft projection and the S-NET/SampleNet matching against the official
formulations: the projection as SampleNet's PyTorch code computes it (kNN by ``cdist`` + ``topk``,
gather, squared distances / sigma, softmax, weighted sum), the matching as the official numpy code
(nearest neighbours, then per cloud on the host: order-preserving unique, FPS completion from the
matched coordinates).

``fastvision bench --family sampling [--size small|full]``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from fastvision.benchmarks.harness import Case, Impl, make_clouds, measure_case, timed

CASES: dict[str, list[tuple[str, str, dict]]] = {
    "full": [
        ("soft_project_fwd", "soft projection forward", dict(B=32, N=1024, M=64, k=8)),
        ("soft_project_fwd_bwd", "soft projection forward+backward", dict(B=32, N=1024, M=64, k=8, backward=True)),
        ("soft_project_large_fwd", "soft projection forward", dict(B=8, N=16384, M=2048, k=16)),
        ("soft_project_large_fwd_bwd", "soft projection forward+backward", dict(B=8, N=16384, M=2048, k=16, backward=True)),
        ("nn_match", "nn_match", dict(B=32, N=1024, M=64)),
    ],
    "small": [
        ("soft_project_fwd", "soft projection forward", dict(B=4, N=256, M=32, k=8)),
        ("soft_project_fwd_bwd", "soft projection forward+backward", dict(B=4, N=256, M=32, k=8, backward=True)),
        ("nn_match", "nn_match", dict(B=4, N=256, M=32)),
    ],
}

MIN_SIGMA = 1e-2  # SampleNet's PyTorch default


def _label(label: str, p: dict) -> str:
    k = f", k={p['k']}" if "k" in p else ""
    return f"{label} (B={p['B']}, N={p['N']}, M={p['M']}{k})"


def official_soft_projection(query, points, temperature, k, min_sigma=MIN_SIGMA):
    """SampleNet's PyTorch SoftProjection in "bnc" layout: ``cdist`` + ``topk`` neighbours (no
    gradient through the selection), gather, ``sum((grouped - q)**2) / sigma``, softmax over the
    k neighbours, weighted sum."""
    with torch.no_grad():
        idx = torch.cdist(query, points).topk(k, dim=2, largest=False).indices  # (B, M, k)
    B, M, _ = idx.shape
    grouped = points.gather(1, idx.reshape(B, M * k, 1).expand(-1, -1, 3)).reshape(B, M, k, 3)
    sigma = torch.clamp(temperature**2, min=min_sigma)
    dist = ((grouped - query.unsqueeze(2)) ** 2).sum(dim=3) / sigma
    weights = torch.softmax(-dist, dim=2)
    return (grouped * weights.unsqueeze(3)).sum(dim=2)


def official_nn_matching(points: torch.Tensor, generated: torch.Tensor, k: int,
                         complete_fps: bool = True) -> torch.Tensor:
    """The official matching path (itailang/SampleNet ``nn_matching``): exact nearest neighbours
    on the device (as ``KNN_CUDA``), then numpy on the host per cloud: unique keeping the first
    occurrence and FPS completion from the matched coordinates (``complete_fps``), or the raw
    nearest points; the matched coordinates (float64 arithmetic) are copied back."""
    d = ((generated.unsqueeze(2) - points.unsqueeze(1)) ** 2).sum(dim=3)
    idx = d.argmin(dim=2).cpu().numpy()
    pts = points.cpu().numpy()
    out = np.zeros((pts.shape[0], k, 3))
    for b in range(pts.shape[0]):
        if not complete_fps:
            out[b] = pts[b][idx[b][:k]]
            continue
        _, first = np.unique(idx[b], return_index=True)
        given = pts[b][idx[b][np.sort(first)]]
        far = np.zeros((k, 3))
        t = given.shape[0]
        far[:t] = given
        dist = ((far[0] - pts[b]) ** 2).sum(axis=1)
        for i in range(1, t):
            dist = np.minimum(dist, ((far[i] - pts[b]) ** 2).sum(axis=1))
        for i in range(t, k):
            far[i] = pts[b][np.argmax(dist)]
            dist = np.minimum(dist, ((far[i] - pts[b]) ** 2).sum(axis=1))
        out[b] = far
    return torch.tensor(out, dtype=torch.float64, device=points.device)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> tuple[str, str]:
    err = float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-30))
    return ("close" if err <= rtol else "differs"), f"max rel. err {err:.1e}"


def _soft_project_case(name, label, p, device) -> Case:
    import fastvision.ops as fv

    B, N, M, k = p["B"], p["N"], p["M"], p["k"]
    points = make_clouds(B, N, seed=30, device=device)
    query = make_clouds(B, M, seed=31, device=device)
    t0 = torch.tensor(0.3, device=device)
    backward = p.get("backward", False)
    case = Case("sampling", name, _label(label, p), dict(p))

    def run(fn):
        q = query.clone().requires_grad_(backward)
        pts = points.clone().requires_grad_(backward)
        t = t0.clone().requires_grad_(backward)
        out = fn(q, pts, t)
        if not backward:
            return (out.detach(),)
        out.square().sum().backward()
        return (out.detach(), q.grad, pts.grad, t.grad.reshape(1))

    fv_fn = lambda q, pts, t: fv.soft_project(q, pts, t, k, min_sigma=MIN_SIGMA)  # noqa: E731
    off_fn = lambda q, pts, t: official_soft_projection(q, pts, t, k)  # noqa: E731
    base: dict = {}

    def check(out):
        if "out" not in base:
            base["out"] = run(fv_fn)
        verdicts = [_close(a, b) for a, b in zip(out, base["out"])]
        worst = max(verdicts, key=lambda v: v[0] == "differs")
        return worst[0], "; ".join(v[1] for v in verdicts)

    case.impls.append(Impl("fastvision", lambda: timed(lambda: run(fv_fn), device), None, role="fastvision"))
    case.impls.append(Impl("official formulation (cdist+topk, gather, softmax)",
                           lambda: timed(lambda: run(off_fn), device), check))
    return case


def _nn_match_case(name, label, p, device) -> Case:
    import fastvision.ops as fv

    B, N, M = p["B"], p["N"], p["M"]
    points = make_clouds(B, N, seed=40, device=device)
    generated = make_clouds(B, M, seed=41, device=device)
    case = Case("sampling", name, _label(label, p), dict(p))

    def fv_match():
        idx = fv.nn_match(generated, points, M)
        return points.double()[torch.arange(B, device=device)[:, None], idx]

    def check(out):
        same = torch.equal(out, fv_match())
        return ("exact" if same else "differs"), "matched coordinates"

    case.impls.append(Impl("fastvision", lambda: timed(fv_match, device), None, role="fastvision"))
    case.impls.append(Impl("official numpy path (host loop)",
                           lambda: timed(lambda: official_nn_matching(points, generated, M), device), check))
    return case


def run(size: str = "full", device: str = "cpu", competitors: bool = True, repeats: int | None = None,
        *, only: list[str] | None = None, log: Callable[[str], None] | None = None, **_) -> list[dict]:
    """Runs the sampling benchmarks; one row per case and implementation (see ``points.run``)."""
    small = size == "small"
    rows: list[dict] = []
    for name, label, p in CASES[size]:
        if only and name not in only:
            continue
        case = (_nn_match_case if name == "nn_match" else _soft_project_case)(name, label, p, device)
        if not competitors:
            case.impls = case.impls[:1]
        if log:
            log(case.label)
        if small:
            rows += measure_case(case, device, repeats=repeats or 3, min_repeats=1, budget_s=0.02, rewarm_ms=5.0)
        else:
            rows += measure_case(case, device, repeats=repeats or 15, min_repeats=3, budget_s=2.0, log=log)
    return rows
