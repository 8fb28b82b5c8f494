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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=["sampling", "padnet"])
    parser.add_argument("runs", type=Path, help="folder of the finished training runs")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.family == "sampling":
        bundles = {name: _bundle(args.runs / sub, recipe)
                   for name, (sub, recipe) in SAMPLING.items()}
    else:
        bundles = {name: _padnet_bundle(args.runs, recipe) for name, recipe in PADNET.items()}
    for name, bundle in bundles.items():
        path = OUT / f"{name}.pt"
        torch.save(bundle, path)
        print(f"{path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
