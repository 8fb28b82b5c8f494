"""``fastvision eval pose-study``: HRNet pose's inference post-processing, checked on the
embedded stick figures.

One HRNetV1 pose model per seed trains with the official recipe
(:mod:`fastvision.tasks.pose.recipe`: Adam 1e-3, the MultiStep schedule at the same fractions,
JointsMSE, the official augmentation) at a CPU size, then its final weights are scored on the
held-out figures with the COCO OKS AP four ways: with and without the flip test (the mean with
the shifted, flipped-back heatmaps of the mirrored picture, ``TEST.FLIP_TEST``), and with the
official quarter-pixel refinement (``TEST.POST_PROCESS``) against the plain heatmap argmax. The
official code uses both; the claim checked is that each raises the AP. The AP is pycocotools'
``COCOeval`` when it is installed (``pip install 'fastvision[study]'``), else
:mod:`fastvision.metrics.pose`'s implementation of the same algorithm; ``results.json`` says
which.

The training run is cached in the output folder (``seed<S>/<model>/``): re-running reuses it,
an interrupted one resumes. Writes ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fastvision.engine import CHECKPOINT, TrainConfig, fit, run_finished
from fastvision.models import load_model
from fastvision.tasks.arguments import int_list
from fastvision.tasks.pose.recipe import (
    POSE_MODELS,
    PoseData,
    PoseTask,
    evaluate_pose,
    parse_image_size,
    scaled_milestones,
)

__all__ = ["PoseStudy", "VARIANTS", "run_study", "add_arguments", "run"]

# (name, flip test, quarter-pixel refinement); the first is the official inference.
VARIANTS: tuple[tuple[str, bool, bool], ...] = (
    ("flip + refinement (official)", True, True),
    ("flip, argmax", True, False),
    ("no flip, refinement", False, True),
    ("no flip, argmax", False, False),
)


@dataclass
class PoseStudy:
    out_dir: str = "fastvision-eval/pose-study"
    model: str = "hrnetv1_w32_pose"
    image_size: tuple[int, int] = (96, 128)  # (width, height), the recipe's embedded default
    train_samples: int = 256
    val_samples: int = 64
    epochs: int = 10
    batch_size: int = 16
    seeds: tuple[int, ...] = (0,)
    backend: str = "auto"
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self):
        if self.model not in POSE_MODELS:
            raise ValueError(f"model must be one of {', '.join(POSE_MODELS)}, got {self.model!r}")
        for name in ("train_samples", "val_samples", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.train_samples < self.batch_size:
            raise ValueError(f"train_samples ({self.train_samples}) must hold one batch "
                             f"({self.batch_size})")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        if self.backend not in ("auto", "pycocotools", "fastvision"):
            raise ValueError(f"backend must be 'auto', 'pycocotools' or 'fastvision', got "
                             f"{self.backend!r}")


def run_dir(study: PoseStudy, seed: int) -> Path:
    return Path(study.out_dir) / f"seed{seed}" / study.model


def _train(study: PoseStudy) -> None:
    steps = study.train_samples // study.batch_size
    milestones = tuple(m * steps * study.batch_size for m in scaled_milestones(study.epochs))
    for seed in study.seeds:
        out = run_dir(study, seed)
        if run_finished(out, study.epochs):
            continue
        data = PoseData("embedded", tuple(study.image_size), train_samples=study.train_samples,
                        val_samples=study.val_samples, data_seed=0)
        config = TrainConfig(out_dir=str(out), epochs=study.epochs, batch_size=study.batch_size,
                             eval_batch_size=study.batch_size, device=study.device, seed=seed,
                             resume=True, eval_every=study.epochs, progress=False)
        t0 = time.perf_counter()
        fit(PoseTask(study.model, data, milestones), config)
        if study.progress:
            print(f"[pose-study] trained {out} ({time.perf_counter() - t0:.0f} s)", flush=True)


def _backend(requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        import pycocotools.cocoeval  # noqa: F401
    except ImportError:
        return "fastvision"
    return "pycocotools"


@torch.no_grad()
def _evaluate(study: PoseStudy, seed: int, backend: str) -> dict:
    model, _ = load_model(run_dir(study, seed) / CHECKPOINT, study.device)
    val = PoseData("embedded", tuple(study.image_size), val_samples=study.val_samples).load_val()
    loader = DataLoader(val, batch_size=study.batch_size, shuffle=False)
    return {name: evaluate_pose(model, loader, torch.device(study.device), flip=flip,
                                backend=backend, post_process=refine)
            for name, flip, refine in VARIANTS}


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def claims(results: dict) -> list[dict]:
    """Flip test and refinement: the AP gain of each, with the other setting as official, per
    seed, and whether it is positive on average and in every seed."""
    per_seed = list(results["seeds"].values())
    out = []
    for text, with_, without in (("the flip test raises the AP", "flip + refinement (official)",
                                  "no flip, refinement"),
                                 ("the quarter-pixel refinement raises the AP",
                                  "flip + refinement (official)", "flip, argmax")):
        gains = [s[with_]["AP"] - s[without]["AP"] for s in per_seed]
        mean, std = _mean_std(gains)
        out.append({"claim": text, "with": with_, "without": without, "ap_gain": gains,
                    "ap_gain_mean": mean, "ap_gain_std": std, "holds_on_average": mean > 0,
                    "holds_in_every_seed": all(g > 0 for g in gains)})
    return out


def _table(study: PoseStudy, results: dict) -> str:
    names = ("AP", "AP50", "AP75", "AR")
    rows = ["| inference | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for variant, _, _ in VARIANTS:
        cells = []
        for key in names:
            mean, std = _mean_std([s[variant][key] for s in results["seeds"].values()])
            cells.append(f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if len(study.seeds) > 1 else ""))
        rows.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def run_study(study: PoseStudy) -> dict:
    """Train what is missing, evaluate the four inference settings, write
    ``results.{json,md}``."""
    out = Path(study.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _train(study)
    backend = _backend(study.backend)
    results = {"study": asdict(study), "ap_backend": backend,
               "seeds": {str(s): _evaluate(study, s, backend) for s in study.seeds}}
    results["claims"] = claims(results)
    results["seconds"] = time.perf_counter() - t0
    table = _table(study, results)
    lines = "\n".join(
        f"- {c['claim']}: {'holds' if c['holds_on_average'] else 'does not hold'} (AP "
        f"{100 * c['ap_gain_mean']:+.1f}" + (f" ± {100 * c['ap_gain_std']:.1f}, in every seed: "
                                              f"{'yes' if c['holds_in_every_seed'] else 'no'}"
                                              if len(study.seeds) > 1 else "") + ")"
        for c in results["claims"])
    w, h = study.image_size
    (out / "results.md").write_text(
        f"# {study.model} on the embedded stick figures\n\n"
        f"{study.train_samples} training figures, {study.val_samples} held-out figures, input "
        f"{w}x{h}, {study.epochs} epochs, batch {study.batch_size}, the official recipe otherwise; "
        f"final weights; ground-truth boxes; seeds {list(study.seeds)}; COCO OKS AP by "
        f"{backend}.\n\n{table}\n\n{lines}\n")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if study.progress:
        print(table)
        print(lines)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fastvision eval pose-study``."""
    d = PoseStudy()
    parser.add_argument("--out", default=d.out_dir, help="output (and cache) folder")
    parser.add_argument("--model", default=d.model, choices=POSE_MODELS)
    parser.add_argument("--image-size", type=parse_image_size, default=d.image_size,
                        help=f"input WIDTHxHEIGHT (default {d.image_size[0]}x{d.image_size[1]})")
    parser.add_argument("--train-samples", type=int, default=d.train_samples)
    parser.add_argument("--val-samples", type=int, default=d.val_samples)
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--seeds", type=int_list, default=list(d.seeds), help="e.g. 0,1")
    parser.add_argument("--backend", default=d.backend, choices=["auto", "pycocotools", "fastvision"],
                        help="OKS AP implementation (auto: pycocotools when importable)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quiet", action="store_true")


def run(args) -> int:
    study = PoseStudy(out_dir=args.out, model=args.model, image_size=tuple(args.image_size),
                      train_samples=args.train_samples, val_samples=args.val_samples,
                      epochs=args.epochs, batch_size=args.batch_size, seeds=tuple(args.seeds),
                      backend=args.backend, device=args.device, progress=not args.quiet)
    run_study(study)
    return 0
