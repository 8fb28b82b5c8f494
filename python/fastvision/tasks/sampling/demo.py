"""Demo section: learned point-cloud sampling (S-NET / SampleNet) on the embedded shapes.

1. ``soft_project`` and ``nn_match`` against the official formulations (forward and gradients).
2. The shipped embedded-data weights (``fastvision/weights/``: a PointNet task network and S-NET /
   SampleNet trained for ratio 32) against random sampling and FPS on held-out procedural
   shapes, and a picture of one cloud sampled each way.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from fastvision.ops import farthest_point_sample, nn_match, soft_project

_RATIO = 32
# The shipped named weights this section runs (task network, S-NET, SampleNet at ratio 32).
SHIPPED = ("pointnet_cls_vanilla.embedded", "snet.embedded_r32", "samplenet.embedded_r32")


def _op_checks(device: str) -> list[dict]:
    from fastvision.tasks.sampling.benchmark import official_nn_matching, official_soft_projection

    g = torch.Generator().manual_seed(0)
    points = torch.rand(8, 1024, 3, generator=g).to(device)
    query = (torch.rand(8, 64, 3, generator=g).to(device)).requires_grad_(True)
    t = torch.tensor(0.1, device=device, requires_grad=True)
    rows = []
    start = time.perf_counter()
    ours = soft_project(query, points, t, 8, min_sigma=1e-4)
    seconds = time.perf_counter() - start
    grads = [g.detach() for g in torch.autograd.grad(ours.square().sum(), (query, t))]
    ref = official_soft_projection(query, points, t, 8, min_sigma=1e-4)
    ref_grads = [g.detach() for g in torch.autograd.grad(ref.square().sum(), (query, t))]
    diff = max(float((ours - ref).detach().abs().max()),
               *(float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) for a, b in zip(grads, ref_grads)))
    rows.append({"op": "soft_project k=8 (+ grads)", "device": device, "shape": "(8,64)->(8,1024)",
                 "indices_equal": True, "max_abs_diff": diff, "ok": diff <= 1e-4, "seconds": seconds})
    generated = torch.rand(8, 64, 3, generator=g).to(device)
    start = time.perf_counter()
    idx = nn_match(generated, points, 64)
    seconds = time.perf_counter() - start
    # the official path returns the matched coordinates (float64)
    same = bool(torch.equal(_gather(points, idx).cpu().double(),
                            official_nn_matching(points.cpu(), generated.cpu(), 64)))
    rows.append({"op": "nn_match (+ FPS completion)", "device": device, "shape": "(8,64)->(8,1024)",
                 "indices_equal": same, "max_abs_diff": 0.0, "ok": same, "seconds": seconds})
    return rows


def _gather(cloud, idx):
    return torch.gather(cloud, 1, idx.unsqueeze(-1).expand(-1, -1, 3))


@torch.no_grad()
def _accuracies(device: str) -> tuple[dict, dict, torch.Tensor]:
    from fastvision.data import ProceduralShapes
    from fastvision.tasks.sampling.recipe import classify, sample_points
    from fastvision.models import load_model

    task_net, _ = load_model(SHIPPED[0], device)
    samplers = {"S-NET": load_model(SHIPPED[1], device)[0],
                "SampleNet": load_model(SHIPPED[2], device)[0]}
    m = samplers["SampleNet"].num_out_points
    num_points = m * _RATIO
    test = ProceduralShapes("test", num_points=num_points, num_samples=256, seed=0)
    cloud, labels = test.points.to(device), test.labels.to(device)
    g = torch.Generator(device=device).manual_seed(0)
    sampled = {
        "complete cloud": cloud,
        "random": _gather(cloud, torch.argsort(torch.rand(cloud.shape[:2], generator=g, device=device), 1)[:, :m]),
        "FPS": _gather(cloud, farthest_point_sample(cloud, m, start="random", generator=g)),
    }
    for name, sampler in samplers.items():
        sampled[name] = sample_points(sampler, cloud)
    acc = {name: float((classify(task_net, pts).argmax(1) == labels).float().mean())
           for name, pts in sampled.items()}
    return acc, {"num_points": num_points, "num_sampled": m}, {k: v[0].cpu() for k, v in sampled.items()}


def _plot(path: Path, examples: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in examples if n != "complete cloud"]
    fig = plt.figure(figsize=(3.2 * len(names), 3.2))
    full = examples["complete cloud"]
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1, projection="3d")
        ax.scatter(full[:, 0], full[:, 2], full[:, 1], s=1, c="lightgray")
        pts = examples[name]
        ax.scatter(pts[:, 0], pts[:, 2], pts[:, 1], s=14, c="crimson")
        ax.set_title(name)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def section(out_dir: Path, devices: list[str]) -> tuple[list[str], list[dict], bool]:
    """Run the section; returns (report lines, op-check rows, ok)."""
    from fastvision.models import list_weights

    rows = [r for d in devices for r in _op_checks(d)]
    lines = ["## Learned point-cloud sampling (S-NET, SampleNet)", ""]
    if not set(SHIPPED) <= set(list_weights()):
        lines.append("Shipped sampling weights are missing from this installation; only the op "
                     "checks ran.")
        return lines, rows, all(r["ok"] for r in rows)
    acc, sizes, examples = _accuracies(devices[-1])
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot(out_dir / "sampling.png", examples)
    lines += [f"PointNet accuracy on 256 held-out embedded shapes, {sizes['num_sampled']} of "
              f"{sizes['num_points']} points kept (ratio {_RATIO}); samplers shipped in "
              "`fastvision/weights/` (recipe: `fastvision eval sampling`):", "",
              "| sampling | accuracy |", "|---|---:|"]
    lines += [f"| {name} | {100 * a:.1f}% |" for name, a in acc.items()]
    lines += ["", "![sampled points](sampling.png)", ""]
    print("\n".join(lines[2:-2]))
    return lines, rows, all(r["ok"] for r in rows)
