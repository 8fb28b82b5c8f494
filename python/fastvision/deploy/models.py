"""What each registered model takes when it is deployed: its example input, which of the input's
dimensions may be dynamic, and the switch from training to deployment behaviour.

Every family has one input convention (``deployment_input``):

* point-cloud models (PointNet, S-NET, ProgressiveNet, SampleNet): ``(B, N, 3)`` clouds, or
  ``(B, 3, N)`` where the model's ``input_shape`` is ``"bcn"`` (SampleNet's official default);
  ``N`` stays static (the sampled set sizes are fixed numbers of points).
* HRNet, BiSeNet V2, HyperSeg: ``(B, 3, H, W)`` images, ``H`` and ``W`` multiples of 32 (every
  one of them checks it); dynamic ``H`` / ``W`` for HRNet and BiSeNet V2 only: HyperSeg's
  decoder looks its coordinate grids up in buffers named by the feature map's size
  (``coord{h}_{w}``, official state-dict keys), a Python branch on the size that an exported
  graph cannot keep symbolic, so its H and W are static (see ``dynamic_hw``).
* PAD-Net and its comparison encoders, the teacher, the U-Net: ``(B, 1, H, W)`` pad images,
  112x48 by default; dynamic ``H`` / ``W`` in multiples of 8 (the decoder upsamples the x4-
  and x2-strided taps back onto the finer ones: sizes divisible by 8 keep every tap exact).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

__all__ = ["DeploymentInput", "deployment_input", "prepare_for_deployment", "family_of"]


@dataclass(frozen=True)
class DeploymentInput:
    """The example input of a model and how its dimensions may vary in an exported graph."""

    shape: tuple[int, ...]
    # Dims (index -> multiple) that may be dynamic besides the batch: (2, 32) = H in steps of 32.
    spatial_multiples: dict

    def example(self, batch: int | None = None, seed: int = 0) -> torch.Tensor:
        shape = self.shape if batch is None else (batch,) + tuple(self.shape[1:])
        g = torch.Generator().manual_seed(seed)
        return torch.rand(shape, generator=g) * 2 - 1


_POINT_PREFIXES = ("pointnet", "snet", "progressivenet", "samplenet")
_PADNET_NAMES = ("padnet", "padnet_x2", "padnet_x4", "padnet_teacher", "mv3_6bn", "mv3_11bn",
                 "mv2_4bn", "mv2_7bn", "unet")


def family_of(name: str) -> str:
    """``"points"``, ``"hrnet"``, ``"bisenetv2"``, ``"hyperseg"`` or ``"padnet"``."""
    if name.startswith(_POINT_PREFIXES):
        return "points"
    if name.startswith("hrnet"):
        return "hrnet"
    if name.startswith("hyperseg"):
        return "hyperseg"
    if name == "bisenetv2":
        return "bisenetv2"
    if name in _PADNET_NAMES:
        return "padnet"
    raise ValueError(f"no deployment input is defined for model {name!r}")


def deployment_input(name: str, model: nn.Module, batch: int = 2, size: str = "small") -> DeploymentInput:
    """The input convention of registered model ``name`` (built as ``model``). ``size="small"``
    is the smallest input the model accepts comfortably (tests), ``"full"`` the official one."""
    if size not in ("small", "full"):
        raise ValueError(f"size must be 'small' or 'full', got {size!r}")
    family = family_of(name)
    full = size == "full"
    if family == "points":
        n = max(1024 if full else 128, getattr(model, "num_out_points", 0))
        channels_first = getattr(model, "input_shape", "bnc") == "bcn"
        return DeploymentInput((batch, 3, n) if channels_first else (batch, n, 3), {})
    if family == "padnet":
        return DeploymentInput((batch, 1, 112, 48), {2: 8, 3: 8})
    hw = {"hrnet": (512, 1024), "bisenetv2": (512, 1024), "hyperseg": (512, 1024)}[family] if full \
        else (64, 64)
    multiples = {} if family == "hyperseg" else {2: 32, 3: 32}
    return DeploymentInput((batch, 3) + hw, multiples)


def prepare_for_deployment(model: nn.Module) -> nn.Module:
    """``model`` in inference mode (``eval()``), with BiSeNet V2's booster heads (training
    signals only) switched off by ``aux_mode="eval"``; returns the same module."""
    model.eval()
    if getattr(model, "aux_mode", None) == "train":
        model.aux_mode = "eval"
    return model
