"""Calls every fastvision kernel once, forward and backward, on small inputs: the program that
tools/gpu-check runs under compute-sanitizer (memcheck, racecheck, synccheck).

Usage: python tools/gpu_kernel_driver.py [--device cuda|cpu]   (cpu: a dry run of the calls)
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


# HyperSeg-M's decoder at 1024x512 (fastvision/tasks/hyperseg/benchmark.py): name, kind, cin,
# cout or hidden, out, height, width; the patch grid is 16 x 32.
PATCH_LEVELS = [
    ("level0", "conv1x1", 82, 64, None, 16, 32),
    ("level1", "conv1x1", 94, 32, None, 32, 64),
    ("level2", "conv1x1", 44, 16, None, 64, 128),
    ("level3_dw", "dw3x3", 48, 48, None, 128, 256),
    ("level4_dw", "dw3x3", 68, 68, None, 256, 512),
    ("level3_ir", "ir", 24, 48, 16, 128, 256),
    ("level4_ir", "ir", 34, 68, 19, 256, 512),
]


def _median_ms(fn, dev: str, repeats: int = 30) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if dev == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            import time
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


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
    for name, kind, cin, c2, c3, h, w in PATCH_LEVELS:
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
    parser.add_argument("--bench-patch", metavar="OUT.json", help="time the patch kernels (old / new / competitor)")
    args = parser.parse_args()
    dev = args.device
    if args.bench_patch:
        bench_patch(dev, args.bench_patch)
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
    for P, D in [(1000, 3), (1200, 64), (60000, 1)]:
        farthest_point_sample(randn(2, P, D), K=8)
        calls.append(f"farthest_point_sample P={P} D={D}")
    # Soft projection, forward and backward.
    q, pts = randn(2, 40, 3, grad=True), randn(2, 100, 3, grad=True)
    soft_project(q, pts, 0.5, k=7).sum().backward()
    calls.append("soft_project (+ backward)")
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
