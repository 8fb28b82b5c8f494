"""The training engine shared by every model family (see :mod:`fastvision.engine.trainer`)."""

from .distributed import DistContext, init_distributed
from .schedules import BNMomentumDecay, MultiStepDecay, PolyDecay, StaircaseDecay, Warmup, set_bn_momentum
from .trainer import BEST_WEIGHTS, CHECKPOINT, Task, TrainConfig, fit, run_finished, unwrap

__all__ = [
    "Task",
    "TrainConfig",
    "fit",
    "unwrap",
    "run_finished",
    "CHECKPOINT",
    "BEST_WEIGHTS",
    "DistContext",
    "init_distributed",
    "StaircaseDecay",
    "BNMomentumDecay",
    "PolyDecay",
    "MultiStepDecay",
    "Warmup",
    "set_bn_momentum",
]
