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
       python tools/gpu_kernel_driver.py --bench-patch OUT.json [--device cuda|cpu]

--bench-patch times the patch kernels at HyperSeg-M's decoder shapes (1024x512 input, batch 1,
16 x 32 patch grid, float32), old vs new vs competitor in one run: 'new' the tiled kernels,
'old' the direct kernels they replaced (FASTVISION_PATCH_CUDA_DIRECT=1, which the CUDA glue reads
at each call), 'competitor' HyperSeg's own formulation (pad + unfold + grouped conv through cuDNN
+ fold; for the inverted residual its unfused block with folded BN). Forward, and forward +
backward for patch_conv2d; the outputs of the three are compared. On the CPU it runs at 1/8 of
the size (a dry run of the code; 'old' and 'new' are then the same CPU kernel).
"""

import argparse
import json
import os
import statistics

import torch

from fastvision.ops import (farthest_point_sample, knn_points, nn_distance, padnet_encoder,
                            patch_conv2d, patch_inverted_residual, soft_project)
from fastvision.ops.padnet import padnet_param_count
from fastvision.tasks.hyperseg.benchmark import DECODER_LEVELS


def _median_ms(fn, device: str, repeats: int = 30) -> float:
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
def _with_direct(fn):
    def run():
        os.environ["FASTVISION_PATCH_CUDA_DIRECT"] = "1"
        try:
            return fn()
        finally:
            del os.environ["FASTVISION_PATCH_CUDA_DIRECT"]
    return run


def _rel_diff(a, b) -> float:
    a, b = (a if isinstance(a, (tuple, list)) else (a,)), (b if isinstance(b, (tuple, list)) else (b,))
    return max(float((u - v).abs().max()) / max(float(v.abs().max()), 1e-30) for u, v in zip(a, b))


def bench_patch(dev: str, out_path: str) -> None:
    from fastvision.ops import _reference as ref

    scale = 1 if dev == "cuda" else 8
    g = torch.Generator().manual_seed(0)
    rows = []
    for name, kind, cin, c2, c3, h, w in DECODER_LEVELS:  # HyperSeg-M's decoder at 1024x512
        h, w, fh, fw = h // scale, w // scale, max(1, 16 // scale), max(1, 32 // scale)
        x = torch.randn(1, cin, h, w, generator=g).to(dev)
        if kind == "ir":
            K = cin * c2 + c2 * 9 + c2 * c3
            wt = (torch.randn(1, K, fh, fw, generator=g) * 0.2).to(dev)
            bns = [(torch.rand(n, generator=g).to(dev) + 0.5, torch.randn(n, generator=g).to(dev) * 0.1)
                   for n in (c2, c2, c3)]
            affine = [lambda t, s=s, b=b: t * s.view(1, -1, 1, 1) + b.view(1, -1, 1, 1) for s, b in bns]
            impls = {
                "new": lambda: patch_inverted_residual(x, wt, c2, *bns, kernel_size=3),
                "competitor": lambda: ref.hyperpatch_inverted_residual_unfold(x, wt, c2, c3, *affine),
            }
            impls["old"] = _with_direct(impls["new"])
            modes = {"fwd": impls}
        else:
            k, groups = (1, 1) if kind == "conv1x1" else (3, cin)
            wt = (torch.randn(1, c2 * (cin // groups) * k * k, fh, fw, generator=g) * 0.2).to(dev)
            grad = torch.randn(1, c2, h, w, generator=g).to(dev)

            def ours(xx, ww, k=k, groups=groups):
                return patch_conv2d(xx, ww, k, padding=k // 2, padding_mode="reflect", groups=groups)

            def official(xx, ww, k=k, groups=groups):
                return ref.hyperpatch_conv2d_unfold(xx, ww, k, k // 2, "reflect", groups)

            def fwd(f):
                def run():
                    with torch.no_grad():
                        return f(x, wt)
                return run

            def fwd_bwd(f):
                def run():
                    xs, ws = x.detach().requires_grad_(), wt.detach().requires_grad_()
                    out = f(xs, ws)
                    out.backward(grad)
                    return out.detach(), xs.grad, ws.grad
                return run

            modes = {}
            for mode, wrap in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
                modes[mode] = {"new": wrap(ours), "competitor": wrap(official)}
                modes[mode]["old"] = _with_direct(modes[mode]["new"])
        for mode, impls in modes.items():
            ref_out = impls["new"]()
            row = {"level": name, "kind": kind, "mode": mode, "height": h, "width": w, "device": dev}
            for impl in ("new", "old", "competitor"):
                row[f"{impl}_ms"] = _median_ms(impls[impl], dev)
                row[f"{impl}_max_rel_diff_vs_new"] = _rel_diff(impls[impl](), ref_out)
            rows.append(row)
            print(f"{name:10s} {mode:8s} new {row['new_ms']:8.3f} ms  old {row['old_ms']:8.3f} ms "
                  f"(x{row['old_ms'] / row['new_ms']:.2f})  competitor {row['competitor_ms']:8.3f} ms "
                  f"(x{row['competitor_ms'] / row['new_ms']:.2f})  max rel diff old "
                  f"{row['old_max_rel_diff_vs_new']:.1e} competitor {row['competitor_max_rel_diff_vs_new']:.1e}")
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    with open(out_path, "w") as f:
        json.dump({"device": name, "torch": torch.__version__, "rows": rows}, f, indent=1)
    print(f"patch benchmark on {name}: {out_path}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--bench", action="store_true", help="time issue 20's kernels instead")
    parser.add_argument("--label", default="new", help="the build's name in the --bench rows")
    parser.add_argument("--bench-out", default=None, help="append the --bench rows (JSON lines)")
    parser.add_argument("--quick", action="store_true", help="--bench at smoke-test sizes")
    parser.add_argument("--bench-patch", metavar="OUT.json", help="time the patch kernels (old / new / competitor)")
    args = parser.parse_args()
    dev = args.device
    if args.bench_patch:
        bench_patch(dev, args.bench_patch)
        return
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
    # The tile plans' other branches: a strip of 1-pixel cells with two output-channel tiles and
    # two input-channel chunks (HyperSeg's level 0), several pixel tiles per cell (depthwise), the
    # weight gradient's two passes (9x9, 16 input channels), and the direct kernels (dilation 101).
    for shape, kw_, kwargs in [((1, 20, 2, 70), 18 * 20, dict(kernel_size=1, padding=0, grid=(2, 70))),
                               ((1, 2, 6, 37), 2 * 9, dict(kernel_size=3, groups=2, grid=(1, 1))),
                               ((1, 16, 9, 9), 4 * 16 * 81, dict(kernel_size=9, padding_mode="replicate", grid=(1, 1))),
                               ((1, 2, 102, 102), 2 * 2 * 4, dict(kernel_size=2, padding=0, dilation=101, grid=(1, 1)))]:
        fh, fw = kwargs.pop("grid")
        xt, wt = randn(*shape, grad=True), randn(1, kw_, fh, fw, grad=True)
        patch_conv2d(xt, wt, padding_mode=kwargs.pop("padding_mode", "zeros"), **kwargs).sum().backward()
        calls.append(f"patch_conv2d x{tuple(shape)} grid {fh}x{fw} (+ backward)")
    hidden, out, k = 6, 4, 3
    xi = randn(2, 5, 12, 8)
    wi = randn(2, 5 * hidden + hidden * k * k + hidden * out, 3, 2) * 0.5
    bns = [(torch.rand(n, generator=g).to(dev) + 0.5, randn(n)) for n in (hidden, hidden, out)]
    patch_inverted_residual(xi, wi, hidden, *bns, kernel_size=k)
    calls.append("patch_inverted_residual")
    # Two hidden chunks, two output-channel tiles, three pixel tiles per cell; then a kernel no
    # tile fits (the direct kernel).
    for C, hid, co, k, H, W, fh, fw in [(3, 40, 36, 3, 17, 37, 2, 1), (2, 2, 2, 111, 3, 2, 1, 1)]:
        bns = [(torch.rand(n, generator=g).to(dev) + 0.5, randn(n)) for n in (hid, hid, co)]
        patch_inverted_residual(randn(1, C, H, W), randn(1, C * hid + hid * k * k + hid * co, fh, fw) * 0.5,
                                hid, *bns, kernel_size=k, padding_mode="zeros")
        calls.append(f"patch_inverted_residual hidden={hid} out={co} k={k}")
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
