"""Training recipes of the point-cloud sampling papers, on the one engine (fastvision.engine).

* ``pointnet``: the task network (``train_classifier.py`` of S-NET / SampleNet): Adam lr 1e-3,
  batch 32, lr x0.7 every 200k samples (staircase, floor 1e-5), BN momentum schedule of the TF
  code, rotation about y + jitter, CE + 0.001 feature-transform regulariser.
* ``snet`` / ``progressivenet`` (Dovrat et al., ``train_SNET.py`` / ``train_progressiveNet.py``)
  and ``samplenet`` / ``samplenet-progressive`` (Lang et al., ``train_samplenet.py`` /
  ``train_samplenet_progressive.py``): the sampler alone is trained, the task network is restored
  from a checkpoint and frozen in inference mode (BN statistics fixed, no dropout); Adam lr 1e-2,
  x0.7 every 600k samples, floor 1e-5, batch 32, no augmentation. Loss: task loss on the generated
  (S-NET) or softly projected (SampleNet) points + alpha * sampling loss (on the generated /
  simplified points) [+ lambda * sigma for SampleNet]. Progressive variants sum both over the
  prefixes 2, 4, ..., N (eq. 8 of S-NET; with gamma 0.5 and delta 1/30).

SampleNet's classification code (TF) is followed: projection group size k = 7, alpha 30,
lambda 1, no sigma clamp, BN on the output FC. The temperature profiles of SampleNet Table 1 are
``--temperature-profile learned`` (default: t trainable, pulled down by lambda * t^2),
``constant`` (t = t0 throughout), ``linear`` (rectified: t falls linearly from t0 to
``temperature_end`` over the first ``temperature_decay_fraction`` of training, then stays) and
``exponential`` (t = t0 * (t_end / t0) ** progress over the same span, then stays). The paper
does not give the end value or span of the decaying profiles; these are documented defaults.

Validation (and ``fastvision eval sampling``) feeds the frozen task network the *matched* input
points (``fastvision.ops.nn_match``: nearest input point, order-preserving unique, FPS
completion), as the papers' evaluation does.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastvision.engine import (
    BNMomentumDecay,
    StaircaseDecay,
    Task,
    TrainConfig,
    set_bn_momentum,
    unwrap,
)
from fastvision.losses.sampling import sampling_loss
from fastvision.models import get_model, load_model, pointnet_cls_loss
from fastvision.tasks.family import Recipe

__all__ = [
    "RECIPES",
    "PointCloudData",
    "PointNetTask",
    "SamplerTask",
    "TemperatureProfile",
    "progressive_sizes",
    "classify",
    "match_points",
    "sample_points",
    "SAMPLER_KINDS",
]

SAMPLER_KINDS = ("snet", "progressivenet", "samplenet", "samplenet-progressive")


@dataclass
class PointCloudData:
    """Which data: ``"embedded"`` (ProceduralShapes) or a ModelNet40 HDF5 folder."""

    source: str = "embedded"
    num_points: int = 1024
    train_samples: int = 4096  # embedded data only
    test_samples: int = 1024  # embedded data only
    data_seed: int = 0  # embedded data only

    def load(self, augment_train: bool):
        from fastvision.data import ModelNet40H5, ProceduralShapes

        if self.source == "embedded":
            train = ProceduralShapes("train", self.num_points, self.train_samples, self.data_seed,
                                     augment=augment_train)
            test = ProceduralShapes("test", self.num_points, self.test_samples, self.data_seed,
                                    augment=False)
        else:
            train = ModelNet40H5(self.source, "train", self.num_points, augment=augment_train,
                                 seed=self.data_seed)
            test = ModelNet40H5(self.source, "test", self.num_points, augment=False)
        return train, test

    @property
    def num_classes(self) -> int:
        if self.source == "embedded":
            from fastvision.data import ProceduralShapes

            return len(ProceduralShapes.classes)
        return 40


def classify(task_net: nn.Module, points: torch.Tensor) -> torch.Tensor:
    """Logits of a PointNet classifier for (B, n, 3) points."""
    out = task_net(points)
    return out[0] if isinstance(out, tuple) else out


def match_points(generated: torch.Tensor, cloud: torch.Tensor, num_out: int) -> torch.Tensor:
    """The papers' inference sampling: matched input points (B, num_out, 3) for generated points."""
    from fastvision.ops import nn_match

    idx = nn_match(generated.contiguous(), cloud.contiguous(), num_out, complete="fps")
    return torch.gather(cloud, 1, idx.unsqueeze(-1).expand(-1, -1, 3))


@torch.no_grad()
def sample_points(sampler: nn.Module, cloud: torch.Tensor) -> torch.Tensor:
    """Inference of a trained S-NET / ProgressiveNet / SampleNet (eval mode): generate, then match
    to input points; (B, sampler.num_out_points, 3). Prefixes of a progressive sampler's output
    are its samples of smaller sizes (the ordering is matched once, as ``infer_progressiveNet.py``)."""
    from fastvision.models import SampleNet

    if isinstance(sampler, SampleNet):
        generated = sampler(cloud.transpose(1, 2) if sampler.input_shape == "bcn" else cloud)[0]
        if sampler.output_shape == "bcn":
            generated = generated.transpose(1, 2)
    else:
        generated = sampler(cloud)
    return match_points(generated, cloud, sampler.num_out_points)


def progressive_sizes(num_points: int) -> list[int]:
    """Prefix sizes 2, 4, ..., up to num_points (the last one num_points itself), as the
    official progressive training (powers of two)."""
    sizes, s = [], 2
    while s < num_points:
        sizes.append(s)
        s *= 2
    sizes.append(num_points)
    return sizes


class PointNetTask(Task):
    """The frozen-later task network: PointNet classifier trained on complete clouds."""

    name = "pointnet"
    monitor = "val_acc"
    monitor_mode = "max"

    def __init__(self, data: PointCloudData, model: str = "pointnet_cls_vanilla", lr: float = 1e-3,
                 decay_samples: int = 200_000, reg_weight: float = 0.001):
        if model not in ("pointnet_cls", "pointnet_cls_vanilla"):
            raise ValueError(f"model must be 'pointnet_cls' or 'pointnet_cls_vanilla', got {model!r}")
        self.data, self.model_name, self.lr = data, model, lr
        self.decay_samples, self.reg_weight = decay_samples, reg_weight

    def model_spec(self) -> dict:
        return {"name": self.model_name, "kwargs": {"num_classes": self.data.num_classes}}

    def build_model(self, device):
        return get_model(self.model_name, num_classes=self.data.num_classes).to(device)

    def datasets(self):
        return self.data.load(augment_train=True)

    def optimizer(self, model):
        return torch.optim.Adam(model.parameters(), lr=self.lr)

    def schedules(self):
        return {"lr": StaircaseDecay(self.lr, self.decay_samples),
                "bn_momentum": BNMomentumDecay(self.decay_samples)}

    def apply_schedules(self, model, values):
        set_bn_momentum(model, values["bn_momentum"])

    def training_step(self, model, batch, step):
        points, labels = batch
        logits, end_points = model(points)
        loss = pointnet_cls_loss(logits, labels, end_points.get("transform"), self.reg_weight)
        acc = (logits.argmax(1) == labels).float().mean()
        return loss, {"acc": acc.detach()}

    @torch.no_grad()
    def evaluate(self, model, loader, device):
        return _classification_metrics(lambda pts: classify(model, pts), loader, device,
                                       self.data.num_classes)


def _classification_metrics(predict, loader, device, num_classes: int) -> dict:
    correct = total = 0
    loss_sum = 0.0
    per_class_correct = torch.zeros(num_classes)
    per_class_total = torch.zeros(num_classes)
    for points, labels in loader:
        points, labels = points.to(device), labels.to(device)
        logits = predict(points)
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        hit = (logits.argmax(1) == labels).cpu()
        correct += int(hit.sum())
        total += labels.numel()
        per_class_total.index_add_(0, labels.cpu(), torch.ones(labels.numel()))
        per_class_correct.index_add_(0, labels.cpu(), hit.float())
    seen = per_class_total > 0
    return {"acc": correct / total, "loss": loss_sum / total,
            "class_acc": float((per_class_correct[seen] / per_class_total[seen]).mean())}


@dataclass(frozen=True)
class TemperatureProfile:
    """SampleNet's projection temperature ``t`` as a function of samples seen (Table 1)."""

    kind: str = "learned"
    initial: float = 1.0
    end: float = 0.05
    span_samples: int = 1

    def __post_init__(self):
        if self.kind not in ("learned", "constant", "linear", "exponential"):
            raise ValueError(f"temperature profile must be learned, constant, linear or "
                             f"exponential, got {self.kind!r}")
        if self.initial <= 0 or self.end <= 0:
            raise ValueError(f"temperatures must be > 0, got initial {self.initial}, end {self.end}")

    def __call__(self, samples: int) -> float:
        progress = min(1.0, samples / max(1, self.span_samples))
        if self.kind == "linear":
            return self.initial + (self.end - self.initial) * progress
        if self.kind == "exponential":
            return self.initial * (self.end / self.initial) ** progress
        return self.initial  # constant (the learned one is never scheduled)


class SamplerTask(Task):
    """S-NET, ProgressiveNet, SampleNet or SampleNet-Progressive, trained against a frozen task net."""

    monitor_mode = "max"

    def __init__(self, kind: str, data: PointCloudData, task_net: str, num_out_points: int = 32,
                 alpha: float = 30.0, lmbda: float = 1.0, gamma: float | None = None,
                 delta: float | None = None, group_size: int = 7, bottleneck_size: int = 128,
                 lr: float = 1e-2, decay_samples: int = 600_000,
                 temperature: TemperatureProfile = TemperatureProfile()):
        if kind not in SAMPLER_KINDS:
            raise ValueError(f"sampler kind must be one of {SAMPLER_KINDS}, got {kind!r}")
        self.kind, self.name = kind, kind
        self.progressive = kind.endswith("progressive") or kind == "progressivenet"
        self.data = data
        n = data.num_points
        if not self.progressive and not 1 <= num_out_points <= n:
            raise ValueError(f"num_out_points must be in [1, {n}] (num_points), got {num_out_points}")
        self.num_out_points = n if self.progressive else int(num_out_points)
        self.sizes = progressive_sizes(n) if self.progressive else [self.num_out_points]
        # Official defaults: S-NET / SampleNet gamma 1, delta 0; progressive gamma 0.5, delta 1/30.
        self.gamma = (0.5 if self.progressive else 1.0) if gamma is None else gamma
        self.delta = (1 / 30 if self.progressive else 0.0) if delta is None else delta
        self.alpha, self.lmbda = alpha, lmbda
        self.group_size, self.bottleneck_size = group_size, bottleneck_size
        self.lr, self.decay_samples = lr, decay_samples
        self.temperature = temperature
        self.is_samplenet = kind.startswith("samplenet")
        self.task_net_path = str(task_net)
        self.task_net, meta = load_model(task_net)
        self.task_net.requires_grad_(False)
        self.monitor = "val_acc_mean" if self.progressive else "val_acc"
        self.find_unused_parameters = self.is_samplenet and temperature.kind != "learned"

    def model_spec(self) -> dict:
        if self.is_samplenet:
            return {"name": "samplenet_progressive" if self.progressive else "samplenet",
                    "kwargs": {"num_out_points": self.num_out_points,
                               "bottleneck_size": self.bottleneck_size,
                               "group_size": self.group_size, "min_sigma": None,
                               "input_shape": "bnc", "output_shape": "bnc", "output_bn": True,
                               "initial_temperature": self.temperature.initial}}
        return {"name": "progressivenet" if self.progressive else "snet",
                "kwargs": {"num_out_points": self.num_out_points,
                           "bottleneck_size": self.bottleneck_size}}

    def build_model(self, device):
        self.task_net.to(device).eval()
        spec = self.model_spec()
        model = get_model(spec["name"], **spec["kwargs"])
        if self.is_samplenet and self.temperature.kind != "learned":
            model.project._temperature.requires_grad_(False)
        return model.to(device)

    def datasets(self):
        return self.data.load(augment_train=False)  # the samplers' loops do not augment

    def optimizer(self, model):
        return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=self.lr)

    def schedules(self):
        out = {"lr": StaircaseDecay(self.lr, self.decay_samples),
               "bn_momentum": BNMomentumDecay(self.decay_samples)}
        if self.is_samplenet and self.temperature.kind != "learned":
            out["temperature"] = self.temperature
        return out

    def apply_schedules(self, model, values):
        set_bn_momentum(model, values["bn_momentum"])
        if "temperature" in values:
            with torch.no_grad():
                unwrap(model).project._temperature.fill_(values["temperature"])

    def _task_loss(self, points, labels):
        logits, end_points = self.task_net(points)
        return pointnet_cls_loss(logits, labels, end_points.get("transform")), logits

    def training_step(self, model, batch, step):
        cloud, labels = batch
        self.task_net.eval()
        if self.is_samplenet:
            simplified, projected = model(cloud)
        else:
            simplified = projected = model(cloud)
        task_loss = samp_loss = 0.0
        for s in self.sizes:
            t_loss, logits = self._task_loss(projected[:, :s], labels)
            task_loss = task_loss + t_loss
            samp_loss = samp_loss + sampling_loss(simplified[:, :s], cloud, gamma=self.gamma,
                                                  delta=self.delta)
        loss = task_loss + self.alpha * samp_loss
        logs = {"task_loss": task_loss.detach(), "sampling_loss": samp_loss.detach(),
                "acc": (logits.argmax(1) == labels).float().mean()}
        if self.is_samplenet:
            sigma = unwrap(model).get_projection_loss()
            loss = loss + self.lmbda * sigma
            logs["sigma"] = sigma.detach()
        return loss, logs

    @torch.no_grad()
    def sample(self, model: nn.Module, cloud: torch.Tensor) -> torch.Tensor:
        """Matched input points (B, num_out_points, 3) for a (B, N, 3) cloud; the progressive
        samplers' prefixes [:, :s] are their samples of size s. ``model`` in eval mode."""
        return sample_points(unwrap(model), cloud)

    @torch.no_grad()
    def evaluate(self, model, loader, device):
        correct = {s: 0 for s in self.sizes}
        total = 0
        for cloud, labels in loader:
            cloud, labels = cloud.to(device), labels.to(device)
            sampled = self.sample(model, cloud)
            for s in self.sizes:
                correct[s] += int((classify(self.task_net, sampled[:, :s]).argmax(1) == labels).sum())
            total += labels.numel()
        if self.progressive:
            results = {f"acc_r{self.data.num_points // s}": correct[s] / total for s in self.sizes}
            results["acc_mean"] = sum(results.values()) / len(results)
        else:
            results = {"acc": correct[self.sizes[0]] / total}
        if self.is_samplenet:
            results["temperature"] = float(unwrap(model).project._temperature.detach())
        return results


# ---------------------------------------------------------------------------------------------
# Command-line recipes (fastvision train NAME)
# ---------------------------------------------------------------------------------------------


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="embedded",
                   help="'embedded' (procedural shapes, no download) or a modelnet40_ply_hdf5_2048 folder")
    p.add_argument("--num-points", type=int, default=1024, help="points per cloud (official 1024)")
    p.add_argument("--train-samples", type=int, default=4096, help="embedded data: training clouds")
    p.add_argument("--test-samples", type=int, default=1024, help="embedded data: test clouds")


def data_from_args(args) -> PointCloudData:
    return PointCloudData(args.data, args.num_points, args.train_samples, args.test_samples)


def add_pointnet_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    p.add_argument("--model", default="pointnet_cls_vanilla",
                   choices=["pointnet_cls", "pointnet_cls_vanilla"],
                   help="task network (vanilla: no T-nets, 4x cheaper on CPU; the ProgressiveNet task net)")
    p.add_argument("--lr", type=float, default=1e-3)


def build_pointnet(args) -> PointNetTask:
    return PointNetTask(data_from_args(args), args.model, args.lr)


def add_sampler_arguments(p: argparse.ArgumentParser, kind: str) -> None:
    add_data_arguments(p)
    p.add_argument("--task-net", required=True,
                   help="checkpoint of the trained task network (from `fastvision train pointnet`)")
    if not kind.endswith("progressive") and kind != "progressivenet":
        p.add_argument("--num-out-points", type=int, default=32, help="sampled points (official 32)")
    p.add_argument("--alpha", type=float, default=30.0, help="sampling-loss weight (official 30)")
    p.add_argument("--gamma", type=float, default=None, help="default 1 (progressive: 0.5)")
    p.add_argument("--delta", type=float, default=None, help="default 0 (progressive: 1/30)")
    p.add_argument("--lr", type=float, default=1e-2)
    if kind.startswith("samplenet"):
        p.add_argument("--lambda", dest="lmbda", type=float, default=1.0,
                       help="projection-loss weight (official classification 1)")
        p.add_argument("--group-size", type=int, default=7, help="soft-projection neighbours k")
        p.add_argument("--temperature-profile", default="learned",
                       choices=["learned", "constant", "linear", "exponential"])
        p.add_argument("--temperature-init", type=float, default=1.0)
        p.add_argument("--temperature-end", type=float, default=0.05,
                       help="end value of the linear / exponential profiles")
        p.add_argument("--temperature-decay-fraction", type=float, default=0.5,
                       help="fraction of training over which linear / exponential profiles decay")


def build_sampler(kind: str, args, config: TrainConfig) -> SamplerTask:
    data = data_from_args(args)
    kwargs = {}
    if kind.startswith("samplenet"):
        train_size = data.train_samples if data.source == "embedded" else None
        if train_size is None:
            train_size = len(data.load(False)[0])
        total = config.epochs * (train_size // config.batch_size) * config.batch_size
        kwargs.update(lmbda=args.lmbda, group_size=args.group_size, temperature=TemperatureProfile(
            args.temperature_profile, args.temperature_init, args.temperature_end,
            max(1, int(total * args.temperature_decay_fraction))))
    return SamplerTask(kind, data, args.task_net, getattr(args, "num_out_points", 32),
                       alpha=args.alpha, gamma=args.gamma, delta=args.delta, lr=args.lr, **kwargs)


_SAMPLER_HELPS = {"snet": "S-NET sampler (Dovrat et al. 2019)",
                  "progressivenet": "ProgressiveNet sampler (ordered points, all sizes)",
                  "samplenet": "SampleNet sampler with soft projection (Lang et al. 2020)",
                  "samplenet-progressive": "SampleNet-Progressive sampler"}
RECIPES = {"pointnet": Recipe("PointNet task network (point-cloud classification)",
                              add_pointnet_arguments, lambda a, c: build_pointnet(a), 12)}
RECIPES.update({kind: Recipe(text, (lambda p, k=kind: add_sampler_arguments(p, k)),
                             (lambda a, c, k=kind: build_sampler(k, a, c)), 8)
                for kind, text in _SAMPLER_HELPS.items()})
