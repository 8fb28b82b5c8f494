"""Demo section: HyperSeg's patch-wise dynamic convolutions and HyperSeg-M.

Checks the two ops against the formulation of the official code (``patch_conv2d`` against
HyperSeg's pad + unfold + grouped conv + fold, with its gradients; the fused
``patch_inverted_residual`` against HyperSeg's unfused block with BatchNorm in eval mode), then
runs one embedded 1024x512 scene through HyperSeg-M (official random initialisation: the
section checks speed and equality only, the overlay is noise, not a segmentation) with the fastvision ops and
with the model switched to HyperSeg's own formulation, and times both. A check fails on a
difference above float32 rounding, a wrong shape or a non-finite value.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

HEIGHT, WIDTH = 512, 1024


def _op_checks(device: str) -> list[dict]:
    from fastvision.nn import HyperPatchInvertedResidual
    from fastvision.ops import _reference as ref
    from fastvision.ops import patch_conv2d

    g = torch.Generator().manual_seed(0)
    rows = []
    # patch_conv2d at HyperSeg-M's level-3 shape (stride-4 map of 256x128: 8x8-pixel patches),
    # forward and gradients.
    x = torch.randn(1, 48, 128, 256, generator=g).to(device).requires_grad_()
    w = (torch.randn(1, 48 * 9, 16, 32, generator=g) * 0.2).to(device).requires_grad_()
    go = torch.randn(1, 48, 128, 256, generator=g).to(device)
    ours = patch_conv2d(x, w, 3, groups=48)
    gx, gw = torch.autograd.grad(ours, (x, w), go)
    theirs = ref.hyperpatch_conv2d_unfold(x, w, 3, 1, "reflect", 48)
    rx, rw = torch.autograd.grad(theirs, (x, w), go)
    err = max(float((a - b).abs().max() / b.abs().max()) for a, b in ((ours.detach(), theirs.detach()), (gx, rx), (gw, rw)))
    rows.append({"op": "patch_conv2d fwd+bwd vs HyperSeg unfold", "device": device, "shape": "1x48x128x256, 16x32 patches",
                 "indices_equal": True, "max_abs_diff": err, "ok": err < 1e-4})
    block = HyperPatchInvertedResidual(34, 19, 3, expand_ratio=2).to(device).eval()
    for bn in (block.bn1, block.bn2, block.bn3):
        bn.running_mean.copy_(torch.rand(bn.num_features, generator=g) - 0.5)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
    x = torch.randn(1, 34, 256, 512, generator=g).to(device)
    w = (torch.randn(1, block.hyper_params, 16, 32, generator=g) * 0.2).to(device)
    with torch.no_grad():
        fused = block(x, w)
        unfused = ref.hyperpatch_inverted_residual_unfold(x, w, 68, 19, block.bn1, block.bn2, block.bn3)
    err = float((fused - unfused).abs().max() / unfused.abs().max())
    rows.append({"op": "patch_inverted_residual vs HyperSeg block", "device": device, "shape": "1x34x256x512 -> 19",
                 "indices_equal": True, "max_abs_diff": err, "ok": err < 1e-4})
    return rows


@torch.no_grad()
def section(out_dir: Path, devices: list[str]) -> tuple[list[str], list[dict], bool]:
    """Run the section; returns (report lines, check rows, ok)."""
    from PIL import Image

    from fastvision.data.segmentation import ProceduralSegmentation, SegmentationAugment
    from fastvision.tasks.segmentation.inference import overlay
    from fastvision.models import get_model
    from fastvision.nn import set_fastvision_ops

    rows = []
    for device in devices:
        with torch.enable_grad():
            rows += _op_checks(device)
    scene = ProceduralSegmentation("test", num_samples=1, height=HEIGHT, width=WIDTH)
    image, label = scene.raw(0)
    x, _ = SegmentationAugment()(image, label, torch.Generator().manual_seed(0))
    x = x.unsqueeze(0)
    timings = []
    flush = torch.set_flush_denormal(True)  # the random initialisation produces denormals
    try:
        for device in devices:
            torch.manual_seed(0)
            model = get_model("hyperseg_m_cityscapes").to(device).eval()
            inp = x.to(device)
            outputs = {}
            for enabled in (True, False):
                set_fastvision_ops(model, enabled)
                model(inp)  # warm-up
                start = time.perf_counter()
                outputs[enabled] = model(inp)
                if device == "cuda":
                    torch.cuda.synchronize()
                timings.append((device, enabled, time.perf_counter() - start))
            logits = outputs[True]
            err = float((logits - outputs[False]).abs().max() / outputs[False].abs().max().clamp(min=1e-30))
            ok = logits.shape == (1, 19, HEIGHT, WIDTH) and bool(torch.isfinite(logits).all()) and err < 1e-3
            rows.append({"op": "hyperseg_m_cityscapes inference (ops vs unfused)", "device": device,
                         "shape": f"1x3x{HEIGHT}x{WIDTH}", "indices_equal": ok, "max_abs_diff": err, "ok": ok})
            pred = logits.argmax(1)[0].cpu().numpy()
            out_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(overlay(image, label, pred, 19)).save(out_dir / f"hyperseg-m-{device}.png")
    finally:
        torch.set_flush_denormal(flush)
    lines = ["## HyperSeg (patch-wise dynamic convolution)", "",
             "The ops against HyperSeg's own formulation (table above), then one embedded "
             f"{WIDTH}x{HEIGHT} scene through HyperSeg-M (10,311,214 parameters) with its official "
             "**random initialisation**, batch 1: this checks only speed and that the fastvision "
             "ops equal HyperSeg's own formulation; the overlay is noise, not a segmentation "
             "(a trained segmentation: the section above).", "",
             "| device | with the fastvision ops | HyperSeg's unfused formulation |", "|---|---:|---:|"]
    for device in devices:
        t = {enabled: s for d, enabled, s in timings if d == device}
        lines.append(f"| {device} | {1000 * t[True]:.0f} ms | {1000 * t[False]:.0f} ms |")
    lines += ["", *(f"![HyperSeg-M](hyperseg-m-{d}.png)" for d in devices), ""]
    print("\n".join(lines[2:-1]))
    return lines, rows, all(r["ok"] for r in rows)
