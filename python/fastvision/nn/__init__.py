"""``nn.Module`` layers built on the fastvision ops."""

from fastvision.nn.patch import (
    HyperPatchConv2d,
    HyperPatchInvertedResidual,
    HyperPatchNoPadding,
    set_fastvision_ops,
)

__all__ = ["HyperPatchConv2d", "HyperPatchInvertedResidual", "HyperPatchNoPadding", "set_fastvision_ops"]
