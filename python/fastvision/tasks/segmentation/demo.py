"""Demo section: a real segmentation of embedded scenes with the shipped weights, then the
inference pipeline of BiSeNet V2 and HRNetV2-W18-Small-v1 at Cityscapes resolution.

1. The shipped segmentation model (``fastvision/weights/``; the best small model of
   ``fastvision eval segmentation-study``, made by ``tools/make_shipped_weights.py
   segmentation``) segments held-out embedded scenes at its training resolution: their mIoU and
   pixel accuracy, an overlay PNG (image | truth | prediction) and the time per scene. The check
   fails when the mIoU falls below ``MIN_MIOU``.
2. BiSeNet V2 and HRNetV2-W18-Small-v1 with their official **random initialisation** on one
   1024x512 scene: this only checks that the pipeline runs (output shape, finite values) and
   times it; their overlays are noise, not segmentations.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MODELS = (("bisenetv2", {"aux_mode": "eval"}), ("hrnetv2_w18_small_v1", {}))
HEIGHT, WIDTH = 512, 1024
SHIPPED_TAG = "embedded"  # the shipped segmentation weights are <model>.embedded
SEGMENTATION_MODELS = ("bisenetv2", "hrnetv2", "hyperseg")  # name prefixes (hrnetv2p: detection)
NUM_SCENES = 8
MIN_MIOU = 0.3  # far above chance (1/19 classes at random is ~0.03), below the shipped model's


def shipped_segmenter():
    """The shipped segmentation weights (the name, or a file in tests), or None when there are
    none."""
    from fastvision.models import list_weights

    for name in list_weights():
        model, _, tag = name.partition(".")
        if tag == SHIPPED_TAG and model.startswith(SEGMENTATION_MODELS) \
                and not model.startswith("hrnetv2p"):
            return name
    return None


@torch.no_grad()
def _shipped_section(out_dir: Path, devices: list[str]) -> tuple[list[str], list[dict]]:
    from PIL import Image

    from fastvision.models import load_model
    from fastvision.tasks.segmentation.inference import evaluate_segmentation, overlay
    from fastvision.tasks.segmentation.recipe import SegmentationData, recipe_for

    weights = shipped_segmenter()
    if weights is None:
        return ["No segmentation weights are shipped yet (`tools/make_shipped_weights.py "
                "segmentation` makes them from `fastvision eval segmentation-study`); skipped.",
                ""], []
    rows, lines = [], []
    for device in devices:
        model, meta = load_model(weights, device)
        name, data_meta = meta["model_spec"]["name"], meta["config"]
        recipe = recipe_for(name)
        data = SegmentationData("embedded", tuple(data_meta["image_size"]),
                                val_samples=NUM_SCENES, num_classes_embedded=data_meta["num_classes"])
        scenes = data.load(recipe, "val")
        loader = torch.utils.data.DataLoader(scenes, batch_size=NUM_SCENES, shuffle=False)
        evaluate_segmentation(model, loader, torch.device(device), data.num_classes,
                              align_corners=recipe.eval_align_corners)  # warm-up
        start = time.perf_counter()
        metrics, preds = evaluate_segmentation(model, loader, torch.device(device), data.num_classes,
                                               align_corners=recipe.eval_align_corners, keep=1)
        seconds = time.perf_counter() - start
        scores = metrics.compute()
        ok = scores["miou"] >= MIN_MIOU
        rows.append({"op": f"{name} segmentation (shipped)", "device": device,
                     "shape": f"{NUM_SCENES} scenes {data.image_size[1]}x{data.image_size[0]}",
                     "indices_equal": ok, "max_abs_diff": 1.0 - scores["miou"], "ok": ok,
                     "seconds": seconds})
    image, label = scenes.raw(0)
    out_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay(image, label, preds[0].numpy(), data.num_classes)).save(
        out_dir / "segmentation-shipped.png")
    h, w = data.image_size
    lines += [f"Shipped `{weights}` ({meta['recipe']}) on {NUM_SCENES} held-out embedded "
              f"{w}x{h} scenes ({devices[-1]}): mIoU {100 * scores['miou']:.1f}%, pixel accuracy "
              f"{100 * scores['pixel_acc']:.1f}% (check: mIoU >= {100 * MIN_MIOU:.0f}%; at its "
              f"{meta['metrics']['val_samples']} study scenes: {100 * meta['metrics']['miou']:.1f}%), "
              f"{1000 * seconds / NUM_SCENES:.1f} ms per scene (batch of {NUM_SCENES}).", "",
              "![image | truth | prediction](segmentation-shipped.png)", ""]
    return lines, rows


@torch.no_grad()
def _random_init_section(out_dir: Path, devices: list[str]) -> tuple[list[str], list[dict]]:
    from PIL import Image

    from fastvision.data.segmentation import ProceduralSegmentation, SegmentationAugment
    from fastvision.models import get_model
    from fastvision.tasks.segmentation.inference import overlay

    scene = ProceduralSegmentation("test", num_samples=1, height=HEIGHT, width=WIDTH)
    image, label = scene.raw(0)
    x, _ = SegmentationAugment()(image, label, torch.Generator().manual_seed(0))
    x = x.unsqueeze(0)
    rows, timings = [], []
    flush = torch.set_flush_denormal(True)  # the official N(0, 0.001) init produces denormals
    try:
        for device in devices:
            for name, kwargs in MODELS:
                torch.manual_seed(0)
                model = get_model(name, **kwargs).to(device).eval()
                inp = x.to(device)
                model(inp)  # warm-up: oneDNN picks its kernels on the first call
                start = time.perf_counter()
                logits = model(inp)
                if device == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
                logits = F.interpolate(logits, size=(HEIGHT, WIDTH), mode="bilinear",
                                       align_corners=False)
                ok = logits.shape == (1, 19, HEIGHT, WIDTH) and bool(torch.isfinite(logits).all())
                rows.append({"op": f"{name} inference (random init: shape, finite)", "device": device,
                             "shape": f"1x3x{HEIGHT}x{WIDTH}", "indices_equal": ok,
                             "max_abs_diff": 0.0, "ok": ok, "seconds": seconds})
                timings.append((name, device, seconds))
                pred = logits.argmax(1)[0].cpu().numpy().astype(np.uint8)
                Image.fromarray(overlay(image, label, pred, 19)).save(
                    out_dir / f"segmentation-{name}-{device}.png")
    finally:
        torch.set_flush_denormal(flush)
    lines = [f"Speed only: one embedded {WIDTH}x{HEIGHT} scene, batch 1, through the models with "
             "their official **random initialisation**. This checks only that the pipeline runs "
             "(output shape, finite values) and times it; the overlays are noise, not "
             "segmentations.", "", "| model | device | time per image |", "|---|---|---:|"]
    lines += [f"| `{n}` | {d} | {1000 * s:.0f} ms |" for n, d, s in timings]
    lines += ["", *(f"![{n} (random init)](segmentation-{n}-{d}.png)" for n, d, _ in timings), ""]
    return lines, rows


def section(out_dir: Path, devices: list[str]) -> tuple[list[str], list[dict], bool]:
    """Run the section; returns (report lines, check rows, ok)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shipped_lines, shipped_rows = _shipped_section(out_dir, devices)
    random_lines, random_rows = _random_init_section(out_dir, devices)
    lines = ["## Semantic segmentation (BiSeNet V2, HRNetV2)", "", *shipped_lines, *random_lines]
    print("\n".join(shipped_lines[:1] + random_lines[:1]))
    rows = shipped_rows + random_rows
    return lines, rows, all(r["ok"] for r in rows)
