"""PAD-Net training recipes (Wang et al., PRCV 2021), on the one engine (fastvision.engine).

* ``padnet`` (``--width x1|x2|x4``, ``--loss aal|iou|dice|mse|bce``): the student alone, trained
  with AAL (Sect. 3.2) or a Table 4 loss.
* ``padnet --kd --teacher CKPT``: structured knowledge distillation (Sect. 3.3): the teacher is
  restored from a checkpoint and frozen in eval mode (BN statistics fixed, no gradients); the
  student is trained with AAL + SKT's intra-layer and cross-layer terms on the three decoder
  chain (MDR) outputs (:class:`fastvision.losses.particles.StructuredKnowledgeTransfer`):
  ``loss = AAL + 0.5 * L_intra + 0.5 * L_cross`` (SKT's weights), with SKT's sums over positions,
  layers, FSP entries and pairs replaced by means so that the KD terms stay of the order of the
  per-pixel AAL (SKT's sums are ~100x AAL here and the student never learnt to detect; see that
  class).
* ``padnet-teacher``: the teacher (MobileNetV3-Small encoder + LW-RefineNet decoder) with AAL.

The paper's recipe (Sect. 4.1): Adam, lr 1e-4, betas (0.9, 0.99), weight decay 1e-3 (Adam's
L2 term), batch 8, 100 epochs, normalised inputs. These are the defaults on real data (a folder).
On the embedded data the defaults are CPU-sized: a few epochs (``EMBEDDED_EPOCHS``,
``EMBEDDED_TEACHER_EPOCHS``) at lr 1e-3, since at 1e-4 PAD-Net detects nothing yet after 3
epochs (no probability reaches 0.5; measured) while at 1e-3 it reaches F1 0.96 in 2.
``--epochs 100 --lr 1e-4`` is the paper's schedule.

KD adapters: SKT maps the student's 4-channel chain outputs to the teacher's width with 1x1 convs
that exist only for training. The engine trains a :class:`DistilledStudent` (student +
adapters), but the checkpoints' ``"model"`` / ``"model_spec"`` hold the bare student
(:meth:`PadNetTask.inference_module`), so a distilled PAD-Net loads and runs exactly like a plain
one; the adapters are kept only in ``checkpoint_last.pt`` (``"training_model"``) for resuming.

Validation each epoch on the test split (the paper has no separate validation split): MAE,
RMSE, Precision, Recall and F1 of :class:`fastvision.metrics.particles.ParticleMetrics` (peaks of
sigmoid(logits) >= ``threshold`` in 5x5 windows, matched within 3 px). ``model_best.pt`` is the
epoch of the highest F1 (it weighs missed and spurious particles alike; MAE alone rewards a
right count of wrong detections).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from fastvision.engine import Task
from fastvision.losses.particles import StructuredKnowledgeTransfer, get_particle_loss
from fastvision.metrics.particles import DEFAULT_THRESHOLD, ParticleMetrics, extract_peaks
from fastvision.models import get_model, load_model
from fastvision.tasks.family import Recipe

__all__ = [
    "RECIPES",
    "ParticleData",
    "PadNetTask",
    "DistilledStudent",
    "STUDENT_MODELS",
    "LOSSES",
    "predict_probabilities",
    "predict_centres",
    "evaluate_detector",
]

STUDENT_MODELS = {"x1": "padnet", "x2": "padnet_x2", "x4": "padnet_x4"}
TEACHER_MODEL = "padnet_teacher"
LOSSES = ("aal", "iou", "dice", "mse", "bce")


class _ImageTargetIndex(Dataset):
    """(image, target, index) items: the engine's default collate stacks them; the per-image
    centres (ragged) are looked up by index in the wrapped dataset."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        return item["image"], item["target"], index

    def centres(self, index: int) -> torch.Tensor:
        return self.dataset[index]["centres"]


@dataclass
class ParticleData:
    """Which pads: ``"embedded"`` (:class:`ProceduralParticles`, 1952 / 1000) or a folder with
    ``train/`` and ``test/`` subfolders in the :class:`ParticleFolder` format."""

    source: str = "embedded"
    train_images: int | None = None  # embedded: the first N training pads (None: all 1952)
    test_images: int | None = None  # embedded: the first N test pads (None: all 1000)
    seed: int = 0  # embedded data only

    def load_split(self, split: str) -> Dataset:
        from fastvision.data.particles import ParticleFolder, ProceduralParticles

        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if self.source == "embedded":
            count = self.train_images if split == "train" else self.test_images
            return ProceduralParticles(split, count, seed=self.seed)
        root = Path(self.source) / split
        if not root.is_dir():
            raise FileNotFoundError(f"particle data {self.source!r} has no {split}/ folder "
                                    f"(expected {str(root)!r})")
        return ParticleFolder(root)

    def load(self) -> tuple[Dataset, Dataset]:
        return self.load_split("train"), self.load_split("test")


class DistilledStudent(nn.Module):
    """The module trained by KD: the student and SKT's training-only adapters.

    ``forward(x)`` is the student's logits; ``forward(x, teacher_features)`` returns
    ``(logits, kd)`` with ``kd`` the dict of :class:`StructuredKnowledgeTransfer` (the loss is
    computed inside forward so that DDP sees the adapters' gradients)."""

    def __init__(self, student: nn.Module, teacher_channels: int, lambda_intra: float = 0.5,
                 lambda_cross: float = 0.5):
        super().__init__()
        self.student = student
        self.transfer = StructuredKnowledgeTransfer([student.decoder.channels] * 3,
                                                    [teacher_channels] * 3, lambda_intra,
                                                    lambda_cross)

    def forward(self, x: torch.Tensor, teacher_features=None):
        if teacher_features is None:
            return self.student(x)
        logits, features = self.student(x, return_features=True)
        return logits, self.transfer(features, teacher_features)


@torch.no_grad()
def predict_probabilities(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """sigmoid(logits) (B, 1, H, W) of a PAD-Net-style model for standardised (B, 1, H, W) pads."""
    return torch.sigmoid(model(images))


def predict_centres(model: nn.Module, images: torch.Tensor,
                    threshold: float = DEFAULT_THRESHOLD) -> list[torch.Tensor]:
    """Detected particle centres, one (N_i, 2) (x, y) tensor per image."""
    return extract_peaks(predict_probabilities(model, images), threshold)


@torch.no_grad()
def evaluate_detector(model: nn.Module, loader, centres_of, device,
                      threshold: float = DEFAULT_THRESHOLD) -> dict:
    """MAE, RMSE, Precision, Recall, F1 (+ TP/FP/FN) of ``model`` (eval mode) over ``loader``'s
    (image, target, index) batches; ``centres_of(index)`` gives the true centres of an image."""
    metrics = ParticleMetrics(threshold=threshold)
    for images, _, indices in loader:
        prob = predict_probabilities(model, images.to(device))
        metrics.update_from_maps(prob, [centres_of(int(i)) for i in indices])
    return metrics.compute()


class PadNetTask(Task):
    """A PAD-Net student (optionally distilled from a frozen teacher) or the teacher itself."""

    monitor = "val_f1"
    monitor_mode = "max"

    def __init__(self, model: str = "padnet", data: ParticleData | None = None, loss: str = "aal",
                 lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 1e-3, teacher: str | None = None,
                 lambda_intra: float = 0.5, lambda_cross: float = 0.5,
                 threshold: float = DEFAULT_THRESHOLD):
        if model not in (*STUDENT_MODELS.values(), TEACHER_MODEL):
            raise ValueError(f"model must be one of {(*STUDENT_MODELS.values(), TEACHER_MODEL)}, "
                             f"got {model!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if teacher is not None and model == TEACHER_MODEL:
            raise ValueError("the teacher is trained without distillation: drop --kd / teacher")
        self.model_name = model
        self.data = data or ParticleData()
        self.loss_name = loss
        self.loss = get_particle_loss(loss)
        self.lr, self.betas, self.weight_decay = lr, tuple(betas), weight_decay
        self.lambda_intra, self.lambda_cross = lambda_intra, lambda_cross
        self.threshold = threshold
        self.teacher = None
        if teacher is not None:
            self.teacher, meta = load_model(teacher)
            if not hasattr(self.teacher, "decoder"):
                raise ValueError(f"teacher checkpoint {str(teacher)!r} holds "
                                 f"{meta['model_spec']['name']}, not a PAD-Net-style model")
            self.teacher.requires_grad_(False)
        self.name = "padnet-teacher" if model == TEACHER_MODEL else (
            "padnet-kd" if teacher is not None else "padnet")
        self._val: _ImageTargetIndex | None = None

    def model_spec(self) -> dict:
        return {"name": self.model_name, "kwargs": {}}

    def build_model(self, device):
        student = get_model(self.model_name)
        if self.teacher is None:
            return student.to(device)
        self.teacher.to(device).eval()
        return DistilledStudent(student, self.teacher.decoder.channels, self.lambda_intra,
                                self.lambda_cross).to(device)

    def inference_module(self, model):
        return model.student if isinstance(model, DistilledStudent) else model

    def datasets(self):
        train, test = self.data.load()
        self._val = _ImageTargetIndex(test)
        return _ImageTargetIndex(train), self._val

    def optimizer(self, model):
        return torch.optim.Adam(model.parameters(), lr=self.lr, betas=self.betas,
                                weight_decay=self.weight_decay)

    def training_step(self, model, batch, step):
        images, targets, _ = batch
        if self.teacher is None:
            loss = self.loss(model(images), targets)
            return loss, {}
        self.teacher.eval()
        with torch.no_grad():
            _, teacher_features = self.teacher(images, return_features=True)
        logits, kd = model(images, teacher_features)
        task_loss = self.loss(logits, targets)
        return task_loss + kd["total"], {self.loss_name: task_loss.detach(),
                                         "kd_intra": kd["intra"].detach(),
                                         "kd_cross": kd["cross"].detach()}

    @torch.no_grad()
    def evaluate(self, model, loader, device):
        result = evaluate_detector(self.inference_module(model), loader, self._val.centres, device,
                                   self.threshold)
        return {k: result[k] for k in ("mae", "rmse", "precision", "recall", "f1")}


# ---------------------------------------------------------------------------------------------
# Command-line recipes (fastvision train padnet / padnet-teacher)
# ---------------------------------------------------------------------------------------------

EMBEDDED_EPOCHS = 3
EMBEDDED_TEACHER_EPOCHS = 1
PAPER_LR = 1e-4
EMBEDDED_LR = 1e-3


def default_lr(source: str) -> float:
    """The paper's learning rate on real data, a larger one for the embedded data's few epochs."""
    return EMBEDDED_LR if source == "embedded" else PAPER_LR


def _add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="embedded",
                   help="'embedded' (procedural 112x48 pads, 1952 train / 1000 test) or a folder "
                        "with train/ and test/ subfolders of images + centre annotations")
    p.add_argument("--train-images", type=int, default=None,
                   help="embedded data: use the first N training pads (default all 1952)")
    p.add_argument("--test-images", type=int, default=None,
                   help="embedded data: validate on the first N test pads (default all 1000)")
    p.add_argument("--lr", type=float, default=None,
                   help=f"Adam learning rate (default: the paper's {PAPER_LR} on real data, "
                        f"{EMBEDDED_LR} on the short CPU schedule of the embedded data)")
    p.add_argument("--weight-decay", type=float, default=1e-3,
                   help="Adam weight decay (paper 1e-3)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="peak threshold on sigmoid(logits) for the validation metrics")
    # The paper's batch is 8 (the shared train parser's default is the sampling papers' 32).
    p.set_defaults(batch_size=8)


def add_padnet_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (f"PAD-Net student. Paper recipe: Adam lr 1e-4, betas (0.9, 0.99), weight "
                     f"decay 1e-3, batch 8, 100 epochs; on the embedded data the defaults are "
                     f"{EMBEDDED_EPOCHS} epochs at lr {EMBEDDED_LR} to fit a CPU (--epochs 100 "
                     f"--lr 1e-4 for the paper's).")
    _add_common_arguments(p)
    p.add_argument("--width", default="x1", choices=list(STUDENT_MODELS),
                   help="encoder widths of Table 1")
    p.add_argument("--loss", default="aal", choices=list(LOSSES), help="AAL or a Table 4 loss")
    p.add_argument("--kd", action="store_true",
                   help="structured knowledge distillation from --teacher (AAL + SKT terms)")
    p.add_argument("--teacher", default=None,
                   help="checkpoint of a trained teacher (from `fastvision train padnet-teacher`)")
    p.add_argument("--lambda-intra", type=float, default=0.5,
                   help="KD intra-layer weight (SKT 0.5)")
    p.add_argument("--lambda-cross", type=float, default=0.5,
                   help="KD cross-layer weight (SKT 0.5)")


def add_teacher_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (f"PAD-Net's KD teacher (MobileNetV3-Small + LW-RefineNet decoder), AAL. "
                     f"Paper recipe as for padnet; on the embedded data {EMBEDDED_TEACHER_EPOCHS} "
                     f"epochs at lr {EMBEDDED_LR} by default to fit a CPU (--epochs 100 --lr "
                     f"1e-4 for the paper's).")
    _add_common_arguments(p)


def _data_from_args(args) -> ParticleData:
    return ParticleData(args.data, args.train_images, args.test_images)


def build_padnet(args) -> PadNetTask:
    if args.kd and args.teacher is None:
        raise SystemExit("fastvision train padnet: --kd needs --teacher CKPT")
    if args.teacher is not None and not args.kd:
        raise SystemExit("fastvision train padnet: --teacher is used only with --kd")
    data = _data_from_args(args)
    lr = default_lr(data.source) if args.lr is None else args.lr
    return PadNetTask(STUDENT_MODELS[args.width], data, args.loss, lr=lr,
                      weight_decay=args.weight_decay, teacher=args.teacher if args.kd else None,
                      lambda_intra=args.lambda_intra, lambda_cross=args.lambda_cross,
                      threshold=args.threshold)


def build_teacher(args) -> PadNetTask:
    data = _data_from_args(args)
    lr = default_lr(data.source) if args.lr is None else args.lr
    return PadNetTask(TEACHER_MODEL, data, "aal", lr=lr,
                      weight_decay=args.weight_decay, threshold=args.threshold)


RECIPES = {"padnet": Recipe("PAD-Net particle detector (x1/x2/x4; AAL or Table 4 losses; --kd)",
                            add_padnet_arguments, lambda a, c: build_padnet(a), EMBEDDED_EPOCHS),
           "padnet-teacher": Recipe("PAD-Net's knowledge-distillation teacher",
                                    add_teacher_arguments, lambda a, c: build_teacher(a),
                                    EMBEDDED_TEACHER_EPOCHS)}
