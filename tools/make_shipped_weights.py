"""Make the shipped embedded-data weights from finished training runs (float16, a few MB).

Sampling family (``fastvision demo`` section 3), from the experiment's folder::

    fastvision eval sampling --out runs/sampling          # the committed recipe, defaults
    python tools/make_shipped_weights.py sampling runs/sampling

writes python/fastvision/weights/sampling_{task_net,snet_r32,samplenet_r32}.pt.

PAD-Net family (``fastvision detect`` and the demo's particle section), from a training run::

    fastvision train padnet --epochs 4 --test-images 200 --out runs/padnet_x1
    python tools/make_shipped_weights.py padnet runs/padnet_x1

writes python/fastvision/weights/padnet_x1.pt: the run's last-epoch weights, with that epoch's
validation metrics (the first 200 embedded test pads) as ``"metrics"``.

Segmentation family (``fastvision demo``'s segmentation section), from the study's folder::

    fastvision eval segmentation-study --out runs/segmentation-study     # the committed recipe
    python tools/make_shipped_weights.py segmentation runs/segmentation-study

writes python/fastvision/weights/segmentation_embedded.pt: the seed-0 final weights of the study
run with the best held-out mIoU among those whose float16 weights fit in
``SEGMENTATION_MAX_MB``, with its mIoU and the data it was trained on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fastvision.models import read_checkpoint

OUT = Path(__file__).resolve().parents[1] / "python" / "fastvision" / "weights"

SAMPLING = {
    "sampling_task_net": ("task_net", "fastvision eval sampling (task network: train pointnet)"),
    "sampling_snet_r32": ("seed0/snet_r32", "fastvision eval sampling (S-NET, ratio 32)"),
    "sampling_samplenet_r32": ("seed0/samplenet_r32", "fastvision eval sampling (SampleNet, ratio 32)"),
}


def _read_run(run: Path) -> tuple[dict, dict, dict]:
    """A finished run's last checkpoint, its weights in float16 and its metrics record."""
    ckpt = read_checkpoint(run / "checkpoint_last.pt")
    state = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    return ckpt, state, json.loads((run / "metrics.json").read_text())


def _bundle(run: Path, recipe: str) -> dict:
    """Final weights (those ``fastvision eval sampling`` evaluates) and that epoch's metrics."""
    ckpt, state, record = _read_run(run)
    return {"model_spec": ckpt["model_spec"], "model": state, "recipe": recipe,
            "config": record["config"], "metrics": ckpt["history"][-1]}


PADNET = {"padnet_x1": "fastvision train padnet --epochs 4 --test-images 200 (embedded pads, "
                        "lr 1e-3, batch 8, AAL; last epoch)"}


def _padnet_bundle(run: Path, recipe: str) -> dict:
    ckpt, state, record = _read_run(run)
    last = ckpt["history"][-1]
    metrics = {k[len("val_"):]: v for k, v in last.items() if k.startswith("val_")}
    return {"model_spec": ckpt["model_spec"], "model": state, "recipe": recipe,
            "config": record["config"], "metrics": {**metrics, "epoch": last["epoch"]}}


# --- segmentation (issue 17): the best small model of `fastvision eval segmentation-study` ----

SEGMENTATION_NAME = "segmentation_embedded"
SEGMENTATION_MAX_MB = 4.0  # float16 weights; the shipped files stay a few MB


def _segmentation_bundle(study_dir: Path) -> dict:
    """The study's best run (held-out mIoU, seed 0) among those small enough to ship."""
    results = json.loads((study_dir / "results.json").read_text())
    study = results["study"]
    candidates = []
    for key, run in results["runs"].items():
        ckpt, state, _ = _read_run(study_dir / "seed0" / key)
        size_mb = sum(v.numel() * v.element_size() for v in state.values()) / 1e6
        if size_mb <= SEGMENTATION_MAX_MB:
            candidates.append((run["seeds"]["0"]["miou"], key, run, ckpt, state))
    if not candidates:
        raise SystemExit(f"no study run fits in {SEGMENTATION_MAX_MB} MB of float16 weights")
    miou, key, run, ckpt, state = max(candidates, key=lambda c: c[0])
    h, w = study["image_size"]
    recipe = (f"fastvision eval segmentation-study: {run['label']}, seed 0, {study['epochs']} "
              f"epochs on {study['train_samples']} embedded {w}x{h} scenes")
    return {"model_spec": ckpt["model_spec"], "model": state, "recipe": recipe,
            "data": {"image_size": [h, w], "num_classes": study["num_classes"]},
            "metrics": {"miou": miou, "pixel_acc": run["seeds"]["0"]["pixel_acc"],
                        "val_samples": study["val_samples"], "epoch": ckpt["epoch"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=["sampling", "padnet", "segmentation"])
    parser.add_argument("runs", type=Path, help="folder of the finished training runs")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.family == "sampling":
        bundles = {name: _bundle(args.runs / sub, recipe)
                   for name, (sub, recipe) in SAMPLING.items()}
    elif args.family == "padnet":
        bundles = {name: _padnet_bundle(args.runs, recipe) for name, recipe in PADNET.items()}
    else:
        bundles = {SEGMENTATION_NAME: _segmentation_bundle(args.runs)}
    for name, bundle in bundles.items():
        path = OUT / f"{name}.pt"
        torch.save(bundle, path)
        print(f"{path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
