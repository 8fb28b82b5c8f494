"""The ``pose`` recipe: top-down HRNetV1 pose estimation on the one engine, as the official
``HRNet/HRNet-Human-Pose-Estimation`` trains and validates it
(``experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml``, ``tools/train.py``,
``lib/core/function.py``, ``lib/core/evaluate.py``, ``lib/dataset/coco.py``, ``lib/nms/nms.py``).

Training: Adam lr 1e-3 (no weight decay: the official ``get_optimizer`` passes none to Adam),
the lr x0.1 at 170/210 and 200/210 of the epochs (MultiStepLR at epochs 170 and 200 of 210;
stepped per epoch, here at the first step of those epochs), batch 32, JointsMSELoss with
target weights, the official augmentation (:class:`fastvision.data.pose.PoseAugment`).

Validation, as ``validate``: the flip test with the shifted flipped heatmap (``FLIP_TEST``,
``SHIFT_HEATMAP``), the loss, the PCK ``accuracy`` of the heatmap argmaxes (:func:`pck_accuracy`),
then ``get_final_preds`` (quarter-pixel refinement, back to image pixels), the rescoring of each
person by its box score x the mean of its joint maxima above 0.2 (``IN_VIS_THRE``), OKS-NMS at
0.9 (``OKS_THRE``) per image, and the COCO OKS AP (:func:`keypoint_ap`: pycocotools' ``COCOeval``
when it is importable, else this module's implementation of the same algorithm).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from fastvision.data.pose import COCO_KEYPOINT_SIGMAS
from fastvision.engine import Task, TrainConfig
from fastvision.models import get_model
from fastvision.pose import JointsMSELoss, flip_test, get_final_preds, get_max_preds

__all__ = [
    "POSE_MODELS",
    "EMBEDDED_EPOCHS",
    "MultiStepDecay",
    "PoseData",
    "PoseTask",
    "pck_accuracy",
    "oks",
    "oks_nms",
    "keypoint_ap",
    "predict_people",
    "evaluate_pose",
    "parse_image_size",
    "add_arguments",
    "build",
]

POSE_MODELS = ("hrnetv1_w32_pose", "hrnetv1_w48_pose")
EMBEDDED_EPOCHS = 4  # on the embedded stick figures (CPU-sized); the official recipe is 210
OFFICIAL_EPOCHS = 210
OFFICIAL_MILESTONES = (170, 200)
IN_VIS_THRE = 0.2
OKS_THRE = 0.9
AP_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


@dataclass(frozen=True)
class MultiStepDecay:
    """``base * gamma ** (number of milestones <= samples)`` (``torch.optim.lr_scheduler.MultiStepLR``
    with milestones counted in samples seen)."""

    base: float
    milestones: tuple[int, ...]
    gamma: float = 0.1

    def __call__(self, samples: int) -> float:
        return self.base * self.gamma ** sum(samples >= m for m in self.milestones)


def scaled_milestones(epochs: int) -> tuple[int, ...]:
    """The official epochs 170 and 200 of 210 at the same fractions of ``epochs``, at least 1."""
    return tuple(max(1, round(epochs * m / OFFICIAL_EPOCHS)) for m in OFFICIAL_MILESTONES)


def parse_image_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT (e.g. 192x256), got {text!r}") from None
    if w < 32 or h < 32 or w % 32 or h % 32:
        raise argparse.ArgumentTypeError(f"width and height must be positive multiples of 32, got {text!r}")
    return w, h


@dataclass
class PoseData:
    """Which data: ``"embedded"`` (:class:`~fastvision.data.ProceduralPoses`) or a COCO folder."""

    source: str = "embedded"
    image_size: tuple[int, int] = (96, 128)  # (width, height); official 192x256 or 288x384
    train_split: str = "train2017"
    val_split: str = "val2017"
    train_samples: int = 256  # embedded data only
    val_samples: int = 64  # embedded data only
    data_seed: int = 0
    augment: bool = True
    half_body: bool = True

    def _augment(self):
        from fastvision.data.pose import PoseAugment

        if not self.augment:
            return None
        return PoseAugment() if self.half_body else PoseAugment(half_body_prob=0.0)

    def load_train(self):
        from fastvision.data.pose import COCOKeypoints, ProceduralPoses

        if self.source == "embedded":
            return ProceduralPoses("train", self.train_samples, self.image_size,
                                   augment=self._augment(), seed=self.data_seed)
        return COCOKeypoints(self.source, self.train_split, self.image_size, augment=self._augment(),
                             seed=self.data_seed)

    def load_val(self):
        from fastvision.data.pose import COCOKeypoints, ProceduralPoses

        if self.source == "embedded":
            return ProceduralPoses("val", self.val_samples, self.image_size, seed=self.data_seed)
        return COCOKeypoints(self.source, self.val_split, self.image_size)


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


def predict_people(heatmaps: torch.Tensor, meta: dict) -> list[dict]:
    """Official post-processing of a batch: ``get_final_preds`` (quarter-pixel refinement,
    image pixels), then per person ``keypoints`` (J, 3) = (x, y, heatmap maximum), ``area`` =
    box area (scale * 200 squared), ``score`` = box score x mean of the maxima above 0.2."""
    coords, maxvals = get_final_preds(heatmaps.detach().float().cpu(), meta["center"], meta["scale"])
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


@torch.no_grad()
def evaluate_pose(model: nn.Module, loader, device, flip: bool = True, backend: str = "auto",
                  detections_out: list | None = None) -> dict:
    """The official ``validate``: loss, PCK accuracy, OKS AP/AR (see the module docstring).
    The people kept after OKS-NMS are appended to ``detections_out`` when given."""
    criterion = JointsMSELoss(use_target_weight=True)
    loss_sum, acc_sum, acc_count, seen = 0.0, 0.0, 0, 0
    people: list[dict] = []
    for images, target, weight, meta in loader:
        images, target, weight = images.to(device), target.to(device), weight.to(device)
        output = flip_test(model, images, loader.dataset.flip_pairs) if flip else model(images)
        n = images.shape[0]
        loss_sum += float(criterion(output, target, weight)) * n
        _, avg, cnt = pck_accuracy(output, target)
        acc_sum += avg * cnt
        acc_count += cnt
        seen += n
        people += predict_people(output, meta)
    kept = []
    for image_id in dict.fromkeys(p["image_id"] for p in people):
        group = [p for p in people if p["image_id"] == image_id]
        kept += [group[i] for i in oks_nms(group)]
    metrics = {"loss": loss_sum / seen, "acc": acc_sum / acc_count if acc_count else 0.0}
    metrics.update(keypoint_ap(loader.dataset.coco_ground_truth(), kept, backend))
    if detections_out is not None:
        detections_out.extend(kept)
    return metrics


class PoseTask(Task):
    """HRNetV1 top-down pose estimation (see the module docstring)."""

    name = "pose"
    monitor = "val_AP"
    monitor_mode = "max"

    def __init__(self, model: str, data: PoseData, milestones_samples: tuple[int, ...], lr: float = 1e-3,
                 flip_test: bool = True):
        if model not in POSE_MODELS:
            raise ValueError(f"model must be one of {', '.join(POSE_MODELS)}, got {model!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.model_name, self.data, self.lr = model, data, lr
        self.milestones_samples, self.flip_test = tuple(milestones_samples), flip_test
        self.criterion = JointsMSELoss(use_target_weight=True)

    def model_spec(self) -> dict:
        # image_size is not a builder argument: it tells `fastvision eval pose` the input size.
        return {"name": self.model_name, "kwargs": {"num_joints": 17},
                "image_size": list(self.data.image_size)}

    def build_model(self, device):
        return get_model(self.model_name, num_joints=17).to(device)

    def datasets(self):
        return self.data.load_train(), self.data.load_val()

    def optimizer(self, model):
        return torch.optim.Adam(model.parameters(), lr=self.lr)

    def schedules(self):
        return {"lr": MultiStepDecay(self.lr, self.milestones_samples, 0.1)}

    def training_step(self, model, batch, step):
        images, target, weight, _ = batch
        output = model(images)
        loss = self.criterion(output, target, weight)
        _, acc, _ = pck_accuracy(output, target)
        return loss, {"acc": acc}

    @torch.no_grad()
    def evaluate(self, model, loader, device):
        return evaluate_pose(model, loader, device, flip=self.flip_test)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="hrnetv1_w32_pose", choices=POSE_MODELS)
    p.add_argument("--data", default="embedded",
                   help="'embedded' (procedural stick figures) or a COCO folder with "
                        "annotations/person_keypoints_SPLIT.json and images/SPLIT/ (or SPLIT/)")
    p.add_argument("--train-split", default="train2017")
    p.add_argument("--val-split", default="val2017")
    p.add_argument("--image-size", type=parse_image_size, default=None,
                   help="input WIDTHxHEIGHT (default 96x128 on the embedded data, 192x256 on COCO; "
                        "official 192x256 or 288x384)")
    p.add_argument("--train-samples", type=int, default=256, help="embedded data: training pictures")
    p.add_argument("--val-samples", type=int, default=64, help="embedded data: validation pictures")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (official 1e-3)")
    p.add_argument("--no-half-body", action="store_true", help="no half-body augmentation")
    p.add_argument("--no-flip-test", action="store_true", help="validate without the flip test")


def build(args, config: TrainConfig) -> PoseTask:
    """The recipe from the command line: epochs default to a CPU-sized 4 on the embedded data
    (the official 210 on COCO need GPUs); the lr milestones sit at 170/210 and 200/210 of them."""
    size = args.image_size or ((96, 128) if args.data == "embedded" else (192, 256))
    data = PoseData(args.data, size, args.train_split, args.val_split, args.train_samples,
                    args.val_samples, args.seed, half_body=not args.no_half_body)
    if args.data == "embedded":
        train_size = args.train_samples
    else:
        train_size = len(data.load_train())
    steps = train_size // config.batch_size
    if config.max_steps_per_epoch is not None:
        steps = min(steps, config.max_steps_per_epoch)
    samples_per_epoch = steps * config.batch_size
    milestones = tuple(m * samples_per_epoch for m in scaled_milestones(config.epochs))
    return PoseTask(args.model, data, milestones, lr=args.lr, flip_test=not args.no_flip_test)
