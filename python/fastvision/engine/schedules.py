"""Learning-rate and BatchNorm-momentum schedules, as functions of the number of samples seen.

The sampling papers' TF code (PointNet ``train.py``, S-NET ``train_SNET.py``, SampleNet
``train_samplenet.py``) counts decay steps in *samples* (``global_step * BATCH_SIZE``), so these
do too; a schedule is a plain callable ``samples_seen -> value``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn as nn

__all__ = ["StaircaseDecay", "BNMomentumDecay", "PolyDecay", "MultiStepDecay", "Warmup", "set_bn_momentum"]


@dataclass(frozen=True)
class StaircaseDecay:
    """``max(base * rate ** floor(samples / decay_samples), floor)`` (TF ``exponential_decay``,
    ``staircase=True``, then clipped at ``floor``: PointNet / S-NET / SampleNet learning rate)."""

    base: float
    decay_samples: int
    rate: float = 0.7
    floor: float = 1e-5

    def __call__(self, samples: int) -> float:
        return max(self.base * self.rate ** (samples // self.decay_samples), self.floor)


@dataclass(frozen=True)
class BNMomentumDecay:
    """PyTorch BN momentum equal to the TF code's EMA decay ``min(0.99, 1 - 0.5 * 0.5 ** floor(
    samples / decay_samples))``: ``momentum = 1 - decay`` (0.5 at the start, 0.01 at the end)."""

    decay_samples: int
    initial: float = 0.5
    rate: float = 0.5
    clip: float = 0.99

    def __call__(self, samples: int) -> float:
        decay = min(self.clip, 1.0 - self.initial * self.rate ** (samples // self.decay_samples))
        return 1.0 - decay


@dataclass(frozen=True)
class PolyDecay:
    """``base * (1 - s / total) ** power`` (segmentation recipes) with ``s`` the step rounded down
    to a multiple of ``every`` (1: every step; an epoch's length: HyperSeg VOC's per-epoch poly)."""

    base: float
    total: int
    power: float = 0.9
    every: int = 1

    def __call__(self, step: int) -> float:
        s = step - step % max(1, self.every)
        return self.base * math.pow(max(0.0, 1.0 - s / max(1, self.total)), self.power)


@dataclass(frozen=True)
class Warmup:
    """``inner`` after a warm-up of ``length``: below it, ``inner(0) * r`` with ``r`` rising from
    ``ratio`` to 1, linearly (``ratio + (1 - ratio) * t``) or exponentially (``ratio ** (1 - t)``),
    ``t = x / length``; from it on, ``inner(x - length)`` (BiSeNet V2's ``WarmupPolyLrScheduler``
    with ``inner = PolyDecay(base, total - length)``)."""

    inner: object
    length: int
    ratio: float = 0.1
    mode: str = "linear"

    def __post_init__(self):
        if self.mode not in ("linear", "exp"):
            raise ValueError(f"warm-up mode must be 'linear' or 'exp', got {self.mode!r}")
        if self.length < 0 or not 0 < self.ratio <= 1:
            raise ValueError(f"warm-up needs length >= 0 and 0 < ratio <= 1, got length "
                             f"{self.length}, ratio {self.ratio}")

    def __call__(self, x: int) -> float:
        if x >= self.length:
            return self.inner(x - self.length)
        t = x / self.length
        factor = self.ratio + (1 - self.ratio) * t if self.mode == "linear" else self.ratio ** (1 - t)
        return self.inner(0) * factor


def set_bn_momentum(module: nn.Module, momentum: float) -> None:
    """Set the running-statistics momentum of every BatchNorm layer in ``module``."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


@dataclass(frozen=True)
class MultiStepDecay:
    """``base * gamma ** (number of milestones <= samples)`` (``torch.optim.lr_scheduler.MultiStepLR``
    with milestones counted in samples seen)."""

    base: float
    milestones: tuple[int, ...]
    gamma: float = 0.1

    def __call__(self, samples: int) -> float:
        return self.base * self.gamma ** sum(samples >= m for m in self.milestones)
