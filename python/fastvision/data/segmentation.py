"""Semantic-segmentation data: Cityscapes and CamVid from local folders, an embedded procedural
scene set (no download), and the official training augmentations.

* :class:`CityscapesSegmentation`: ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` with
  ``gtFine/{split}/{city}/*_gtFine_labelIds.png``; label ids mapped to the 19 train ids, every
  other id to 255 (the mapping of HRNet's ``lib/datasets/cityscapes.py``).
* :class:`CamVidSegmentation`: the SegNet layout ``{split}/*.png`` with ``{split}annot/*.png``
  (11 classes 0..10; 11 is void and becomes 255).
* :class:`ProceduralSegmentation`: scenes of textured shapes on a two-region background, one
  colour and texture per class, deterministic by ``seed``, 128x256 by default.

Samples are ``(image (3, H, W) float32 normalised, label (H, W) int64)``. :class:`SegmentationAugment`
applies random scale, crop (padding the image with 0 and the label with 255), horizontal flip and
colour jitter; the random draws of sample ``i`` come from a generator seeded by
``(seed, epoch, i)``, so an epoch's samples are the same whatever the workers or processes.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_ID_TO_TRAIN_ID",
    "CAMVID_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SegmentationAugment",
    "CityscapesSegmentation",
    "CamVidSegmentation",
    "ProceduralSegmentation",
    "label_palette",
    "colorize",
]

IGNORE = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                      "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
                      "truck", "bus", "train", "motorcycle", "bicycle")
# Cityscapes label id -> train id (ids not listed are void: 255).
CITYSCAPES_ID_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
                             23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
_CITYSCAPES_COLORS = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156),
                      (190, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0),
                      (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
                      (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32))
CAMVID_CLASSES = ("sky", "building", "column_pole", "road", "sidewalk", "tree", "sign_symbol",
                  "fence", "car", "pedestrian", "bicyclist")
_CAMVID_VOID = 11


def label_palette(num_classes: int) -> np.ndarray:
    """(256, 3) uint8 colours: the Cityscapes colours for 19 classes, else the PASCAL bit palette
    (HRNet's ``get_palette``); 255 (ignore) is black."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for j in range(256):
        lab, i = j, 0
        while lab:
            for channel in range(3):
                palette[j, channel] |= ((lab >> channel) & 1) << (7 - i)
            i += 1
            lab >>= 3
    if num_classes == len(_CITYSCAPES_COLORS):
        palette[:num_classes] = _CITYSCAPES_COLORS
    palette[IGNORE] = 0
    return palette


def colorize(label: np.ndarray, num_classes: int) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 colours of :func:`label_palette`."""
    return label_palette(num_classes)[np.asarray(label).astype(np.int64).clip(0, 255)]


def _uniform(g: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=g, dtype=torch.float64))


def _rgb_to_hsv(img: torch.Tensor) -> torch.Tensor:
    r, g, b = img
    maxc, minc = img.max(0).values, img.min(0).values
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(maxc == r, ((g - b) / safe) % 6,
                      torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    hue = torch.where(delta > 0, hue, torch.zeros_like(hue))
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)),
                      torch.zeros_like(maxc))
    return torch.stack([hue, sat, maxc])


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    h, s, v = hsv
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6])
    return v - v * s * (torch.minimum(k, 4 - k).clamp(0, 1))


def _gray(img: torch.Tensor) -> torch.Tensor:
    return (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]).unsqueeze(0)


@dataclass(frozen=True)
class SegmentationAugment:
    """Training (or, with the defaults, evaluation: normalisation only) transform.

    ``scale_range``: the image is resized by ``s`` drawn uniformly in it (or from ``low + k *
    scale_step``, HRNet's ``0.5 + randint(0, 16) / 10``) with probability ``scale_prob``
    (HyperSeg's ``RandomResize`` 0.5); bilinear for the image, nearest for the label.
    ``crop_size`` (H, W): random crop after padding bottom/right to at least that size.
    ``flip``: horizontal flip with probability 0.5. ``color_jitter`` (brightness, contrast,
    saturation, hue) factors as torchvision's ``ColorJitter``, applied in that order.
    """

    crop_size: tuple[int, int] | None = None
    scale_range: tuple[float, float] | None = None
    scale_step: float | None = None
    scale_prob: float = 1.0
    flip: bool = False
    color_jitter: tuple[float, float, float, float] | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    ignore_index: int = IGNORE

    def __post_init__(self):
        if self.crop_size is not None and (len(self.crop_size) != 2 or min(self.crop_size) < 1):
            raise ValueError(f"crop_size must be (H, W) with positive sizes, got {self.crop_size}")
        if self.scale_range is not None and not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}")
        if self.scale_step is not None and self.scale_step <= 0:
            raise ValueError(f"scale_step must be > 0, got {self.scale_step}")
        if self.color_jitter is not None and (len(self.color_jitter) != 4 or min(self.color_jitter) < 0
                                              or self.color_jitter[3] > 0.5):
            raise ValueError(f"color_jitter must be 4 non-negative factors (hue <= 0.5), got "
                             f"{self.color_jitter}")

    def __call__(self, image: np.ndarray, label: np.ndarray, g: torch.Generator):
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
        lbl = torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))
        if self.scale_range is not None and _uniform(g) < self.scale_prob:
            img, lbl = self._rescale(img, lbl, self._draw_scale(g))
        if self.crop_size is not None:
            img, lbl = self._crop(img, lbl, g)
        if self.flip and _uniform(g) < 0.5:
            img, lbl = img.flip(-1), lbl.flip(-1)
        if self.color_jitter is not None:
            img = self._jitter(img, g)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return ((img - mean) / std).contiguous(), lbl.contiguous()

    def _draw_scale(self, g) -> float:
        low, high = self.scale_range
        if self.scale_step is None:
            return _uniform(g, low, high)
        steps = int(round((high - low) / self.scale_step))
        return low + int(torch.randint(0, steps + 1, (), generator=g)) * self.scale_step

    @staticmethod
    def _rescale(img, lbl, scale: float):
        size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[2] * scale)))
        img = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False)[0]
        lbl = F.interpolate(lbl[None, None].float(), size=size, mode="nearest")[0, 0].long()
        return img.clamp(0, 1), lbl

    def _crop(self, img, lbl, g):
        ch, cw = self.crop_size
        pad_h, pad_w = max(ch - img.shape[1], 0), max(cw - img.shape[2], 0)
        if pad_h or pad_w:
            img = F.pad(img, (0, pad_w, 0, pad_h), value=0.0)
            lbl = F.pad(lbl, (0, pad_w, 0, pad_h), value=self.ignore_index)
        y = int(torch.randint(0, img.shape[1] - ch + 1, (), generator=g))
        x = int(torch.randint(0, img.shape[2] - cw + 1, (), generator=g))
        return img[:, y:y + ch, x:x + cw], lbl[y:y + ch, x:x + cw]

    def _jitter(self, img, g):
        brightness, contrast, saturation, hue = self.color_jitter
        if brightness:
            img = (img * _uniform(g, max(0.0, 1 - brightness), 1 + brightness)).clamp(0, 1)
        if contrast:
            f = _uniform(g, max(0.0, 1 - contrast), 1 + contrast)
            img = (f * img + (1 - f) * _gray(img).mean()).clamp(0, 1)
        if saturation:
            f = _uniform(g, max(0.0, 1 - saturation), 1 + saturation)
            img = (f * img + (1 - f) * _gray(img)).clamp(0, 1)
        if hue:
            hsv = _rgb_to_hsv(img)
            hsv = torch.stack([(hsv[0] + _uniform(g, -hue, hue)) % 1.0, hsv[1], hsv[2]])
            img = _hsv_to_rgb(hsv).clamp(0, 1)
        return img


class _SegmentationSet(Dataset):
    """Shared part: seeded augmentation per (seed, epoch, index)."""

    class_names: tuple[str, ...] = ()
    ignore_index = IGNORE

    def __init__(self, augment: SegmentationAugment | None, seed: int):
        self.augment = augment or SegmentationAugment()
        self.seed = int(seed)
        self.epoch = 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def set_epoch(self, epoch: int) -> None:
        """Called by the engine each epoch: new augmentation draws, still reproducible."""
        self.epoch = int(epoch)

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 image and (H, W) int64 train-id label, before augmentation."""
        raise NotImplementedError

    def __getitem__(self, index: int):
        image, label = self.raw(index)
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch * 10_007 + index) % 2**62)
        return self.augment(image, label, g)


def _read_png(path: Path, kind: str) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"{kind} file not found: {str(path)!r}")
    try:
        with Image.open(path) as im:
            array = np.array(im.convert("RGB") if kind == "image" else im)
    except Exception as err:
        raise RuntimeError(f"could not read {kind} {str(path)!r} ({type(err).__name__}: {err})") from err
    if kind == "label" and array.ndim != 2:
        raise ValueError(f"label {str(path)!r} must be a single-channel image of class ids, got "
                         f"shape {array.shape}")
    return array


def _read_pair(image_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray]:
    image, label = _read_png(image_path, "image"), _read_png(label_path, "label")
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {str(image_path)!r} is {image.shape[0]}x{image.shape[1]} but its "
                         f"label {str(label_path)!r} is {label.shape[0]}x{label.shape[1]}")
    return image, label


def _folder(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {str(path)!r}")
    return path


class CityscapesSegmentation(_SegmentationSet):
    """Cityscapes fine annotations (19 train ids, 255 void) from ``root``."""

    class_names = CITYSCAPES_CLASSES

    def __init__(self, root, split: str = "train", augment: SegmentationAugment | None = None,
                 seed: int = 0):
        super().__init__(augment, seed)
        root = Path(root)
        images = _folder(root / "leftImg8bit" / split, f"Cityscapes {split!r} image")
        self.images = sorted(images.glob("*/*_leftImg8bit.png"))
        if not self.images:
            raise FileNotFoundError(f"no */*_leftImg8bit.png under {str(images)!r}")
        labels = root / "gtFine" / split
        self.labels = [labels / p.parent.name / p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
                       for p in self.images]
        missing = [p for p in self.labels if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"label file not found: {str(missing[0])!r} "
                                    f"({len(missing)} of {len(self.labels)} missing)")
        self._lut = np.full(256, IGNORE, dtype=np.int64)
        for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
            self._lut[label_id] = train_id

    def __len__(self) -> int:
        return len(self.images)

    def raw(self, index):
        image, label = _read_pair(self.images[index], self.labels[index])
        return image, self._lut[label]


class CamVidSegmentation(_SegmentationSet):
    """CamVid in the SegNet layout (11 classes; void 11 -> 255) from ``root``."""

    class_names = CAMVID_CLASSES

    def __init__(self, root, split: str = "train", augment: SegmentationAugment | None = None,
                 seed: int = 0):
        super().__init__(augment, seed)
        if split not in ("train", "val", "test"):
            raise ValueError(f"CamVid split must be 'train', 'val' or 'test', got {split!r}")
        root = Path(root)
        images = _folder(root / split, f"CamVid {split!r} image")
        labels = _folder(root / f"{split}annot", f"CamVid {split!r} annotation")
        self.images = sorted(images.glob("*.png"))
        if not self.images:
            raise FileNotFoundError(f"no *.png images under {str(images)!r}")
        self.labels = [labels / p.name for p in self.images]
        missing = [p for p in self.labels if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"label file not found: {str(missing[0])!r} "
                                    f"({len(missing)} of {len(self.labels)} missing)")

    def __len__(self) -> int:
        return len(self.images)

    def raw(self, index):
        image, label = _read_pair(self.images[index], self.labels[index])
        label = label.astype(np.int64)
        if label.max(initial=0) > _CAMVID_VOID:
            raise ValueError(f"label {str(self.labels[index])!r} holds {int(label.max())}; CamVid "
                             f"annotations are 0..10 and 11 (void)")
        label[label == _CAMVID_VOID] = IGNORE
        return image, label


class ProceduralSegmentation(_SegmentationSet):
    """Embedded scenes: a two-region background (upper and lower class, random horizon) and 3-8
    rectangles, ellipses and triangles of random classes painted over it. Each class has its own
    colour and texture (flat, horizontal or vertical stripes, checks), with pixel noise; the
    appearance of a class is the same in every split and seed, the scenes differ."""

    def __init__(self, split: str = "train", num_samples: int = 256, height: int = 128,
                 width: int = 256, num_classes: int = 19, seed: int = 0,
                 augment: SegmentationAugment | None = None):
        super().__init__(augment, seed)
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if height < 8 or width < 8:
            raise ValueError(f"height and width must be >= 8, got {height}x{width}")
        if not 2 <= num_classes <= 255:
            raise ValueError(f"num_classes must be in [2, 255], got {num_classes}")
        self.split, self.num_samples = split, int(num_samples)
        self.height, self.width = int(height), int(width)
        self.class_names = tuple(f"class{c}" for c in range(num_classes))
        self._split_code = ("train", "val", "test").index(split)
        hues = (np.arange(num_classes) * 0.618034) % 1.0  # golden-ratio hues: far apart
        self._colors = np.array([colorsys.hsv_to_rgb(h, 0.75, 0.55 + 0.4 * ((c * 7) % 5) / 4)
                                 for c, h in enumerate(hues)]) * 255.0

    def __len__(self) -> int:
        return self.num_samples

    def _texture(self, c: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        period = 4 + 2 * (c % 3)
        kind = (c // 3) % 4
        if kind == 0:
            pattern = np.zeros_like(yy, dtype=np.float64)
        elif kind == 1:
            pattern = np.sign(np.sin(2 * np.pi * yy / period))
        elif kind == 2:
            pattern = np.sign(np.sin(2 * np.pi * xx / period))
        else:
            pattern = np.sign(np.sin(2 * np.pi * yy / period) * np.sin(2 * np.pi * xx / period))
        return self._colors[c][:, None, None] * (1.0 + 0.25 * pattern)

    def raw(self, index):
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng([self.seed, self._split_code, index])
        h, w, n = self.height, self.width, self.num_classes
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        upper, lower = rng.choice(n, 2, replace=False)
        label = np.where(yy < rng.uniform(0.3, 0.7) * h, upper, lower).astype(np.int64)
        for _ in range(int(rng.integers(3, 9))):
            c = int(rng.integers(n))
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(0.08, 0.3) * h, rng.uniform(0.05, 0.25) * w
            shape = int(rng.integers(3))
            if shape == 0:
                mask = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
            elif shape == 1:
                mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            else:  # apex up: width grows linearly from the top
                mask = (yy >= cy - ry) & (yy <= cy + ry) & (np.abs(xx - cx) <= rx * (yy - cy + ry) / (2 * ry))
            label[mask] = c
        image = np.zeros((3, h, w))
        for c in np.unique(label):
            mask = label == c
            image[:, mask] = self._texture(int(c), yy, xx)[:, mask]
        image += rng.normal(0.0, 8.0, image.shape)
        return image.clip(0, 255).astype(np.uint8).transpose(1, 2, 0), label
