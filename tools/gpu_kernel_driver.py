"""Calls every fastvision kernel once, forward and backward, on small inputs: the program that
tools/gpu-check runs under compute-sanitizer (memcheck, racecheck, synccheck).

With --bench it instead times the kernels of issue 20, items 3 and 4, at the shapes of their
analyses (bench/analysis/padnet_encoder.md, soft_project.md), against what a user would run
otherwise: padnet_encoder (PAD-Net x1/x2/x4 encoders, 112x48, batch 1 and 256) against the eager
modules and torch.compile of them; soft_project forward and forward+backward (SampleNet's
B=32, N=1024, M=64, k=8 and a large-F case) against SampleNet's official gather + softmax
formulation. One JSON line per case with the medians (CUDA events, after warm-up) to
--bench-out; `--label` names the build (tools/gpu-check runs it once with this checkout, "new",
and, when FV_GPU_CHECK_OLD_REF is set, once more with a build of that ref, "old").

Usage: python tools/gpu_kernel_driver.py [--device cuda|cpu]   (cpu: a dry run of the calls)
       python tools/gpu_kernel_driver.py --bench [--device cuda|cpu] [--label new]
              [--bench-out FILE] [--quick]
"""

import argparse
import json
import statistics

import torch

from fastvision.ops import (farthest_point_sample, knn_points, nn_distance, padnet_encoder,
                            patch_conv2d, patch_inverted_residual, soft_project)
from fastvision.ops.padnet import padnet_param_count


def _median_ms(fn, device: str, repeats: int) -> float:
    """Median of `repeats` timed calls (CUDA events on the GPU) after two warm-up calls."""
    import time

    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench(device: str, label: str, out_path: str | None, quick: bool) -> None:
    """Issue 20 items 3 and 4: fastvision's kernels against the user's alternatives."""
    from fastvision.models import get_model
    from fastvision.ops import fold_padnet_encoder
    from fastvision.tasks.sampling.benchmark import official_soft_projection

    repeats = 3 if quick else 20
    rows = []

    def record(case: str, impl: str, ms: float, **extra) -> None:
        row = {"case": case, "impl": impl, "build": label, "device": device, "median_ms": ms, **extra}
        rows.append(row)
        print(json.dumps(row), flush=True)

    g = torch.Generator().manual_seed(0)
    widths = {"padnet": 1, "padnet_x2": 2, "padnet_x4": 4}
    padnet_shapes = [(1, 28, 12)] if quick else [(1, 112, 48), (256, 112, 48)]
    for name, width in widths.items():
        model = get_model(name).eval().to(device)
        params = fold_padnet_encoder(model.encoder).params
        for batch, H, W in padnet_shapes:
            x = torch.randn(batch, 1, H, W, generator=g).to(device)
            case = f"padnet_encoder {name} {H}x{W} batch {batch}"
            with torch.no_grad():
                fused = torch.ops.fastvision.padnet_encoder(x, params, width)
                eager = model.encoder(x)
                err = max(float((a - b).abs().max()) for a, b in zip(fused, eager))
                record(case, "fastvision", _median_ms(
                    lambda: torch.ops.fastvision.padnet_encoder(x, params, width), device, repeats),
                    max_abs_diff_vs_eager=err)
                if label == "new":  # the competitors do not depend on the build
                    record(case, "eager", _median_ms(lambda: model.encoder(x), device, repeats))
                    if not quick:
                        compiled = torch.compile(model.encoder)
                        compiled(x)
                        record(case, "torch.compile", _median_ms(lambda: compiled(x), device, repeats))
    sp_shapes = [dict(B=2, N=256, M=32, k=8, F=0)] if quick else [
        dict(B=32, N=1024, M=64, k=8, F=0), dict(B=32, N=1024, M=64, k=8, F=64),
        dict(B=8, N=16384, M=2048, k=16, F=0), dict(B=8, N=4096, M=1024, k=16, F=256)]
    for p in sp_shapes:
        B, N, M, k, F = p["B"], p["N"], p["M"], p["k"], p["F"]
        pts = torch.rand(B, N, 3, generator=g).to(device)
        q = torch.rand(B, M, 3, generator=g).to(device)
        feats = torch.randn(B, N, F, generator=g).to(device) if F else None
        t = torch.tensor(0.3, device=device)
        case = f"soft_project B={B} N={N} M={M} k={k} F={F}"

        def fv_forward():
            return soft_project(q, pts, t, k, features=feats)

        def fv_backward():
            qq, pp = q.clone().requires_grad_(), pts.clone().requires_grad_()
            ff = feats.clone().requires_grad_() if F else None
            out = soft_project(qq, pp, t, k, features=ff)
            out = out if isinstance(out, torch.Tensor) else torch.cat([o.flatten() for o in out])
            out.sum().backward()

        with torch.no_grad():
            record(case, "fastvision forward", _median_ms(fv_forward, device, repeats))
        record(case, "fastvision forward+backward", _median_ms(fv_backward, device, repeats))
        if label == "new" and F == 0:
            def official_backward():
                qq, pp = q.clone().requires_grad_(), pts.clone().requires_grad_()
                official_soft_projection(qq, pp, t, k).sum().backward()

            with torch.no_grad():
                record(case, "official forward", _median_ms(
                    lambda: official_soft_projection(q, pts, t, k), device, repeats))
            record(case, "official forward+backward", _median_ms(official_backward, device, repeats))
    if out_path:
        with open(out_path, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--bench", action="store_true", help="time issue 20's kernels instead")
    parser.add_argument("--label", default="new", help="the build's name in the --bench rows")
    parser.add_argument("--bench-out", default=None, help="append the --bench rows (JSON lines)")
    parser.add_argument("--quick", action="store_true", help="--bench at smoke-test sizes")
    args = parser.parse_args()
    dev = args.device
    if args.bench:
        bench(dev, args.label, args.bench_out, args.quick)
        return
    g = torch.Generator().manual_seed(0)

    def randn(*shape, grad=False):
        t = torch.randn(*shape, generator=g).to(dev)
        return t.requires_grad_(grad)

    calls = []
    # Points: register and global top-K, split + merge, generic D, FPS shared-memory paths.
    for P1, P2, D, K in [(37, 300, 3, 5), (20, 90, 3, 40), (64, 500, 7, 2)]:
        p1, p2 = randn(2, P1, D, grad=True), randn(2, P2, D, grad=True)
        dists, _ = knn_points(p1, p2, K=K)
        dists.sum().backward()
        calls.append(f"knn_points P1={P1} P2={P2} D={D} K={K} (+ backward)")
    nn_distance(randn(2, 50, 3), randn(2, 70, 3))
    calls.append("nn_distance")
    for B, P, D in [(2, 1000, 3), (2, 1200, 64), (80, 60000, 1),
                    # the multi-block (cooperative) path: shared points, shared distances only,
                    # global distances, generic D
                    (1, 200_000, 3), (1, 2_000_000, 3), (1, 8_000_000, 3), (2, 40_000, 5)]:
        farthest_point_sample(randn(B, P, D), K=8)
        calls.append(f"farthest_point_sample B={B} P={P} D={D}")
    # Soft projection, forward and backward: group sizes 8 and 32 (k = 40 > 32: two neighbour
    # chunks; F = 70: feature tiles and two accumulator passes).
    q, pts = randn(2, 40, 3, grad=True), randn(2, 100, 3, grad=True)
    soft_project(q, pts, 0.5, k=7).sum().backward()
    f = randn(2, 100, 70, grad=True)
    y, yf = soft_project(q, pts, 0.5, k=40, features=f)
    (y.sum() + yf.sum()).backward()
    calls.append("soft_project (+ backward; with features)")
    # Patch-wise convolution and inverted residual, forward and backward.
    x = randn(2, 4, 9, 7, grad=True)
    w = randn(2, 3 * 4 * 9, 2, 3, grad=True)
    b = randn(3, grad=True)
    patch_conv2d(x, w, 3, padding_mode="reflect", bias=b).sum().backward()
    calls.append("patch_conv2d (+ backward)")
    hidden, out, k = 6, 4, 3
    xi = randn(2, 5, 12, 8)
    wi = randn(2, 5 * hidden + hidden * k * k + hidden * out, 3, 2) * 0.5
    bns = [(torch.rand(n, generator=g).to(dev) + 0.5, randn(n)) for n in (hidden, hidden, out)]
    patch_inverted_residual(xi, wi, hidden, *bns, kernel_size=k)
    calls.append("patch_inverted_residual")
    # PAD-Net encoder at every width.
    with torch.no_grad():
        for width in (1, 2, 4):
            params = randn(padnet_param_count(width)) * 0.1
            padnet_encoder(randn(3, 1, 23, 17), params, width)
            calls.append(f"padnet_encoder width={width}")
    if dev == "cuda":
        torch.cuda.synchronize()
    print(f"{len(calls)} kernel calls on {dev}: " + "; ".join(calls))


if __name__ == "__main__":
    main()
