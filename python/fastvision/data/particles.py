"""Particle pad images for PAD-Net: an embedded procedural set and a reader for real data.

The paper's data (Sect. 4.1) are 112 x 48 grayscale pad images from a line-scan camera, 1952
training and 1000 test images, 73,819 valid particles (25 per image). The paper writes
"112 x 48" without naming the height; here H = 112 rows, W = 48 columns (a fully convolutional
network has the same parameter and operation counts for either orientation).

Both datasets yield dicts::

    {"image": (1, H, W) float32, "target": (1, H, W) float32 in {0, 1},
     "centres": (N, 2) float32 (x, y) = (column, row), "count": N}

``image`` is standardised per image (zero mean, unit variance; the paper normalises its inputs)
unless ``normalize=False`` (then raw intensities in [0, 1]). ``target`` is the paper's binary
ground truth P: 1 on disks of ``target_radius`` pixels (default 2) around the valid centres
(pixels whose centre is within the radius). Batch them with :func:`collate_particles`.

``ProceduralParticles`` (no download): each image comes from a ``torch.Generator`` seeded from
(seed, image index), train = indices 0..1951, test = 1952..2951, so the splits are disjoint and any
image is reproducible alone. An image holds a line-scan background (per-column fixed-pattern
offsets, per-row gain jitter, smooth low-frequency texture, Gaussian noise), Poisson(25) valid
particles (soft disks of radius 1.6-2.8 px with varied contrast, blur and a relief shading
common to the image, centres at least ``min_separation`` apart so that neighbours may touch and
overlap) and distractors that are not valid particles and have no ground truth: faint
(undeformed) particles, large blobs and scratches. The whole split is generated once, on first
use, and kept in memory (all 2952 images: 6 s measured on one heavily shared CPU core).

``ParticleFolder`` reads real data from a folder: images (PNG, BMP, TIFF; 8- or 16-bit grayscale,
colour converted to grayscale) each with a sidecar annotation of the same stem: ``<stem>.csv``
(one ``x,y`` per line, an optional ``x,y`` header) or ``<stem>.json`` (a list of ``[x, y]`` or
``{"x": .., "y": ..}``, or ``{"centres": [...]}``). Pixel coordinates, origin at the centre of
the top-left pixel.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["ProceduralParticles", "ParticleFolder", "collate_particles", "render_targets",
           "read_image", "standardize", "PAD_HEIGHT", "PAD_WIDTH", "SPLIT_SIZES"]

PAD_HEIGHT = 112
PAD_WIDTH = 48
SPLIT_SIZES = {"train": 1952, "test": 1000}
_IMAGE_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")


def render_targets(centres: torch.Tensor, height: int, width: int, radius: float = 2.0) -> torch.Tensor:
    """Binary (1, H, W) map: 1 where a pixel centre lies within ``radius`` of a centre (x, y)."""
    if not radius > 0:
        raise ValueError(f"render_targets: radius must be > 0, got {radius}")
    target = torch.zeros(1, height, width)
    if len(centres) == 0:
        return target
    ys = torch.arange(height, dtype=torch.float32).view(1, -1, 1)
    xs = torch.arange(width, dtype=torch.float32).view(1, 1, -1)
    cx = centres[:, 0].view(-1, 1, 1).float()
    cy = centres[:, 1].view(-1, 1, 1).float()
    inside = ((xs - cx) ** 2 + (ys - cy) ** 2 <= radius * radius).any(dim=0)
    target[0] = inside.float()
    return target


def standardize(image: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit standard deviation per image (the network input of training and detection)."""
    return (image - image.mean()) / image.std().clamp_min(1e-6)


def collate_particles(batch: Sequence[dict]) -> dict:
    """Stack images, targets and counts; keep the per-image centres as a list."""
    return {
        "image": torch.stack([b["image"] for b in batch]),
        "target": torch.stack([b["target"] for b in batch]),
        "centres": [b["centres"] for b in batch],
        "count": torch.tensor([b["count"] for b in batch]),
    }


# --------------------------------------------------------------------------------------------
# Procedural pads
# --------------------------------------------------------------------------------------------


def _generator(seed: int, index: int) -> torch.Generator:
    mixed = (seed * 0x9E3779B97F4A7C15 + index * 0x94D049BB133111EB) & (2**63 - 1)
    return torch.Generator().manual_seed(mixed ^ 0x5851F42D4C957F2D)


def _u(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _poisson(g: torch.Generator, mean: float) -> int:
    return int(torch.poisson(torch.tensor([float(mean)]), generator=g).item())


def _spread_points(g: torch.Generator, count: int, height: int, width: int, margin: float,
                   min_separation: float) -> torch.Tensor:
    """``count`` (x, y) points, uniform, each at least ``min_separation`` from earlier draws."""
    n = 3 * count + 8
    pts = torch.stack([_u(g, n, margin, width - 1 - margin), _u(g, n, margin, height - 1 - margin)], 1)
    close = torch.cdist(pts, pts) < min_separation
    earlier = torch.ones(n, n, dtype=torch.bool).tril(-1)
    keep = ~(close & earlier).any(dim=1)
    return pts[keep][:count]


def _pad_image(g: torch.Generator, height: int, width: int, mean_particles: float,
               min_separation: float) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(height, dtype=torch.float32).view(1, -1, 1)
    xs = torch.arange(width, dtype=torch.float32).view(1, 1, -1)

    # Line-scan background: the sensor line runs along the columns, the scan along the rows.
    base = _u(g, 1, 0.3, 0.45)
    column_offset = 0.02 * torch.randn(width, generator=g)
    row_gain = 1.0 + 0.03 * torch.randn(height, 1, generator=g)
    coarse = torch.randn(1, 1, height // 8 + 2, width // 8 + 2, generator=g)
    texture = 0.04 * torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear",
                                                      align_corners=False)[0, 0]
    image = (base + column_offset.view(1, -1) + texture) * row_gain

    # Valid particles: one relief (lighting) direction per image, as on a DIC line-scan image.
    centres = _spread_points(g, _poisson(g, mean_particles), height, width, 1.5, min_separation)
    k = len(centres)
    angle = _u(g, 1, 0.0, 2 * np.pi)
    radius, blur = _u(g, k, 1.6, 2.8), _u(g, k, 0.3, 0.9)
    relief = _u(g, k, 0.0, 0.6)
    amplitude = _u(g, k, 0.22, 0.5)
    # Distractors without ground truth: faint (undeformed) particles and large blobs ...
    faint = _spread_points(g, _poisson(g, 6.0), height, width, 1.5, 1.0)
    n = len(faint)
    faint_radius, faint_blur, faint_amplitude = _u(g, n, 1.4, 2.6), _u(g, n, 0.3, 0.9), _u(g, n, 0.03, 0.08)
    blobs = _spread_points(g, _poisson(g, 1.5), height, width, 0.0, 1.0)
    n = len(blobs)
    blob_radius, blob_blur, blob_amplitude = _u(g, n, 4.5, 7.0), _u(g, n, 1.0, 2.0), _u(g, n, -0.2, 0.3)

    # ... rendered with the particles as soft disks sigmoid((radius - distance) / blur).
    all_centres = torch.cat([centres, faint, blobs])
    all_radius = torch.cat([radius, faint_radius, blob_radius]).view(-1, 1, 1)
    dx = xs - all_centres[:, 0].view(-1, 1, 1)
    dy = ys - all_centres[:, 1].view(-1, 1, 1)
    disks = torch.sigmoid((all_radius - torch.sqrt(dx * dx + dy * dy))
                          / torch.cat([blur, faint_blur, blob_blur]).view(-1, 1, 1))
    shading = torch.cat([relief, torch.zeros(len(all_centres) - k)]).view(-1, 1, 1)
    shading = 1.0 + shading * (dx * torch.cos(angle) + dy * torch.sin(angle)) / all_radius
    weights = torch.cat([amplitude, faint_amplitude, blob_amplitude]).view(-1, 1, 1)
    image = image + (weights * disks * shading).sum(0)

    # ... and scratches.
    scratches = _poisson(g, 1.0)
    if scratches:
        points = _spread_points(g, scratches, height, width, 0.0, 0.0)
        theta = _u(g, scratches, 0.0, np.pi).view(-1, 1, 1)
        dist = ((xs - points[:, 0].view(-1, 1, 1)) * torch.sin(theta)
                - (ys - points[:, 1].view(-1, 1, 1)) * torch.cos(theta)).abs()
        line = torch.exp(-0.5 * (dist / _u(g, scratches, 0.4, 0.9).view(-1, 1, 1)) ** 2)
        image = image + (_u(g, scratches, -0.15, 0.15).view(-1, 1, 1) * line).sum(0)

    image = image + _u(g, 1, 0.01, 0.04) * torch.randn(height, width, generator=g)
    return image.clamp_(0.0, 1.0).unsqueeze(0), centres


class ProceduralParticles(Dataset):
    """Procedural particle pads (module docstring).

    Args:
        split: ``"train"`` (1952 images) or ``"test"`` (1000).
        num_images: override the split size (first ``num_images`` of the split).
        seed: base seed; image i of a split is generated from (seed, global index).
        height, width: image size (default 112 x 48).
        mean_particles: mean number of valid particles per image (Poisson).
        min_separation: minimum distance between valid centres, pixels.
        target_radius: radius of the ground-truth disks.
        normalize: standardise each image (default) or keep [0, 1] intensities.
    """

    def __init__(self, split: str = "train", num_images: int | None = None, seed: int = 0,
                 height: int = PAD_HEIGHT, width: int = PAD_WIDTH, mean_particles: float = 25.0,
                 min_separation: float = 3.0, target_radius: float = 2.0, normalize: bool = True):
        if split not in SPLIT_SIZES:
            raise ValueError(f"ProceduralParticles: split must be 'train' or 'test', got {split!r}")
        size = SPLIT_SIZES[split] if num_images is None else int(num_images)
        if size < 0 or size > SPLIT_SIZES[split]:
            raise ValueError(f"ProceduralParticles: num_images must be in [0, {SPLIT_SIZES[split]}] "
                             f"for split {split!r}, got {num_images}")
        if height < 8 or width < 8:
            raise ValueError(f"ProceduralParticles: height and width must be >= 8, got {height} x {width}")
        if mean_particles < 0:
            raise ValueError(f"ProceduralParticles: mean_particles must be >= 0, got {mean_particles}")
        if not target_radius > 0:
            raise ValueError(f"ProceduralParticles: target_radius must be > 0, got {target_radius}")
        self.split = split
        self.seed = int(seed)
        self.height, self.width = int(height), int(width)
        self.mean_particles = float(mean_particles)
        self.min_separation = float(min_separation)
        self.target_radius = float(target_radius)
        self.normalize = bool(normalize)
        self._offset = 0 if split == "train" else SPLIT_SIZES["train"]
        self._size = size
        self._images: torch.Tensor | None = None
        self._targets: torch.Tensor | None = None
        self._centres: list[torch.Tensor] = []

    def __len__(self) -> int:
        return self._size

    def generate(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw image (1, H, W) in [0, 1] and centres (N, 2) of image ``index`` (no caching)."""
        g = _generator(self.seed, self._offset + index)
        return _pad_image(g, self.height, self.width, self.mean_particles, self.min_separation)

    def _build(self) -> None:
        images = torch.empty(self._size, 1, self.height, self.width)
        targets = torch.empty(self._size, 1, self.height, self.width, dtype=torch.uint8)
        centres = []
        for i in range(self._size):
            image, pts = self.generate(i)
            images[i] = standardize(image) if self.normalize else image
            targets[i] = render_targets(pts, self.height, self.width, self.target_radius).to(torch.uint8)
            centres.append(pts)
        self._images, self._targets, self._centres = images, targets, centres

    def __getitem__(self, index: int) -> dict:
        if not -self._size <= index < self._size:
            raise IndexError(f"ProceduralParticles: index {index} out of range for {self._size} images")
        if self._images is None:
            self._build()
        index %= self._size
        return {"image": self._images[index], "target": self._targets[index].float(),
                "centres": self._centres[index], "count": len(self._centres[index])}


# --------------------------------------------------------------------------------------------
# Real data from a folder
# --------------------------------------------------------------------------------------------


def read_image(path: Path) -> torch.Tensor:
    """Raw intensities (1, H, W) in [0, 1] of an 8- or 16-bit grayscale image file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64)
                scale = 65535.0
            elif mode in ("L", "P", "RGB", "RGBA", "LA", "1"):
                arr = np.asarray(img.convert("L"), dtype=np.float64)
                scale = 255.0
            else:
                raise ValueError(f"image {str(path)!r}: unsupported mode {mode!r} "
                                 f"(need 8- or 16-bit grayscale or colour)")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"could not read image {str(path)!r}: {err}") from err
    if arr.ndim != 2:
        raise ValueError(f"image {str(path)!r}: expected a 2-D grayscale image, got shape {arr.shape}")
    return torch.from_numpy((arr / scale).astype(np.float32)).clamp_(0.0, 1.0).unsqueeze(0)


def _read_csv(path: Path) -> list[list[float]]:
    points = []
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            cells = [c.strip() for c in row if c.strip()]
            if not cells:
                continue
            if lineno == 1 and [c.lower() for c in cells[:2]] == ["x", "y"]:
                continue
            if len(cells) != 2:
                raise ValueError(f"annotation {str(path)!r} line {lineno}: expected 'x,y', got {row}")
            try:
                points.append([float(cells[0]), float(cells[1])])
            except ValueError:
                raise ValueError(f"annotation {str(path)!r} line {lineno}: non-numeric centre {row}") from None
    return points


def _read_json(path: Path) -> list[list[float]]:
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"annotation {str(path)!r}: invalid JSON ({err})") from err
    if isinstance(data, dict):
        if "centres" not in data:
            raise ValueError(f"annotation {str(path)!r}: a JSON object needs a 'centres' list")
        data = data["centres"]
    if not isinstance(data, list):
        raise ValueError(f"annotation {str(path)!r}: expected a list of centres, got {type(data).__name__}")
    points = []
    for i, item in enumerate(data):
        try:
            if isinstance(item, dict):
                points.append([float(item["x"]), float(item["y"])])
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                points.append([float(item[0]), float(item[1])])
            else:
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"annotation {str(path)!r}: centre {i} is not [x, y] or "
                             f"{{'x': .., 'y': ..}}: {item!r}") from None
    return points


class ParticleFolder(Dataset):
    """Real pad images with centre annotations from ``root`` (formats in the module docstring).

    Everything is read and checked when the dataset is built: an unreadable image or
    annotation, a missing annotation or a centre outside the image raises ``ValueError``
    naming the file (and the centre). ``target_radius`` and ``normalize`` as in
    :class:`ProceduralParticles`.
    """

    def __init__(self, root: str | os.PathLike, target_radius: float = 2.0, normalize: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"ParticleFolder: root {str(self.root)!r} is not a directory")
        if not target_radius > 0:
            raise ValueError(f"ParticleFolder: target_radius must be > 0, got {target_radius}")
        self.files = sorted(p for p in self.root.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not self.files:
            raise ValueError(f"ParticleFolder: no PNG/BMP/TIFF images in {str(self.root)!r}")
        self.target_radius = float(target_radius)
        self.normalize = bool(normalize)
        self._items = [self._load(p) for p in self.files]

    def _load(self, path: Path) -> dict:
        image = read_image(path)
        csv_path, json_path = path.with_suffix(".csv"), path.with_suffix(".json")
        if csv_path.is_file():
            ann, points = csv_path, _read_csv(csv_path)
        elif json_path.is_file():
            ann, points = json_path, _read_json(json_path)
        else:
            raise ValueError(f"image {str(path)!r} has no annotation ({csv_path.name} or {json_path.name})")
        _, h, w = image.shape
        centres = torch.tensor(points, dtype=torch.float32).reshape(-1, 2)
        for i, (x, y) in enumerate(centres.tolist()):
            if not (0.0 <= x <= w - 1 and 0.0 <= y <= h - 1):
                raise ValueError(f"annotation {str(ann)!r}: centre {i} (x={x}, y={y}) is outside the "
                                 f"{w} x {h} image (x in [0, {w - 1}], y in [0, {h - 1}])")
        return {
            "image": standardize(image) if self.normalize else image,
            "target": render_targets(centres, h, w, self.target_radius),
            "centres": centres,
            "count": len(centres),
        }

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> dict:
        return self._items[index]
