"""``fastvision detect``: particle detection on pad images with a trained PAD-Net.

For every image: the number of particles, a CSV of their centres (``x,y,score``: column, row in
pixels, origin at the centre of the top-left pixel, score = the probability at the peak) and an
overlay PNG (the image, enlarged, with a circle on every detection); plus ``counts.csv`` and
``detections.json`` for all images. Images are read as :class:`fastvision.data.ParticleFolder`
reads them (PNG, BMP, TIFF; 8- or 16-bit grayscale) and standardised per image as in training.
Colour images (RGB, RGBA, palette, grayscale + alpha) are converted to grayscale (PIL's ITU-R
601-2 luma) with a warning naming the file. Images larger than ``MAX_PIXELS`` (4,194,304 pixels,
e.g. 2048 x 2048) are refused up front, before decoding (PAD-Net's full-resolution activations
would take tens of GB): crop or tile them. The default model is the PAD-Net shipped with the package
(named weights ``padnet.embedded`` in ``fastvision/weights/``, trained on the embedded procedural pads, which are only a
stand-in for real line-scan pads: train on your own data for real use).
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from fastvision.data.particles import read_image, standardize
from fastvision.metrics.particles import DEFAULT_THRESHOLD, extract_peaks
from fastvision.models import load_model

__all__ = ["load_detector", "read_pad", "detect_batch", "detect_images", "draw_overlay", "SHIPPED_DETECTOR",
           "MAX_PIXELS"]

MAX_PIXELS = 2048 * 2048
_GRAYSCALE_MODES = ("L", "1", "I", "I;16", "I;16B", "I;16L")

SHIPPED_DETECTOR = "padnet.embedded"
# Pads per forward pass: the fused CPU decoder and encoder run one image per thread, and 256
# pads of 112 x 48 keep the activations of a batch around 20 MB.
_BATCH = 256


def load_detector(model: str | None = None,
                  device: str | torch.device = "cpu") -> tuple[nn.Module, str]:
    """``(model in eval mode, description)``: named shipped weights or a training checkpoint /
    safetensors file of a PAD-Net-style detector; the shipped PAD-Net when ``model`` is None."""
    net, meta = load_model(SHIPPED_DETECTOR if model is None else model, device)
    if not hasattr(net, "decoder"):
        raise ValueError(f"--weights {str(model)!r} holds {meta['model_spec']['name']}, not a "
                         "PAD-Net-style particle detector")
    if "weights" in meta:
        return net, f"shipped {meta['weights']} ({meta['recipe']})"
    return net, f"{meta['model_spec']['name']} from {model}"


def read_pad(path: str | Path) -> torch.Tensor:
    """Raw intensities (1, H, W) in [0, 1]; ``ValueError`` naming the file when unreadable."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image {str(path)!r} does not exist or is not a file")
    try:
        with Image.open(path) as img:  # reads the header only: size and mode before decoding
            (w, h), mode = img.size, img.mode
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"could not read image {str(path)!r}: {err}") from err
    if w * h > MAX_PIXELS:
        raise ValueError(f"image {str(path)!r} is {w} x {h} pixels; detect supports up to "
                         f"{MAX_PIXELS} pixels (e.g. 2048 x 2048): crop or tile it")
    if mode not in _GRAYSCALE_MODES:
        warnings.warn(f"image {str(path)!r} is {mode}, not grayscale: converted to grayscale "
                      "(luma); PAD-Net was trained on grayscale pads", stacklevel=2)
    image = read_image(path)
    if min(image.shape[1:]) < 4:
        raise ValueError(f"image {str(path)!r} is {image.shape[2]} x {image.shape[1]} pixels; "
                         "PAD-Net needs at least 4 x 4")
    return image


def draw_overlay(image: torch.Tensor, centres: torch.Tensor, path: Path,
                 true_centres: torch.Tensor | None = None) -> None:
    """PNG of a (1, H, W) [0, 1] image enlarged to about 512 px, a red circle on every detection
    (and a green cross on every true centre when given)."""
    from PIL import Image, ImageDraw

    _, h, w = image.shape
    scale = max(1, min(8, 512 // max(h, w)))
    gray = (image[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    canvas = Image.fromarray(gray, mode="L").resize((w * scale, h * scale), Image.NEAREST)
    canvas = canvas.convert("RGB")
    draw = ImageDraw.Draw(canvas)

    def at(x: float, y: float) -> tuple[float, float]:
        return (x + 0.5) * scale, (y + 0.5) * scale

    r = 2.0 * scale
    if true_centres is not None:
        for x, y in true_centres.tolist():
            cx, cy = at(x, y)
            draw.line([(cx - r / 2, cy), (cx + r / 2, cy)], fill=(40, 220, 60), width=2)
            draw.line([(cx, cy - r / 2), (cx, cy + r / 2)], fill=(40, 220, 60), width=2)
    for x, y in centres.tolist():
        cx, cy = at(x, y)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(230, 30, 30), width=2)
    canvas.save(path)


@torch.no_grad()
def detect_batch(net: nn.Module, images: torch.Tensor, threshold: float = DEFAULT_THRESHOLD
                 ) -> list[torch.Tensor]:
    """Particle centres (one float (N_i, 2) tensor of (x, y) per image) of standardised pads
    ``(B, 1, H, W)`` of one size: one forward pass for the whole batch (the fused PAD-Net on the
    CPU), ``sigmoid``, then :func:`fastvision.metrics.particles.extract_peaks`."""
    return extract_peaks(torch.sigmoid(net(images)), threshold)


def _unique_names(paths: Sequence[Path]) -> list[str]:
    names, seen = [], {}
    for p in paths:
        n = seen.get(p.stem, 0)
        seen[p.stem] = n + 1
        names.append(p.stem if n == 0 else f"{p.stem}-{n}")
    return names


@torch.no_grad()
def detect_images(images: Sequence[str | Path], out_dir: str | Path, model: str | None = None,
                  threshold: float = DEFAULT_THRESHOLD, device: str = "cpu",
                  progress: bool = False) -> list[dict]:
    """Detect particles in ``images`` and write the outputs into ``out_dir`` (module docstring).

    Every image is read before anything is written, so an unreadable one fails the whole call
    with a ``ValueError`` naming it. Returns one ``{"image", "count", "centres", "csv",
    "overlay"}`` per image."""
    if not images:
        raise ValueError("detect_images: no images given")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    paths = [Path(p) for p in images]
    pads = [read_pad(p) for p in paths]
    net, description = load_detector(model, device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Pads of one size go through the network together (batches of _BATCH), the others alone.
    probs: list[torch.Tensor | None] = [None] * len(pads)
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, pad in enumerate(pads):
        by_size.setdefault(tuple(pad.shape), []).append(i)
    for indices in by_size.values():
        for start in range(0, len(indices), _BATCH):
            chunk = indices[start:start + _BATCH]
            batch = torch.stack([standardize(pads[i]) for i in chunk]).to(device)
            for i, prob in zip(chunk, torch.sigmoid(net(batch)).cpu()):
                probs[i] = prob[None]
    results = []
    for path, name, pad, prob in zip(paths, _unique_names(paths), pads, probs):
        centres = extract_peaks(prob, threshold)[0]
        scores = prob[0, 0, centres[:, 1].long(), centres[:, 0].long()]
        csv_path, overlay_path = out / f"{name}_centres.csv", out / f"{name}_overlay.png"
        with open(csv_path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["x", "y", "score"])
            writer.writerows([int(x), int(y), f"{s:.4f}"] for (x, y), s in
                             zip(centres.tolist(), scores.tolist()))
        draw_overlay(pad, centres, overlay_path)
        results.append({"image": str(path), "count": len(centres), "centres": centres.tolist(),
                        "csv": str(csv_path), "overlay": str(overlay_path)})
        if progress:
            print(f"{path}: {len(centres)} particles", flush=True)
    with open(out / "counts.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "count"])
        writer.writerows([r["image"], r["count"]] for r in results)
    (out / "detections.json").write_text(json.dumps(
        {"model": description, "threshold": threshold, "images": results}, indent=2))
    return results
