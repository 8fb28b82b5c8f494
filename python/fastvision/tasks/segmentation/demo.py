"""Demo section: one embedded 1024x512 scene through BiSeNet V2 and HRNetV2-W18-Small-v1.

No trained segmentation weights ship with the package (the official ones cannot be downloaded
here, and the short CPU training of ``fastvision train segmentation`` does not give meaningful
masks), so the models run with their official random initialisation: the section shows the
inference pipeline at Cityscapes resolution (the input normalisation, logits at full or 1/4
resolution upsampled to the image as the official evaluators do, an overlay PNG) and times it.
A check fails if an output has the wrong shape or a non-finite value.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MODELS = (("bisenetv2", {"aux_mode": "eval"}), ("hrnetv2_w18_small_v1", {}))
HEIGHT, WIDTH = 512, 1024


@torch.no_grad()
def section(out_dir: Path, devices: list[str]) -> tuple[list[str], list[dict], bool]:
    """Run the section; returns (report lines, check rows, ok)."""
    from PIL import Image

    from fastvision.data.segmentation import ProceduralSegmentation, SegmentationAugment
    from fastvision.tasks.segmentation.inference import overlay
    from fastvision.models import get_model

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
                rows.append({"op": f"{name} inference", "device": device,
                             "shape": f"1x3x{HEIGHT}x{WIDTH}", "indices_equal": ok,
                             "max_abs_diff": 0.0, "ok": ok, "seconds": seconds})
                timings.append((name, device, seconds))
                pred = logits.argmax(1)[0].cpu().numpy()
                out_dir.mkdir(parents=True, exist_ok=True)
                Image.fromarray(overlay(image, label, pred, 19)).save(
                    out_dir / f"segmentation-{name}-{device}.png")
    finally:
        torch.set_flush_denormal(flush)
    lines = ["## Semantic segmentation (BiSeNet V2, HRNetV2)", "",
             f"One embedded {WIDTH}x{HEIGHT} scene, batch 1, official random initialisation (no "
             "trained weights ship; the overlays show image | truth | prediction of the pipeline):",
             "", "| model | device | time per image |", "|---|---|---:|"]
    lines += [f"| `{n}` | {d} | {1000 * s:.0f} ms |" for n, d, s in timings]
    lines += ["", *(f"![{n}](segmentation-{n}-{d}.png)" for n, d, _ in timings), ""]
    print("\n".join(lines[2:-1]))
    return lines, rows, all(r["ok"] for r in rows)
