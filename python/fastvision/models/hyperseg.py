"""HyperSeg (Nirkin, Wolf, Hassner, "HyperSeg: Patch-wise Hypernetwork for Real-time Semantic
Segmentation", CVPR 2021), laid out as the official ``YuvalNirkin/hyperseg`` code so that its
checkpoints load with ``strict=True`` and give the same outputs.

Three official designs, one per released configuration:

* ``hyperseg_v1_0`` (``hyperseg_m_cityscapes``, ``hyperseg_s_camvid``, ``hyperseg_l_camvid``):
  EfficientNet-B1 encoder; context head ``WeightMapper`` (1x1 1280->640 + BN + ReLU, a 2x2
  stride-2 down path, the last map globally average-pooled, an up path of concat -> 1x1 + BN +
  ReLU -> nearest x2, output ``cat(in_conv, up path)`` = 1280 channels at stride 32); every
  dynamic decoder layer owns a grouped 1x1 ``signal2weights`` conv mapping a slice of those 1280
  channels to its per-patch weights.
* ``hyperseg_v1_0_unify`` (``hyperseg_s_cityscapes``, ``unify_level=4``): the same, but the
  ``signal2weights`` convs live in ``decoder.weight_blocks``; levels ``>= unify_level - 1``
  share one of them and slice its output.
* ``hyperseg_v0_1`` (``hyperseg_l_voc``): EfficientNet-B3; a full-width (1536-channel) context
  head with ``levels=3`` (``down_i`` 2x2 stride-2 convs, nearest x2 up, ``flat_i`` 1x1 convs,
  the last map average-pooled) ending in ``out_conv`` = ``Conv2dMulti``: one grouped 1x1 conv per
  decoder level on its own channel slice; the decoder's inverted residuals are three separate
  patch-wise convolutions (``conv.0/1/2``), the dw one reading a 1-pixel halo of the
  *neighbouring patches' activations* (v1_0 computes the halo with the patch's own weights).

Decoder (``MultiScaleDecoder``): levels run coarse to fine over the stride-32, 16, 8, 4, 2 features
(and the image for 6-level models); each level's input is ``cat(coords, feature, upsampled
previous output)`` with two coordinate channels (x along the width, y along the height, both
``linspace(-1, 1)``). Kernel-1 levels are a per-patch 1x1 conv + BN + ReLU, kernel-3 levels a
per-patch inverted residual (expand 2, BN + ReLU6, reflect padding at the image border). The
patch grid is the signal's (H/32 x W/32); the last level outputs the classes, upsampled
bilinearly to the input size. The dynamic layers are ``fastvision.nn.patch`` modules (on the
``fastvision.ops`` patch-wise convolution ops).

Official quirks reproduced (``reference/models-facts.md`` section 0):

* v1_0 signal slicing: ``init_signal2weights`` does not carry the running ``signal_index`` out
  of its recursion, so *every* v1_0 layer reads its slice starting at channel 0 (HyperSeg-M:
  slices 0:416, 0:224, 0:128, 0:192, 0:320 of 1280; channels 416..1279, which include the whole
  up-path/global-context half, are never used). Trained checkpoints depend on it, so it is the
  default; ``contiguous_signal=True`` gives every layer its own contiguous slice (0:416,
  416:640, ...) instead: same parameters and state dict, a different (corrected) model that
  official checkpoints were not trained for. The unify variant (HyperSeg-S Cityscapes) slices
  contiguously in the official code already; the flag does not change it.
* the cached coordinate grids ``decoder.coord{h}_{w}`` (from the configs' ``coords_res``, one per
  ``res // 2**i`` for i < levels, most of them never used) are persistent buffers, as in the
  official state dict. Other resolutions are computed on the fly (same values).
* ``inference_hflip=True`` in every config only acts on list inputs (image pyramids), where the
  flipped prediction is combined with ``torch.max``. ``forward(x)`` keeps that: a tensor input is
  not flipped. ``forward(x, hflip=True)`` on a tensor really runs the flipped image too and
  averages the two predictions (``inference_gather="max"``: their maximum).
* CamVid models have 12 outputs by default: the official ``CamVidDataset.classes`` has 12 names
  including ``Void`` and the model is built with ``len(classes)``. Cityscapes 19, VOC 21.
* VOC HyperSeg-L is built with the training config's ``weight_groups=16`` (39,680,458 params);
  ``weight_groups=1``, the ``hyperseg_efficientnet`` function default, gives 48,959,130.

Checked against the official code (``tools/gen_official_keys.py --only hyperseg --compare``):
state dicts key for key and shape for shape, parameter counts equal, and with an official
(random, BN-randomised) state dict loaded, eval outputs on 2x3x128x256 differ by at most 1.2e-7
(float32; outputs' std ~0.15); in training mode (same seed: stochastic depth and dropout draw
the same numbers) and in float64 by < 3e-12.

Beyond the official code: any input whose height and width are multiples of 32 works (32x32
included). The official context head needs the stride-32 map divisible by 2 (levels=2; by 4 for
levels=3): its 2x2 stride-2 down path floors odd sizes (and fails on 1-pixel maps) and the x2
upsampled map then no longer matches the skip it is concatenated with. Here an odd-sized map is
padded by replicating its last row/column before a down conv, and the up path resizes (nearest)
to the skip's size instead of by a fixed x2; on even sizes neither changes anything, so the
output equals the official one whenever the official code runs (tested against it). Where the
down path reaches 1x1 the average pool is skipped, as officially, and the 1x1 map is used as the
context (the official v1_0 head then concatenates its stride-32 map instead and crashes).
"""

from __future__ import annotations

import numbers
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import register_model
from .checkpoint import finish
from .efficientnet import EfficientNetFeatures
from ..nn.mobilenet import InvertedResidual
from ..nn.patch import HyperPatchConv2d, HyperPatchInvertedResidual, HyperPatchNoPadding, next_multiple

__all__ = [
    "HyperSeg",
    "WeightMapper",
    "WeightMapperV01",
    "MultiScaleDecoder",
    "MultiScaleDecoderV01",
    "StaticMultiScaleDecoder",
    "divide_feature",
    "divide_feature_legacy",
    "next_multiple",
]

_HYPER_LAYERS = (HyperPatchNoPadding, HyperPatchConv2d, HyperPatchInvertedResidual)


def _groups_by_size(out_features: Sequence[int]):
    """[(size, [indices])] of equal sizes, ascending by size, then stably sorted by the group's
    total (size x members) descending, as the official ``divide_feature`` orders them."""
    groups: List[tuple] = []
    for i in sorted(range(len(out_features)), key=lambda j: out_features[j]):
        if groups and groups[-1][0] == out_features[i]:
            groups[-1][1].append(i)
        else:
            groups.append((out_features[i], [i]))
    groups.sort(key=lambda g: g[0] * len(g[1]), reverse=True)
    return groups


def divide_feature(in_feature: int, out_features: Sequence[int], min_unit: int = 8) -> List[int]:
    """Split ``in_feature`` channels between layers in proportion to ``out_features`` (their
    weight counts), in multiples of ``min_unit``; equal layers get equal parts and the smallest
    group takes the rounding remainder (the official v1_0 ``divide_feature``)."""
    if in_feature % min_unit:
        raise ValueError(f"in_feature ({in_feature}) must be divisible by min_unit ({min_unit})")
    units = in_feature // min_unit
    groups = _groups_by_size(out_features)
    ratio = float(units) / sum(out_features)
    group_units = [float(len(members)) for _, members in groups]
    remaining = units - sum(len(members) for _, members in groups)
    for i, (size, members) in enumerate(groups):
        n = len(members)
        if i < len(groups) - 1:
            cur = max(size * n * ratio, n)
            cur = min(cur // n * n - n, remaining)
            group_units[i] += cur
            remaining -= cur
            if remaining == 0:
                break
        else:
            group_units[-1] += remaining
    out = [0] * len(out_features)
    for (size, members), gu in zip(groups, group_units):
        for m in members:
            out[m] = int(gu // len(members) * min_unit)
    return out


def divide_feature_legacy(in_feature: int, out_features: Sequence[int],
                          min_unit: int = 8) -> List[int]:
    """The older split used by v0_1's ``Conv2dMulti`` (no per-group minimum, no clamp)."""
    if in_feature % min_unit:
        raise ValueError(f"in_feature ({in_feature}) must be divisible by min_unit ({min_unit})")
    units = in_feature // min_unit
    groups = _groups_by_size(out_features)
    ratio = float(units) / sum(out_features)
    remaining = units
    group_units = []
    for i, (size, members) in enumerate(groups):
        n = len(members)
        if i < len(groups) - 1:
            cur = max(size * n * ratio, 1)
            cur = cur // n * n
            group_units.append(cur)
            remaining -= cur
        else:
            group_units.append(remaining)
    out = [0] * len(out_features)
    for (size, members), gu in zip(groups, group_units):
        for m in members:
            out[m] = int(gu // len(members) * min_unit)
    return out


def _hyper_layers(module: nn.Module) -> List[nn.Module]:
    """The dynamic layers under ``module`` in registration order, not looking inside them
    (the official ``get_hyper_params`` / ``init_signal2weights`` walk)."""
    found = []
    for m in module.children():
        found += [m] if isinstance(m, _HYPER_LAYERS) else _hyper_layers(m)
    return found


def _hyper_params(m: nn.Module) -> int:
    return int(getattr(m, "hyper_params", 0) or 0)


class HyperSequential(nn.Sequential):
    """A ``Sequential`` whose dynamic members take a second argument (the official
    ``MetaSequential``). With ``slice_weights`` each dynamic member gets its own consecutive
    channel range of the weights (v0_1, unify); without, the whole signal (v1_0 layers slice it
    themselves)."""

    def __init__(self, *modules: nn.Module, slice_weights: bool = True):
        super().__init__(*modules)
        self.slice_weights = slice_weights
        self.hyper_params = 0
        self._ranges = [0]
        for m in self:
            self.hyper_params += _hyper_params(m)
            self._ranges.append(self.hyper_params)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for i, m in enumerate(self):
            lo, hi = self._ranges[i], self._ranges[i + 1]
            if hi > lo:
                x = m(x, w[:, lo:hi] if self.slice_weights else w)
            else:
                x = m(x)
        return x


def _conv_block(in_nc: int, out_nc: int, kernel: int, groups: int = 1,
                slice_weights: bool = True, patch_padding: bool = False) -> HyperSequential:
    """Dynamic conv + BN + ReLU (the official ``make_hyper_patch_conv2d_block`` /
    ``make_meta_patch_conv2d_block`` with their defaults)."""
    pad = kernel // 2
    if pad == 0 and not patch_padding:
        conv = HyperPatchNoPadding(in_nc, out_nc, kernel, groups=groups)
    else:
        conv = HyperPatchConv2d(in_nc, out_nc, kernel, padding=pad, groups=groups)
    return HyperSequential(conv, nn.BatchNorm2d(out_nc), nn.ReLU(inplace=True),
                           slice_weights=slice_weights)


class _WeightLayer(nn.Module):
    """``WeightLayer`` of the unify variant: a grouped 1x1 conv signal slice -> weights."""

    def __init__(self, target_params: int):
        super().__init__()
        self.target_params = int(target_params)
        self.signal_channels = None
        self.signal_index = None
        self.signal2weights = None

    def init_signal2weights(self, signal_channels: int, signal_index: int = 0, groups: int = 1):
        self.signal_channels, self.signal_index = int(signal_channels), int(signal_index)
        self.signal2weights = nn.Conv2d(self.signal_channels,
                                        next_multiple(self.target_params, groups), 1,
                                        bias=False, groups=groups)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        s = s[:, self.signal_index:self.signal_index + self.signal_channels]
        return self.signal2weights(s)[:, :self.target_params]


def _coords(h: int, w: int, device=None, dtype=None) -> torch.Tensor:
    """(1, 2, h, w): channel 0 = x (along the width), channel 1 = y, both linspace(-1, 1)."""
    x = torch.linspace(-1, 1, steps=w, device=device)
    y = torch.linspace(-1, 1, steps=h, device=device)
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    grid = torch.stack((xx, yy), dim=0).unsqueeze(0)
    return grid if dtype is None else grid.to(dtype)


def _resize_like(x: torch.Tensor, ref: torch.Tensor, mode: str) -> torch.Tensor:
    """``x`` resized to ``ref``'s spatial size (a no-op when equal)."""
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    if mode == "nearest":
        return F.interpolate(x, size=ref.shape[-2:], mode="nearest")
    return F.interpolate(x, size=ref.shape[-2:], mode=mode, align_corners=False)


def _pad_even(x: torch.Tensor) -> torch.Tensor:
    """Replicate the last row / column of an odd-sized map so that a 2x2 stride-2 conv covers
    it all (a no-op on even sizes, the only ones the official context heads accept)."""
    ph, pw = x.shape[-2] % 2, x.shape[-1] % 2
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def _pool_and_spread(x: torch.Tensor) -> torch.Tensor:
    """Global average of ``x`` spread back over its grid (nearest), official context pooling."""
    if x.shape[-2:] == (1, 1):
        return x
    return F.interpolate(F.adaptive_avg_pool2d(x, 1), size=x.shape[-2:], mode="nearest")


class WeightMapper(nn.Module):
    """v1_0 context head: ``in_channels`` -> ``in_channels`` at the same resolution (half from
    ``in_conv``, half from the down/global-pool/up path). ``levels - 1`` down/up blocks."""

    def __init__(self, in_channels: int, levels: int = 2, bias: bool = False):
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        if in_channels % 2:
            raise ValueError(f"in_channels must be even, got {in_channels}")
        half = in_channels // 2
        self.in_channels, self.levels = in_channels, levels
        self.down_blocks = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        self.in_conv = nn.Sequential(nn.Conv2d(in_channels, half, 1, bias=bias),
                                     nn.BatchNorm2d(half), nn.ReLU(inplace=True))
        for _ in range(levels - 1):
            self.down_blocks.append(nn.Sequential(nn.Conv2d(half, half, 2, 2, bias=bias),
                                                  nn.BatchNorm2d(half), nn.ReLU(inplace=True)))
            self.up_blocks.append(nn.Sequential(nn.Conv2d(in_channels, half, 1, bias=bias),
                                                nn.BatchNorm2d(half), nn.ReLU(inplace=True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.in_conv(x)]
        for down in self.down_blocks:
            feats.append(down(_pad_even(feats[-1])))
        x = _pool_and_spread(feats[-1])
        for level in range(self.levels - 2, -1, -1):
            x = self.up_blocks[level](torch.cat((feats.pop(), x), dim=1))
            x = _resize_like(x, feats[-1], "nearest")  # official: nearest x2
        return torch.cat((feats.pop(), x), dim=1)


class _Conv2dMulti(nn.Module):
    """v0_1 ``Conv2dMulti``: conv ``i`` maps its own input channel slice to ``out_channels[i]``."""

    def __init__(self, in_channels: int, out_channels: Sequence[int], groups: int, bias: bool,
                 min_unit: int):
        super().__init__()
        parts = divide_feature_legacy(in_channels, out_channels, min_unit)
        self._ranges = [0]
        for i, (cin, cout) in enumerate(zip(parts, out_channels)):
            self._ranges.append(self._ranges[-1] + cin)
            self.add_module(f"conv_{i}", nn.Conv2d(cin, cout, 1, groups=groups, bias=bias))
        self.n = len(out_channels)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [getattr(self, f"conv_{i}")(x[:, self._ranges[i]:self._ranges[i + 1]])
                for i in range(self.n)]


class WeightMapperV01(nn.Module):
    """v0_1 context head: full-width down/up path, then one weight conv per decoder level."""

    def __init__(self, in_channels: int, out_channels: Sequence[int], levels: int = 3,
                 bias: bool = False, min_unit: int = 8, down_groups: int = 1,
                 flat_groups: int = 1, weight_groups: int = 1, avg_pool: bool = True):
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        self.in_channels, self.levels, self.avg_pool = in_channels, levels, avg_pool
        self.out_channels = [int(c) for c in out_channels]
        self.weight_groups = weight_groups
        for level in range(levels - 1):
            self.add_module(f"down_{level}", nn.Sequential(
                nn.Conv2d(in_channels, in_channels, 2, 2, bias=bias, groups=down_groups),
                nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True)))
            flat = [nn.Conv2d(2 * in_channels, in_channels, 1, bias=bias, groups=flat_groups),
                    nn.BatchNorm2d(in_channels)]
            if level > 0:
                flat.append(nn.ReLU(inplace=True))
            self.add_module(f"flat_{level}", nn.Sequential(*flat))
        padded = [next_multiple(c, weight_groups) for c in self.out_channels]
        self.out_conv = _Conv2dMulti(in_channels, padded, weight_groups, bias,
                                     max(min_unit, weight_groups))

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        if self.levels > 1:
            feats = [x]
            for level in range(self.levels - 1):
                feats.append(getattr(self, f"down_{level}")(_pad_even(feats[-1])))
            if self.avg_pool:
                feats[-1] = _pool_and_spread(feats[-1])
            for level in range(self.levels - 2, -1, -1):
                up = _resize_like(feats.pop(), feats[-1], "nearest")  # official: nearest x2
                feats[-1] = getattr(self, f"flat_{level}")(torch.cat((feats[-1], up), dim=1))
            x = feats[-1]
        w = self.out_conv(x)
        return [wi[:, :c] for wi, c in zip(w, self.out_channels)]


def _per_level(value, n: int, what: str) -> tuple:
    if isinstance(value, numbers.Number):
        return (value,) * n
    value = tuple(value)
    if len(value) != n:
        raise ValueError(f"{what} has {len(value)} entries, expected {n}")
    return value


class MultiScaleDecoder(nn.Module):
    """v1_0 / unify dynamic multi-scale decoder.

    ``feat_channels``: the decoder inputs fine to coarse (image, stride 2, ..., stride 16);
    ``signal_channels``: the context head's output width. ``unify_level=None``: v1_0 layout
    (``level_i`` with per-layer ``signal2weights``); an int: the unify layout.
    """

    def __init__(self, feat_channels: Sequence[int], signal_channels: int, num_classes: int,
                 kernel_sizes, level_layers, level_channels: Sequence[int], expand_ratio,
                 groups, weight_groups, coords_res=None, unify_level: Optional[int] = None,
                 contiguous_signal: bool = False):
        super().__init__()
        levels = len(level_channels)
        kernel_sizes = _per_level(kernel_sizes, levels, "kernel_sizes")
        level_layers = _per_level(level_layers, levels, "level_layers")
        expand_ratio = _per_level(expand_ratio, levels, "expand_ratio")
        groups = _per_level(groups, levels, "groups")
        feat_channels = list(feat_channels)[::-1]
        self.levels, self.unify_level = levels, unify_level
        self.contiguous_signal = contiguous_signal
        unified = unify_level is not None
        if unified:
            self.level_blocks = nn.ModuleList()
            self.weight_blocks = nn.ModuleList()
            self._ranges = [0]

        prev = 0
        for level in range(levels):
            prev += feat_channels[level]
            out_nc = level_channels[level]
            layers = []
            for layer in range(level_layers[level]):
                if level == levels - 1 and layer == level_layers[level] - 1:
                    out_nc = num_classes
                if kernel_sizes[level] > 1:
                    layers.append(HyperPatchInvertedResidual(
                        prev + 2, out_nc, kernel_sizes[level], expand_ratio=expand_ratio[level],
                        norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU6(inplace=True)))
                else:
                    layers.append(_conv_block(prev + 2, out_nc, kernel_sizes[level],
                                              groups=groups[level], slice_weights=unified))
                prev = out_nc
            block = HyperSequential(*layers, slice_weights=unified)
            if not unified:
                self.add_module(f"level_{level}", block)
                continue
            self.level_blocks.append(block)
            if level < unify_level - 1:
                self.weight_blocks.append(_WeightLayer(block.hyper_params))
            else:
                self._ranges.append(self._ranges[-1] + block.hyper_params)
                if level == levels - 1:
                    self.weight_blocks.append(_WeightLayer(
                        sum(b.hyper_params for b in self.level_blocks[unify_level - 1:])))

        if coords_res is not None:
            for res in coords_res:
                for i in range(levels):
                    h, w = res[0] // 2 ** i, res[1] // 2 ** i
                    self.register_buffer(f"coord{h}_{w}", _coords(h, w))

        # Signal -> weights: one grouped 1x1 conv per dynamic layer (v1_0) or weight block.
        if unified:
            targets = list(self.weight_blocks)
            self.param_groups = [t.target_params for t in targets]
        else:
            targets = _hyper_layers(self)
            self.param_groups = [int(t.hyper_params) for t in targets]
        wg = _per_level(weight_groups, len(targets), "weight_groups") \
            if isinstance(weight_groups, numbers.Number) else tuple(weight_groups)
        if len(wg) < len(targets):
            raise ValueError(f"weight_groups has {len(wg)} entries, need {len(targets)}")
        parts = divide_feature(signal_channels, self.param_groups, min_unit=max(wg))
        index = 0
        self.signal_slices = []
        for t, part, g in zip(targets, parts, wg):
            # Official v1_0: every layer starts at channel 0 (see the module docstring).
            start = index if (unified or contiguous_signal) else 0
            t.init_signal2weights(part, start, g)
            self.signal_slices.append((start, start + part))
            index += part
        self.hyper_params = sum(self.param_groups)

    def image_coordinates(self, b: int, h: int, w: int, ref: torch.Tensor) -> torch.Tensor:
        name = f"coord{h}_{w}"
        grid = self._buffers.get(name)
        if grid is None:
            grid = _coords(h, w, ref.device)
        return grid.to(ref.dtype).expand(b, -1, -1, -1)

    def forward(self, x: Sequence[torch.Tensor], s: torch.Tensor) -> torch.Tensor:
        p = None
        w = None
        for level in range(self.levels):
            feat = x[-level - 1]
            if p is None:
                p = feat
            else:
                p = torch.cat((feat, _resize_like(p, feat, "bilinear")), dim=1)
            p = torch.cat((self.image_coordinates(p.shape[0], *p.shape[-2:], p), p), dim=1)
            if self.unify_level is None:
                p = getattr(self, f"level_{level}")(p, s)
            elif level < self.unify_level - 1:
                p = self.level_blocks[level](p, self.weight_blocks[level](s))
            else:
                if level == self.unify_level - 1:
                    w = self.weight_blocks[self.unify_level - 1](s)
                i = level - self.unify_level + 1
                p = self.level_blocks[level](p, w[:, self._ranges[i]:self._ranges[i + 1]])
        return _resize_like(p, x[0], "bilinear")


class StaticMultiScaleDecoder(nn.Module):
    """The static-decoder baseline of the HyperSeg study (``decoder="static"``): not in the
    official code. The paper compares its dynamic decoder with static ones; this is "the same
    network with an ordinary decoder": :class:`MultiScaleDecoder`'s levels, inputs (coordinates,
    the skip feature, the upsampled previous output) and widths, with convolutions whose weights
    are shared by the whole image instead of made per patch. Kernel-1 levels are a 1x1 conv +
    BN + ReLU, kernel-3 levels a MobileNetV2 inverted residual (expand ``expand_ratio``, BN +
    ReLU6, zero padding). The context head's output, from which the dynamic decoder's weights are
    made, enters level 0 as input features (bilinearly upsampled to its stride), so both decoders
    see the same global context. ``width`` multiplies every level's width but the last (the
    classes), to bring the parameter count near the dynamic model's (the dynamic model's extra
    parameters are its ``signal2weights`` convolutions).
    """

    def __init__(self, feat_channels: Sequence[int], signal_channels: int, num_classes: int,
                 kernel_sizes, level_channels: Sequence[int], expand_ratio: int = 2,
                 width: float = 1.0):
        super().__init__()
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width}")
        levels = len(level_channels)
        kernel_sizes = _per_level(kernel_sizes, levels, "kernel_sizes")
        feat_channels = list(feat_channels)[::-1]
        self.levels = levels
        self.hyper_params = 0
        self.param_groups: List[int] = []
        prev = signal_channels
        for level in range(levels):
            prev += feat_channels[level]
            out_nc = num_classes if level == levels - 1 else max(1, round(level_channels[level] * width))
            if kernel_sizes[level] > 1:
                block = InvertedResidual(prev + 2, out_nc, 1, int(expand_ratio))
            else:
                block = nn.Sequential(nn.Conv2d(prev + 2, out_nc, 1, bias=False),
                                      nn.BatchNorm2d(out_nc), nn.ReLU(inplace=True))
            self.add_module(f"level_{level}", block)
            prev = out_nc

    def forward(self, x: Sequence[torch.Tensor], s: torch.Tensor) -> torch.Tensor:
        p = s
        for level in range(self.levels):
            feat = x[-level - 1]
            p = torch.cat((feat, _resize_like(p, feat, "bilinear")), dim=1)
            p = torch.cat((_coords(*p.shape[-2:], p.device, p.dtype).expand(p.shape[0], -1, -1, -1),
                           p), dim=1)
            p = getattr(self, f"level_{level}")(p)
        return _resize_like(p, x[0], "bilinear")


class _InvertedResidualV01(nn.Module):
    """v0_1 inverted residual: three patch-wise conv blocks (1x1 + BN + ReLU6, dw 3x3 + BN +
    ReLU6 on halo-padded patches, 1x1 + BN), each fed its own slice of the level's weights."""

    def __init__(self, in_nc: int, out_nc: int, kernel_size: int = 3, expand_ratio: float = 1):
        super().__init__()
        hidden = int(round(in_nc * expand_ratio))
        self.use_res_connect = in_nc == out_nc
        layers = []
        if expand_ratio != 1:
            layers.append(HyperSequential(
                HyperPatchConv2d(in_nc, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)))
        layers.append(HyperSequential(
            HyperPatchConv2d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden),
            nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)))
        layers.append(HyperSequential(HyperPatchConv2d(hidden, out_nc, 1), nn.BatchNorm2d(out_nc)))
        self.conv = HyperSequential(*layers)
        self.hyper_params = self.conv.hyper_params

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        y = self.conv(x, w)
        return x + y if self.use_res_connect else y


class MultiScaleDecoderV01(nn.Module):
    """v0_1 decoder: one level per input (coarse to fine, down to the image itself), level
    widths = the feature widths, weights given per level by ``WeightMapperV01``."""

    def __init__(self, feat_channels: Sequence[int], num_classes: int, kernel_sizes,
                 level_layers=1, expand_ratio: float = 1):
        super().__init__()
        feat_channels = list(feat_channels)[::-1]
        levels = len(feat_channels)
        kernel_sizes = _per_level(kernel_sizes, levels, "kernel_sizes")
        level_layers = _per_level(level_layers, levels, "level_layers")
        self.levels = levels
        prev = 0
        for level in range(levels):
            out_nc = feat_channels[level]
            prev += out_nc
            layers = []
            for layer in range(level_layers[level]):
                if level == levels - 1 and layer == level_layers[level] - 1:
                    out_nc = num_classes
                if kernel_sizes[level] > 1:
                    layers.append(_InvertedResidualV01(prev + 2, out_nc, kernel_sizes[level],
                                                       expand_ratio))
                else:
                    layers.append(_conv_block(prev + 2, out_nc, kernel_sizes[level],
                                              patch_padding=True))
                prev = out_nc
            self.add_module(f"level_{level}", HyperSequential(*layers))
        self.param_groups = [getattr(self, f"level_{i}").hyper_params for i in range(levels)]
        self.hyper_params = sum(self.param_groups)

    def forward(self, x: Sequence[torch.Tensor], w: Sequence[torch.Tensor]) -> torch.Tensor:
        p = None
        for level in range(len(x)):
            feat = x[-level - 1]
            if p is None:
                p = feat
            else:
                p = torch.cat((feat, _resize_like(p, feat, "bilinear")), dim=1)
            p = torch.cat((_coords(*p.shape[-2:], p.device, p.dtype).expand(p.shape[0], -1, -1, -1),
                           p), dim=1)
            p = getattr(self, f"level_{level}")(p, w[level])
        return _resize_like(p, x[0], "bilinear")


class HyperSeg(nn.Module):
    """HyperSeg: ``backbone`` (EfficientNet features), ``decoder``, ``weight_mapper``.

    ``design``: ``"v1_0"``, ``"v1_0_unify"`` or ``"v0_1"``. Input (B, 3, H, W) with H and W
    multiples of 32; output logits (B, num_classes, H, W). A list/tuple input is an image
    pyramid as in the official ``HyperGen.forward``.

    ``decoder="static"`` (v1_0 only, not an official configuration) replaces the dynamic decoder
    by :class:`StaticMultiScaleDecoder`, level widths times ``static_width``: the baseline of
    the dynamic-vs-static decoder comparison (``fastvision eval segmentation-study``).
    """

    def __init__(self, design: str = "v1_0", backbone: str = "efficientnet-b1",
                 num_classes: int = 19, out_feat_scale: Union[float, Sequence[float]] = 0.25,
                 mapper_levels: int = 2, kernel_sizes=(1, 1, 1, 3, 3),
                 level_channels: Sequence[int] = (64, 32, 16, 16, 16), level_layers=1,
                 expand_ratio: float = 2, decoder_groups=1, weight_groups=(32, 16, 8, 16, 4),
                 inference_hflip: bool = True, inference_gather: str = "mean",
                 coords_res=None, unify_level: Optional[int] = None,
                 contiguous_signal: bool = False, in_nc: int = 3, decoder: str = "dynamic",
                 static_width: float = 1.0):
        super().__init__()
        if design not in ("v1_0", "v1_0_unify", "v0_1"):
            raise ValueError(f"design must be 'v1_0', 'v1_0_unify' or 'v0_1', got {design!r}")
        if inference_gather not in ("mean", "max"):
            raise ValueError(f"inference_gather must be 'mean' or 'max', got {inference_gather!r}")
        if (design == "v1_0_unify") != (unify_level is not None):
            raise ValueError("unify_level is given exactly for the 'v1_0_unify' design")
        if decoder not in ("dynamic", "static"):
            raise ValueError(f"decoder must be 'dynamic' or 'static', got {decoder!r}")
        if decoder == "static" and design != "v1_0":
            raise ValueError(f"decoder='static' is built for the 'v1_0' design, got {design!r}")
        self.design = design
        self.num_classes = num_classes
        # Inference on the CPU runs the EfficientNet backbone and the context head in channels_last
        # (oneDNN's depthwise and 1x1 kernels; in NCHW the depthwise convolutions fall back to
        # PyTorch's slow im2col path, most of the model's time); the decoder gets contiguous maps.
        # The same path folds each backbone convolution + BatchNorm into one convolution where no
        # gradient is recorded (fastvision.nn.fold; equal to float rounding), unless
        # fold_backbone_batchnorm is False. Not parameters: state dicts are unchanged.
        # channels_last_backbone = False gives the official NCHW execution.
        self.channels_last_backbone = True
        self.fold_backbone_batchnorm = True
        self.inference_hflip = inference_hflip
        self.inference_gather = inference_gather
        self.backbone = EfficientNetFeatures(backbone, out_feat_scale)
        feat_channels = [in_nc] + self.backbone.feat_channels[:-1]
        signal = self.backbone.feat_channels[-1]
        if design == "v0_1":
            self.decoder = MultiScaleDecoderV01(feat_channels, num_classes, kernel_sizes,
                                                level_layers, expand_ratio)
            wg = weight_groups if isinstance(weight_groups, numbers.Number) else weight_groups[0]
            self.weight_mapper = WeightMapperV01(signal, self.decoder.param_groups,
                                                 levels=mapper_levels, weight_groups=int(wg))
        elif decoder == "static":
            self.decoder = StaticMultiScaleDecoder(feat_channels, signal, num_classes, kernel_sizes,
                                                   level_channels, expand_ratio, static_width)
            self.weight_mapper = WeightMapper(signal, levels=mapper_levels)
        else:
            self.decoder = MultiScaleDecoder(
                feat_channels, signal, num_classes, kernel_sizes, level_layers, level_channels,
                expand_ratio, decoder_groups, weight_groups, coords_res, unify_level,
                contiguous_signal)
            self.weight_mapper = WeightMapper(signal, levels=mapper_levels)

    @property
    def hyper_params(self) -> int:
        """Number of dynamic weights generated per patch."""
        return self.decoder.hyper_params

    def process_single_tensor(self, x: torch.Tensor, hflip: bool = False) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"HyperSeg expects (B, C, H, W) with H and W multiples of 32, got "
                             f"{tuple(x.shape)}")
        if hflip:
            x = torch.flip(x, [-1])
        channels_last = self.channels_last_backbone and not self.training and x.device.type == "cpu"
        feats = self.backbone(x.contiguous(memory_format=torch.channels_last) if channels_last else x,
                              fold_batchnorm=channels_last and self.fold_backbone_batchnorm)
        signal = self.weight_mapper(feats[-1])
        if channels_last:  # the patch ops read the hypernetwork weights and the maps contiguous
            feats = [f.contiguous() for f in feats]
            signal = [t.contiguous() for t in signal] if isinstance(signal, list) else signal.contiguous()
        out = self.decoder([x] + feats[:-1], signal)
        return torch.flip(out, [-1]) if hflip else out

    def _gather(self, a: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
        if b is None:
            return a
        return (a + b) * 0.5 if self.inference_gather == "mean" else torch.max(a, b)

    def forward(self, x, hflip: Optional[bool] = None) -> torch.Tensor:
        """Logits. ``hflip=None`` is the official behaviour: no flip for a tensor, and for a list
        (image pyramid) ``inference_hflip`` decides and combines with ``torch.max``. With
        ``hflip=True`` a tensor input also runs flipped and the two predictions are gathered by
        ``inference_gather`` (mean: averaged); ``hflip=False`` never flips."""
        if isinstance(x, torch.Tensor):
            out = self.process_single_tensor(x)
            if hflip:
                out = self._gather(self.process_single_tensor(x, hflip=True), out)
            return out
        if not isinstance(x, (list, tuple)) or not x:
            raise TypeError("HyperSeg input must be a tensor or a non-empty list of tensors")
        flip = self.inference_hflip if hflip is None else hflip
        size = x[0].shape[-2:]
        out = None
        for p in x:
            if flip:
                p = torch.max(self.process_single_tensor(p), self.process_single_tensor(p, True))
            else:
                p = self.process_single_tensor(p)
            if p.shape[-2:] != size:
                p = F.interpolate(p, size, mode="bilinear", align_corners=False)
            out = self._gather(p, out)
        return out


# Official configurations (YuvalNirkin/hyperseg configs/train/*.py).
_CONFIGS = {
    "hyperseg_m_cityscapes": dict(
        design="v1_0", backbone="efficientnet-b1", num_classes=19,
        out_feat_scale=[1.0, 0.25, 0.25, 0.25, 0.25], kernel_sizes=(1, 1, 1, 3, 3),
        level_channels=(64, 32, 16, 16, 16), expand_ratio=2, weight_groups=(32, 16, 8, 16, 4),
        coords_res=((512, 512), (512, 1024))),
    "hyperseg_s_cityscapes": dict(
        design="v1_0_unify", backbone="efficientnet-b1", num_classes=19,
        out_feat_scale=[1.0, 0.166, 0.2, 0.25, 0.4], kernel_sizes=(1, 1, 1, 3, 3),
        level_channels=(32, 16, 8, 8, 8), expand_ratio=2, weight_groups=(32, 16, 8, 16, 4),
        unify_level=4, coords_res=((768, 768), (768, 1536))),
    "hyperseg_s_camvid": dict(
        design="v1_0", backbone="efficientnet-b1", num_classes=12, out_feat_scale=0.25,
        kernel_sizes=(1, 1, 1, 3, 3), level_channels=(64, 32, 16, 16, 16), expand_ratio=2,
        weight_groups=(64, 32, 32, 16, 8), coords_res=((576, 576), (576, 768))),
    "hyperseg_l_camvid": dict(
        design="v1_0", backbone="efficientnet-b1", num_classes=12, out_feat_scale=0.25,
        kernel_sizes=(1, 1, 1, 3, 3, 3), level_channels=(64, 32, 16, 16, 16, 16),
        expand_ratio=2, weight_groups=(64, 32, 32, 16, 8, 8), coords_res=((768, 768), (768, 1024))),
    "hyperseg_l_voc": dict(
        design="v0_1", backbone="efficientnet-b3", num_classes=21, out_feat_scale=0.25,
        mapper_levels=3, kernel_sizes=(1, 1, 3, 3, 3, 3), level_channels=(), expand_ratio=2,
        weight_groups=16),
}


def _build(name: str, weights, **kwargs) -> HyperSeg:
    cfg = dict(_CONFIGS[name])
    unknown = set(kwargs) - {"num_classes", "contiguous_signal", "inference_hflip",
                             "inference_gather", "coords_res", "weight_groups", "decoder",
                             "static_width"}
    if unknown:
        raise TypeError(f"{name}() got unexpected keyword arguments {sorted(unknown)}")
    cfg.update(kwargs)
    return finish(HyperSeg(**cfg), weights)


def convert_official(checkpoint, **model_kwargs) -> dict:
    """The official keys are ours (coordinate-grid buffers included); ``checkpoint`` is the state
    dict or the official ``{"state_dict": ..., "arch": ...}`` checkpoint."""
    inner = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    return dict(inner if isinstance(inner, dict) else checkpoint)


@register_model(converter=convert_official)
def hyperseg_m_cityscapes(*, num_classes: int = 19, weights=None, contiguous_signal: bool = False,
                          **kwargs) -> HyperSeg:
    """HyperSeg-M, Cityscapes (1024x512): v1_0, EfficientNet-B1, 10,311,214 params at 19
    classes (``configs/train/cityscapes_efficientnet_b1_hyperseg-m.py``)."""
    return _build("hyperseg_m_cityscapes", weights, num_classes=num_classes,
                  contiguous_signal=contiguous_signal, **kwargs)


@register_model(converter=convert_official)
def hyperseg_s_cityscapes(*, num_classes: int = 19, weights=None, **kwargs) -> HyperSeg:
    """HyperSeg-S, Cityscapes (1536x768): v1_0_unify (unify_level 4), EfficientNet-B1,
    10,041,398 params at 19 classes (``cityscapes_efficientnet_b1_hyperseg-s.py``)."""
    return _build("hyperseg_s_cityscapes", weights, num_classes=num_classes, **kwargs)


@register_model(converter=convert_official)
def hyperseg_s_camvid(*, num_classes: int = 12, weights=None, contiguous_signal: bool = False,
                      **kwargs) -> HyperSeg:
    """HyperSeg-S, CamVid (768x576): v1_0, EfficientNet-B1, 9,949,064 params at the official 12
    classes (``camvid_efficientnet_b1_hyperseg-s.py``)."""
    return _build("hyperseg_s_camvid", weights, num_classes=num_classes,
                  contiguous_signal=contiguous_signal, **kwargs)


@register_model(converter=convert_official)
def hyperseg_l_camvid(*, num_classes: int = 12, weights=None, contiguous_signal: bool = False,
                      **kwargs) -> HyperSeg:
    """HyperSeg-L, CamVid (1024x768): v1_0 with 6 levels (the last on the image), EfficientNet-B1,
    9,969,104 params at 12 classes (``camvid_efficientnet_b1_hyperseg-l.py``)."""
    return _build("hyperseg_l_camvid", weights, num_classes=num_classes,
                  contiguous_signal=contiguous_signal, **kwargs)


@register_model(converter=convert_official)
def hyperseg_l_voc(*, num_classes: int = 21, weights=None, weight_groups: int = 16,
                   **kwargs) -> HyperSeg:
    """HyperSeg-L, PASCAL VOC (512x512): v0_1, EfficientNet-B3, context head levels 3; 39,680,458
    params at 21 classes with the config's ``weight_groups=16`` (48,959,130 with 1). Inputs
    must be multiples of 32 (the official code: of 128)."""
    return _build("hyperseg_l_voc", weights, num_classes=num_classes,
                  weight_groups=weight_groups, **kwargs)
