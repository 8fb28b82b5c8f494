"""``fastvision eval segmentation-study``: the segmentation papers' ablations, reproduced in shape
on the embedded procedural scenes.

Each model trains with its family's official recipe (:mod:`fastvision.tasks.segmentation.recipe`:
optimiser, schedule, loss, augmentation) at a CPU size, and is scored on the held-out validation
scenes (a split the training never sees) with its final weights:

* BiSeNet V2 with its four booster heads (the official training) and without them: the paper's
  claim is that the boosters raise mIoU at no inference cost (they are dropped at inference);
* HRNetV2-W18-Small-v1 with the HRNetV2 representation (all four resolutions upsampled and
  concatenated, the official head) and with the HRNetV1 representation (the high-resolution
  branch alone): the paper's representation-head ablation, V2 above V1;
* HyperSeg-M with its patch-wise dynamic decoder and the same network with a static decoder
  (:class:`fastvision.models.hyperseg.StaticMultiScaleDecoder`, widened to a similar parameter
  count): the paper's claim is that the dynamic decoder is the better one.

Reported per run: mIoU, per-class IoU and pixel accuracy (mean and spread over the seeds), and
per architecture the inference parameters, MACs (:mod:`fastvision.models.flops`) and the CPU
time per image at the training resolution (batch 1, median over rounds that alternate the
models, so that a load change on a shared machine hits them alike). Writes ``results.json``,
``results.md`` and ``miou_vs_time.png`` (mIoU against time per image, as the papers'
speed/accuracy figures) into the output folder, where every training run is cached
(``seed<S>/<run>/``): re-running reuses finished runs and resumes interrupted ones.

The CPU size (128x64 scenes, 16 epochs of 256 scenes, batch 8: about an hour for the six runs
on two quiet CPU cores, estimated from the CPU time per epoch measured at 4 epochs, where BiSeNet
V2 had barely started to learn) replaces the official Cityscapes schedules
(hundreds of epochs at 1024x512 and more on GPUs); BiSeNet V2's 1000-iteration warm-up is scaled
to the same fraction (1000 / 150000) of the shorter run.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fastvision.engine import CHECKPOINT, TrainConfig, fit, run_finished
from fastvision.metrics.segmentation import mean_iou
from fastvision.models import get_model, load_model
from fastvision.models.bisenetv2 import drop_booster_heads
from fastvision.models.flops import count_ops, count_params
from fastvision.tasks.arguments import height_width, int_list, name_list
from fastvision.tasks.segmentation.recipe import (
    SegmentationData,
    SegmentationTask,
    family_of,
    recipe_for,
)

from .inference import evaluate_segmentation

__all__ = ["StudyRun", "RUNS", "CLAIMS", "SegmentationStudy", "run_study", "add_arguments", "run"]

# CoinCheung configs/bisenetv2_city.py: warmup_iters 1000 of max_iter 150000.
BISENET_WARMUP_FRACTION = 1000 / 150000
# Level widths x 4 bring the static HyperSeg-M decoder's parameters within a few percent of the
# dynamic one's (its signal2weights convolutions); see tests/test_models_hyperseg.py.
HYPERSEG_STATIC_WIDTH = 4.0


@dataclass(frozen=True)
class StudyRun:
    """One trained configuration: its cache folder name, table label, registered model and
    builder options beyond the class count."""

    key: str
    label: str
    model: str
    kwargs: dict = field(default_factory=dict)


RUNS: tuple[StudyRun, ...] = (
    StudyRun("bisenetv2", "BiSeNet V2, booster heads", "bisenetv2"),
    StudyRun("bisenetv2_no_boosters", "BiSeNet V2, no boosters", "bisenetv2", {"aux_mode": "eval"}),
    StudyRun("hrnetv2_w18_small_v1", "HRNetV2-W18-Small-v1 (V2 head)", "hrnetv2_w18_small_v1"),
    StudyRun("hrnetv1_w18_small_v1", "HRNet-W18-Small-v1, V1 head", "hrnetv2_w18_small_v1",
             {"representation": "v1"}),
    StudyRun("hyperseg_m", "HyperSeg-M, dynamic decoder", "hyperseg_m_cityscapes"),
    StudyRun("hyperseg_m_static", "HyperSeg-M, static decoder", "hyperseg_m_cityscapes",
             {"decoder": "static", "static_width": HYPERSEG_STATIC_WIDTH}),
)
RUN_KEYS = tuple(r.key for r in RUNS)

# (claim, run expected better, run expected worse)
CLAIMS: tuple[tuple[str, str, str], ...] = (
    ("BiSeNet V2: the booster heads raise mIoU (no inference cost)", "bisenetv2",
     "bisenetv2_no_boosters"),
    ("HRNet: the V2 representation beats the V1 representation", "hrnetv2_w18_small_v1",
     "hrnetv1_w18_small_v1"),
    ("HyperSeg: the dynamic decoder beats a static decoder of similar size", "hyperseg_m",
     "hyperseg_m_static"),
)


@dataclass
class SegmentationStudy:
    out_dir: str = "fastvision-eval/segmentation-study"
    image_size: tuple[int, int] = (64, 128)  # (H, W) of the embedded scenes
    train_samples: int = 256
    val_samples: int = 64
    num_classes: int = 19
    epochs: int = 16
    batch_size: int = 8
    seeds: tuple[int, ...] = (0,)
    runs: tuple[str, ...] = RUN_KEYS
    timing_rounds: int = 10
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self):
        bad = [r for r in self.runs if r not in RUN_KEYS]
        if bad:
            raise ValueError(f"unknown study runs {bad}; choose from {', '.join(RUN_KEYS)}")
        for name in ("train_samples", "val_samples", "epochs", "batch_size", "timing_rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.train_samples < self.batch_size:
            raise ValueError(f"train_samples ({self.train_samples}) must hold one batch "
                             f"({self.batch_size})")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        h, w = self.image_size
        if h % 32 or w % 32:  # HyperSeg needs multiples of 32
            raise ValueError(f"image_size must be multiples of 32, got {h}x{w}")

    def data(self) -> SegmentationData:
        return SegmentationData("embedded", tuple(self.image_size), self.train_samples,
                                self.val_samples, self.num_classes)

    def selected(self) -> list[StudyRun]:
        return [r for r in RUNS if r.key in self.runs]


def run_dir(study: SegmentationStudy, run: StudyRun, seed: int) -> Path:
    return Path(study.out_dir) / f"seed{seed}" / run.key


def _task(study: SegmentationStudy, run: StudyRun) -> SegmentationTask:
    steps = study.train_samples // study.batch_size
    total = study.epochs * steps * study.batch_size
    family = family_of(run.model)
    warmup = None
    if recipe_for(run.model).warmup_iters:
        warmup = max(1, round(study.epochs * steps * BISENET_WARMUP_FRACTION))
    return SegmentationTask(run.model, study.data(), total, study.batch_size, family=family,
                            warmup_iters=warmup, epoch_samples=steps * study.batch_size,
                            model_kwargs=run.kwargs)


def _train(study: SegmentationStudy) -> None:
    for seed in study.seeds:  # every run of a seed before the next seed: one seed first
        for run in study.selected():
            out = run_dir(study, run, seed)
            if run_finished(out, study.epochs):
                continue
            config = TrainConfig(out_dir=str(out), epochs=study.epochs, batch_size=study.batch_size,
                                 eval_batch_size=study.batch_size, device=study.device, seed=seed,
                                 resume=True, eval_every=study.epochs, progress=False)
            t0 = time.perf_counter()
            fit(_task(study, run), config)
            if study.progress:
                print(f"[segmentation-study] trained {out} ({time.perf_counter() - t0:.0f} s)",
                      flush=True)


def inference_model(model: torch.nn.Module, spec: dict) -> torch.nn.Module:
    """The model as deployed: BiSeNet V2 trained with boosters loses its booster heads (the
    official ``aux_mode="eval"``); anything else is returned as it is."""
    if getattr(model, "aux_mode", None) != "train":
        return model
    kwargs = {**spec.get("kwargs", {}), "aux_mode": "eval"}
    deployed = get_model(spec["name"], **kwargs)
    deployed.load_state_dict(drop_booster_heads(model.state_dict()))
    return deployed.to(next(model.parameters()).device).eval()


def _evaluate_run(study: SegmentationStudy, run: StudyRun, seed: int) -> dict:
    """mIoU, per-class IoU and pixel accuracy of a finished run's final weights (cached in
    ``eval.json`` beside them)."""
    out = run_dir(study, run, seed)
    cache = out / "eval.json"
    stamp = (out / CHECKPOINT).stat().st_mtime_ns
    if cache.is_file():
        record = json.loads(cache.read_text())
        if record.get("checkpoint_mtime_ns") == stamp:
            return record
    model, meta = load_model(out / CHECKPOINT, study.device)
    val = study.data().load(recipe_for(run.model), "val")
    loader = DataLoader(val, batch_size=study.batch_size, shuffle=False)
    metrics, _ = evaluate_segmentation(model, loader, torch.device(study.device), study.num_classes,
                                       align_corners=recipe_for(run.model).eval_align_corners)
    result = metrics.compute()
    record = {"miou": result["miou"], "miou_absent_as_zero": mean_iou(metrics.conf, "zero"),
              "pixel_acc": result["pixel_acc"],
              "iou": [None if math.isnan(v) else v for v in result["iou"]],
              "train_seconds": sum(e["time_s"] for e in meta["history"]),
              "checkpoint_mtime_ns": stamp}
    cache.write_text(json.dumps(record, indent=2))
    return record


@torch.no_grad()
def _cost(study: SegmentationStudy, runs: list[StudyRun]) -> dict:
    """Per architecture: inference parameters, MACs, and the median CPU time per image (batch 1
    at the training resolution) over rounds that alternate the models."""
    h, w = study.image_size
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0)).to(study.device)
    models, cost = {}, {}
    for run in runs:
        model, meta = load_model(run_dir(study, run, study.seeds[0]) / CHECKPOINT, study.device)
        model = inference_model(model, meta["model_spec"])
        models[run.key] = model
        cost[run.key] = {"params": count_params(model), "macs": count_ops(model, x).total}
        model(x)  # warm-up: oneDNN picks its kernels on the first call
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(study.timing_rounds):
        for key, model in models.items():
            start = time.perf_counter()
            model(x)
            if study.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[key].append(time.perf_counter() - start)
    for key in models:
        cost[key]["ms_per_image"] = 1000 * statistics.median(times[key])
    return cost


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def claim_verdicts(study: SegmentationStudy, results: dict) -> list[dict]:
    """For each claim whose two runs were trained: the mIoU of both per seed, and whether the
    expected one is ahead on average and in every seed."""
    verdicts = []
    for text, better, worse in CLAIMS:
        if better not in results["runs"] or worse not in results["runs"]:
            continue
        a = [s["miou"] for s in results["runs"][better]["seeds"].values()]
        b = [s["miou"] for s in results["runs"][worse]["seeds"].values()]
        diffs = [x - y for x, y in zip(a, b)]
        verdicts.append({"claim": text, "better": better, "worse": worse,
                         "miou_better": a, "miou_worse": b, "difference_mean": mean_std(diffs)[0],
                         "difference_std": mean_std(diffs)[1],
                         "holds_on_average": mean_std(a)[0] > mean_std(b)[0],
                         "holds_in_every_seed": all(d > 0 for d in diffs)})
    return verdicts


def _pct(values: list[float], seeds: int) -> str:
    mean, std = mean_std(values)
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if seeds > 1 else "")


def _table(study: SegmentationStudy, results: dict) -> str:
    n = len(study.seeds)
    rows = ["| model | params | GMACs | ms / image | mIoU (%) | pixel acc. (%) |",
            "|---|---:|---:|---:|---:|---:|"]
    for run in study.selected():
        r = results["runs"][run.key]
        seeds = list(r["seeds"].values())
        rows.append(f"| {run.label} | {r['params']:,} | {r['macs'] / 1e9:.2f} | "
                    f"{r['ms_per_image']:.1f} | {_pct([s['miou'] for s in seeds], n)} | "
                    f"{_pct([s['pixel_acc'] for s in seeds], n)} |")
    return "\n".join(rows)


def _class_table(study: SegmentationStudy, results: dict) -> str:
    runs = study.selected()
    rows = ["| class | " + " | ".join(r.label for r in runs) + " |",
            "|---|" + "---:|" * len(runs)]
    for c in range(study.num_classes):
        cells = []
        for run in runs:
            values = [s["iou"][c] for s in results["runs"][run.key]["seeds"].values()
                      if s["iou"][c] is not None]
            cells.append(f"{100 * mean_std(values)[0]:.1f}" if values else "-")
        rows.append(f"| class{c} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _plot(study: SegmentationStudy, results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    points = {}
    for run in study.selected():
        r = results["runs"][run.key]
        mean, std = mean_std([s["miou"] for s in r["seeds"].values()])
        points[run.key] = (r["ms_per_image"], 100 * mean)
        ax.errorbar(r["ms_per_image"], 100 * mean, yerr=100 * std, marker="o", capsize=3,
                    label=run.label)
    for _, better, worse in CLAIMS:  # join each ablation pair
        if better in points and worse in points:
            (x0, y0), (x1, y1) = points[better], points[worse]
            ax.plot([x0, x1], [y0, y1], color="gray", lw=0.8, ls=":")
    ax.set_xlabel(f"CPU time per image, {study.image_size[1]}x{study.image_size[0]}, batch 1 (ms)")
    ax.set_ylabel("mIoU on the held-out scenes (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    seeds = len(study.seeds)
    ax.set_title(f"Segmentation ablations, embedded scenes ({study.epochs} epochs, "
                 f"{seeds} seed{'s' if seeds > 1 else ''})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_study(study: SegmentationStudy) -> dict:
    """Train what is missing, evaluate, write ``results.{json,md}`` and ``miou_vs_time.png``."""
    out = Path(study.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _train(study)
    runs = study.selected()
    cost = _cost(study, runs)
    results = {"runs": {}, "study": asdict(study), "threads": torch.get_num_threads()}
    for run in runs:
        seeds = {str(s): _evaluate_run(study, run, s) for s in study.seeds}
        results["runs"][run.key] = {"label": run.label, "model": run.model, "kwargs": run.kwargs,
                                    **cost[run.key], "seeds": seeds}
    results["claims"] = claim_verdicts(study, results)
    results["seconds"] = time.perf_counter() - t0
    table = _table(study, results)
    claims = "\n".join(
        f"- {v['claim']}: {'holds' if v['holds_on_average'] else 'does not hold'} on average "
        f"(mIoU difference {100 * v['difference_mean']:+.1f}"
        + (f" ± {100 * v['difference_std']:.1f}, in every seed: "
           f"{'yes' if v['holds_in_every_seed'] else 'no'}" if len(study.seeds) > 1 else "")
        + ")" for v in results["claims"])
    h, w = study.image_size
    (out / "results.md").write_text(
        f"# Segmentation ablations on the embedded scenes\n\n"
        f"{study.train_samples} training scenes {w}x{h}, {study.val_samples} held-out scenes, "
        f"{study.num_classes} classes; {study.epochs} epochs, batch {study.batch_size}, each "
        f"family's official recipe otherwise; final weights; seeds {list(study.seeds)}. Time: "
        f"batch 1 at {w}x{h}, {results['threads']} threads, median of {study.timing_rounds} "
        f"alternating rounds.\n\n{table}\n\n{claims}\n\nPer-class IoU (%, mean over seeds):\n\n"
        f"{_class_table(study, results)}\n")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    _plot(study, results, out / "miou_vs_time.png")
    if study.progress:
        print(table)
        print(claims)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fastvision eval segmentation-study``."""
    d = SegmentationStudy()
    parser.add_argument("--out", default=d.out_dir, help="output (and cache) folder")
    parser.add_argument("--image-size", type=height_width, default=d.image_size,
                        help=f"HxW of the embedded scenes (default {d.image_size[0]}x{d.image_size[1]})")
    parser.add_argument("--train-samples", type=int, default=d.train_samples)
    parser.add_argument("--val-samples", type=int, default=d.val_samples)
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--seeds", type=int_list, default=list(d.seeds), help="e.g. 0,1")
    parser.add_argument("--runs", type=name_list, default=list(RUN_KEYS),
                        help=f"comma-separated subset of {','.join(RUN_KEYS)}")
    parser.add_argument("--timing-rounds", type=int, default=d.timing_rounds)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quiet", action="store_true")


def run(args) -> int:
    study = SegmentationStudy(out_dir=args.out, image_size=tuple(args.image_size),
                              train_samples=args.train_samples, val_samples=args.val_samples,
                              epochs=args.epochs, batch_size=args.batch_size, seeds=tuple(args.seeds),
                              runs=tuple(args.runs), timing_rounds=args.timing_rounds,
                              device=args.device, progress=not args.quiet)
    run_study(study)
    return 0
