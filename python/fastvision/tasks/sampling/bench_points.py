"""Benchmarks of the point-cloud ops (kNN, Chamfer, FPS) against what a user would pick instead.

Cases (B clouds, P1 queries, P2 points, D = 3, float32, uniform points in the unit cube):

=================  ==================================  ======================================
case               full size                           small size (``fastvision demo``, tests)
=================  ==================================  ======================================
knn_samplenet      B=32, P1=64, P2=1024, K=8            B=4, P1=64, P2=512, K=8
knn_self           B=8, P1=P2=2048, K=16 (p1 is p2)     B=2, P1=P2=512, K=16
knn_100k           B=1, P1=P2=100000, K=8               B=1, P1=P2=4096, K=8
chamfer_fwd        B=32, P1=2048, P2=1024               B=4, P1=512, P2=256
chamfer_fwd_bwd    same, forward + backward             same
fps_1k             B=32, P=1024 -> 64                   B=4, P=512 -> 32
fps_8k             B=8, P=8192 -> 1024                  B=2, P=2048 -> 256
fps_100k           B=1, P=100000 -> 4096                B=1, P=8192 -> 512
=================  ==================================  ======================================

Implementations (optional imports: a missing library gives a "not installed" row, never a crash):
fastvision (``method="auto"``) is the baseline; its forced methods (``brute_force``/``kdtree``,
``scan``/``buckets``) are listed as variants to tune the ``auto`` thresholds; the pure-PyTorch
reference (``fastvision.ops._reference``) where its dense matrices fit; torch ``cdist`` + ``topk``
/ ``min`` (default ``compute_mode``, i.e. the matmul expansion, as users call it); KeOps
``LazyTensor`` reductions; SciPy ``cKDTree`` (``workers = torch.get_num_threads()``); FAISS
``IndexFlatL2``; fpsample (bucket "QuickFPS" and vanilla FPS, one cloud at a time); a batched
pure-PyTorch FPS loop (the PointNet++ idiom); PyTorch3D where installed. Per-cloud libraries
(cKDTree, FAISS, fpsample) loop over the batch in Python, as a user has to; conversions to and
from NumPy are timed. Every result is checked against fastvision's (column ``check``):

* ``exact``: the same indices;
* ``tie``: other indices, but at the same float64 distances to within 1e-5 (relative), i.e. a
  different choice among equally near points, or a valid FPS sequence that took another branch
  at a near tie;
* ``close``: a loss/gradient that matches to 1e-5 (Chamfer);
* ``differs``: another answer (e.g. the matmul path of ``cdist`` losing the nearest neighbour).

Run it with ``fastvision bench --family points`` (or ``run_family("points", ...)`` from
:mod:`fastvision.tasks`); :func:`sweep_methods` times the forced CPU methods across sizes.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from fastvision.benchmarks.harness import Case, Impl, Skip, make_clouds, make_pair, measure_case, timed

from .competitors import (
    cpu_only,
    fps_verdict,
    import_optional,
    keops_lazy_tensor,
    knn_verdict,
    loss_verdict,
    threads,
    torch_fps,
)

__all__ = ["CASES", "build_cases", "run", "sweep_methods"]

# Dense intermediates larger than this (elements of a B x P1 x P2 matrix) are not attempted.
DENSE_LIMIT = 2**28  # 1 GiB of float32
# Dense all-pairs scans with more pairs than this are skipped (tens of seconds per call here).
PAIR_LIMIT = 2**31


# (name, label, params) per size
CASES: dict[str, list[tuple[str, str, dict]]] = {
    "full": [
        ("knn_samplenet", "kNN SampleNet projection", dict(B=32, P1=64, P2=1024, K=8)),
        ("knn_self", "kNN self", dict(B=8, P1=2048, P2=2048, K=16, self=True)),
        ("knn_100k", "kNN 100k", dict(B=1, P1=100000, P2=100000, K=8)),
        ("chamfer_fwd", "Chamfer forward", dict(B=32, P1=2048, P2=1024)),
        ("chamfer_fwd_bwd", "Chamfer forward+backward", dict(B=32, P1=2048, P2=1024, backward=True)),
        ("fps_1k", "FPS", dict(B=32, P=1024, K=64)),
        ("fps_8k", "FPS", dict(B=8, P=8192, K=1024)),
        ("fps_100k", "FPS", dict(B=1, P=100000, K=4096)),
    ],
    "small": [
        ("knn_samplenet", "kNN SampleNet projection", dict(B=4, P1=64, P2=512, K=8)),
        ("knn_self", "kNN self", dict(B=2, P1=512, P2=512, K=16, self=True)),
        ("knn_100k", "kNN large", dict(B=1, P1=4096, P2=4096, K=8)),
        ("chamfer_fwd", "Chamfer forward", dict(B=4, P1=512, P2=256)),
        ("chamfer_fwd_bwd", "Chamfer forward+backward", dict(B=4, P1=512, P2=256, backward=True)),
        ("fps_1k", "FPS", dict(B=4, P=512, K=32)),
        ("fps_8k", "FPS", dict(B=2, P=2048, K=256)),
        ("fps_100k", "FPS", dict(B=1, P=8192, K=512)),
    ],
}


def _label(name: str, label: str, p: dict) -> str:
    if name.startswith("knn"):
        return f"{label} ({p['B']}, {p['P1']}, {p['P2']}, K={p['K']})"
    if name.startswith("chamfer"):
        return f"{label} ({p['B']}, {p['P1']} vs {p['P2']})"
    return f"{label} ({p['B']}, {p['P']} -> {p['K']})"


# ---------------------------------------------------------------------------------------------
# kNN


def _knn_case(name, label, p, device, competitors, methods, small) -> Case:
    import fastvision.ops as fv
    from fastvision.ops import _reference as ref

    B, P1, P2, K = p["B"], p["P1"], p["P2"], p["K"]
    self_knn = p.get("self", False)
    p1, p2 = make_pair(B, P1, P2, device=device)
    if self_knn:
        p1 = p2
    case = Case("points", name, _label(name, label, p), dict(p))
    base: dict = {}

    def fv_knn(method="auto"):
        return lambda: fv.knn_points(p1, p2, K, method=method).idx

    def baseline():
        if "idx" not in base:
            base["idx"] = fv.knn_points(p1, p2, K).idx
        return base["idx"]

    def check(out):
        return knn_verdict(p1, p2, out, baseline())

    def add(name, setup, note="", role="competitor"):
        case.impls.append(Impl(name, setup, None if role == "fastvision" else check, note, role))

    add("fastvision", lambda: timed(fv_knn(), device), role="fastvision")
    if methods and not str(device).startswith("cuda"):
        for m in ("brute_force", "kdtree"):
            def setup(m=m):
                if m == "brute_force" and B * P1 * P2 > 4 * PAIR_LIMIT:
                    raise Skip("too many pairs for a timed brute-force scan")
                return timed(fv_knn(m), device)
            add(f"fastvision method={m}", setup, role="variant")

    def reference():
        if B * P1 * P2 > (DENSE_LIMIT // 4 if not small else 2**22):
            raise Skip(f"dense {B}x{P1}x{P2} matrix (+ sort) too large")
        return timed(lambda: ref.knn_points(p1, p2, K)[1], device)

    add("torch reference (dense)", reference, role="reference")
    if not competitors:
        return case

    def cdist_topk():
        if B * P1 * P2 > PAIR_LIMIT:
            raise Skip(f"{B * P1 * P2:.1e} pairs through cdist: tens of seconds per call")
        # Query chunks keep the dense block under DENSE_LIMIT // 4 elements.
        rows = max(1, (DENSE_LIMIT // 4) // max(1, B * P2))

        def f():
            outs = [torch.cdist(q, p2).topk(K, dim=2, largest=False, sorted=True).indices
                    for q in p1.split(rows, dim=1)]
            return torch.cat(outs, 1)

        return timed(f, device)

    add("torch cdist+topk", cdist_topk, "matmul path")

    def keops():
        LazyTensor = keops_lazy_tensor()
        X = LazyTensor(p1[:, :, None, :].contiguous())
        Y = LazyTensor(p2[:, None, :, :].contiguous())

        def f():
            return ((X - Y) ** 2).sum(-1).argKmin(K, dim=2)

        return timed(f, device)

    add("KeOps argKmin", keops)

    def ckdtree():
        cpu_only(device, "scipy cKDTree")
        spatial = import_optional("scipy.spatial")
        a, b = p1.numpy(), p2.numpy()
        w = threads()

        def f():
            out = []
            for i in range(B):
                tree = spatial.cKDTree(b[i])
                out.append(tree.query(a[i], k=K, workers=w)[1])
            return torch.from_numpy(np.stack(out).astype(np.int64, copy=False)).reshape(B, P1, K)

        return f

    add("scipy cKDTree", ckdtree, f"build+query, workers={threads()}")

    def faiss_flat():
        cpu_only(device, "faiss-cpu")
        faiss = import_optional("faiss")
        faiss.omp_set_num_threads(threads())
        a, b = p1.numpy(), p2.numpy()

        def f():
            out = []
            for i in range(B):
                index = faiss.IndexFlatL2(b.shape[2])
                index.add(b[i])
                out.append(index.search(a[i], K)[1])
            return torch.from_numpy(np.stack(out))

        return f

    add("faiss IndexFlatL2", faiss_flat, "per cloud")

    def p3d():
        ops = import_optional("pytorch3d.ops")
        return timed(lambda: ops.knn_points(p1, p2, K=K).idx, device)

    add("PyTorch3D knn_points", p3d)
    return case


# ---------------------------------------------------------------------------------------------
# Chamfer


def _chamfer_case(name, label, p, device, competitors, methods, small) -> Case:
    import fastvision.ops as fv
    from fastvision.ops import _reference as ref

    B, P1, P2 = p["B"], p["P1"], p["P2"]
    backward = p.get("backward", False)
    p1, p2 = make_pair(B, P1, P2, seed=10, device=device)
    if backward:
        p1.requires_grad_(True)
        p2.requires_grad_(True)
    case = Case("points", name, _label(name, label, p), dict(p))
    base: dict = {}

    def finish(loss):
        """The forward loss, or ``(loss, grad p1, grad p2)`` for forward+backward."""
        if not backward:
            return loss.detach()
        g1, g2 = torch.autograd.grad(loss, (p1, p2))
        return loss.detach(), g1, g2

    def from_nn(d12, d21):
        return finish((d12.mean(1) + d21.mean(1)).mean())

    def from_indices(i12, i21):
        """Differentiable loss from nearest-neighbour indices (B, P1), (B, P2): the idiom for
        libraries without autograd (KeOps' advice for min reductions, cKDTree, FAISS)."""
        q = p2.gather(1, i12[..., None].expand(B, P1, 3))
        r = p1.gather(1, i21[..., None].expand(B, P2, 3))
        return from_nn(((p1 - q) ** 2).sum(-1), ((p2 - r) ** 2).sum(-1))

    def fastvision_fn(method="auto"):
        if method == "auto":
            return lambda: finish(fv.chamfer_distance(p1, p2))
        return lambda: from_nn(*fv.nn_distance(p1, p2, method=method)[::2])

    def baseline():
        if "out" not in base:
            base["out"] = fastvision_fn()()
        return base["out"]

    def check(out):
        return loss_verdict(out, baseline())

    def add(name, setup, note="", role="competitor"):
        case.impls.append(Impl(name, setup, None if role == "fastvision" else check, note, role))

    add("fastvision", lambda: timed(fastvision_fn(), device), role="fastvision")
    if methods and not str(device).startswith("cuda"):
        for m in ("brute_force", "kdtree"):
            add(f"fastvision nn_distance method={m}", lambda m=m: timed(fastvision_fn(m), device),
                role="variant")

    def reference():
        if B * P1 * P2 > (DENSE_LIMIT // 2 if not small else 2**22):
            raise Skip(f"dense {B}x{P1}x{P2} matrix too large")
        return timed(lambda: finish(ref.chamfer_distance(p1, p2).mean()), device)

    add("torch reference (dense)", reference, role="reference")
    if not competitors:
        return case

    def cdist_min():
        if B * P1 * P2 > DENSE_LIMIT:
            raise Skip(f"dense {B}x{P1}x{P2} matrix too large")

        def f():
            d = torch.cdist(p1, p2).square()
            return from_nn(d.min(2).values, d.min(1).values)

        return timed(f, device)

    add("torch cdist+min", cdist_min, "matmul path")

    def keops():
        LazyTensor = keops_lazy_tensor()

        def f():
            X = LazyTensor(p1.detach()[:, :, None, :].contiguous())
            Y = LazyTensor(p2.detach()[:, None, :, :].contiguous())
            D = ((X - Y) ** 2).sum(-1)
            if not backward:
                return from_nn(D.min(dim=2)[..., 0], D.min(dim=1)[..., 0])
            return from_indices(D.argmin(dim=2)[..., 0], D.argmin(dim=1)[..., 0])

        return timed(f, device)

    add("KeOps", keops, "argmin + torch gather" if backward else "min reductions")

    def ckdtree():
        cpu_only(device, "scipy cKDTree")
        spatial = import_optional("scipy.spatial")
        a, b = p1.detach().numpy(), p2.detach().numpy()
        w = threads()

        def f():
            if not backward:
                s = 0.0
                for i in range(B):
                    d12 = spatial.cKDTree(b[i]).query(a[i], k=1, workers=w)[0]
                    d21 = spatial.cKDTree(a[i]).query(b[i], k=1, workers=w)[0]
                    s += np.mean(d12 * d12) + np.mean(d21 * d21)
                return torch.tensor(s / B, dtype=p1.dtype)
            i12 = np.stack([spatial.cKDTree(b[i]).query(a[i], k=1, workers=w)[1] for i in range(B)])
            i21 = np.stack([spatial.cKDTree(a[i]).query(b[i], k=1, workers=w)[1] for i in range(B)])
            return from_indices(torch.from_numpy(i12.astype(np.int64)), torch.from_numpy(i21.astype(np.int64)))

        return f

    add("scipy cKDTree", ckdtree, "2 trees/cloud" + (" + torch gather" if backward else ""))

    def faiss_flat():
        cpu_only(device, "faiss-cpu")
        faiss = import_optional("faiss")
        faiss.omp_set_num_threads(threads())
        a, b = p1.detach().numpy(), p2.detach().numpy()

        def nn(x, y):
            index = faiss.IndexFlatL2(3)
            index.add(y)
            return index.search(x, 1)

        def f():
            if not backward:
                s = 0.0
                for i in range(B):
                    s += float(nn(a[i], b[i])[0].mean()) + float(nn(b[i], a[i])[0].mean())
                return torch.tensor(s / B, dtype=p1.dtype)
            i12 = np.stack([nn(a[i], b[i])[1][:, 0] for i in range(B)])
            i21 = np.stack([nn(b[i], a[i])[1][:, 0] for i in range(B)])
            return from_indices(torch.from_numpy(i12), torch.from_numpy(i21))

        return f

    add("faiss IndexFlatL2", faiss_flat, "per cloud" + (" + torch gather" if backward else ""))

    def p3d():
        loss = import_optional("pytorch3d.loss")
        return timed(lambda: finish(loss.chamfer_distance(p1, p2)[0]), device)

    add("PyTorch3D chamfer_distance", p3d)
    return case


# ---------------------------------------------------------------------------------------------
# FPS


def _fps_case(name, label, p, device, competitors, methods, small) -> Case:
    import fastvision.ops as fv
    from fastvision.ops import _reference as ref

    B, P, K = p["B"], p["P"], p["K"]
    x = make_clouds(B, P, seed=20, device=device)
    case = Case("points", name, _label(name, label, p), dict(p))
    base: dict = {}

    def baseline():
        if "idx" not in base:
            base["idx"] = fv.farthest_point_sample(x, K)
        return base["idx"]

    def check(out):
        return fps_verdict(x, out, baseline(), restart=lambda st: fv.farthest_point_sample(x, K, start=st))

    def add(name, setup, note="", role="competitor"):
        case.impls.append(Impl(name, setup, None if role == "fastvision" else check, note, role))

    add("fastvision", lambda: timed(lambda: fv.farthest_point_sample(x, K), device), role="fastvision")
    if methods and not str(device).startswith("cuda"):
        for m in ("scan", "buckets"):
            add(f"fastvision method={m}",
                lambda m=m: timed(lambda: fv.farthest_point_sample(x, K, method=m), device), role="variant")

    def reference():
        if B * K > 4096 and not small:
            raise Skip("Python loop of B*K steps; the batched torch loop stands in for it")
        return timed(lambda: ref.farthest_point_sample(x, K)[0], device)

    add("torch reference (loop)", reference, role="reference")
    if not competitors:
        return case

    add("torch batched loop", lambda: timed(lambda: torch_fps(x, K), device), "PointNet++ idiom")

    def fpsample_bucket():
        cpu_only(device, "fpsample")
        fps = import_optional("fpsample")
        a = [np.ascontiguousarray(c) for c in x.numpy()]
        hs = [h for h in (3, 5, 7, 9) if 2**h <= P]

        def run(h):
            return lambda: torch.from_numpy(
                np.stack([fps.bucket_fps_kdline_sampling(c, K, h, start_idx=0) for c in a]).astype(np.int64))

        # Tune the bucket height h (2**h points per bucket) for this shape, untimed.
        import time

        best = None
        for h in hs:
            f = run(h)
            f()
            t0 = time.perf_counter()
            f()
            t = time.perf_counter() - t0
            if best is None or t < best[0]:
                best = (t, h)
        bucket_h[0] = best[1]
        return run(best[1])

    bucket_h = [None]
    add("fpsample bucket (kdline)", fpsample_bucket, "h tuned in {3,5,7,9}")

    def fpsample_vanilla():
        cpu_only(device, "fpsample")
        fps = import_optional("fpsample")
        a = [np.ascontiguousarray(c) for c in x.numpy()]
        return lambda: torch.from_numpy(np.stack([fps.fps_sampling(c, K, start_idx=0) for c in a]).astype(np.int64))

    add("fpsample vanilla", fpsample_vanilla, "exact FPS")

    def p3d():
        ops = import_optional("pytorch3d.ops")
        return timed(lambda: ops.sample_farthest_points(x, K=K, random_start_point=False)[1], device)

    add("PyTorch3D sample_farthest_points", p3d)
    case.bucket_h = bucket_h  # type: ignore[attr-defined]
    return case


# ---------------------------------------------------------------------------------------------
# Driver


def build_cases(size: str = "full", device: str = "cpu", competitors: bool = True,
                methods: bool | None = None, only: list[str] | None = None) -> list[Case]:
    """The benchmark cases of one size; ``only`` restricts them by name."""
    if size not in CASES:
        raise ValueError(f"size must be one of {sorted(CASES)}, got {size!r}")
    if methods is None:
        methods = size == "full"
    cases = []
    for name, label, p in CASES[size]:
        if only and name not in only:
            continue
        if name.startswith("knn"):
            cases.append(_knn_case(name, label, p, device, competitors, methods, size == "small"))
        elif name.startswith("chamfer"):
            cases.append(_chamfer_case(name, label, p, device, competitors, methods, size == "small"))
        else:
            cases.append(_fps_case(name, label, p, device, competitors, methods, size == "small"))
    return cases


def run(size: str = "full", device: str = "cpu", competitors: bool = True, repeats: int | None = None,
        *, methods: bool | None = None, only: list[str] | None = None, memory: bool = True,
        log: Callable[[str], None] | None = None) -> list[dict]:
    """Runs the point-op benchmarks and returns one row (dict) per case and implementation.

    Args:
        size: ``"full"`` (the shapes of the issue) or ``"small"`` (a few seconds in all).
        device: ``"cpu"`` or ``"cuda"``.
        competitors: include the other libraries (each skipped with "not installed" if missing).
            At ``size="small"``, KeOps is skipped (its first call JIT-compiles for seconds).
        repeats: most timed repeats per implementation (default 15 full, 3 small; at the small
            size an implementation may be timed once only: it is a smoke run, not a measurement).
        methods: also time fastvision's forced methods (default: at ``size="full"`` on CPU).
        only: case names to run (default all).
        memory: measure peak memory (one extra call per implementation).
        log: progress callback (e.g. ``print``).
    """
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' requested but torch.cuda.is_available() is False")
    small = size == "small"
    if repeats is None:
        repeats = 3 if small else 15
    rows: list[dict] = []
    for case in build_cases(size, device, competitors, methods, only):
        if small:
            for impl in case.impls:
                if impl.name.startswith("KeOps"):
                    impl.setup = _skip_setup("JIT compile on first use: full size only")
        if log:
            log(f"{case.label}")
        if small:  # a smoke run for the demo and the CLI test: a few seconds in all
            rs = measure_case(case, device, repeats=repeats, min_repeats=1, budget_s=0.02,
                              rewarm_ms=5.0, memory=memory)
        else:
            rs = measure_case(case, device, repeats=repeats, min_repeats=3, budget_s=2.0,
                              memory=memory, log=log)
        h = getattr(case, "bucket_h", [None])[0]
        for r in rs:
            if r["impl"].startswith("fpsample bucket") and h is not None:
                r["note"] = f"h={h} (tuned in 3,5,7,9)"
        rows.extend(rs)
    return rows


def sweep_methods(device: str = "cpu", repeats: int = 9, log: Callable[[str], None] | None = None) -> list[dict]:
    """Times fastvision's forced CPU methods across sizes, to place the ``method="auto"``
    thresholds: kNN (``brute_force`` vs ``kdtree``), ``nn_distance`` (same) and FPS (``scan`` vs
    ``buckets``). Each row is one (shape, method); the ``auto`` row shows what auto picks."""
    import fastvision.ops as fv

    def case(name, params, fns):
        c = Case("points-sweep", name, name, params)
        for m, f in fns.items():
            role = "fastvision" if m == "auto" else "variant"
            c.impls.append(Impl(m, (lambda f=f: timed(f, device)), None, "", role))
        return c

    cases = []
    for B, P1, P2, K in [(8, 64, 256, 8), (8, 64, 1024, 8), (8, 64, 4096, 8), (8, 64, 16384, 8),
                         (8, 128, 128, 8), (8, 256, 256, 8), (8, 512, 512, 8), (8, 1024, 1024, 8),
                         (8, 128, 4096, 8), (8, 256, 4096, 8), (1, 4096, 512, 8), (8, 1024, 1024, 32)]:
        p1, p2 = make_pair(B, P1, P2, seed=30, device=device)
        cases.append(case(f"knn B={B} P1={P1} P2={P2} K={K}", dict(B=B, P1=P1, P2=P2, K=K), {
            m: (lambda m=m, p1=p1, p2=p2, K=K: fv.knn_points(p1, p2, K, method=m))
            for m in ("auto", "brute_force", "kdtree")}))
    for B, P1, P2 in [(8, 128, 128), (8, 256, 256), (8, 512, 512), (8, 1024, 1024), (8, 2048, 256), (8, 64, 4096)]:
        p1, p2 = make_pair(B, P1, P2, seed=31, device=device)
        cases.append(case(f"nn_distance B={B} P1={P1} P2={P2}", dict(B=B, P1=P1, P2=P2), {
            m: (lambda m=m, p1=p1, p2=p2: fv.nn_distance(p1, p2, method=m))
            for m in ("auto", "brute_force", "kdtree")}))
    for B, P, K in [(8, 2048, 256), (8, 4096, 512), (8, 4096, 128), (8, 8192, 256), (1, 16384, 2048),
                    (1, 32768, 512), (1, 32768, 4096)]:
        x = make_clouds(B, P, seed=32, device=device)
        cases.append(case(f"fps B={B} P={P} K={K}", dict(B=B, P=P, K=K), {
            m: (lambda m=m, x=x, K=K: fv.farthest_point_sample(x, K, method=m)) for m in ("auto", "scan", "buckets")}))
    rows = []
    for c in cases:
        rs = measure_case(c, device, repeats=repeats, min_repeats=3, budget_s=0.5, memory=False)
        if log:
            done = [r for r in rs if r["median_ms"] is not None]
            log(c.name + ": " + ", ".join(f"{r['impl']} {r['median_ms']:.2f} ms" for r in done))
        rows.extend(rs)
    return rows


def _skip_setup(reason: str):
    def setup():
        raise Skip(reason)

    return setup
