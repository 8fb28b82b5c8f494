"""Make the shipped embedded-data weights from finished training runs (float16, a few MB).

Sampling family (``fastvision demo`` section 3), from the experiment's folder::

    fastvision eval sampling --out runs/sampling          # the committed recipe, defaults
    python tools/make_shipped_weights.py sampling runs/sampling

writes python/fastvision/weights/sampling_{task_net,snet_r32,samplenet_r32}.pt.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parents[1] / "python" / "fastvision" / "weights"

SAMPLING = {
    "sampling_task_net": ("task_net", "fastvision eval sampling (task network: train pointnet)"),
    "sampling_snet_r32": ("seed0/snet_r32", "fastvision eval sampling (S-NET, ratio 32)"),
    "sampling_samplenet_r32": ("seed0/samplenet_r32", "fastvision eval sampling (SampleNet, ratio 32)"),
}


def _bundle(run: Path, recipe: str) -> dict:
    """Final weights (those ``fastvision eval sampling`` evaluates) and that epoch's metrics."""
    ckpt = torch.load(run / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    record = json.loads((run / "metrics.json").read_text())
    return {"model_spec": ckpt["model_spec"], "model": state, "recipe": recipe,
            "config": record["config"], "metrics": ckpt["history"][-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=["sampling"])
    parser.add_argument("runs", type=Path, help="folder of the finished training runs")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (sub, recipe) in SAMPLING.items():
        path = OUT / f"{name}.pt"
        torch.save(_bundle(args.runs / sub, recipe), path)
        print(f"{path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
