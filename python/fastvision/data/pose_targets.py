"""Top-down pose estimation targets, as in the official HRNet pose code
(``HRNet/HRNet-Human-Pose-Estimation``): Gaussian heatmap targets
(``lib/dataset/JointsDataset.py generate_target``). The loss is :mod:`fastvision.losses.pose`,
the decoding and the COCO OKS AP :mod:`fastvision.metrics.pose`.

Conventions as official: sizes are (width, height) pairs (config ``IMAGE_SIZE: [192, 256]``,
``HEATMAP_SIZE: [48, 64]``); joint coordinates are (x, y) pixels; a person box is given by its
``center`` (x, y) and ``scale`` (w, h) in units of 200 pixels (``pixel_std``).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch

__all__ = ["COCO_FLIP_PAIRS", "PIXEL_STD", "generate_target", "size_pair"]

# Left/right joint pairs of the 17 COCO keypoints (``lib/dataset/coco.py flip_pairs``).
COCO_FLIP_PAIRS: Tuple[Tuple[int, int], ...] = (
    (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
PIXEL_STD = 200.0


def size_pair(value, name: str) -> Tuple[float, float]:
    """``value`` as a positive (width, height) pair of floats; ValueError naming ``name``."""
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
    iw, ih = size_pair(image_size, "image_size")
    w, h = (int(v) for v in size_pair(heatmap_size, "heatmap_size"))
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
