"""``nn.Module`` layers built on the fastvision ops, and building blocks shared by several models."""

from fastvision.nn.mobilenet import (
    Bneck,
    InvertedResidual,
    MobileNetV2Encoder,
    MobileNetV3Encoder,
    SqueezeExcite,
)
from fastvision.nn.patch import (
    HyperPatchConv2d,
    HyperPatchInvertedResidual,
    HyperPatchNoPadding,
    set_fastvision_ops,
)

__all__ = ["HyperPatchConv2d", "HyperPatchInvertedResidual", "HyperPatchNoPadding", "set_fastvision_ops",
           "Bneck", "InvertedResidual", "MobileNetV2Encoder", "MobileNetV3Encoder", "SqueezeExcite"]
