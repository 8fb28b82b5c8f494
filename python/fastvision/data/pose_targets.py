"""Top-down pose estimation targets, loss and decoding, as in the official HRNet pose code
(``HRNet/HRNet-Human-Pose-Estimation``): Gaussian heatmap targets
(``lib/dataset/JointsDataset.py generate_target``), ``JointsMSELoss`` (``lib/core/loss.py``), flip
test with the shifted flipped heatmap (``lib/core/function.py validate``, ``TEST.SHIFT_HEATMAP``;
``lib/utils/transforms.py flip_back``), argmax decoding with the quarter-pixel refinement and the
transform back to image coordinates (``lib/core/inference.py get_max_preds / get_final_preds``,
``lib/utils/transforms.py transform_preds``).

Conventions as official: sizes are (width, height) pairs (config ``IMAGE_SIZE: [192, 256]``,
``HEATMAP_SIZE: [48, 64]``); joint coordinates are (x, y) pixels; a person box is given by its
``center`` (x, y) and ``scale`` (w, h) in units of 200 pixels (``pixel_std``).
"""

from __future__ import annotations

from typing import Callable, Sequence, Tuple

import torch
import torch.nn as nn

__all__ = [
    "COCO_FLIP_PAIRS",
    "PIXEL_STD",
    "generate_target",
    "JointsMSELoss",
    "flip_back",
    "flip_test",
    "get_max_preds",
    "transform_preds",
    "get_final_preds",
]

# Left/right joint pairs of the 17 COCO keypoints (``lib/dataset/coco.py flip_pairs``).
COCO_FLIP_PAIRS: Tuple[Tuple[int, int], ...] = (
    (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
PIXEL_STD = 200.0


def _pair(value, name: str) -> Tuple[float, float]:
    vals = tuple(float(v) for v in value)
    if len(vals) != 2 or min(vals) <= 0:
        raise ValueError(f"{name} must be a positive (width, height) pair, got {value!r}")
    return vals


def generate_target(joints, joints_vis, image_size: Sequence[int] = (192, 256),
                    heatmap_size: Sequence[int] = (48, 64), sigma: float = 2.0):
    """Gaussian heatmap targets of one person.

    joints: (J, 2+) joint (x, y) in input-image pixels; joints_vis: (J,) or (J, 1+) visibility
    (column 0 is used). Returns ``target`` (J, H_hm, W_hm) float32 and ``target_weight`` (J, 1)
    float32. As official: the centre is ``int(coord / stride + 0.5)`` (truncation toward zero),
    the Gaussian (peak 1, unnormalised) is cut to a (6 sigma + 1)^2 window, a joint is drawn only
    when its visibility is > 0.5, and a joint whose window lies wholly outside the heatmap gets
    weight 0.
    """
    joints = torch.as_tensor(joints, dtype=torch.float64)
    vis = torch.as_tensor(joints_vis, dtype=torch.float32)
    if joints.dim() != 2 or joints.shape[1] < 2:
        raise ValueError(f"joints must have shape (J, 2) or (J, 3), got {tuple(joints.shape)}")
    if vis.dim() == 2:
        vis = vis[:, 0]
    if vis.shape != (joints.shape[0],):
        raise ValueError(f"joints_vis must hold one visibility per joint ({joints.shape[0]}), "
                         f"got shape {tuple(torch.as_tensor(joints_vis).shape)}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    iw, ih = _pair(image_size, "image_size")
    w, h = (int(v) for v in _pair(heatmap_size, "heatmap_size"))
    stride_x, stride_y = iw / w, ih / h
    num_joints = joints.shape[0]
    target = torch.zeros(num_joints, h, w, dtype=torch.float32)
    weight = vis.clone().reshape(num_joints, 1)
    radius = sigma * 3
    size = int(2 * radius + 1)
    grid = torch.arange(size, dtype=torch.float32)
    centre = size // 2
    gauss = torch.exp(-((grid[None, :] - centre) ** 2 + (grid[:, None] - centre) ** 2)
                      / (2 * sigma ** 2))
    for j in range(num_joints):
        mu_x = int(float(joints[j, 0]) / stride_x + 0.5)
        mu_y = int(float(joints[j, 1]) / stride_y + 0.5)
        ul = (int(mu_x - radius), int(mu_y - radius))
        br = (int(mu_x + radius + 1), int(mu_y + radius + 1))
        if ul[0] >= w or ul[1] >= h or br[0] < 0 or br[1] < 0:
            weight[j] = 0
            continue
        if weight[j] > 0.5:
            gx = (max(0, -ul[0]), min(br[0], w) - ul[0])
            gy = (max(0, -ul[1]), min(br[1], h) - ul[1])
            ix = (max(0, ul[0]), min(br[0], w))
            iy = (max(0, ul[1]), min(br[1], h))
            target[j, iy[0]:iy[1], ix[0]:ix[1]] = gauss[gy[0]:gy[1], gx[0]:gx[1]]
    return target, weight


class JointsMSELoss(nn.Module):
    """Official heatmap loss: for each joint 0.5 * MSE(pred * w, gt * w) over batch and pixels,
    averaged over joints (= 0.5 * the mean over everything, since every joint has the same
    number of pixels). ``use_target_weight=False`` ignores the weights."""

    def __init__(self, use_target_weight: bool = True):
        super().__init__()
        self.use_target_weight = bool(use_target_weight)

    def forward(self, output: torch.Tensor, target: torch.Tensor,
                target_weight: torch.Tensor) -> torch.Tensor:
        if output.dim() != 4 or output.shape != target.shape:
            raise ValueError(f"output and target must be (B, J, H, W) heatmaps of one shape, "
                             f"got {tuple(output.shape)} and {tuple(target.shape)}")
        diff = output - target
        if self.use_target_weight:
            b, j = output.shape[:2]
            if target_weight.numel() != b * j:
                raise ValueError(f"target_weight must hold B*J = {b * j} weights, got shape "
                                 f"{tuple(target_weight.shape)}")
            diff = diff * target_weight.reshape(b, j, 1, 1)
        return 0.5 * diff.square().mean()


def _check_heatmaps(heatmaps: torch.Tensor, name: str = "heatmaps") -> torch.Tensor:
    heatmaps = torch.as_tensor(heatmaps)
    if heatmaps.dim() != 4:
        raise ValueError(f"{name} must have shape (B, J, H, W), got {tuple(heatmaps.shape)}")
    return heatmaps


def _check_pairs(flip_pairs, num_joints: int) -> None:
    for pair in flip_pairs:
        if len(pair) != 2 or not all(0 <= int(p) < num_joints for p in pair):
            raise ValueError(f"flip_pairs entries must be pairs of joint indices in "
                             f"[0, {num_joints}), got {tuple(pair)}")


def flip_back(heatmaps: torch.Tensor, flip_pairs=COCO_FLIP_PAIRS) -> torch.Tensor:
    """Heatmaps of a horizontally flipped image, flipped back: mirrored in x and the left/right
    joints of each pair swapped. (B, J, H, W) -> (B, J, H, W)."""
    heatmaps = _check_heatmaps(heatmaps)
    _check_pairs(flip_pairs, heatmaps.shape[1])
    order = list(range(heatmaps.shape[1]))
    for a, b in flip_pairs:
        order[a], order[b] = order[b], order[a]
    return heatmaps.flip(3)[:, order]


def flip_test(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
              flip_pairs=COCO_FLIP_PAIRS, shift_heatmap: bool = True) -> torch.Tensor:
    """Official flip test: the mean of ``model(images)`` and the flipped-back heatmaps of
    ``model(images flipped in x)``. With ``shift_heatmap`` (``TEST.SHIFT_HEATMAP: true`` in
    every official config) the flipped-back heatmaps move one pixel right first (column 0 kept),
    because flipping is not aligned with the stride-4 heatmap grid."""
    heatmaps = _check_heatmaps(model(images), "model(images)")
    flipped = flip_back(model(images.flip(3)), flip_pairs)
    if shift_heatmap:
        flipped = torch.cat([flipped[..., :1], flipped[..., :-1]], dim=3)
    return (heatmaps + flipped) * 0.5


def get_max_preds(heatmaps: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Argmax of each heatmap: ``preds`` (B, J, 2) float32 (x, y) heatmap pixels (the first
    maximum in row-major order) and ``maxvals`` (B, J, 1); joints whose maximum is <= 0 get
    (0, 0), as official."""
    heatmaps = _check_heatmaps(heatmaps)
    b, j, _, w = heatmaps.shape
    maxvals, idx = heatmaps.reshape(b, j, -1).max(dim=2)
    preds = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], dim=2).float()
    preds = preds * (maxvals > 0).unsqueeze(2).float()
    return preds, maxvals.unsqueeze(2)


def _to_image(coords, center, scale, w: float, h: float) -> torch.Tensor:
    """coords (B, J, 2), center and scale (B, 2) -> float64 image coordinates (B, J, 2)."""
    s = scale[:, :1, None] * PIXEL_STD / w
    half = torch.tensor([w / 2, h / 2], dtype=torch.float64)
    return center[:, None, :] + (coords.double() - half) * s


def transform_preds(coords: torch.Tensor, center, scale,
                    heatmap_size: Sequence[int]) -> torch.Tensor:
    """Heatmap (x, y) -> image pixels for one box: ``center + (coord - heatmap_size / 2) * s``,
    ``s = scale[0] * 200 / heatmap_width`` for both axes. This is the official affine map
    (``get_affine_transform(center, scale, 0, heatmap_size, inv=1)``, built from the box width
    only), in closed form and float64 where the official code solves it with
    ``cv2.getAffineTransform`` in float32. coords (..., 2) -> float64 (..., 2)."""
    coords = torch.as_tensor(coords, dtype=torch.float64)
    c = torch.as_tensor(center, dtype=torch.float64)
    sc = torch.as_tensor(scale, dtype=torch.float64)
    if coords.shape[-1] != 2 or c.shape != (2,) or sc.shape != (2,):
        raise ValueError(f"coords must be (..., 2), center and scale (2,) pairs, got "
                         f"{tuple(coords.shape)}, {tuple(c.shape)}, {tuple(sc.shape)}")
    w, h = _pair(heatmap_size, "heatmap_size")
    flat = coords.reshape(1, -1, 2)
    return _to_image(flat, c[None], sc[None], w, h).reshape(coords.shape)


def get_final_preds(heatmaps: torch.Tensor, center, scale,
                    post_process: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """Image-space joint predictions from heatmaps (B, J, H, W) and per-box ``center`` (B, 2),
    ``scale`` (B, 2): argmax, then (``post_process``, ``TEST.POST_PROCESS``) a quarter-pixel
    step toward the higher neighbour in x and in y (only where the rounded argmax satisfies
    1 < x < W-1 and 1 < y < H-1, the official strict bounds), then ``transform_preds``.
    Returns (B, J, 2) float64 coordinates and (B, J, 1) maxima."""
    heatmaps = _check_heatmaps(heatmaps)
    b, j, h, w = heatmaps.shape
    center = torch.as_tensor(center, dtype=torch.float64).reshape(-1, 2)
    scale = torch.as_tensor(scale, dtype=torch.float64).reshape(-1, 2)
    if center.shape[0] != b or scale.shape[0] != b:
        raise ValueError(f"center and scale must hold one (x, y) pair per image ({b}), got "
                         f"{center.shape[0]} and {scale.shape[0]}")
    coords, maxvals = get_max_preds(heatmaps)
    if post_process:
        px = torch.floor(coords[..., 0] + 0.5).long()
        py = torch.floor(coords[..., 1] + 0.5).long()
        inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
        flat = heatmaps.reshape(b, j, -1)

        def at(dy, dx):
            idx = ((py + dy).clamp(0, h - 1) * w + (px + dx).clamp(0, w - 1)).unsqueeze(2)
            return flat.gather(2, idx).squeeze(2)

        diff = torch.stack([at(0, 1) - at(0, -1), at(1, 0) - at(-1, 0)], dim=2)
        coords = coords + torch.sign(diff).float() * 0.25 * inside.unsqueeze(2).float()
    return _to_image(coords, center, scale, w, h), maxvals

