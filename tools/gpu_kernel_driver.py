"""Calls every fastvision kernel once, forward and backward, on small inputs: the program that
tools/gpu-check runs under compute-sanitizer (memcheck, racecheck, synccheck).

Usage: python tools/gpu_kernel_driver.py [--device cuda|cpu]   (cpu: a dry run of the calls)
"""

import argparse

import torch

from fastvision.ops import (farthest_point_sample, knn_points, nn_distance, padnet_encoder,
                            patch_conv2d, patch_inverted_residual, soft_project)
from fastvision.ops.padnet import padnet_param_count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    dev = parser.parse_args().device
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
