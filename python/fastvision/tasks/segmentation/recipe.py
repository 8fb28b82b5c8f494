"""Semantic-segmentation recipe (``fastvision train segmentation``) for HRNetV2, BiSeNet V2 and
HyperSeg, on the one engine, with each family's official optimiser, schedule, loss and
augmentation:

* ``hrnet`` (HRNet-Semantic-Segmentation, ``experiments/cityscapes/seg_hrnet_w48_*.yaml``,
  ``tools/train.py``): SGD lr 0.01, momentum 0.9, weight decay 5e-4 on every parameter, poly 0.9
  per iteration, batch 12; class-weighted CE (Cityscapes weights) or ``--loss ohem-hrnet``
  (threshold 0.9, min_kept 131072, as the OHEM config; same weights); random scale
  ``0.5 + randint(0, 16) / 10``, crop 512x1024, flip; ``align_corners=False``.
* ``bisenetv2`` (CoinCheung/BiSeNet ``configs/bisenetv2_city.py``, ``tools/train_amp.py``): SGD
  lr 5e-3, momentum 0.9, weight decay 5e-4 on conv weights only (1-d parameters none), heads and
  booster heads at 10x lr (``get_params``), warm-up 1000 iterations from 0.1x (``warmup='exp'``
  as ``train_amp.py`` calls it) then poly 0.9 over the rest, batch 16; OHEM CE (0.7) on the main
  and each of the four booster outputs, weight 1; scale U(0.25, 2), crop 512x1024, flip, colour
  jitter 0.4 (brightness, contrast, saturation); evaluation upsampling ``align_corners=True``.
* ``hyperseg`` (YuvalNirkin/hyperseg ``configs/train/*_hyperseg-s.py``): Adam lr 1e-3, betas
  (0.5, 0.999), poly per iteration (0.9 Cityscapes, 2.0 CamVid), batch 16 (CamVid 2);
  bootstrapped CE (k 4096, threshold 0.3); RandomResize with probability 0.5 in (0.375, 1.5)
  (CamVid (0.5, 2)), crop 768x768 (CamVid 576x576), flip, colour jitter 0.25 on Cityscapes.

The family follows from the model name (``hrnet*``, ``bisenet*``, ``hyperseg*``) or
``--family``. The batch defaults to 4 (a CPU budget), not the official sizes above. On the
embedded data the crop is the image size. Evaluation is at label resolution: logits are
upsampled bilinearly, softmax probabilities are summed over scales (and flips), as CoinCheung's
``MscEvalV0``; scaled inputs are rounded up to multiples of 32 as there.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn as nn

from fastvision.engine import PolyDecay, Task, TrainConfig, Warmup
from fastvision.losses.segmentation import (
    CITYSCAPES_CLASS_WEIGHTS,
    bootstrapped_cross_entropy,
    class_weighted_cross_entropy,
    multi_output_loss,
    ohem_cross_entropy,
    ohem_cross_entropy_bisenet,
)
from fastvision.models import get_model
from fastvision.tasks.arguments import height_width
from fastvision.tasks.family import Recipe

from .inference import evaluate_segmentation

__all__ = [
    "RECIPES",
    "FAMILIES",
    "LOSSES",
    "MULTI_SCALES",
    "FamilyRecipe",
    "SegmentationData",
    "SegmentationTask",
    "family_of",
    "add_data_arguments",
    "data_from_args",
]

LOSSES = ("ce", "ohem-hrnet", "ohem-bisenet", "bootstrapped")
# HRNet README (Cityscapes) and CoinCheung configs/bisenetv2_city.py eval_scales.
MULTI_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
_COINCHEUNG_CITY_MEAN = (0.3257, 0.3690, 0.3223)
_COINCHEUNG_CITY_STD = (0.2112, 0.2148, 0.2115)


@dataclass(frozen=True)
class FamilyRecipe:
    """One family's official training settings (see the module docstring for sources)."""

    optimizer: str
    lr: float
    loss: str
    official_batch: int
    momentum: float = 0.9
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    poly_power: float = 0.9
    camvid_poly_power: float | None = None
    poly_per_epoch: bool = False  # the poly factor changes once an epoch (HyperSeg VOC), not per step
    warmup_iters: int = 0
    warmup_ratio: float = 0.1
    warmup_mode: str = "exp"
    head_lr_scale: float = 1.0
    decay_1d_params: bool = True
    aux_weight: float = 1.0
    align_corners: bool = False
    eval_align_corners: bool = False
    scale_range: tuple[float, float] = (0.5, 2.0)
    scale_step: float | None = None
    scale_prob: float = 1.0
    camvid_scale_range: tuple[float, float] | None = None
    color_jitter: tuple[float, float, float, float] | None = None
    cityscapes_only_jitter: bool = False
    cityscapes_crop: tuple[int, int] = (512, 1024)
    camvid_crop: tuple[int, int] = (352, 480)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


FAMILIES: dict[str, FamilyRecipe] = {
    "hrnet": FamilyRecipe(optimizer="sgd", lr=0.01, loss="ce", official_batch=12, weight_decay=5e-4,
                          scale_range=(0.5, 2.1), scale_step=0.1),
    "bisenetv2": FamilyRecipe(optimizer="sgd", lr=5e-3, loss="ohem-bisenet", official_batch=16,
                              weight_decay=5e-4, warmup_iters=1000, warmup_ratio=0.1,
                              warmup_mode="exp", head_lr_scale=10.0, decay_1d_params=False,
                              eval_align_corners=True, scale_range=(0.25, 2.0),
                              color_jitter=(0.4, 0.4, 0.4, 0.0), mean=_COINCHEUNG_CITY_MEAN,
                              std=_COINCHEUNG_CITY_STD),
    "hyperseg": FamilyRecipe(optimizer="adam", lr=1e-3, loss="bootstrapped", official_batch=16,
                             betas=(0.5, 0.999), camvid_poly_power=2.0, scale_range=(0.375, 1.5),
                             scale_prob=0.5, camvid_scale_range=(0.5, 2.0),
                             color_jitter=(0.25, 0.25, 0.25, 0.25), cityscapes_only_jitter=True,
                             cityscapes_crop=(768, 768), camvid_crop=(576, 576)),
}


# Per-model departures from the family recipe (YuvalNirkin/hyperseg configs/train/*.py; the
# family entry is HyperSeg-S Cityscapes' / CamVid-S'). RandomResize applies with probability 0.5
# (its default) everywhere. VOC-L's random rotation (30 degrees) and pad-to-512 are not
# reproduced (fastvision reads no VOC data; the optimiser, loss and schedule are).
MODEL_OVERRIDES: dict[str, dict] = {
    "hyperseg_m_cityscapes": dict(scale_range=(0.25, 2.0), color_jitter=None, cityscapes_crop=(512, 1024)),
    "hyperseg_l_camvid": dict(camvid_scale_range=(0.75, 2.0), camvid_crop=(768, 768)),
    "hyperseg_l_voc": dict(lr=1e-4, loss="ce", poly_power=3.0, poly_per_epoch=True, scale_range=(0.25, 0.9),
                           color_jitter=(0.5, 0.5, 0.5, 0.5), cityscapes_only_jitter=False),
}


def recipe_for(model: str, family: str | None = None) -> FamilyRecipe:
    """The recipe of ``model``: its family's, with the model's official departures from it."""
    return replace(FAMILIES[family_of(model, family)], **MODEL_OVERRIDES.get(model, {}))


def _recipe(family_or_recipe) -> FamilyRecipe:
    return family_or_recipe if isinstance(family_or_recipe, FamilyRecipe) else FAMILIES[family_or_recipe]


def family_of(model: str, family: str | None = None) -> str:
    """The recipe family of ``model`` (``family`` if given)."""
    if family is not None:
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
        return family
    for prefix, name in (("hrnet", "hrnet"), ("bisenet", "bisenetv2"), ("hyperseg", "hyperseg")):
        if model.startswith(prefix):
            return name
    raise ValueError(f"cannot tell the recipe family of model {model!r}; pass --family "
                     f"({', '.join(sorted(FAMILIES))})")


@dataclass
class SegmentationData:
    """``source``: ``"embedded"``, ``"cityscapes:PATH"`` or ``"camvid:PATH"``."""

    source: str = "embedded"
    image_size: tuple[int, int] = (128, 256)  # embedded data only
    train_samples: int = 256  # embedded data only
    val_samples: int = 32  # embedded data only
    num_classes_embedded: int = 19
    crop_size: tuple[int, int] | None = None  # None: the family's official crop (embedded: image size)
    data_seed: int = 0

    def __post_init__(self):
        kind, _, path = self.source.partition(":")
        if kind == "embedded" and not path:
            self.kind, self.path = "embedded", None
        elif kind in ("cityscapes", "camvid") and path:
            self.kind, self.path = kind, path
        else:
            raise ValueError(f"data must be 'embedded', 'cityscapes:PATH' or 'camvid:PATH', got "
                             f"{self.source!r}")

    @property
    def num_classes(self) -> int:
        from fastvision.data.segmentation import CAMVID_CLASSES, CITYSCAPES_CLASSES

        return {"embedded": self.num_classes_embedded, "cityscapes": len(CITYSCAPES_CLASSES),
                "camvid": len(CAMVID_CLASSES)}[self.kind]

    def augment(self, family, train: bool):
        """``family``: a family name or a :class:`FamilyRecipe` (:func:`recipe_for`)."""
        from fastvision.data.segmentation import SegmentationAugment

        rec = _recipe(family)
        if not train:
            return SegmentationAugment(mean=rec.mean, std=rec.std)
        crop = self.crop_size or {"embedded": self.image_size, "cityscapes": rec.cityscapes_crop,
                                  "camvid": rec.camvid_crop}[self.kind]
        scale_range = rec.camvid_scale_range if self.kind == "camvid" and rec.camvid_scale_range else rec.scale_range
        jitter = rec.color_jitter
        if rec.cityscapes_only_jitter and self.kind != "cityscapes":
            jitter = None
        return SegmentationAugment(crop_size=tuple(crop), scale_range=scale_range,
                                   scale_step=rec.scale_step, scale_prob=rec.scale_prob, flip=True,
                                   color_jitter=jitter, mean=rec.mean, std=rec.std)

    def load(self, family, split: str = "val", train_augment: bool = True):
        """``split`` "train" (augmented if ``train_augment``) or "val"/"test"."""
        from fastvision.data.segmentation import (
            CamVidSegmentation,
            CityscapesSegmentation,
            ProceduralSegmentation,
        )

        train = split == "train"
        augment = self.augment(family, train and train_augment)
        if self.kind == "embedded":
            h, w = self.image_size
            n = self.train_samples if train else self.val_samples
            return ProceduralSegmentation(split, n, h, w, self.num_classes_embedded,
                                          self.data_seed, augment)
        cls = CityscapesSegmentation if self.kind == "cityscapes" else CamVidSegmentation
        return cls(self.path, split, augment, self.data_seed)

    def poly_power(self, family) -> float:
        rec = _recipe(family)
        return rec.camvid_poly_power if self.kind == "camvid" and rec.camvid_poly_power else rec.poly_power


class SegmentationTask(Task):
    """Training of a registered segmentation model with its family's official recipe."""

    name = "segmentation"
    monitor = "val_miou"
    monitor_mode = "max"

    def __init__(self, model: str, data: SegmentationData, total_samples: int, batch_size: int,
                 family: str | None = None, loss: str | None = None, class_weights: str = "auto",
                 lr: float | None = None, warmup_iters: int | None = None,
                 epoch_samples: int | None = None, model_kwargs: dict | None = None):
        self.model_name, self.data = model, data
        # Builder options beyond the class count (the study's variants: BiSeNet V2 without
        # boosters, the HRNetV1 head, HyperSeg's static decoder); stored in the checkpoints.
        self.model_kwargs = dict(model_kwargs or {})
        if "num_classes" in self.model_kwargs:
            raise ValueError("model_kwargs must not hold num_classes: it comes from the data")
        self.epoch_samples = epoch_samples
        self.family = family_of(model, family)
        self.recipe = recipe_for(model, self.family)
        self.loss_name = loss or self.recipe.loss
        if self.loss_name not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss_name!r}")
        if class_weights not in ("auto", "cityscapes", "none"):
            raise ValueError(f"class_weights must be 'auto', 'cityscapes' or 'none', got {class_weights!r}")
        if class_weights == "auto":  # HRNet's Cityscapes dataset weights its CE
            class_weights = "cityscapes" if self.family == "hrnet" and data.kind == "cityscapes" else "none"
        if class_weights == "cityscapes" and data.num_classes != len(CITYSCAPES_CLASS_WEIGHTS):
            raise ValueError(f"Cityscapes class weights need {len(CITYSCAPES_CLASS_WEIGHTS)} "
                             f"classes, the data has {data.num_classes}")
        self.class_weights = CITYSCAPES_CLASS_WEIGHTS if class_weights == "cityscapes" else None
        if total_samples < 1:
            raise ValueError(f"total_samples must be >= 1, got {total_samples}")
        self.total_samples, self.batch_size = int(total_samples), int(batch_size)
        self.lr = self.recipe.lr if lr is None else float(lr)
        self.warmup_iters = self.recipe.warmup_iters if warmup_iters is None else int(warmup_iters)
        if self.warmup_iters < 0:
            raise ValueError(f"warmup_iters must be >= 0, got {self.warmup_iters}")
        self.criterion = self._criterion()
        self._optimizer = None

    def _criterion(self):
        ac, w = self.recipe.align_corners, self.class_weights
        if self.loss_name == "ce":
            return partial(class_weighted_cross_entropy, weight=w, align_corners=ac)
        if self.loss_name == "ohem-hrnet":
            return partial(ohem_cross_entropy, threshold=0.9, min_kept=131072, weight=w, align_corners=ac)
        if self.loss_name == "ohem-bisenet":
            if w is not None:
                raise ValueError("BiSeNet V2's OHEM loss takes no class weights")
            return partial(ohem_cross_entropy_bisenet, threshold=0.7, align_corners=ac)
        return partial(bootstrapped_cross_entropy, k=4096, threshold=0.3, weight=w, align_corners=ac)

    def model_spec(self) -> dict:
        return {"name": self.model_name,
                "kwargs": {"num_classes": self.data.num_classes, **self.model_kwargs}}

    def build_model(self, device):
        return get_model(self.model_name, num_classes=self.data.num_classes,
                         **self.model_kwargs).to(device)

    def datasets(self):
        return self.data.load(self.recipe, "train"), self.data.load(self.recipe, "val")

    def _param_groups(self, model: nn.Module) -> list[dict]:
        rec = self.recipe
        groups: dict[tuple[float, bool], list] = {}
        for child_name, child in model.named_children():
            head = any(k in child_name for k in ("head", "aux"))
            scale = rec.head_lr_scale if head else 1.0
            for p in child.parameters(recurse=True):
                groups.setdefault((scale, p.dim() > 1 or rec.decay_1d_params), []).append(p)
        direct = [p for _, p in model.named_parameters(recurse=False)]
        for p in direct:
            groups.setdefault((1.0, p.dim() > 1 or rec.decay_1d_params), []).append(p)
        return [{"params": ps, "lr": self.lr * scale, "lr_scale": scale,
                 "weight_decay": rec.weight_decay if decay else 0.0}
                for (scale, decay), ps in groups.items()]

    def optimizer(self, model):
        rec = self.recipe
        groups = self._param_groups(model)
        if rec.optimizer == "sgd":
            self._optimizer = torch.optim.SGD(groups, lr=self.lr, momentum=rec.momentum,
                                              weight_decay=rec.weight_decay)
        else:
            self._optimizer = torch.optim.Adam(groups, lr=self.lr, betas=rec.betas,
                                               weight_decay=rec.weight_decay)
        return self._optimizer

    def schedules(self):
        rec = self.recipe
        warmup = self.warmup_iters * self.batch_size
        power = self.data.poly_power(rec)
        step = self.epoch_samples if rec.poly_per_epoch and self.epoch_samples else 1
        if warmup:
            return {"lr": Warmup(PolyDecay(self.lr, max(1, self.total_samples - warmup), power, step),
                                 warmup, rec.warmup_ratio, rec.warmup_mode)}
        return {"lr": PolyDecay(self.lr, self.total_samples, power, step)}

    def apply_schedules(self, model, values):
        # The engine sets every group to the scheduled rate; heads run at their multiple of it.
        if self._optimizer is not None and "lr" in values:
            for group in self._optimizer.param_groups:
                group["lr"] = values["lr"] * group.get("lr_scale", 1.0)

    def training_step(self, model, batch, step):
        images, labels = batch
        return multi_output_loss(model(images), labels, self.criterion, self.recipe.aux_weight)

    @torch.no_grad()
    def evaluate(self, model, loader, device):
        metrics, _ = evaluate_segmentation(model, loader, device, self.data.num_classes,
                                           align_corners=self.recipe.eval_align_corners)
        result = metrics.compute()
        return {"miou": result["miou"], "pixel_acc": result["pixel_acc"]}


# ---------------------------------------------------------------------------------------------
# Command line (fastvision train segmentation; shared with fastvision eval segmentation)
# ---------------------------------------------------------------------------------------------


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="embedded",
                   help="'embedded' (procedural scenes, no download), 'cityscapes:PATH' or 'camvid:PATH'")
    p.add_argument("--image-size", type=height_width, default=(128, 256),
                   help="embedded data: HxW (default 128x256)")
    p.add_argument("--train-samples", type=int, default=256, help="embedded data: training images")
    p.add_argument("--val-samples", type=int, default=32, help="embedded data: validation images")
    p.add_argument("--num-classes", type=int, default=19, help="embedded data: classes")
    p.add_argument("--family", default=None, choices=sorted(FAMILIES),
                   help="recipe family (default: from the model name)")


def data_from_args(args, crop_size=None) -> SegmentationData:
    return SegmentationData(args.data, tuple(args.image_size), args.train_samples, args.val_samples,
                            args.num_classes, crop_size)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="registered segmentation model (hrnetv2_w18_small_v1 ... hrnetv2_w48, bisenetv2, ...)")
    add_data_arguments(p)
    p.add_argument("--crop-size", type=height_width, default=None,
                   help="training crop HxW (default: official per family; embedded: the image size)")
    p.add_argument("--loss", default=None, choices=LOSSES, help="default: the family's official loss")
    p.add_argument("--class-weights", default="auto", choices=["auto", "cityscapes", "none"],
                   help="auto: HRNet's Cityscapes weights for HRNet on Cityscapes, else none")
    p.add_argument("--lr", type=float, default=None, help="base learning rate (default: official)")
    p.add_argument("--warmup-iters", type=int, default=None,
                   help="lr warm-up iterations (default: official, BiSeNet V2 1000; short runs may want fewer)")
    # The official batches (HRNet 12, BiSeNet V2 16, HyperSeg 16) do not fit a CPU budget.
    p.set_defaults(batch_size=4, eval_batch_size=4)


def build(args, config: TrainConfig) -> SegmentationTask:
    data = data_from_args(args, args.crop_size)
    family = family_of(args.model, args.family)
    train_size = len(data.load(recipe_for(args.model, family), "train"))
    steps = train_size // config.batch_size
    if config.max_steps_per_epoch is not None:
        steps = min(steps, config.max_steps_per_epoch)
    total = config.epochs * max(1, steps) * config.batch_size
    return SegmentationTask(args.model, data, total, config.batch_size, family=family,
                            loss=args.loss, class_weights=args.class_weights, lr=args.lr,
                            warmup_iters=args.warmup_iters, epoch_samples=max(1, steps) * config.batch_size)


RECIPES = {"segmentation": Recipe("semantic segmentation: HRNetV2, BiSeNet V2, HyperSeg (--model)",
                                  add_arguments, build, 8)}
