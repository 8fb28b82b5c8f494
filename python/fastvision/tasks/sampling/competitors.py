"""What a user would pick instead of the point ops, for :mod:`.bench_points`: optional imports
of the other libraries (a missing one is a ``Skip``, never a crash), a batched pure-PyTorch FPS,
and the verdicts that compare another implementation's answer with fastvision's."""

from __future__ import annotations

import math

import torch

from fastvision.benchmarks.harness import Skip

__all__ = ["import_optional", "keops_lazy_tensor", "cpu_only", "threads", "gather_points",
           "knn_verdict", "fps_verdict", "loss_verdict", "torch_fps"]


def threads() -> int:
    return torch.get_num_threads()


def import_optional(name: str):
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        raise Skip("not installed") from None
    except Exception as e:  # a broken install (e.g. KeOps without a compiler)
        raise Skip(f"import failed: {type(e).__name__}: {e}") from None


def keops_lazy_tensor():
    """``pykeops.torch.LazyTensor``, or Skip; KeOps' chatter on import goes to stderr as usual."""
    import_optional("pykeops")
    mod = import_optional("pykeops.torch")
    return mod.LazyTensor


def cpu_only(device: str, what: str) -> None:
    if str(device).startswith("cuda"):
        raise Skip(f"{what} is CPU-only")


def gather_points(p: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``p (B, N, D)``, ``idx (B, P, K)`` (no -1) -> ``(B, P, K, D)``."""
    B, P, K = idx.shape
    D = p.shape[2]
    return p.gather(1, idx.reshape(B, P * K, 1).expand(B, P * K, D)).reshape(B, P, K, D)


def _same_indices(idx, ref_idx):
    """``(idx, ref_idx)`` as int64 on the CPU, and the verdict when the shapes or the indices
    alone decide it (None otherwise)."""
    idx = idx.to(device="cpu", dtype=torch.int64)
    ref_idx = ref_idx.cpu()
    if idx.shape != ref_idx.shape:
        return idx, ref_idx, ("differs", f"shape {tuple(idx.shape)} vs {tuple(ref_idx.shape)}")
    if torch.equal(idx, ref_idx):
        return idx, ref_idx, ("exact", "")
    return idx, ref_idx, None


def knn_verdict(p1, p2, idx, ref_idx, rtol: float = 1e-5) -> tuple[str, str]:
    """Compares kNN indices with fastvision's: exact, tie (same float64 distances) or differs."""
    idx, ref_idx, verdict = _same_indices(idx, ref_idx)
    if verdict is not None:
        return verdict
    a = p1.detach().cpu().double()
    b = p2.detach().cpu().double()
    d = ((a[:, :, None, :] - gather_points(b, idx)) ** 2).sum(-1).sort(-1).values
    r = ((a[:, :, None, :] - gather_points(b, ref_idx)) ** 2).sum(-1).sort(-1).values
    rows_differ = (idx != ref_idx).any(-1)
    n_rows = int(rows_differ.sum())
    total = rows_differ.numel()
    close = torch.isclose(d, r, rtol=rtol, atol=1e-12).all(-1)
    if bool(close.all()):
        return "tie", f"{n_rows}/{total} queries: other indices at equal distances"
    bad = int((~close).sum())
    rel = float(((d - r).abs() / r.abs().clamp(min=1e-30)).max())
    return "differs", f"{bad}/{total} queries have farther neighbours (max rel. dist. error {rel:.1e})"


def fps_verdict(points, idx, ref_idx, rtol: float = 1e-5, restart=None) -> tuple[str, str]:
    """Compares FPS indices with fastvision's.

    ``exact``: the same sequence. ``other start``: the sequence starts elsewhere than asked (index
    0; fpsample's bucket mode does not honour ``start_idx``) and equals fastvision's from that
    start (``restart(starts (B, 1)) -> idx`` computes it): the same work, so its time compares.
    ``tie``: a valid farthest point sequence in float64 up to ``rtol`` that took another branch
    at a near tie. ``differs``: otherwise.
    """
    idx, ref_idx, verdict = _same_indices(idx, ref_idx)
    if verdict is not None:
        return verdict
    note = ""
    moved = idx[:, 0] != ref_idx[:, 0]
    if bool(moved.any()) and restart is not None:
        ref_idx = restart(idx[:, :1].contiguous()).cpu()
        note = f"{int(moved.sum())}/{idx.shape[0]} clouds start elsewhere than index 0"
        if torch.equal(idx, ref_idx):
            return "other start", note + "; from there, fastvision's sequence"
        note += "; "
    pts = points.detach().cpu().double()
    B, P, _ = pts.shape
    K = idx.shape[1]
    neq = idx != ref_idx
    first = torch.where(neq.any(1), neq.float().argmax(1), torch.full((B,), K)).tolist()
    mind = torch.full((B, P), math.inf, dtype=torch.float64)
    ar = torch.arange(B)
    worst = 0.0
    for k in range(K):
        j = idx[:, k]
        if k > 0:
            got = mind[ar, j]
            best = mind.max(1).values
            worst = max(worst, float(((best - got) / best.clamp(min=1e-300)).max()))
        c = pts[ar, j]
        mind = torch.minimum(mind, ((pts - c[:, None, :]) ** 2).sum(-1))
    n = sum(f < K for f in first)
    where = note + f"{n}/{B} clouds diverge (first at step {min(first)})"
    if worst <= rtol:
        return "tie", f"{where}; a valid FPS within float32 rounding"
    return "differs", f"{where}; a step falls {worst:.1e} (relative) short of the farthest point"


def loss_verdict(out, ref, rtol: float = 1e-5) -> tuple[str, str]:
    """Chamfer: ``out``/``ref`` are a loss tensor or ``(loss, grad1, grad2)``."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    refs = ref if isinstance(ref, (tuple, list)) else (ref,)
    if all(torch.equal(o.detach().cpu().to(r.dtype), r.detach().cpu()) for o, r in zip(outs, refs)):
        return "exact", ""
    details, ok = [], True
    for name, o, r in zip(("loss", "grad p1", "grad p2"), outs, refs):
        o = o.detach().cpu().double()
        r = r.detach().cpu().double()
        scale = float(r.abs().max()) or 1.0
        err = float((o - r).abs().max()) / scale
        detail = f"{name} rel. err {err:.1e}"
        if r.dim() == 3 and err > rtol:  # a gradient: how many points get another one
            n = int(((o - r).abs().amax(-1) > rtol * scale).sum())
            detail += f" at {n}/{r.shape[0] * r.shape[1]} points"
        details.append(detail)
        ok &= err <= rtol
    return ("close" if ok else "differs"), ", ".join(details)


def torch_fps(points: torch.Tensor, K: int) -> torch.Tensor:
    """The batched pure-PyTorch FPS loop of PointNet++ re-implementations (start at index 0;
    ``argmax`` returns the first maximum, so ties go to the lower index as in fastvision)."""
    B, P, _ = points.shape
    idx = torch.zeros(B, K, dtype=torch.int64, device=points.device)
    mind = torch.full((B, P), math.inf, dtype=points.dtype, device=points.device)
    far = torch.zeros(B, dtype=torch.int64, device=points.device)
    ar = torch.arange(B, device=points.device)
    for k in range(K):
        idx[:, k] = far
        c = points[ar, far]
        mind = torch.minimum(mind, ((points - c[:, None, :]) ** 2).sum(-1))
        far = mind.argmax(1)
    return idx
