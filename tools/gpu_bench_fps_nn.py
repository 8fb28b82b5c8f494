"""Old vs new vs competitor for the issue-20 point kernels, in one run (tools/gpu-check step 5).

farthest_point_sample: the multi-block path (new, chosen automatically), the one-block-per-cloud
path (old; forced with FASTVISION_FPS_SINGLE_BLOCK=1, the design of PyTorch3D and torch_cluster),
and PyTorch3D's ``sample_farthest_points`` / torch_cluster's ``fps`` when they are installed
(they are not pinned dependencies: a missing one is reported as skipped). nn_distance: the
one-pass kernel (new) against two K = 1 ``knn_points`` searches (old: exactly the kernels the CUDA
nn_distance ran before the one-pass kernel) and the brute-force cdist + min a user would write.
Results of every run are checked equal to the new kernel's before timing (cdist: its difference
is reported; its matmul form is not exact). Writes a Markdown table and JSON to --out.

Usage: python tools/gpu_bench_fps_nn.py [--device cuda|cpu] [--small] [--out DIR]
(--device cpu --small: the dry run of tools/gpu-check, tiny shapes, the CPU kernels).
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch

from fastvision.ops import farthest_point_sample, knn_points, nn_distance

FPS_SHAPES = [(1, 1_000_000, 4096), (1, 100_000, 4096), (8, 8192, 1024), (32, 1024, 64)]
FPS_SMALL = [(1, 3000, 64), (4, 500, 32)]
NN_SHAPES = [(32, 2048, 1024), (1, 100_000, 100_000)]
NN_SMALL = [(2, 300, 200)]


def timed(fn, device, repeats):
    fn()  # warm-up (and the first result)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2], out


def fps_competitors():
    found = {}
    try:
        from pytorch3d.ops import sample_farthest_points  # noqa: PLC0415

        found["PyTorch3D sample_farthest_points"] = (
            lambda x, K: sample_farthest_points(x, K=K)[1])
    except ImportError:
        pass
    try:
        from torch_cluster import fps  # noqa: PLC0415

        def cluster(x, K):
            B, P, D = x.shape
            batch = torch.arange(B, device=x.device).repeat_interleave(P)
            return fps(x.reshape(-1, D), batch, ratio=K / P)
        found["torch_cluster fps"] = cluster
    except ImportError:
        pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--out", default="bench-fps-nn")
    args = parser.parse_args()
    dev = args.device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    repeats = 3 if args.small else 10
    rows = []
    g = torch.Generator().manual_seed(0)
    competitors = fps_competitors()
    for B, P, K in FPS_SMALL if args.small else FPS_SHAPES:
        x = torch.rand(B, P, 3, generator=g).to(dev)
        new_ms, new = timed(lambda: farthest_point_sample(x, K), dev, repeats)
        os.environ["FASTVISION_FPS_SINGLE_BLOCK"] = "1"
        try:
            old_ms, old = timed(lambda: farthest_point_sample(x, K), dev, repeats)
        finally:
            del os.environ["FASTVISION_FPS_SINGLE_BLOCK"]
        assert torch.equal(old, new), "the one-block path disagrees with the multi-block path"
        row = {"op": "farthest_point_sample", "shape": f"B={B} P={P} K={K}",
               "new_ms": new_ms, "old_ms": old_ms}
        for name, fn in competitors.items():
            ms, _ = timed(lambda fn=fn: fn(x, K), dev, repeats)
            row[name] = ms
        rows.append(row)
    for B, P1, P2 in NN_SMALL if args.small else NN_SHAPES:
        a = torch.rand(B, P1, 3, generator=g).to(dev)
        b = torch.rand(B, P2, 3, generator=g).to(dev)
        new_ms, (d12, i12, d21, i21) = timed(lambda: nn_distance(a, b), dev, repeats)
        def two_searches():
            forward, backward = knn_points(a, b, K=1), knn_points(b, a, K=1)
            return (forward.dists[..., 0], forward.idx[..., 0], backward.dists[..., 0],
                    backward.idx[..., 0])
        old_ms, old = timed(two_searches, dev, repeats)
        for o, n in zip(old, (d12, i12, d21, i21)):
            assert torch.equal(o, n), "the two K = 1 searches disagree with the one-pass kernel"
        row = {"op": "nn_distance", "shape": f"B={B} P1={P1} P2={P2}", "new_ms": new_ms,
               "old_ms": old_ms}
        if B * P1 * P2 <= 2**31:  # cdist's (B, P1, P2) matrix must fit
            def cdist():
                m = torch.cdist(a, b).square()
                return m.min(2).values, m.min(1).values
            ms, (c12, c21) = timed(cdist, dev, repeats)
            row["cdist + min (matmul path: approximate)"] = ms
            row["cdist max abs diff"] = float(max((c12 - d12).abs().max(), (c21 - d21).abs().max()))
        rows.append(row)
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    (out / "fps-nn.json").write_text(json.dumps({"device": name, "rows": rows}, indent=1))
    keys = sorted({k for r in rows for k in r} - {"op", "shape"})
    lines = [f"device: {name}", "", "| op | shape | " + " | ".join(keys) + " |",
             "|---|---|" + "---:|" * len(keys)]
    for r in rows:
        cells = [f"{r[k]:.3f}" if isinstance(r.get(k), float) else "-" for k in keys]
        lines.append(f"| {r['op']} | {r['shape']} | " + " | ".join(cells) + " |")
    (out / "fps-nn.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not competitors:
        print("PyTorch3D and torch_cluster are not installed: competitor columns skipped")


if __name__ == "__main__":
    main()
