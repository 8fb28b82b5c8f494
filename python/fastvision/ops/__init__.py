"""fastvision operators: public wrappers of ``torch.ops.fastvision.*``.

Each wrapper documents shapes, dtypes and conventions; ``fastvision.ops._reference`` holds the
pure-PyTorch oracle of every op.
"""

from fastvision.ops.matching import nn_match
from fastvision.ops.points import (
    KNN,
    NNDistance,
    chamfer_distance,
    farthest_point_sample,
    knn_gather,
    knn_points,
    nn_distance,
)
from fastvision.ops.padnet import fold_padnet_encoder, pack_padnet_decoder, padnet_decoder, padnet_encoder
from fastvision.ops.patch import fold_batch_norm, patch_conv2d, patch_inverted_residual
from fastvision.ops.sampling import soft_project

# Registers every op's autocast policy (and says it in the wrappers' docstrings).
from fastvision.ops import autocast  # noqa: E402,F401

__all__ = [
    "KNN",
    "NNDistance",
    "chamfer_distance",
    "farthest_point_sample",
    "fold_batch_norm",
    "fold_padnet_encoder",
    "knn_gather",
    "knn_points",
    "nn_distance",
    "nn_match",
    "pack_padnet_decoder",
    "padnet_decoder",
    "padnet_encoder",
    "patch_conv2d",
    "patch_inverted_residual",
    "soft_project",
]
