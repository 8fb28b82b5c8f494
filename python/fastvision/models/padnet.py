"""PAD-Net: particle detection encoder-decoder (Wang, Ma, Jian, Jiang, PRCV 2021, LNCS 13022).

No official code exists; this follows the paper text (``papers/padnet-prcv2021.txt``). Input: a
normalised grayscale pad image (B, 1, H, W), H = 112 rows by W = 48 columns in the paper.
Output of ``forward``: particle-map **logits** (B, 1, H, W) at input resolution (apply
``torch.sigmoid`` for the probability map; the losses in :mod:`fastvision.losses.particles` take
logits). ``forward(x, return_features=True)`` also returns the three chain (MDR / CRP) outputs
of the decoder, coarse to fine, for knowledge distillation.

Encoder (Table 1): conv 3x3 stride 1 + BN + h-swish, then six MobileNetV3 bnecks (3x3,
SE / NL / in-exp-out / stride as listed), widths x1, x2, x4. The bneck layout is the
PyTorch MobileNetV3 of ``xiaolai-sqlai/mobilenetv3`` (``mobilenetv3.old.py``): expand 1x1 + BN +
NL, depthwise + BN + NL, project 1x1 + BN, then SE on the *block output* (reduction 4, with BN
inside, h-sigmoid gate), residual when stride 1 (through a 1x1 conv + BN when the widths differ),
no residual at stride 2 (the blocks: :mod:`fastvision.nn.mobilenet`; Table 1 itself:
:func:`fastvision.ops.padnet.padnet_bnecks`, which the fused op shares). Only this layout
reproduces the paper's parameter counts (Tables 2, 5, 6: PAD-Net 0.0057M, Mv3-11BN 0.44M);
torchvision's (SE on the expanded width) would give about 0.0071M.
The encoder is ``model.encoder`` and returns the tapped feature maps as a tuple, finest first:
(bneck 2 at 1/1, bneck 4 at 1/2, bneck 6 at 1/4). Every BN is its own module (foldable).

Decoder (Fig. 1, Sect. 3.1): conv 1x1 of the deepest tap to the decoder width, then
MDR -> FUSION(+ middle tap) -> MDR -> FUSION(+ shallow tap) -> MDR -> head. Width 4
(``decoder_plus``: 16). Choices where the paper is open (each a constructor argument):

* MDR (MaxPool-DSConv-Residual chain) = Light-Weight RefineNet's chained residual pooling with the
  1x1 conv replaced by a depthwise-separable conv: ``top = DSConv(MaxPool5x5,s1(top)); x = x + top``,
  repeated ``chain_stages = 4`` times (RefineNet's CRP depth); DSConv = depthwise 3x3 + pointwise
  1x1, no bias, no BN, no activation (as the CRP's conv).
* FUSION: 1x1 conv of each path to the decoder width, bilinear upsampling of the coarse path
  (``align_corners=False``), concat, 3x3 conv, ReLU6 (LW-RefineNet's activation after fusion).
* Head: 1x1 conv with bias to one channel (``head_kernel``), logits.

Teacher (Sect. 3.3, ``padnet_teacher``): the full MobileNetV3-Small encoder (stem + 11 bnecks,
same bneck layout, no last conv / classifier, 1 input channel) + the Light-Weight RefineNet
decoder (CRP chains of 1x1 convs, 4 stages) whose fusion is Concat + Conv3x3, width 24, in the
topology of PAD-Net's decoder. Choices (the paper gives only the totals, 0.4697M / 422.5M):
the stem and the first two bnecks have stride 1, like PAD-Net's encoder (the original /32 strides
give 7.4 MMACs at 112x48, far from 422.5), so the encoder output is at 1/4 and the taps are
bneck 3 (1/1, 24 ch), bneck 8 (1/2, 48 ch) and bneck 11 (1/4, 96 ch): the teacher's three chain
outputs have the resolutions of the student's, as the distillation needs.

Comparison encoders of Table 2 (``mv3_6bn``, ``mv3_11bn``, ``mv2_4bn``, ``mv2_7bn``), each with
PAD-Net's decoder (width 4). Inferred, like the teacher, from the paper's totals: every encoder
keeps only the last two stride-2 layers of its original network (output at 1/4 like PAD-Net's),
stem stride 1, 1 input channel. Mv3-11BN = the teacher's encoder. Mv3-6BN = MobileNetV3-Small
bnecks 1, 2, 4, 7, 9, 10 (the width-changing bnecks + one 96-channel bneck): their SE / NL pattern
is exactly that of Table 1 (SE-RE, RE, then SE-HS), strides 1, 1, 2, 1, 2, 1 as Table 1's.
Mv2-kBN = the first k bottleneck groups (t, c, n, s) of MobileNetV2 (torchvision layout: expand
1x1 + BN + ReLU6 unless t = 1, depthwise 3x3 + BN + ReLU6, project 1x1 + BN, residual when stride 1
and widths agree), stem 3x3 -> 32 + BN + ReLU6. Taps: the ends of the groups listed in the
builders.

U-Net baseline of Table 6 (``unet``): the paper gives only its size; a textbook U-Net of widths
2, 4, 8, 16 chosen to match it (:class:`fastvision.models.unet.UNet`).

Counts at 112x48, convention of :mod:`fastvision.models.flops` (MACs; the paper's "FLOPs"):

=========================  ==========  =========  ==============  ============
model                      params      paper      MMACs           paper MFLOPs
=========================  ==========  =========  ==============  ============
padnet                     5,765       0.0057M    8.60            8.6
padnet_x2                  15,669      0.016M     18.36           18.5
padnet_x4                  51,605      0.052M     52.08           52.6
padnet_x4 decoder_plus     66,257      0.065M     93.53           92.0
padnet_teacher             464,181     0.4697M    406.52          422.5
mv3_6bn                    221,833     0.22M      150.9           142.4
mv3_11bn                   433,233     0.44M      317.9           319.6
mv2_4bn                    240,501     0.25M      222.9           228.8
mv2_7bn                    1,814,005   1.82M      1464.3          1484.5
unet                       8,577       0.0086M    4.42            4.4
=========================  ==========  =========  ==============  ============

Mv3-6BN's MACs stay 6% above the paper's: no documented choice brings both numbers within 5%.
The decoder options barely move it (the width-4 decoder is 4.5 of the 150.9 MMACs:
``chain_stages=1`` gives 149.8, +5.2%; ``head_kernel=3`` adds 0.2); the encoder is 146 of them.
Of the 6-bneck subsets of MobileNetV3-Small whose widths chain (bneck 1, 2, then four of 3-11;
strides 1, 1, 2, 1, 2, 1 as Table 1) only 1, 2, 4, 7, 9, 10 (or 11 for 10) comes near 0.22M;
the next is 0.119M / 118 MMACs. Table 1's 3x3 depthwise kernels everywhere (the paper derives
PAD-Net from Mv3-6BN "by reducing the number of channels") give 204,553 / 141.6 (-7.0% params,
-0.6% MACs; ``mv3_6bn(depthwise_kernel=3)``). Only unmotivated mixes fit both (3x3 in bnecks 4
and 7, 5x5 in 9 and 10: 218,377 / 146.2), or dropping the projection shortcuts of the stride-1
width changes (bnecks 2 and 7: 219,385 / 145.9), which Mv3-11BN and the teacher share (the
teacher would fall to -5.0% MACs), so the default stays MobileNetV3-Small's bnecks unchanged.

``model.use_fused`` (default True): in eval mode, when no gradient is needed (``torch.no_grad()``,
``torch.inference_mode()``, or neither the input nor any encoder parameter requires grad), the
PAD-Net encoders (``padnet``, ``padnet_x2``, ``padnet_x4``) run as the fused op
:func:`fastvision.ops.padnet_encoder` on BN-folded parameters (folded once, refolded when a
weight or BN statistic changes); equal to the modules to float32 rounding. ``use_fused = False``
runs the modules (for comparison); training, the other encoders, and encoders whose modules carry
forward hooks (feature extraction, :mod:`fastvision.models.flops`) always run the modules.
Likewise, on the CPU and under the same conditions, ``forward(x)`` (not ``return_features=True``,
which knowledge distillation uses in training) runs every MDR decoder (all models but the teacher,
whose chains are 1x1 CRPs) as the fused op :func:`fastvision.ops.padnet_decoder` (parameters
packed once, repacked when one changes): equal to the modules to float32 rounding, several times
faster at every batch size. CUDA runs the decoder modules.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from fastvision.nn.mobilenet import MOBILENETV3_SMALL_BNECKS, MobileNetV2Encoder, MobileNetV3Encoder
from fastvision.ops.padnet import fused_decoder_logits, fused_encoder_taps, padnet_bnecks

from ._registry import register_model
from .checkpoint import finish
from .flops import Resize

__all__ = [
    "ChainedResidualPool",
    "Fusion",
    "RefineDecoder",
    "PADNet",
    "PAPER_COUNTS",
    "padnet_bnecks",
]

# (params, MFLOPs) at 112x48 from the paper's Tables 2, 3, 5, 6.
PAPER_COUNTS = {
    "padnet": (5_700, 8.6),
    "padnet_x2": (16_000, 18.5),
    "padnet_x4": (52_000, 52.6),
    "padnet_x4_decoder_plus": (65_000, 92.0),
    "padnet_teacher": (469_700, 422.5),
    "mv3_6bn": (220_000, 142.4),
    "mv3_11bn": (440_000, 319.6),
    "mv2_4bn": (250_000, 228.8),
    "mv2_7bn": (1_820_000, 1484.5),
    "unet": (8_600, 4.4),
}

class ChainedResidualPool(nn.Module):
    """``stages`` times: ``top = conv(MaxPool5x5,s1(top)); x = x + top``; returns x.

    ``separable=True``: conv = depthwise 3x3 + pointwise 1x1 (PAD-Net's MDR); ``False``: 1x1 conv
    (Light-Weight RefineNet's CRP). No bias, BN or activation, as in the CRP.
    """

    def __init__(self, channels: int, stages: int = 4, separable: bool = True):
        super().__init__()
        if int(stages) < 1:
            raise ValueError(f"chain stages must be >= 1, got {stages}")
        self.pool = nn.MaxPool2d(5, stride=1, padding=2)
        if separable:
            self.convs = nn.ModuleList(
                nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False),
                              nn.Conv2d(channels, channels, 1, bias=False))
                for _ in range(int(stages)))
        else:
            self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 1, bias=False)
                                       for _ in range(int(stages)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = x
        for conv in self.convs:
            top = conv(self.pool(top))
            x = x + top
        return x


class Fusion(nn.Module):
    """1x1 conv of each path, bilinear upsampling of the coarse one, Concat, 3x3 conv, ReLU6."""

    def __init__(self, coarse_channels: int, fine_channels: int, channels: int):
        super().__init__()
        self.coarse_conv = nn.Conv2d(coarse_channels, channels, 1, bias=False)
        self.fine_conv = nn.Conv2d(fine_channels, channels, 1, bias=False)
        self.upsample = Resize("bilinear")
        self.merge = nn.Conv2d(2 * channels, channels, 3, 1, 1, bias=False)
        self.merge_act = nn.ReLU6()

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        up = self.upsample(self.coarse_conv(coarse), fine.shape[-2:])
        return self.merge_act(self.merge(torch.cat([up, self.fine_conv(fine)], dim=1)))


class RefineDecoder(nn.Module):
    """conv1x1 -> chain -> Fusion -> chain -> Fusion -> chain -> head (see the module docstring).

    Args:
        tap_channels: channels of the three encoder taps, finest first.
        channels: decoder width (PAD-Net 4, decoder+ 16).
        chain_stages: stages of each chain (MDR / CRP).
        separable: DSConv chains (MDR) or 1x1 chains (CRP).
        head_kernel: kernel size of the output conv (1 or 3).
    """

    def __init__(self, tap_channels: Sequence[int], channels: int = 4, chain_stages: int = 4,
                 separable: bool = True, head_kernel: int = 1):
        super().__init__()
        if len(tap_channels) != 3:
            raise ValueError(f"RefineDecoder needs 3 encoder taps, got {len(tap_channels)}")
        if int(channels) < 1:
            raise ValueError(f"decoder channels must be >= 1, got {channels}")
        if head_kernel not in (1, 3):
            raise ValueError(f"head_kernel must be 1 or 3, got {head_kernel}")
        fine, middle, deep = (int(c) for c in tap_channels)
        c = int(channels)
        self.channels = c
        self.project = nn.Conv2d(deep, c, 1, bias=False)
        self.chain1 = ChainedResidualPool(c, chain_stages, separable)
        self.fusion1 = Fusion(c, middle, c)
        self.chain2 = ChainedResidualPool(c, chain_stages, separable)
        self.fusion2 = Fusion(c, fine, c)
        self.chain3 = ChainedResidualPool(c, chain_stages, separable)
        self.head = nn.Conv2d(c, 1, head_kernel, 1, head_kernel // 2, bias=True)

    def forward(self, taps: Sequence[torch.Tensor]):
        """Logits at the finest tap's resolution and the three chain outputs, coarse to fine."""
        fine, middle, deep = taps
        c1 = self.chain1(self.project(deep))
        c2 = self.chain2(self.fusion1(c1, middle))
        c3 = self.chain3(self.fusion2(c2, fine))
        return self.head(c3), (c1, c2, c3)


class PADNet(nn.Module):
    """Encoder (``model.encoder``, returns the tap tuple, finest at stride 1) + :class:`RefineDecoder`.

    ``forward(x)`` -> logits (B, 1, H, W); ``forward(x, return_features=True)`` ->
    ``(logits, (chain1, chain2, chain3))``. ``use_fused`` (default True): inference without
    gradients runs PAD-Net's encoder and, on the CPU, the decoder as the fused ops (see the
    module docstring).
    """

    def __init__(self, encoder: nn.Module, decoder: RefineDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.use_fused = True

    def forward(self, x: torch.Tensor, return_features: bool = False):
        if x.dim() != 4 or x.shape[1] != self.encoder.in_channels:
            raise ValueError(f"PADNet: x must be (B, {self.encoder.in_channels}, H, W), "
                             f"got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"PADNet: x must be a floating-point tensor, got {x.dtype}")
        taps = self._encode(x)
        if not return_features and self._fast_decoder(x):
            logits = fused_decoder_logits(self.decoder, taps)
            if logits is not None:
                return logits
        logits, features = self.decoder(taps)
        return (logits, features) if return_features else logits

    def _fast_path(self, module: nn.Module, x: torch.Tensor) -> bool:
        # The fused ops when nothing needs gradients (inference); the modules otherwise, and when
        # forward hooks observe the modules (feature extraction, the operation counter).
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in module.parameters()))
        hooked = any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())
        return self.use_fused and not self.training and not needs_grad and not hooked

    def _fast_decoder(self, x: torch.Tensor) -> bool:
        # Not while torch.compile / torch.export trace the model: padnet_decoder is a CPU-only
        # inference op without an ONNX translation, so traced graphs keep the decoder's modules
        # (which every backend compiles and every exporter translates).
        return self._fast_path(self.decoder, x) and not torch.compiler.is_compiling()

    def _encode(self, x: torch.Tensor):
        # The fused encoder for PAD-Net's encoders only (not the teacher's, nor the comparison
        # encoders): fused_encoder_taps returns None for those.
        if self._fast_path(self.encoder, x):
            taps = fused_encoder_taps(self.encoder, x)
            if taps is not None:
                return taps
        return self.encoder(x)


def _padnet(width: int, decoder_plus: bool, chain_stages: int, head_kernel: int) -> PADNet:
    encoder = MobileNetV3Encoder(padnet_bnecks(width), taps=(1, 3, 5), in_channels=1, stem_stride=1)
    decoder = RefineDecoder(encoder.tap_channels, 16 if decoder_plus else 4, chain_stages,
                            separable=True, head_kernel=head_kernel)
    return PADNet(encoder, decoder)


@register_model()
def padnet(*, decoder_plus: bool = False, chain_stages: int = 4, head_kernel: int = 1,
           weights=None) -> PADNet:
    """PAD-Net (Table 1, x1 widths; paper 0.0057M / 8.6 MFLOPs). ``decoder_plus``: width 16."""
    return finish(_padnet(1, decoder_plus, chain_stages, head_kernel), weights)


@register_model()
def padnet_x2(*, decoder_plus: bool = False, chain_stages: int = 4, head_kernel: int = 1,
              weights=None) -> PADNet:
    """PAD-Net x2 (Table 1, doubled encoder widths; paper 0.016M / 18.5 MFLOPs)."""
    return finish(_padnet(2, decoder_plus, chain_stages, head_kernel), weights)


@register_model()
def padnet_x4(*, decoder_plus: bool = False, chain_stages: int = 4, head_kernel: int = 1,
              weights=None) -> PADNet:
    """PAD-Net x4 (Table 1, quadrupled encoder widths; paper 0.052M / 52.6 MFLOPs,
    with ``decoder_plus`` 0.065M / 92.0, Table 3)."""
    return finish(_padnet(4, decoder_plus, chain_stages, head_kernel), weights)


# The teacher's encoder: MobileNetV3-Small with PAD-Net's stride-1 stem and first two bnecks.
_TEACHER_STRIDES = (1, 1, 1, 2, 1, 1, 1, 1, 2, 1, 1)


@register_model()
def padnet_teacher(*, channels: int = 24, chain_stages: int = 4, head_kernel: int = 1,
                   weights=None) -> PADNet:
    """KD teacher (Sect. 3.3): MobileNetV3-Small encoder + LW-RefineNet decoder with Concat+Conv3x3
    fusion (paper 0.4697M / 422.5 MFLOPs; choices in the module docstring)."""
    encoder = MobileNetV3Encoder(MOBILENETV3_SMALL_BNECKS, taps=(2, 7, 10), in_channels=1,
                                 stem_stride=1, strides=_TEACHER_STRIDES)
    decoder = RefineDecoder(encoder.tap_channels, channels, chain_stages, separable=False,
                            head_kernel=head_kernel)
    return finish(PADNet(encoder, decoder), weights)


def _with_padnet_decoder(encoder: nn.Module, chain_stages: int, head_kernel: int) -> PADNet:
    return PADNet(encoder, RefineDecoder(encoder.tap_channels, 4, chain_stages, separable=True,
                                         head_kernel=head_kernel))


@register_model()
def mv3_6bn(*, chain_stages: int = 4, head_kernel: int = 1, depthwise_kernel: int | None = None,
            weights=None) -> PADNet:
    """Table 2's Mv3-6BN encoder (MobileNetV3-Small bnecks 1, 2, 4, 7, 9, 10) + PAD-Net's decoder
    (paper 0.22M / 142.4 MFLOPs; here 221,833 / 150.9 MMACs, +6%: see the module docstring).

    ``depthwise_kernel``: None keeps MobileNetV3-Small's kernels (3, 3, 5, 5, 5, 5); 3 uses
    Table 1's 3x3 everywhere (204,553 / 141.6, params -7%)."""
    if depthwise_kernel not in (None, 3, 5):
        raise ValueError(f"depthwise_kernel must be None, 3 or 5, got {depthwise_kernel}")
    bnecks = [MOBILENETV3_SMALL_BNECKS[i] for i in (0, 1, 3, 6, 8, 9)]
    if depthwise_kernel is not None:
        bnecks = [(depthwise_kernel,) + b[1:] for b in bnecks]
    encoder = MobileNetV3Encoder(bnecks, taps=(1, 3, 5), in_channels=1, stem_stride=1,
                                 strides=(1, 1, 2, 1, 2, 1))
    return finish(_with_padnet_decoder(encoder, chain_stages, head_kernel), weights)


@register_model()
def mv3_11bn(*, chain_stages: int = 4, head_kernel: int = 1, weights=None) -> PADNet:
    """Table 2's Mv3-11BN encoder (the teacher's) + PAD-Net's decoder (paper 0.44M / 319.6)."""
    encoder = MobileNetV3Encoder(MOBILENETV3_SMALL_BNECKS, taps=(2, 7, 10), in_channels=1,
                                 stem_stride=1, strides=_TEACHER_STRIDES)
    return finish(_with_padnet_decoder(encoder, chain_stages, head_kernel), weights)


@register_model()
def mv2_4bn(*, chain_stages: int = 4, head_kernel: int = 1, weights=None) -> PADNet:
    """Table 2's Mv2-4BN: MobileNetV2 groups 1-4 (strides 1, 1, 2, 2; taps groups 2, 3, 4) +
    PAD-Net's decoder (paper 0.25M / 228.8)."""
    encoder = MobileNetV2Encoder(strides=(1, 1, 2, 2), taps=(1, 2, 3))
    return finish(_with_padnet_decoder(encoder, chain_stages, head_kernel), weights)


@register_model()
def mv2_7bn(*, chain_stages: int = 4, head_kernel: int = 1, weights=None) -> PADNet:
    """Table 2's Mv2-7BN: MobileNetV2 groups 1-7 (strides 1, 1, 1, 2, 1, 2, 1; taps groups 2, 4,
    7) + PAD-Net's decoder (paper 1.82M / 1484.5)."""
    encoder = MobileNetV2Encoder(strides=(1, 1, 1, 2, 1, 2, 1), taps=(1, 3, 6))
    return finish(_with_padnet_decoder(encoder, chain_stages, head_kernel), weights)
