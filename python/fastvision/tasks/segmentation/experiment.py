"""``fastvision eval segmentation``: a trained checkpoint's mIoU table and prediction overlays.

Single-scale evaluation, or with ``--multi-scale`` the scales 0.5, 0.75, 1.0, 1.25, 1.5, 1.75
(HRNet's Cityscapes README, CoinCheung's ``eval_scales``), optionally with horizontal flips
(``--flip``); softmax probabilities are summed and the argmax is scored at label resolution on
the dataset-level confusion matrix. Whole images are fed (no sliding-window crops).

Writes ``results.json`` (per-class IoU, mIoU with absent classes excluded and, as HRNet's
``testval``, counted as 0, pixel accuracy, settings), ``results.md`` (the table) and
``overlays/NNNN.png`` (image | ground truth | prediction blended over the image).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fastvision.metrics.segmentation import mean_iou
from fastvision.models import load_model
from fastvision.tasks.segmentation.recipe import (
    FAMILIES,
    MULTI_SCALES,
    add_data_arguments,
    data_from_args,
    family_of,
)

from .inference import evaluate_segmentation, overlay

__all__ = ["add_arguments", "run"]


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"scales must be positive, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", "--checkpoint", dest="checkpoint", required=True,
                        help="model_best.pt or checkpoint_last.pt of `fastvision train segmentation`, "
                             "or named shipped weights (`fastvision weights`)")
    parser.add_argument("--model", default=None,
                        help="expected model name (default: the one stored in the checkpoint)")
    add_data_arguments(parser)
    parser.add_argument("--split", default="val", choices=["val", "test"],
                        help="split of a real dataset (the embedded data always uses its val set)")
    parser.add_argument("--out", default="fastvision-eval/segmentation", help="output folder")
    parser.add_argument("--multi-scale", action="store_true",
                        help=f"scales {','.join(map(str, MULTI_SCALES))} (see --scales)")
    parser.add_argument("--scales", type=_float_list, default=None, help="explicit scales, e.g. 0.75,1,1.25")
    parser.add_argument("--flip", action="store_true", help="add horizontally flipped inputs")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--overlays", type=int, default=8, help="prediction overlays to write")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--quiet", action="store_true")


def run(args) -> int:
    from PIL import Image

    t0 = time.perf_counter()
    model, meta = load_model(args.checkpoint, args.device)
    name = meta["model_spec"]["name"]
    if args.model is not None and args.model != name:
        raise ValueError(f"--model {args.model!r} does not match the checkpoint's model {name!r}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    family = family_of(name, args.family)
    data = data_from_args(args)
    dataset = data.load(family, "val" if data.kind == "embedded" else args.split)
    num_classes = data.num_classes
    if meta["model_spec"].get("kwargs", {}).get("num_classes", num_classes) != num_classes:
        raise ValueError(f"the checkpoint predicts {meta['model_spec']['kwargs']['num_classes']} "
                         f"classes, the data {args.data!r} has {num_classes}")
    scales = args.scales or (list(MULTI_SCALES) if args.multi_scale else [1.0])
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False)
    metrics, preds = evaluate_segmentation(model, loader, torch.device(args.device), num_classes,
                                           scales, args.flip, FAMILIES[family].eval_align_corners,
                                           keep=args.overlays)
    result = metrics.compute()
    names = list(dataset.class_names)
    out = Path(args.out)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    for i, pred in enumerate(preds):
        image, label = dataset.raw(i)
        Image.fromarray(overlay(image, label, pred.numpy(), num_classes)).save(out / "overlays" / f"{i:04d}.png")
    record = {
        "model": name, "family": family, "checkpoint": str(args.checkpoint), "data": args.data,
        "split": "val" if data.kind == "embedded" else args.split, "images": len(dataset),
        "scales": scales, "flip": bool(args.flip),
        "miou": result["miou"], "miou_absent_as_zero": mean_iou(metrics.conf, "zero"),
        "pixel_acc": result["pixel_acc"],
        "iou": {n: (None if math.isnan(v) else v) for n, v in zip(names, result["iou"])},
        "seconds": time.perf_counter() - t0,
    }
    (out / "results.json").write_text(json.dumps(record, indent=2))
    rows = "\n".join(f"| {n} | {'-' if v is None else f'{100 * v:.2f}'} |" for n, v in record["iou"].items())
    (out / "results.md").write_text(
        f"# {name} on {args.data} ({record['split']}, {len(dataset)} images)\n\n"
        f"scales {scales}, flip {'on' if args.flip else 'off'}\n\n"
        f"| class | IoU (%) |\n|---|---|\n{rows}\n| **mIoU** | **{100 * result['miou']:.2f}** |\n\n"
        f"Pixel accuracy {100 * result['pixel_acc']:.2f}%. Classes absent from both labels and "
        f"predictions (-) are left out of the mIoU; counted as 0 (HRNet's testval): "
        f"{100 * record['miou_absent_as_zero']:.2f}.\n")
    if not args.quiet:
        print(f"[segmentation] {name}: mIoU {100 * result['miou']:.2f}, pixel accuracy "
              f"{100 * result['pixel_acc']:.2f}% on {len(dataset)} images; outputs in {out}")
    return 0
