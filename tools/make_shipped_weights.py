"""Make the shipped named weights (safetensors, float16, a few MB) and their rows of the table.

Every shipped set of weights is one file ``python/fastvision/weights/<MODEL.TAG>.safetensors``
(float16 weights; the header's ``"fastvision"`` metadata holds the model spec, recipe, data,
metrics and license) and one row of ``python/fastvision/weights/index.json`` (the same metadata
plus the file name and its sha256, which is checked on every load). This tool writes both; the
row is replaced when the name exists, so re-running it after a new training is the whole change.

Any finished training run (``fastvision train ...``; its ``checkpoint_last.pt`` and
``metrics.json``), e.g. a segmentation model::

    python tools/make_shipped_weights.py run RUN_DIR --name bisenetv2.embedded \\
        --recipe "fastvision train segmentation --model bisenetv2 --epochs 8" \\
        --data "embedded segmentation scenes (fastvision.data), 256x128" \\
        --evaluation "validation after the last epoch on the embedded val scenes"

(the metrics are the run's last epoch's ``val_*`` entries, ``--license`` defaults to the
package's). The two families that ship weights today, from their committed recipes:

    fastvision eval sampling --out runs/sampling        # the committed recipe, defaults
    python tools/make_shipped_weights.py sampling runs/sampling
    fastvision train padnet --epochs 4 --test-images 200 --out runs/padnet_x1
    python tools/make_shipped_weights.py padnet runs/padnet_x1

write ``pointnet_cls_vanilla.embedded``, ``snet.embedded_r32``, ``samplenet.embedded_r32`` and
``padnet.embedded``. ``bundle FILE.pt --name ...`` ships an existing bundle (``{"model_spec",
"model", "recipe", "config", "metrics"}``, the pickled format shipped before 0.2) unchanged:
that is how the pickled files were converted (same tensors, same dtypes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from fastvision.models import read_checkpoint, write_safetensors

OUT = Path(__file__).resolve().parents[1] / "python" / "fastvision" / "weights"
INDEX = OUT / "index.json"

LICENSE = ("BSD-3-Clause, as fastvision: trained by fastvision's recipes on its own procedurally "
           "generated data (no third-party data or weights)")

SAMPLING_DATA = ("fastvision.data.ProceduralShapes: 12 classes of parametric surfaces, 512-point "
                 "clouds, 2048 training shapes, 1024 held-out shapes (the `fastvision eval "
                 "sampling` embedded defaults, seed 0)")
# name -> (run sub-folder, recipe, what the metrics are)
SAMPLING = {
    "pointnet_cls_vanilla.embedded": (
        "task_net", "fastvision eval sampling (task network: train pointnet)",
        "last epoch; val_*: the held-out shapes, complete clouds"),
    "snet.embedded_r32": (
        "seed0/snet_r32", "fastvision eval sampling (S-NET, ratio 32)",
        "last epoch; val_acc: the frozen task network on the sampled points of the held-out shapes"),
    "samplenet.embedded_r32": (
        "seed0/samplenet_r32", "fastvision eval sampling (SampleNet, ratio 32)",
        "last epoch; val_acc: the frozen task network on the sampled points of the held-out shapes"),
}

PADNET = {"padnet.embedded": (
    "fastvision train padnet --epochs 4 --test-images 200 (embedded pads, lr 1e-3, batch 8, AAL; "
    "last epoch)",
    "fastvision.data embedded procedural particle pads (112x48, ground-truth centres), the "
    "1952-pad training split",
    "last epoch, on the first 200 of the 1000 embedded test pads (peaks of sigmoid >= 0.5 in 5x5 "
    "windows matched within 3 px)")}


def _half(state: dict) -> dict:
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def _read_run(run: Path) -> tuple[dict, dict]:
    """A finished run's last checkpoint and its metrics record."""
    return read_checkpoint(run / "checkpoint_last.pt"), json.loads((run / "metrics.json").read_text())


def _val_metrics(last: dict) -> dict:
    metrics = {k[len("val_"):]: v for k, v in last.items() if k.startswith("val_")}
    return {**metrics, "epoch": last["epoch"]}


def ship(name: str, bundle: dict, *, data: str, evaluation: str, license: str = LICENSE) -> Path:
    """Write ``<name>.safetensors`` from ``bundle`` (``model_spec``, ``model``, ``recipe``,
    ``metrics``, optional ``config``) and its row of ``index.json``."""
    spec = {"name": bundle["model_spec"]["name"], "kwargs": dict(bundle["model_spec"].get("kwargs", {}))}
    if not name.startswith(spec["name"] + ".") or len(name) == len(spec["name"]) + 1:
        raise SystemExit(f"--name must be {spec['name']}.TAG (the model it holds), got {name!r}")
    meta = {"model_spec": spec, "recipe": bundle["recipe"], "data": data,
            "metrics": bundle["metrics"], "evaluation": evaluation, "license": license}
    if bundle.get("config") is not None:
        meta["config"] = bundle["config"]
    path = OUT / f"{name}.safetensors"
    write_safetensors(path, bundle["model"], meta)
    path.chmod(0o644)  # safetensors writes owner-only files; these ship in the wheel
    table = json.loads(INDEX.read_text()) if INDEX.is_file() else {}
    table[name] = {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                   "model": spec["name"], "kwargs": spec["kwargs"], "recipe": meta["recipe"],
                   "data": data, "metrics": meta["metrics"], "evaluation": evaluation,
                   "license": license}
    INDEX.write_text(json.dumps(dict(sorted(table.items())), indent=2) + "\n")
    print(f"{path} ({path.stat().st_size / 1e6:.2f} MB), row {name!r} of {INDEX}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="source", required=True)
    run = sub.add_parser("run", help="any finished training run")
    run.add_argument("run", type=Path)
    bundle = sub.add_parser("bundle", help="an existing bundle file (the old pickled format)")
    bundle.add_argument("bundle", type=Path)
    for p in (run, bundle):
        p.add_argument("--name", required=True, help="MODEL.TAG, e.g. bisenetv2.embedded")
        p.add_argument("--data", required=True, help="what it was trained on")
        p.add_argument("--evaluation", required=True, help="what its metrics were measured on")
        p.add_argument("--license", default=LICENSE)
    run.add_argument("--recipe", required=True, help="the command that trained it")
    sub.add_parser("sampling", help="the sampling experiment's folder").add_argument("runs", type=Path)
    sub.add_parser("padnet", help="a PAD-Net x1 training run").add_argument("runs", type=Path)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.source == "run":
        ckpt, record = _read_run(args.run)
        ship(args.name, {"model_spec": ckpt["model_spec"], "model": _half(ckpt["model"]),
                         "recipe": args.recipe, "config": record["config"],
                         "metrics": _val_metrics(ckpt["history"][-1])},
             data=args.data, evaluation=args.evaluation, license=args.license)
    elif args.source == "bundle":
        ship(args.name, read_checkpoint(args.bundle), data=args.data,
             evaluation=args.evaluation, license=args.license)
    elif args.source == "sampling":
        for name, (sub_dir, recipe, evaluation) in SAMPLING.items():
            ckpt, record = _read_run(args.runs / sub_dir)
            # the final weights (those `fastvision eval sampling` evaluates) and that epoch's record
            ship(name, {"model_spec": ckpt["model_spec"], "model": _half(ckpt["model"]),
                        "recipe": recipe, "config": record["config"],
                        "metrics": ckpt["history"][-1]},
                 data=SAMPLING_DATA, evaluation=evaluation)
    else:
        for name, (recipe, data, evaluation) in PADNET.items():
            ckpt, record = _read_run(args.runs)
            ship(name, {"model_spec": ckpt["model_spec"], "model": _half(ckpt["model"]),
                        "recipe": recipe, "config": record["config"],
                        "metrics": _val_metrics(ckpt["history"][-1])},
                 data=data, evaluation=evaluation)


if __name__ == "__main__":
    main()
