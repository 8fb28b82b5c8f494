"""The training engine shared by every model family (see :mod:`fastvision.engine.trainer`)."""

from .distributed import DistContext, init_distributed
from .schedules import BNMomentumDecay, PolyDecay, StaircaseDecay, Warmup, set_bn_momentum
from .trainer import BEST_WEIGHTS, CHECKPOINT, Task, TrainConfig, fit, load_checkpoint_model, unwrap

__all__ = [
    "Task",
    "TrainConfig",
    "fit",
    "unwrap",
    "load_checkpoint_model",
    "CHECKPOINT",
    "BEST_WEIGHTS",
    "DistContext",
    "init_distributed",
    "StaircaseDecay",
    "BNMomentumDecay",
    "PolyDecay",
    "Warmup",
    "set_bn_momentum",
]
