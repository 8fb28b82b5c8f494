"""Learning-rate and BatchNorm-momentum schedules, as functions of the number of samples seen.

The sampling papers' TF code (PointNet ``train.py``, S-NET ``train_SNET.py``, SampleNet
``train_samplenet.py``) counts decay steps in *samples* (``global_step * BATCH_SIZE``), so these
do too; a schedule is a plain callable ``samples_seen -> value``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn as nn

__all__ = ["StaircaseDecay", "BNMomentumDecay", "PolyDecay", "set_bn_momentum"]


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
    """``base * (1 - step / total) ** power`` (segmentation recipes), in optimiser steps."""

    base: float
    total: int
    power: float = 0.9

    def __call__(self, step: int) -> float:
        return self.base * math.pow(max(0.0, 1.0 - step / max(1, self.total)), self.power)


def set_bn_momentum(module: nn.Module, momentum: float) -> None:
    """Set the running-statistics momentum of every BatchNorm layer in ``module``."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum
