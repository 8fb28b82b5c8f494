"""The sampling papers' experiment (S-NET Fig. 4, SampleNet Fig. 5 / Table 1 style).

Classification accuracy of a frozen PointNet fed ``N / ratio`` sampled points of every test
cloud, against the sampling ratio, for random sampling, farthest point sampling (FPS), S-NET
(one network per ratio), ProgressiveNet (one network for all ratios) and SampleNet (one per
ratio). Learned samplers are evaluated as the papers do: generated points matched to input points
(``nn_match``: nearest neighbour, order-preserving unique, FPS completion).

Samplers are evaluated with their final weights (``checkpoint_last.pt``): the recipes' validation
split is the test split (as in the official code), so picking the best epoch on it would select
on test data. Every training goes through the recipes of :mod:`fastvision.tasks.sampling.recipe` (their defaults
unless told otherwise) and is cached in the output folder: re-running reuses finished runs and
resumes interrupted ones. Independent trainings run ``jobs`` at a time, each in its own process.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from fastvision.engine import CHECKPOINT, TrainConfig, fit, run_finished
from fastvision.models import load_model
from fastvision.tasks.arguments import int_list
from fastvision.tasks.sampling.recipe import (
    PointCloudData,
    PointNetTask,
    SamplerTask,
    TemperatureProfile,
    classify,
    sample_points,
)

__all__ = ["SamplingExperiment", "run_sampling_experiment", "METHODS"]

METHODS = ("random", "fps", "snet", "progressivenet", "samplenet")
LEARNED_PER_RATIO = ("snet", "samplenet")


@dataclass
class SamplingExperiment:
    out_dir: str = "fastvision-eval/sampling"
    data: PointCloudData = field(default_factory=lambda: PointCloudData(num_points=512, train_samples=2048))
    ratios: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128)
    seeds: tuple[int, ...] = (0,)
    methods: tuple[str, ...] = METHODS
    task_net: str | None = None  # checkpoint; trained with the pointnet recipe when None
    task_model: str = "pointnet_cls_vanilla"
    task_epochs: int = 6
    sampler_epochs: int = 20
    progressive_epochs: int = 24
    jobs: int = 2
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self):
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"unknown sampling methods {bad}; choose from {METHODS}")
        n = self.data.num_points
        for r in self.ratios:
            if r < 1 or n % r or n // r < 1:
                raise ValueError(f"sampling ratio {r} must divide num_points ({n})")


def _run_dir(exp: SamplingExperiment, method: str, ratio: int | None, seed: int) -> Path:
    name = method if ratio is None else f"{method}_r{ratio}"
    return Path(exp.out_dir) / f"seed{seed}" / name


def _train_job(job: dict) -> str:
    """One training run (executed in a worker process)."""
    torch.set_num_threads(job["threads"])
    exp: SamplingExperiment = job["exp"]
    config = TrainConfig(out_dir=job["out"], epochs=job["epochs"], device=exp.device,
                         seed=job["seed"], resume=True, progress=False)
    if job["method"] == "pointnet":
        task = PointNetTask(exp.data, exp.task_model)
    else:
        kind = "progressivenet" if job["method"] == "progressivenet" else job["method"]
        n_out = exp.data.num_points // job["ratio"] if job["ratio"] else exp.data.num_points
        temperature = TemperatureProfile("learned")
        task = SamplerTask(kind, exp.data, job["task_net"], num_out_points=n_out,
                           temperature=temperature)
    t0 = time.perf_counter()
    fit(task, config)
    return f"{job['out']} ({time.perf_counter() - t0:.0f} s)"


def _run_jobs(jobs: list[dict], workers: int, progress: bool) -> None:
    if not jobs:
        return
    if workers <= 1:
        for job in jobs:
            done = _train_job(job)
            if progress:
                print(f"[eval sampling] trained {done}", flush=True)
        return
    with mp.get_context("spawn").Pool(workers) as pool:
        for done in pool.imap_unordered(_train_job, jobs):
            if progress:
                print(f"[eval sampling] trained {done}", flush=True)


def _train_all(exp: SamplingExperiment) -> str:
    threads = max(1, torch.get_num_threads() // max(1, exp.jobs))
    task_net = exp.task_net
    if task_net is None:
        run = Path(exp.out_dir) / "task_net"
        if not run_finished(run, exp.task_epochs):
            _run_jobs([{"exp": exp, "method": "pointnet", "ratio": None, "seed": 0,
                        "out": str(run), "epochs": exp.task_epochs,
                        "threads": torch.get_num_threads()}], 1, exp.progress)
        task_net = str(run / CHECKPOINT)
    jobs = []
    for seed in exp.seeds:
        if "progressivenet" in exp.methods:
            run = _run_dir(exp, "progressivenet", None, seed)
            if not run_finished(run, exp.progressive_epochs):
                jobs.append({"method": "progressivenet", "ratio": None, "epochs": exp.progressive_epochs,
                             "out": str(run), "seed": seed})
        for method in LEARNED_PER_RATIO:
            if method not in exp.methods:
                continue
            for ratio in sorted(exp.ratios, reverse=True):
                run = _run_dir(exp, method, ratio, seed)
                if not run_finished(run, exp.sampler_epochs):
                    jobs.append({"method": method, "ratio": ratio, "epochs": exp.sampler_epochs,
                                 "out": str(run), "seed": seed})
    for job in jobs:
        job.update(exp=exp, task_net=task_net, threads=threads)
    _run_jobs(jobs, exp.jobs, exp.progress)
    return task_net


@torch.no_grad()
def _accuracy(task_net, loader, sampler_fn, device) -> float:
    correct = total = 0
    for cloud, labels in loader:
        cloud, labels = cloud.to(device), labels.to(device)
        correct += int((classify(task_net, sampler_fn(cloud)).argmax(1) == labels).sum())
        total += labels.numel()
    return correct / total


def _evaluate(exp: SamplingExperiment, task_net_path: str) -> dict:
    from fastvision.ops import farthest_point_sample

    device = torch.device(exp.device)
    task_net, _ = load_model(task_net_path, device)
    _, test = exp.data.load(augment_train=False)
    loader = torch.utils.data.DataLoader(test, batch_size=64, shuffle=False)
    n = exp.data.num_points
    acc: dict[str, dict[int, list[float]]] = {m: {r: [] for r in exp.ratios} for m in exp.methods}
    full = _accuracy(task_net, loader, lambda c: c, device)
    for seed in exp.seeds:
        for ratio in exp.ratios:
            m = n // ratio
            if "random" in exp.methods:
                g = torch.Generator(device=device).manual_seed(seed * 1000 + ratio)

                def random_sample(c, m=m, g=g):
                    idx = torch.argsort(torch.rand(c.shape[:2], generator=g, device=c.device), 1)[:, :m]
                    return torch.gather(c, 1, idx.unsqueeze(-1).expand(-1, -1, 3))

                acc["random"][ratio].append(_accuracy(task_net, loader, random_sample, device))
            if "fps" in exp.methods:
                g = torch.Generator(device=device).manual_seed(seed * 1000 + ratio)

                def fps(c, m=m, g=g):
                    idx = farthest_point_sample(c, m, start="random", generator=g)
                    return torch.gather(c, 1, idx.unsqueeze(-1).expand(-1, -1, 3))

                acc["fps"][ratio].append(_accuracy(task_net, loader, fps, device))
            for method in LEARNED_PER_RATIO:
                if method in exp.methods:
                    sampler, _ = load_model(_run_dir(exp, method, ratio, seed) / CHECKPOINT,
                                                       device)
                    acc[method][ratio].append(
                        _accuracy(task_net, loader, lambda c, s=sampler: sample_points(s, c), device))
        if "progressivenet" in exp.methods:
            sampler, _ = load_model(_run_dir(exp, "progressivenet", None, seed) / CHECKPOINT,
                                               device)
            # One matched ordering per cloud, prefixes for every ratio (infer_progressiveNet.py).
            orderings = [sample_points(sampler, c.to(device)) for c, _ in loader]
            for ratio in exp.ratios:
                it = iter(orderings)
                acc["progressivenet"][ratio].append(
                    _accuracy(task_net, loader, lambda c, m=n // ratio: next(it)[:, :m], device))
    return {"full_cloud_accuracy": full, "accuracy": acc}


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


_LABELS = {"random": "Random", "fps": "FPS", "snet": "S-NET", "progressivenet": "ProgressiveNet",
           "samplenet": "SampleNet"}


def _table(exp: SamplingExperiment, results: dict) -> str:
    head = "| method | " + " | ".join(str(r) for r in exp.ratios) + " |"
    rows = [head, "|---|" + "---:|" * len(exp.ratios)]
    for method in exp.methods:
        cells = []
        for r in exp.ratios:
            mean, std = _mean_std(results["accuracy"][method][r])
            cells.append(f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if len(exp.seeds) > 1 else ""))
        rows.append(f"| {_LABELS[method]} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _plot(exp: SamplingExperiment, results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method in exp.methods:
        stats = [_mean_std(results["accuracy"][method][r]) for r in exp.ratios]
        ax.errorbar(exp.ratios, [100 * m for m, _ in stats], yerr=[100 * s for _, s in stats],
                    marker="o", capsize=3, label=_LABELS[method])
    ax.axhline(100 * results["full_cloud_accuracy"], color="gray", ls="--", lw=1,
               label=f"complete cloud ({exp.data.num_points} points)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(exp.ratios, [str(r) for r in exp.ratios])
    ax.set_xlabel("sampling ratio (input points / sampled points)")
    ax.set_ylabel("classification accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    data = "embedded procedural shapes" if exp.data.source == "embedded" else "ModelNet40"
    ax.set_title(f"PointNet on sampled clouds ({data})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def learned_beat_fps(exp: SamplingExperiment, results: dict, min_ratio: int = 16) -> dict:
    """For every learned method and ratio >= min_ratio: does its mean accuracy exceed FPS's?"""
    out = {}
    if "fps" not in exp.methods:
        return out
    for method in ("snet", "progressivenet", "samplenet"):
        if method in exp.methods:
            out[method] = {r: _mean_std(results["accuracy"][method][r])[0]
                           > _mean_std(results["accuracy"]["fps"][r])[0]
                           for r in exp.ratios if r >= min_ratio}
    return out


def run_sampling_experiment(exp: SamplingExperiment) -> dict:
    """Train what is missing, evaluate every method at every ratio, write the table
    (``results.md``), the plot (``accuracy_vs_ratio.png``) and ``results.json``; return the results."""
    out = Path(exp.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    task_net = _train_all(exp)
    results = _evaluate(exp, task_net)
    results["beats_fps_at_ratio_16_and_above"] = learned_beat_fps(exp, results)
    results["experiment"] = {**asdict(exp), "task_net": task_net}
    results["seconds"] = time.perf_counter() - t0
    table = _table(exp, results)
    checks = results["beats_fps_at_ratio_16_and_above"]
    verdict = ", ".join(f"{_LABELS[m]}: {'yes' if all(v.values()) else 'no'}" for m, v in checks.items())
    (out / "results.md").write_text(
        f"# Classification accuracy (%) vs sampling ratio\n\n"
        f"Frozen {exp.task_model} task network, {exp.data.num_points}-point clouds "
        f"({exp.data.source} data); complete-cloud accuracy "
        f"{100 * results['full_cloud_accuracy']:.1f}%. Seeds: {list(exp.seeds)}.\n\n{table}\n\n"
        f"Learned samplers above FPS at every ratio >= 16: {verdict}.\n")
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    _plot(exp, results, out / "accuracy_vs_ratio.png")
    if exp.progress:
        print(table)
        print(f"learned samplers above FPS at ratios >= 16: {verdict}")
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fastvision eval sampling``."""
    defaults = SamplingExperiment()  # one source for the experiment's defaults
    parser.add_argument("--out", default="fastvision-eval/sampling", help="output (and cache) folder")
    parser.add_argument("--data", default="embedded",
                        help="'embedded' (procedural shapes) or a modelnet40_ply_hdf5_2048 folder")
    parser.add_argument("--num-points", type=int, default=None,
                        help=f"points per cloud (default: {defaults.data.num_points} on the embedded "
                        "data to fit a 2-core CPU "
                        "budget, 1024 on ModelNet40 as the papers)")
    parser.add_argument("--train-samples", type=int, default=defaults.data.train_samples,
                        help="embedded data: training clouds")
    parser.add_argument("--test-samples", type=int, default=defaults.data.test_samples,
                        help="embedded data: test clouds")
    parser.add_argument("--ratios", type=int_list, default=list(defaults.ratios))
    parser.add_argument("--seeds", type=int_list, default=list(defaults.seeds),
                        help="training / sampling seeds")
    parser.add_argument("--methods", type=lambda t: t.split(","), default=list(METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--task-net", default=None, help="task-network checkpoint (default: train one)")
    parser.add_argument("--task-model", default=defaults.task_model,
                        choices=["pointnet_cls", "pointnet_cls_vanilla"])
    parser.add_argument("--task-epochs", type=int, default=defaults.task_epochs)
    parser.add_argument("--sampler-epochs", type=int, default=defaults.sampler_epochs)
    parser.add_argument("--progressive-epochs", type=int, default=defaults.progressive_epochs)
    parser.add_argument("--jobs", type=int, default=defaults.jobs,
                        help="trainings run in parallel processes (threads are split between them)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quiet", action="store_true")


def run(args) -> int:
    exp = SamplingExperiment(
        out_dir=args.out,
        data=PointCloudData(
            args.data,
            args.num_points or (SamplingExperiment().data.num_points if args.data == "embedded" else 1024),
            args.train_samples, args.test_samples),
        ratios=tuple(args.ratios), seeds=tuple(args.seeds), methods=tuple(args.methods),
        task_net=args.task_net, task_model=args.task_model, task_epochs=args.task_epochs,
        sampler_epochs=args.sampler_epochs, progressive_epochs=args.progressive_epochs,
        jobs=args.jobs, device="cuda" if args.device == "cuda" else "cpu", progress=not args.quiet)
    run_sampling_experiment(exp)
    return 0
