"""Demo section: PAD-Net particle detection on embedded test pads with the shipped model.

The shipped ``padnet.embedded`` (``fastvision/weights/``; made by ``tools/make_shipped_weights.py
padnet`` from the PAD-Net (KD) run of ``fastvision eval padnet``) counts the particles of a few
procedural test pads: counts against the truth, Precision / Recall, an overlay PNG and the time
per pad. The check passes when Precision and Recall are both at least ``MIN_SCORE``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

NUM_PADS = 8
MIN_SCORE = 0.8  # well below the shipped model's (recorded in its metadata), far above chance


@torch.no_grad()
def section(out_dir: Path, devices: list[str]) -> tuple[list[str], list[dict], bool]:
    """Run the section; returns (report lines, check rows, ok)."""
    from fastvision.data.particles import ProceduralParticles
    from fastvision.tasks.padnet.detect import SHIPPED_DETECTOR, draw_overlay
    from fastvision.metrics.particles import ParticleMetrics
    from fastvision.tasks.padnet.recipe import predict_centres
    from fastvision.models import list_weights, load_model

    lines = ["## Particle detection (PAD-Net)", ""]
    if SHIPPED_DETECTOR not in list_weights():
        lines.append("The shipped PAD-Net weights are missing from this installation; skipped.")
        return lines, [], True
    test = ProceduralParticles("test", NUM_PADS)
    raw = ProceduralParticles("test", NUM_PADS, normalize=False)
    images = torch.stack([test[i]["image"] for i in range(NUM_PADS)])
    truth = [test[i]["centres"] for i in range(NUM_PADS)]
    rows, ok = [], True
    for device in devices:
        model, meta = load_model(SHIPPED_DETECTOR, device)
        predict_centres(model, images[:1].to(device))  # warm-up (oneDNN kernel selection)
        start = time.perf_counter()
        found = predict_centres(model, images.to(device))
        seconds = time.perf_counter() - start
        metrics = ParticleMetrics()
        metrics.update(found, truth)
        scores = metrics.compute()
        passed = scores["precision"] >= MIN_SCORE and scores["recall"] >= MIN_SCORE
        ok &= passed
        rows.append({"op": "PAD-Net detection (shipped x1)", "device": device,
                     "shape": f"{NUM_PADS} pads 112x48", "indices_equal": passed,
                     "max_abs_diff": 1.0 - min(scores["precision"], scores["recall"]),
                     "ok": passed, "seconds": seconds})
    draw_overlay(raw[0]["image"], found[0], out_dir / "padnet.png", truth[0])
    counts = ", ".join(f"{len(f)}/{len(t)}" for f, t in zip(found, truth))
    lines += [f"Shipped `{SHIPPED_DETECTOR}` ({meta['recipe']}) on {NUM_PADS} embedded test pads "
              f"({devices[-1]}): detected/true counts {counts}; MAE {scores['mae']:.2f}, "
              f"Precision {scores['precision']:.3f}, Recall {scores['recall']:.3f} (check: both "
              f">= {MIN_SCORE}); {1000 * seconds / NUM_PADS:.2f} ms per pad (batch of "
              f"{NUM_PADS}, with peak extraction). Full table: `fastvision eval padnet`.", "",
              "![detections: red circles, truth: green crosses](padnet.png)", ""]
    print("\n".join(lines[2:-2]))
    return lines, rows, ok
