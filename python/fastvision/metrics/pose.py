"""Top-down pose estimation decoding and metrics, as in the official HRNet pose code
(``HRNet/HRNet-Human-Pose-Estimation``): flip test with the shifted flipped heatmap
(``lib/core/function.py validate``, ``TEST.SHIFT_HEATMAP``; ``lib/utils/transforms.py
flip_back``), argmax decoding with the quarter-pixel refinement and the transform back to image
coordinates (``lib/core/inference.py get_max_preds / get_final_preds``, ``lib/utils/transforms.py
transform_preds``), the PCK ``accuracy`` (``lib/core/evaluate.py``), the rescoring of each person
(``IN_VIS_THRE``), OKS-NMS (``lib/nms/nms.py``, ``OKS_THRE``) and the COCO OKS AP
(:func:`keypoint_ap`: pycocotools' ``COCOeval`` when it is importable, else this module's
implementation of the same algorithm).

Conventions as official: sizes are (width, height) pairs; joint coordinates are (x, y) pixels; a
person box is given by its ``center`` (x, y) and ``scale`` (w, h) in units of 200 pixels.
"""

from __future__ import annotations

from typing import Callable, Sequence, Tuple

import numpy as np
import torch

from fastvision.data.pose import COCO_KEYPOINT_SIGMAS
from fastvision.data.pose_targets import COCO_FLIP_PAIRS, PIXEL_STD, size_pair

__all__ = [
    "AP_NAMES",
    "flip_back",
    "flip_test",
    "get_max_preds",
    "transform_preds",
    "get_final_preds",
    "pck_accuracy",
    "oks",
    "oks_nms",
    "keypoint_ap",
    "predict_people",
]

IN_VIS_THRE = 0.2
OKS_THRE = 0.9
AP_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


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
    w, h = size_pair(heatmap_size, "heatmap_size")
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


def pck_accuracy(output: torch.Tensor, target: torch.Tensor, threshold: float = 0.5):
    """Official ``accuracy`` (``lib/core/evaluate.py``, ``hm_type='gaussian'``): the argmaxes of
    the predicted and the target heatmaps, their distance normalised by ``(H / 10, W / 10)``
    (as official, the x offset is divided by H / 10 and the y offset by W / 10), counted as
    correct below ``threshold``; joints whose target argmax is not > 1 in both x and y
    (no target) are left out. Returns (per-joint accuracy (J,) with -1 where a joint has no
    target, average over the joints that have one, number of those joints)."""
    if output.dim() != 4 or output.shape != target.shape:
        raise ValueError(f"output and target must be (B, J, H, W) heatmaps of one shape, got "
                         f"{tuple(output.shape)} and {tuple(target.shape)}")
    pred, _ = get_max_preds(output.detach().float())
    gt, _ = get_max_preds(target.float())
    h, w = output.shape[2:]
    norm = torch.tensor([h, w], dtype=torch.float32, device=pred.device) / 10
    valid = (gt[..., 0] > 1) & (gt[..., 1] > 1)  # (B, J)
    dist = ((pred - gt) / norm).norm(dim=2)
    hit = (dist < threshold) & valid
    counts = valid.sum(0)
    per_joint = torch.where(counts > 0, hit.sum(0).float() / counts.clamp(min=1),
                            torch.full_like(counts, -1.0, dtype=torch.float32))
    have = counts > 0
    cnt = int(have.sum())
    avg = float(per_joint[have].mean()) if cnt else 0.0
    return per_joint, avg, cnt


def _as_keypoints(value, name: str) -> np.ndarray:
    kp = np.asarray(value, dtype=np.float64).reshape(-1)
    if kp.size != 3 * len(COCO_KEYPOINT_SIGMAS):
        raise ValueError(f"{name} must hold {3 * len(COCO_KEYPOINT_SIGMAS)} values (x, y, v per "
                         f"COCO keypoint), got {kp.size}")
    return kp


def oks(gt: dict, detections: np.ndarray) -> np.ndarray:
    """pycocotools' ``computeOks`` of one ground-truth person against (D, 51) detections:
    ``mean_k exp(-d_k^2 / (2 area (2 sigma_k)^2))`` over the labelled joints (v > 0) of the
    ground truth; without labelled joints, d is the distance to the box grown by its size on
    every side (zero inside it), over all joints."""
    g = _as_keypoints(gt["keypoints"], "ground-truth keypoints")
    variances = (2 * COCO_KEYPOINT_SIGMAS) ** 2
    xg, yg, vg = g[0::3], g[1::3], g[2::3]
    labelled = vg > 0
    d = np.asarray(detections, dtype=np.float64).reshape(-1, g.size)
    xd, yd = d[:, 0::3], d[:, 1::3]
    if labelled.any():
        dx, dy = xd - xg, yd - yg
    else:
        bx, by, bw, bh = gt["bbox"]
        x0, x1, y0, y1 = bx - bw, bx + 2 * bw, by - bh, by + 2 * bh
        dx = np.maximum(0, x0 - xd) + np.maximum(0, xd - x1)
        dy = np.maximum(0, y0 - yd) + np.maximum(0, yd - y1)
    e = (dx ** 2 + dy ** 2) / variances / (gt["area"] + np.spacing(1)) / 2
    if labelled.any():
        e = e[:, labelled]
    return np.exp(-e).sum(axis=1) / e.shape[1]


def oks_nms(people: list[dict], threshold: float = OKS_THRE) -> list[int]:
    """Official ``oks_nms`` (``lib/nms/nms.py``): greedily keep the highest-scoring person and drop
    the others whose OKS with it (keypoints (J, 3), areas averaged) is above ``threshold``.
    ``people``: dicts with ``keypoints`` (J, 3), ``score``, ``area``. Returns kept indices."""
    if not people:
        return []
    scores = np.array([p["score"] for p in people])
    kpts = np.stack([np.asarray(p["keypoints"], dtype=np.float64).reshape(-1) for p in people])
    areas = np.array([p["area"] for p in people], dtype=np.float64)
    variances = (2 * COCO_KEYPOINT_SIGMAS) ** 2
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        dx = kpts[rest, 0::3] - kpts[i, 0::3]
        dy = kpts[rest, 1::3] - kpts[i, 1::3]
        e = (dx ** 2 + dy ** 2) / variances / ((areas[i] + areas[rest])[:, None] / 2 + np.spacing(1)) / 2
        overlap = np.exp(-e).mean(axis=1) if e.size else np.zeros(0)
        order = rest[overlap <= threshold]
    return keep


_AREA_RANGES = {"all": (0.0, 1e5 ** 2), "medium": (32.0 ** 2, 96.0 ** 2), "large": (96.0 ** 2, 1e5 ** 2)}
_OKS_THRESHOLDS = np.linspace(0.5, 0.95, 10)
_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
_MAX_DETS = 20


def _match_image(gts: list[dict], dts: list[dict], area_range) -> dict | None:
    """COCOeval ``evaluateImg`` for one image and area range: greedy matching of the detections
    (by score) to the best-OKS ground truth not yet matched, per OKS threshold."""
    if not gts and not dts:
        return None
    lo, hi = area_range
    gt_ignore = np.array([bool(g["_ignore"] or g["area"] < lo or g["area"] > hi) for g in gts], dtype=bool)
    gt_order = np.argsort(gt_ignore, kind="mergesort")
    gts = [gts[i] for i in gt_order]
    gt_ignore = gt_ignore[gt_order]
    dts = sorted(dts, key=lambda d: -d["score"])[:_MAX_DETS]  # Python's sort is stable, as mergesort
    crowd = np.array([bool(g["iscrowd"]) for g in gts], dtype=bool)
    ious = (np.stack([oks(g, np.stack([d["keypoints"] for d in dts])) for g in gts], axis=1)
            if gts and dts else np.zeros((len(dts), len(gts))))
    T = len(_OKS_THRESHOLDS)
    gt_matched = np.zeros((T, len(gts)), dtype=bool)
    dt_matched = np.zeros((T, len(dts)), dtype=bool)
    dt_ignore = np.zeros((T, len(dts)), dtype=bool)
    for t, thr in enumerate(_OKS_THRESHOLDS):
        for d in range(len(dts)):
            best, m = min(thr, 1 - 1e-10), -1
            for g in range(len(gts)):
                if gt_matched[t, g] and not crowd[g]:
                    continue
                if m > -1 and not gt_ignore[m] and gt_ignore[g]:
                    break  # the rest are ignored ground truths; a real match was found
                if ious[d, g] < best:
                    continue
                best, m = ious[d, g], g
            if m == -1:
                continue
            dt_ignore[t, d] = gt_ignore[m]
            dt_matched[t, d] = True
            gt_matched[t, m] = True
    outside = np.array([d["area"] < lo or d["area"] > hi for d in dts], dtype=bool)
    dt_ignore |= ~dt_matched & outside[None, :]
    return {"scores": np.array([d["score"] for d in dts]), "matched": dt_matched,
            "ignore": dt_ignore, "gt_ignore": gt_ignore}


def _accumulate(evals: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval ``accumulate`` for one area range: precision (T, R) and recall (T,), -1 where
    there is no ground truth to find."""
    T, R = len(_OKS_THRESHOLDS), len(_RECALL_THRESHOLDS)
    precision, recall = -np.ones((T, R)), -np.ones(T)
    evals = [e for e in evals if e is not None]
    if not evals:
        return precision, recall
    scores = np.concatenate([e["scores"] for e in evals])
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([e["matched"] for e in evals], axis=1)[:, order]
    ignore = np.concatenate([e["ignore"] for e in evals], axis=1)[:, order]
    npig = int(np.count_nonzero(~np.concatenate([e["gt_ignore"] for e in evals])))
    if npig == 0:
        return precision, recall
    tps = np.cumsum(matched & ~ignore, axis=1).astype(np.float64)
    fps = np.cumsum(~matched & ~ignore, axis=1).astype(np.float64)
    for t in range(T):
        tp, fp = tps[t], fps[t]
        rc = tp / npig
        pr = tp / (fp + tp + np.spacing(1))
        recall[t] = rc[-1] if tp.size else 0.0
        pr = np.maximum.accumulate(pr[::-1])[::-1] if pr.size else pr  # precision envelope
        q = np.zeros(R)
        idx = np.searchsorted(rc, _RECALL_THRESHOLDS, side="left")
        ok = idx < pr.size
        q[ok] = pr[idx[ok]]
        precision[t] = q
    return precision, recall


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else -1.0


def _own_keypoint_ap(ground_truth: dict, detections: list[dict]) -> dict:
    by_image: dict = {im["id"]: ([], []) for im in ground_truth["images"]}
    for i, g in enumerate(ground_truth["annotations"]):
        if g["image_id"] in by_image:
            ignore = bool(g.get("iscrowd", 0)) or g.get("num_keypoints", 1) == 0
            by_image[g["image_id"]][0].append({**g, "_ignore": ignore, "iscrowd": g.get("iscrowd", 0)})
    for d in detections:
        if d["image_id"] not in by_image:
            raise ValueError(f"detection for image_id {d['image_id']!r}, which is not in the ground truth")
        kp = _as_keypoints(d["keypoints"], "detection keypoints")
        xs, ys = kp[0::3], kp[1::3]
        # pycocotools ``loadRes``: a keypoint result's area is that of its keypoints' extent.
        area = (xs.max() - xs.min()) * (ys.max() - ys.min())
        by_image[d["image_id"]][1].append({"keypoints": kp, "score": float(d["score"]), "area": area})
    stats = {}
    for name, rng in _AREA_RANGES.items():
        evals = [_match_image(gts, dts, rng) for gts, dts in by_image.values()]
        precision, recall = _accumulate(evals)
        suffix = {"all": "", "medium": "m", "large": "l"}[name]
        stats["AP" + suffix] = _mean_valid(precision)
        stats["AR" + suffix] = _mean_valid(recall)
        if name == "all":
            for thr in (50, 75):
                t = int(np.argmin(np.abs(_OKS_THRESHOLDS - thr / 100)))
                stats[f"AP{thr}"] = _mean_valid(precision[t])
                stats[f"AR{thr}"] = _mean_valid(recall[t:t + 1])
    return {k: stats[k] for k in AP_NAMES}


def _pycocotools_keypoint_ap(ground_truth: dict, detections: list[dict]) -> dict:
    import contextlib
    import io

    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:
        raise ImportError("keypoint_ap(backend='pycocotools') needs pycocotools "
                          "(`pip install pycocotools`); backend='fastvision' (the default when it "
                          "is missing) computes the same AP without it") from exc

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": ground_truth["images"], "categories": ground_truth["categories"],
                        "annotations": [{**a, "keypoints": list(map(float, a["keypoints"]))}
                                        for a in ground_truth["annotations"]]}
        coco.createIndex()
        results = coco.loadRes([{"image_id": d["image_id"], "category_id": 1, "score": float(d["score"]),
                                 "keypoints": [float(v) for v in np.asarray(d["keypoints"]).reshape(-1)]}
                                for d in detections])
        ev = COCOeval(coco, results, "keypoints")
        ev.params.useSegm = None
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(AP_NAMES, (float(v) for v in ev.stats)))


def keypoint_ap(ground_truth: dict, detections: list[dict], backend: str = "auto") -> dict:
    """COCO keypoint AP/AR (``AP`` = AP@[.5:.95], ``AP50``, ``AP75``, ``APm``, ``APl``, ``AR``...,
    up to 20 people per image, -1 where nothing can be computed) of ``detections`` (dicts with
    ``image_id``, ``keypoints`` (17 x (x, y, score)), ``score``) against ``ground_truth`` (COCO
    format: ``images``, ``annotations``, ``categories``). Crowd annotations and people without
    labelled keypoints are ignored, as ``COCOeval``. ``backend``: ``"pycocotools"``,
    ``"fastvision"`` (this module's implementation of ``COCOeval``) or ``"auto"`` (pycocotools
    when importable)."""
    if backend not in ("auto", "pycocotools", "fastvision"):
        raise ValueError(f"backend must be 'auto', 'pycocotools' or 'fastvision', got {backend!r}")
    if not detections:
        raise ValueError("keypoint_ap needs at least one detection")
    if backend == "auto":
        try:
            import pycocotools.cocoeval  # noqa: F401

            backend = "pycocotools"
        except ImportError:
            backend = "fastvision"
    if backend == "pycocotools":
        return _pycocotools_keypoint_ap(ground_truth, detections)
    return _own_keypoint_ap(ground_truth, detections)


def predict_people(heatmaps: torch.Tensor, meta: dict, post_process: bool = True) -> list[dict]:
    """Official post-processing of a batch: ``get_final_preds`` (quarter-pixel refinement unless
    ``post_process=False``: plain argmax; image pixels), then per person ``keypoints`` (J, 3) =
    (x, y, heatmap maximum), ``area`` = box area (scale * 200 squared), ``score`` = box score x
    mean of the maxima above 0.2."""
    coords, maxvals = get_final_preds(heatmaps.detach().float().cpu(), meta["center"], meta["scale"],
                                      post_process)
    scale = torch.as_tensor(meta["scale"], dtype=torch.float64).reshape(-1, 2)
    people = []
    for b in range(coords.shape[0]):
        kpts = np.concatenate([coords[b].numpy(), maxvals[b].double().numpy()], axis=1)
        confident = kpts[:, 2] > IN_VIS_THRE
        kpt_score = float(kpts[confident, 2].mean()) if confident.any() else 0.0
        people.append({"image_id": int(meta["image_id"][b]), "keypoints": kpts,
                       "area": float((scale[b] * 200).prod()),
                       "score": kpt_score * float(meta["score"][b])})
    return people
