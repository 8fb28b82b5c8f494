"""Top-down human-pose data as the official HRNet pose code prepares it
(``HRNet/HRNet-Human-Pose-Estimation lib/dataset/coco.py``, ``JointsDataset.py``,
``lib/utils/transforms.py``).

* :class:`COCOKeypoints`: a COCO-keypoints folder, ``ROOT/annotations/person_keypoints_{split}.json``
  with the images in ``ROOT/images/{split}/`` (the official layout) or ``ROOT/{split}/`` (the
  layout of the COCO archives). One sample per person annotation (ground-truth boxes, as
  ``TEST.USE_GT_BBOX: true``): crowd annotations, those without labelled keypoints and boxes of
  no area are skipped; boxes are clipped to the image as official (``clean_bbox``).
* :class:`ProceduralPoses`: an embedded set (no download) of stick figures with the 17 COCO
  joints on smooth noise, one person per picture, deterministic by ``seed``.

A person box becomes a ``center`` and a ``scale`` (w, h in units of 200 px) with the input's
aspect ratio and a padding of 1.25 (:func:`box_to_center_scale`); the person is cut out with
the affine map of the official ``get_affine_transform`` (:func:`affine_matrix`, bilinear,
zero outside the picture). Training augmentation (:class:`PoseAugment`, the COCO configs'
values): half-body crops, random scale, rotation and horizontal flip with the left/right joints
swapped. Targets: Gaussian heatmaps (sigma 2) at 1/4 of the input size with per-joint weights
(:func:`fastvision.data.pose_targets.generate_target`).

A sample is ``(image (3, H, W) float32, ImageNet-normalised RGB, target (J, H/4, W/4),
target_weight (J, 1), meta)``; ``meta`` holds the box ``center`` and ``scale`` (float64), the
``rotation``, the ``image_id``, the box ``score`` (1 for ground-truth boxes) and the dataset
``index``, which is what the official inference needs to map predictions back to the image.
The random draws of sample ``i`` come from a generator seeded by ``(seed, epoch, i)``.

Departures from the official pipeline, all below the resolution of the heatmaps: the crop is
warped in float (``cv2.warpAffine`` on the uint8 image rounds to integers), and the affine map is
computed in closed form in float64 (OpenCV solves it from three points in float32).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from fastvision.data.pose_targets import COCO_FLIP_PAIRS, PIXEL_STD, generate_target

__all__ = [
    "COCO_KEYPOINT_NAMES",
    "COCO_SKELETON",
    "COCO_KEYPOINT_SIGMAS",
    "UPPER_BODY_IDS",
    "box_to_center_scale",
    "affine_matrix",
    "warp_affine",
    "PoseAugment",
    "COCOKeypoints",
    "ProceduralPoses",
]

COCO_KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle")
# COCO's skeleton (person_keypoints_*.json "skeleton"), 0-based.
COCO_SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
                 (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5),
                 (4, 6))
# Per-keypoint OKS constants of the COCO keypoint evaluation (pycocotools ``COCOeval``).
COCO_KEYPOINT_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07,
                                 1.07, .87, .87, .89, .89]) / 10.0
UPPER_BODY_IDS = tuple(range(11))  # nose ... right wrist (``coco.py upper_body_ids``)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NUM_JOINTS = 17


def _size_pair(value, name: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (width, height) pair, got {value!r}") from None
    if w < 1 or h < 1:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return w, h


def box_to_center_scale(box, aspect_ratio: float, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Official ``_xywh2cs``: box ``(x, y, w, h)`` -> ``center`` (x, y) and ``scale`` (w, h) / 200,
    the box grown to ``aspect_ratio`` (= width / height of the input) and by ``padding``."""
    x, y, w, h = (float(v) for v in box)
    if aspect_ratio <= 0:
        raise ValueError(f"aspect_ratio must be > 0, got {aspect_ratio}")
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float64)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w / PIXEL_STD, h / PIXEL_STD], dtype=np.float64) * padding
    return center, scale


def affine_matrix(center, scale, rotation: float, output_size, inverse: bool = False) -> np.ndarray:
    """(2, 3) float64 map of the official ``get_affine_transform(center, scale, rot, output_size)``:
    the point ``center`` goes to the output centre, ``scale[0] * 200`` source pixels to the
    output width (the box height does not enter), and the picture turns by ``rotation`` degrees
    (counter-clockwise on screen for positive values). ``inverse`` gives output -> source."""
    out_w, out_h = _size_pair(output_size, "output_size")
    k = out_w / (float(scale[0]) * PIXEL_STD)
    t = math.radians(float(rotation))
    cs, sn = math.cos(t), math.sin(t)
    linear = k * np.array([[cs, sn], [-sn, cs]])
    offset = np.array([out_w * 0.5, out_h * 0.5]) - linear @ np.asarray(center, dtype=np.float64)
    forward = np.concatenate([linear, offset[:, None]], axis=1)
    if not inverse:
        return forward
    inv = np.linalg.inv(linear)
    return np.concatenate([inv, (-inv @ offset)[:, None]], axis=1)


def warp_affine(image: torch.Tensor, matrix: np.ndarray, output_size) -> torch.Tensor:
    """``cv2.warpAffine(image, matrix, output_size, INTER_LINEAR)`` with a zero border, for a
    (C, H, W) float tensor: output pixel (x, y) samples the source at ``matrix^-1 (x, y, 1)``
    (pixel centres at integer coordinates) bilinearly."""
    out_w, out_h = _size_pair(output_size, "output_size")
    _, h, w = image.shape
    linear = np.asarray(matrix, dtype=np.float64)[:, :2]
    inv = np.linalg.inv(linear)
    inv_offset = -inv @ np.asarray(matrix, dtype=np.float64)[:, 2]
    ys, xs = torch.meshgrid(torch.arange(out_h, dtype=torch.float64),
                            torch.arange(out_w, dtype=torch.float64), indexing="ij")
    src_x = inv[0, 0] * xs + inv[0, 1] * ys + inv_offset[0]
    src_y = inv[1, 0] * xs + inv[1, 1] * ys + inv_offset[1]
    # align_corners=True: -1 and 1 are the centres of the first and last pixels.
    grid = torch.stack([src_x * 2 / max(w - 1, 1) - 1, src_y * 2 / max(h - 1, 1) - 1], dim=-1)
    out = F.grid_sample(image[None].float(), grid[None].float(), mode="bilinear",
                        padding_mode="zeros", align_corners=True)
    return out[0]


@dataclass(frozen=True)
class PoseAugment:
    """Official training augmentation (``JointsDataset.__getitem__``, COCO configs):

    * half body (``PROB_HALF_BODY`` 0.3, when more than ``NUM_JOINTS_HALF_BODY`` = 8 joints are
      visible): the box becomes that of the upper or the lower body joints, x1.5. As official,
      the upper body is chosen when a *normal* draw is < 0.5 (``np.random.randn() < 0.5``,
      i.e. 69% of the time) and it has more than 2 visible joints;
    * scale x ``clip(N(0, 1) * 0.35 + 1, 0.65, 1.35)`` (``SCALE_FACTOR``);
    * rotation ``clip(N(0, 1) * 45, -90, 90)`` degrees with probability 0.6 (``ROT_FACTOR``;
      the w32_256x192 config says 45);
    * horizontal flip with probability 0.5, the left/right joints swapped (``fliplr_joints``).
    """

    scale_factor: float = 0.35
    rotation_factor: float = 45.0
    rotation_prob: float = 0.6
    flip: bool = True
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8

    def __post_init__(self):
        if not 0 <= self.scale_factor < 1:
            raise ValueError(f"scale_factor must be in [0, 1), got {self.scale_factor}")
        for name in ("rotation_prob", "half_body_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def _half_body(joints: np.ndarray, vis: np.ndarray, aspect_ratio: float, g: torch.Generator):
    upper = [joints[j] for j in range(len(vis)) if vis[j] > 0 and j in UPPER_BODY_IDS]
    lower = [joints[j] for j in range(len(vis)) if vis[j] > 0 and j not in UPPER_BODY_IDS]
    if float(torch.randn((), generator=g)) < 0.5 and len(upper) > 2:
        selected = upper
    else:
        selected = lower if len(lower) > 2 else upper
    if len(selected) < 2:
        return None
    pts = np.asarray(selected, dtype=np.float64)
    center = pts.mean(axis=0)
    w, h = pts.max(axis=0) - pts.min(axis=0)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    return center, np.array([w / PIXEL_STD, h / PIXEL_STD]) * 1.5


class _KeypointSet(Dataset):
    """Shared sample pipeline; subclasses provide :meth:`record` and :meth:`coco_ground_truth`."""

    flip_pairs = COCO_FLIP_PAIRS
    num_joints = NUM_JOINTS

    def __init__(self, image_size=(192, 256), heatmap_size=None, sigma: float = 2.0,
                 augment: PoseAugment | None = None, seed: int = 0):
        self.image_size = _size_pair(image_size, "image_size")
        w, h = self.image_size
        if heatmap_size is None:
            if w % 4 or h % 4:
                raise ValueError(f"image_size must be divisible by 4 for the 1/4 heatmaps, got {w}x{h}")
            heatmap_size = (w // 4, h // 4)
        self.heatmap_size = _size_pair(heatmap_size, "heatmap_size")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)
        self.aspect_ratio = w / h
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the engine each epoch: new augmentation draws, still reproducible."""
        self.epoch = int(epoch)

    def record(self, index: int) -> dict:
        """``image`` (H, W, 3) uint8 RGB, ``joints`` (J, 2) float64 pixels, ``vis`` (J,) in {0, 1},
        ``center``, ``scale``, ``image_id``, ``score``."""
        raise NotImplementedError

    def coco_ground_truth(self) -> dict:
        """The annotations in COCO format (``images``, ``annotations`` with ``keypoints``, ``area``,
        ``bbox``, ``iscrowd``, ``num_keypoints``), for the OKS evaluation."""
        raise NotImplementedError

    def __getitem__(self, index: int):
        rec = self.record(index)
        image = torch.from_numpy(np.ascontiguousarray(rec["image"])).permute(2, 0, 1).float() / 255.0
        joints = np.array(rec["joints"], dtype=np.float64)
        vis = np.array(rec["vis"], dtype=np.float64)
        center = np.array(rec["center"], dtype=np.float64)
        scale = np.array(rec["scale"], dtype=np.float64)
        rotation = 0.0
        if self.augment is not None:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch * 10_007 + index) % 2**62)
            center, scale, rotation, image, joints, vis = self._augment(g, image, joints, vis, center, scale)
        matrix = affine_matrix(center, scale, rotation, self.image_size)
        crop = warp_affine(image, matrix, self.image_size)
        mean = torch.tensor(IMAGENET_MEAN).reshape(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).reshape(3, 1, 1)
        crop = (crop - mean) / std
        moved = joints @ matrix[:, :2].T + matrix[:, 2]
        joints = np.where(vis[:, None] > 0, moved, joints)
        target, weight = generate_target(joints, vis, self.image_size, self.heatmap_size, self.sigma)
        meta = {"center": torch.from_numpy(center), "scale": torch.from_numpy(scale),
                "rotation": float(rotation), "image_id": int(rec["image_id"]),
                "score": float(rec.get("score", 1.0)), "index": int(index)}
        return crop, target, weight, meta

    def _augment(self, g, image, joints, vis, center, scale):
        a = self.augment
        if (vis.sum() > a.half_body_min_joints
                and float(torch.rand((), generator=g)) < a.half_body_prob):
            half = _half_body(joints, vis, self.aspect_ratio, g)
            if half is not None:
                center, scale = half
        scale = scale * float(np.clip(float(torch.randn((), generator=g)) * a.scale_factor + 1,
                                      1 - a.scale_factor, 1 + a.scale_factor))
        rf = a.rotation_factor
        rotation = float(np.clip(float(torch.randn((), generator=g)) * rf, -2 * rf, 2 * rf))
        if float(torch.rand((), generator=g)) > a.rotation_prob:
            rotation = 0.0
        if a.flip and float(torch.rand((), generator=g)) <= 0.5:
            width = image.shape[2]
            image = image.flip(2)
            joints = joints.copy()
            joints[:, 0] = width - joints[:, 0] - 1
            vis = vis.copy()
            for left, right in self.flip_pairs:
                joints[[left, right]] = joints[[right, left]]
                vis[[left, right]] = vis[[right, left]]
            joints = joints * vis[:, None]  # as ``fliplr_joints``: unlabelled joints at (0, 0)
            center = np.array([width - center[0] - 1, center[1]])
        return center, scale, rotation, image, joints, vis


def _annotation_error(path: Path, where: str, field: str, value) -> ValueError:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return ValueError(f"{str(path)!r}: {where}: field {field!r} is invalid or missing (got {text})")


class COCOKeypoints(_KeypointSet):
    """COCO person keypoints from ``root`` (see the module docstring for the layout)."""

    def __init__(self, root, split: str = "val2017", image_size=(192, 256), heatmap_size=None,
                 sigma: float = 2.0, augment: PoseAugment | None = None, seed: int = 0):
        super().__init__(image_size, heatmap_size, sigma, augment, seed)
        root = Path(root)
        self.annotation_file = root / "annotations" / f"person_keypoints_{split}.json"
        if not self.annotation_file.is_file():
            raise FileNotFoundError(f"COCO keypoint annotations not found: {str(self.annotation_file)!r}")
        candidates = [root / "images" / split, root / split]
        self.image_dir = next((d for d in candidates if d.is_dir()), None)
        if self.image_dir is None:
            tried = ", ".join(repr(str(d)) for d in candidates)
            raise FileNotFoundError(f"COCO image folder not found: tried {tried}")
        try:
            data = json.loads(self.annotation_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"could not read {str(self.annotation_file)!r} as JSON ({err})") from err
        self._ground_truth, self.records = self._parse(data)

    def _parse(self, data) -> tuple[dict, list[dict]]:
        path = self.annotation_file
        if not isinstance(data, dict):
            raise _annotation_error(path, "top level", "images", type(data).__name__)
        for key in ("images", "annotations"):
            if not isinstance(data.get(key), list):
                raise _annotation_error(path, "top level", key, data.get(key))
        person_ids = [c.get("id") for c in data.get("categories", []) if c.get("name") == "person"]
        person = person_ids[0] if person_ids else 1
        images = {}
        for i, im in enumerate(data["images"]):
            for key in ("id", "file_name", "width", "height"):
                if key not in im:
                    raise _annotation_error(path, f"images[{i}]", key, im.get(key))
            images[im["id"]] = im
        annotations, records = [], []
        for i, ann in enumerate(data["annotations"]):
            where = f"annotations[{i}] (id {ann.get('id')!r})"
            if ann.get("category_id", person) != person:
                continue
            if ann.get("image_id") not in images:
                raise _annotation_error(path, where, "image_id", ann.get("image_id"))
            kpts = ann.get("keypoints")
            if not isinstance(kpts, list) or len(kpts) != 3 * self.num_joints:
                raise _annotation_error(path, where, "keypoints", kpts)
            box = ann.get("bbox")
            if not isinstance(box, list) or len(box) != 4:
                raise _annotation_error(path, where, "bbox", box)
            try:
                kp = np.array(kpts, dtype=np.float64).reshape(self.num_joints, 3)
                box = [float(v) for v in box]
                area = float(ann.get("area", box[2] * box[3]))
            except (TypeError, ValueError):
                raise _annotation_error(path, where, "keypoints/bbox/area", ann) from None
            crowd = int(ann.get("iscrowd", 0))
            gt = {"id": ann.get("id", i + 1), "image_id": ann["image_id"], "category_id": person,
                  "keypoints": kp.reshape(-1).tolist(), "bbox": box, "area": area, "iscrowd": crowd,
                  "num_keypoints": int(ann.get("num_keypoints", int((kp[:, 2] > 0).sum())))}
            annotations.append(gt)
            if crowd or kp[:, 2].max() <= 0:
                continue
            im = images[ann["image_id"]]
            # Official ``clean_bbox``: clip to the picture, drop empty boxes.
            x1, y1 = max(0.0, box[0]), max(0.0, box[1])
            x2 = min(im["width"] - 1.0, x1 + max(0.0, box[2] - 1))
            y2 = min(im["height"] - 1.0, y1 + max(0.0, box[3] - 1))
            if area <= 0 or x2 < x1 or y2 < y1:
                continue
            center, scale = box_to_center_scale((x1, y1, x2 - x1, y2 - y1), self.aspect_ratio)
            records.append({"file": self.image_dir / im["file_name"], "joints": kp[:, :2],
                            "vis": np.minimum(kp[:, 2], 1.0), "center": center, "scale": scale,
                            "image_id": ann["image_id"], "score": 1.0})
        ground_truth = {"images": list(images.values()), "annotations": annotations,
                        "categories": [{"id": person, "name": "person"}]}
        return ground_truth, records

    def __len__(self) -> int:
        return len(self.records)

    def record(self, index: int) -> dict:
        from PIL import Image

        rec = self.records[index]
        path = rec["file"]
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {str(path)!r} (listed in "
                                    f"{str(self.annotation_file)!r})")
        try:
            with Image.open(path) as im:
                image = np.array(im.convert("RGB"))
        except Exception as err:
            raise RuntimeError(f"could not read image {str(path)!r} ({type(err).__name__}: {err})") from err
        return {**rec, "image": image}

    def coco_ground_truth(self) -> dict:
        return self._ground_truth


class ProceduralPoses(_KeypointSet):
    """Embedded stick figures: one person facing the camera (its left joints on the picture's
    right) with the 17 COCO joints, random posture, size, position and lean, limbs and joint
    discs drawn on smooth colour noise; ``canvas`` (w, h) pixels, default 128x128. Joints that
    fall outside the picture, and a random 0-2 others, are unlabelled (visibility 0); the
    annotation's ``area`` is 0.6 x its box's (COCO's area is the person's segment, not the box).
    Deterministic in ``(seed, split, index)``."""

    def __init__(self, split: str = "train", num_samples: int = 256, image_size=(96, 128),
                 canvas=(128, 128), heatmap_size=None, sigma: float = 2.0,
                 augment: PoseAugment | None = None, seed: int = 0):
        super().__init__(image_size, heatmap_size, sigma, augment, seed)
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.split, self.num_samples = split, int(num_samples)
        self.canvas = _size_pair(canvas, "canvas")
        if min(self.canvas) < 32:
            raise ValueError(f"canvas must be at least 32x32, got {self.canvas}")

    def __len__(self) -> int:
        return self.num_samples

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 0 if self.split == "train" else 1, index])

    def _figure(self, rng) -> tuple[np.ndarray, np.ndarray, float]:
        """Joints (17, 2) in pixels, visibility (17,), person height in pixels."""
        cw, ch = self.canvas
        height = rng.uniform(0.5, 0.8) * ch
        lean = rng.uniform(-0.25, 0.25)
        up = np.array([math.sin(lean), -math.cos(lean)])
        right = np.array([math.cos(lean), math.sin(lean)])  # the person's left side
        hip_mid = np.array([rng.uniform(0.35, 0.65) * cw, rng.uniform(0.52, 0.62) * ch])
        neck = hip_mid + up * 0.3 * height
        j = np.zeros((NUM_JOINTS, 2))
        j[0] = neck + up * 0.12 * height
        for side, (eye, ear, sho, hip) in ((1, (1, 3, 5, 11)), (-1, (2, 4, 6, 12))):
            j[eye] = j[0] + up * 0.025 * height + side * right * 0.025 * height
            j[ear] = j[0] + up * 0.01 * height + side * right * 0.05 * height
            j[sho] = neck + side * right * 0.11 * height
            j[hip] = hip_mid + side * right * 0.08 * height
        down = -up
        for side, (sho, elb, wri, hip, kne, ank) in ((1, (5, 7, 9, 11, 13, 15)),
                                                      (-1, (6, 8, 10, 12, 14, 16))):
            for start, mid, end, lengths, spread in ((sho, elb, wri, (0.15, 0.13), 2.4),
                                                     (hip, kne, ank, (0.22, 0.2), 0.7)):
                a1 = side * rng.uniform(-0.2, spread)
                a2 = a1 + side * rng.uniform(-0.3, 1.2 if spread > 1 else 0.4)
                j[mid] = j[start] + _rotate(down, a1) * lengths[0] * height
                j[end] = j[mid] + _rotate(down, a2) * lengths[1] * height
        vis = np.ones(NUM_JOINTS)
        inside = (j[:, 0] >= 0) & (j[:, 0] <= cw - 1) & (j[:, 1] >= 0) & (j[:, 1] <= ch - 1)
        vis[~inside] = 0
        vis[rng.choice(NUM_JOINTS, size=int(rng.integers(0, 3)), replace=False)] = 0
        return j, vis, height

    def _render(self, rng, joints: np.ndarray, height: float) -> np.ndarray:
        cw, ch = self.canvas
        coarse = rng.uniform(0.15, 0.6, size=(3, ch // 16 + 2, cw // 16 + 2)).astype(np.float32)
        smooth = F.interpolate(torch.from_numpy(coarse)[None], size=(ch, cw), mode="bilinear",
                               align_corners=False)[0].permute(1, 2, 0).numpy()
        image = smooth + rng.normal(0, 0.05, size=(ch, cw, 3)).astype(np.float32)
        colour = np.array([0.95, 0.85, 0.2]) * rng.uniform(0.8, 1.0)
        thickness, radius = max(1.0, 0.025 * height), max(1.5, 0.03 * height)
        for i, k in COCO_SKELETON:
            self._paint(image, joints[i], joints[k], thickness, colour)
        # Head joints white, arms red, legs blue: the part, not the side, is colour-coded, so a
        # flipped picture with swapped labels is still a valid sample.
        palette = np.array([[1.0, 1.0, 1.0], [0.9, 0.2, 0.2], [0.2, 0.3, 0.95]])
        for j, p in enumerate(joints):
            self._paint(image, p, p, radius, palette[0 if j < 5 else 1 if j < 11 else 2])
        return (np.clip(image, 0, 1) * 255).astype(np.uint8)

    @staticmethod
    def _paint(image: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float, colour) -> None:
        """Colour the pixels within ``radius`` of the segment a-b (a disc when a == b), looking
        only at the segment's bounding window."""
        ch, cw = image.shape[:2]
        x0, y0 = (max(0, int(math.floor(min(a[d], b[d]) - radius))) for d in (0, 1))
        x1, y1 = (int(math.ceil(max(a[d], b[d]) + radius)) + 1 for d in (0, 1))
        x1, y1 = min(x1, cw), min(y1, ch)
        if x0 >= x1 or y0 >= y1:
            return
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        ab = b - a
        t = np.clip(((xs - a[0]) * ab[0] + (ys - a[1]) * ab[1]) / max(float(ab @ ab), 1e-9), 0, 1)
        dist = np.hypot(xs - a[0] - t * ab[0], ys - a[1] - t * ab[1])
        image[y0:y1, x0:x1][dist < radius] = colour

    def _box(self, joints: np.ndarray, vis: np.ndarray, height: float) -> list[float]:
        """The person's box (x, y, w, h): the labelled joints' extent plus a margin, clipped."""
        cw, ch = self.canvas
        labelled = joints[vis > 0]
        margin = 0.06 * height
        x0, y0 = np.maximum(labelled.min(axis=0) - margin, 0)
        x1 = min(float(labelled[:, 0].max() + margin), cw - 1.0)
        y1 = min(float(labelled[:, 1].max() + margin), ch - 1.0)
        return [float(x0), float(y0), x1 - float(x0), y1 - float(y0)]

    def record(self, index: int) -> dict:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = self._rng(index)
        joints, vis, height = self._figure(rng)
        image = self._render(rng, joints, height)
        center, scale = box_to_center_scale(self._box(joints, vis, height), self.aspect_ratio)
        return {"image": image, "joints": joints, "vis": vis, "center": center, "scale": scale,
                "image_id": index + 1, "score": 1.0}

    def coco_ground_truth(self) -> dict:
        images, annotations = [], []
        cw, ch = self.canvas
        for i in range(self.num_samples):
            joints, vis, height = self._figure(self._rng(i))
            box = self._box(joints, vis, height)
            kp = np.concatenate([joints, 2 * vis[:, None]], axis=1)
            kp[vis == 0] = 0
            images.append({"id": i + 1, "file_name": f"procedural_{self.split}_{i:06d}.png",
                           "width": cw, "height": ch})
            annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1,
                                "keypoints": kp.reshape(-1).tolist(), "bbox": box,
                                "area": 0.6 * box[2] * box[3], "iscrowd": 0,
                                "num_keypoints": int(vis.sum())})
        return {"images": images, "annotations": annotations,
                "categories": [{"id": 1, "name": "person"}]}


def _rotate(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])
