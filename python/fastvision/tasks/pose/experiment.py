"""``fastvision eval pose``: COCO OKS AP of a pose checkpoint, with the official inference
post-processing (``lib/core/function.py validate``: optional flip test with the shifted flipped
heatmap, ``get_final_preds``, rescoring, OKS-NMS; see :mod:`fastvision.tasks.pose.recipe`).

The checkpoint is a ``fastvision train pose`` checkpoint (model and input size read from it),
or a plain state dict (e.g. an official ``pose_hrnet_w32_256x192.pth``) with ``--model`` and
``--image-size``. Ground-truth person boxes are used (the official ``USE_GT_BBOX: true``).
Writes ``results.json`` (metrics and settings), ``keypoints_results.json`` (the detections in the
COCO results format, as the official ``keypoints_{split}_results.json``) and ``results.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from fastvision.metrics.pose import AP_NAMES
from fastvision.tasks.pose.recipe import POSE_MODELS, PoseData, evaluate_pose, parse_image_size

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", "--checkpoint", dest="checkpoint", required=True,
                        help="model_best.pt / checkpoint_last.pt of `fastvision train pose`, a "
                             "plain state dict of --model, or named shipped weights")
    parser.add_argument("--model", default=None, choices=POSE_MODELS,
                        help="model name (default: the one stored in a training checkpoint; "
                             "required for a plain state dict)")
    parser.add_argument("--data", default="embedded",
                        help="'embedded' (procedural stick figures, validation set) or a COCO folder")
    parser.add_argument("--split", default="val2017",
                        help="COCO split (annotations/person_keypoints_SPLIT.json)")
    parser.add_argument("--image-size", type=parse_image_size, default=None,
                        help="input WIDTHxHEIGHT (default: the training checkpoint's, else 192x256)")
    parser.add_argument("--val-samples", type=int, default=64, help="embedded data: validation pictures")
    parser.add_argument("--flip", action="store_true", help="flip test (official TEST.FLIP_TEST)")
    parser.add_argument("--backend", default="auto", choices=["auto", "pycocotools", "fastvision"],
                        help="OKS AP implementation (auto: pycocotools when importable)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="fastvision-eval/pose", help="output folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--quiet", action="store_true")


def _load(args) -> tuple[torch.nn.Module, str, tuple[int, int] | None]:
    """(model in eval mode, its name, the input size a training checkpoint recorded)."""
    from fastvision.models import load_model

    try:
        model, meta = load_model(args.checkpoint, args.device, model=args.model)
    except ValueError as err:
        if args.model is None and "plain state dict" in str(err):
            raise ValueError(f"{str(args.checkpoint)!r} is a plain state dict: name its model "
                             "with --model") from None
        raise
    spec = meta["model_spec"]
    if spec["name"] not in POSE_MODELS:
        raise ValueError(f"checkpoint {str(args.checkpoint)!r} holds {spec['name']!r}, not a pose "
                         f"model ({', '.join(POSE_MODELS)})")
    size = spec.get("image_size")
    return model, spec["name"], tuple(size) if size else None


def run(args) -> int:
    t0 = time.perf_counter()
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    model, name, trained_size = _load(args)
    size = args.image_size or trained_size or ((96, 128) if args.data == "embedded" else (192, 256))
    data = PoseData(args.data, tuple(size), val_split=args.split, val_samples=args.val_samples)
    dataset = data.load_val()
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False)
    device = torch.device(args.device)
    detections: list[dict] = []
    metrics = evaluate_pose(model, loader, device, flip=args.flip, backend=args.backend,
                            detections_out=detections)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"model": name, "checkpoint": str(args.checkpoint), "data": args.data,
              "split": "val" if args.data == "embedded" else args.split, "people": len(dataset),
              "image_size": list(size), "flip_test": bool(args.flip), "boxes": "ground truth",
              **metrics, "seconds": time.perf_counter() - t0}
    (out / "results.json").write_text(json.dumps(record, indent=2))
    results = [{"image_id": d["image_id"], "category_id": 1, "score": d["score"],
                "keypoints": np.asarray(d["keypoints"]).reshape(-1).round(3).tolist()}
               for d in detections]
    (out / "keypoints_results.json").write_text(json.dumps(results))
    # -1: no ground truth in that area range (COCOeval's convention).
    rows = "\n".join(f"| {k} | {'-' if metrics[k] < 0 else f'{100 * metrics[k]:.1f}'} |" for k in AP_NAMES)
    (out / "results.md").write_text(
        f"# {name} on {args.data} ({record['split']}, {len(dataset)} people, ground-truth boxes)\n\n"
        f"input {size[0]}x{size[1]}, flip test {'on' if args.flip else 'off'}\n\n"
        f"| metric | % |\n|---|---|\n{rows}\n| PCK acc (heatmaps) | {100 * metrics['acc']:.1f} |\n")
    if not args.quiet:
        print(f"[pose] {name}: AP {100 * metrics['AP']:.1f}, AP50 {100 * metrics['AP50']:.1f}, "
              f"AP75 {100 * metrics['AP75']:.1f}, AR {100 * metrics['AR']:.1f}, PCK "
              f"{100 * metrics['acc']:.1f} on {len(dataset)} people; outputs in {out}")
    return 0
