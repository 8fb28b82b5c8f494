"""The ``pose`` recipe: top-down HRNetV1 pose estimation on the one engine, as the official
``HRNet/HRNet-Human-Pose-Estimation`` trains and validates it
(``experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml``, ``tools/train.py``,
``lib/core/function.py``, ``lib/core/evaluate.py``, ``lib/dataset/coco.py``, ``lib/nms/nms.py``).

Training: Adam lr 1e-3 (no weight decay: the official ``get_optimizer`` passes none to Adam),
the lr x0.1 at 170/210 and 200/210 of the epochs (MultiStepLR at epochs 170 and 200 of 210;
stepped per epoch, here at the first step of those epochs), batch 32, JointsMSELoss with
target weights, the official augmentation (:class:`fastvision.data.pose.PoseAugment`).

Validation, as ``validate``: the flip test with the shifted flipped heatmap (``FLIP_TEST``,
``SHIFT_HEATMAP``), the loss, the PCK ``accuracy`` of the heatmap argmaxes, then ``get_final_preds``
(quarter-pixel refinement, back to image pixels), the rescoring of each person by its box score
x the mean of its joint maxima above 0.2 (``IN_VIS_THRE``), OKS-NMS at 0.9 (``OKS_THRE``) per
image, and the COCO OKS AP: all in :mod:`fastvision.metrics.pose`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
import torch.nn as nn

from fastvision.engine import MultiStepDecay, Task, TrainConfig
from fastvision.losses.pose import JointsMSELoss
from fastvision.metrics.pose import flip_test, keypoint_ap, oks_nms, pck_accuracy, predict_people
from fastvision.models import get_model
from fastvision.tasks.family import Recipe

__all__ = [
    "RECIPES",
    "POSE_MODELS",
    "EMBEDDED_EPOCHS",
    "PoseData",
    "PoseTask",
    "evaluate_pose",
    "parse_image_size",
    "add_arguments",
    "build",
]

POSE_MODELS = ("hrnetv1_w32_pose", "hrnetv1_w48_pose")
EMBEDDED_EPOCHS = 4  # on the embedded stick figures (CPU-sized); the official recipe is 210
OFFICIAL_EPOCHS = 210
OFFICIAL_MILESTONES = (170, 200)


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


@torch.no_grad()
def evaluate_pose(model: nn.Module, loader, device, flip: bool = True, backend: str = "auto",
                  detections_out: list | None = None, post_process: bool = True) -> dict:
    """The official ``validate``: loss, PCK accuracy, OKS AP/AR (see the module docstring).
    The people kept after OKS-NMS are appended to ``detections_out`` when given.
    ``post_process=False`` decodes plain argmaxes (no quarter-pixel refinement)."""
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
        people += predict_people(output, meta, post_process)
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


RECIPES = {"pose": Recipe("HRNetV1 top-down pose estimation (COCO keypoints or embedded stick "
                          f"figures; {EMBEDDED_EPOCHS} epochs by default, CPU-sized: the official "
                          "recipe is 210)", add_arguments, build, EMBEDDED_EPOCHS)}
