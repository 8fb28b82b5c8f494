"""PAD-Net's fused encoder and decoder (inference): stem + six MobileNetV3 bnecks in one op,
the whole MDR decoder in another (CPU).

``padnet_encoder(x, params, width)`` computes what ``model.encoder`` of
:func:`fastvision.models.padnet` (``width`` 1), ``padnet_x2`` (2) or ``padnet_x4`` (4) computes
in eval mode, with every BatchNorm folded into the convolution before it:

* stem: conv 3x3 stride 1 (1 -> 2w channels) + h-swish;
* six bnecks (Table 1: kernel 3, in / exp / out = 2/8/4, 4/8/4, 4/16/8, 8/16/8, 8/32/16, 16/32/16
  times w; strides 1, 1, 2, 1, 2, 1; ReLU in the first two, h-swish after): expand 1x1 + act,
  depthwise 3x3 + act, project 1x1, SE on the block output (mean, 1x1 + ReLU, 1x1,
  h-sigmoid gate; not in bneck 2), residual at stride 1 (through the folded 1x1 shortcut in
  bneck 1, whose widths differ);
* returns the outputs of bnecks 2, 4 and 6: ``(B, 4w, H, W)``, ``(B, 8w, H2, W2)``,
  ``(B, 16w, H4, W4)`` with ``H2 = (H - 1) // 2 + 1`` and ``H4 = (H2 - 1) // 2 + 1`` (likewise W).

It equals the module composition to float32 rounding (the folding and the order of the sums
differ). CPU: one image per thread (``at::parallel_for`` over the batch), the image's
activations in a per-thread scratch buffer; batches smaller than the thread count (batch 1) split
each image's layers over the threads instead, with the same values. float32 on x86-64 CPUs with
AVX2 + FMA (checked at run time) takes vectorised kernels with fused multiply-adds (one rounding
per term, like CUDA); float64, and float32 elsewhere, the portable ones. CUDA: one thread block
per image, the whole encoder in one launch (activations in a global-memory scratch, SE reductions
and gates in shared memory); the CUDA kernel compiles but has not run on a GPU yet.

dtypes: float32 and float64; float16 and bfloat16 are computed in float32. Inference only: the op
has no backward, and the wrapper raises when autograd would need one.

``fold_padnet_encoder(model.encoder)`` folds the BatchNorms (running statistics, whatever the
module's mode) and packs the parameters in the order the kernels read them.

``padnet_decoder(fine, middle, deep, params, channels, chain_stages, head_kernel)`` computes what
``model.decoder`` (a ``RefineDecoder`` with MDR chains: PAD-Net x1/x2/x4, ``decoder_plus``, the
Table 2 encoders' decoder) returns as logits, from the three encoder taps. CPU only, inference only
(no backward): the models call it on the CPU when no gradient is needed and run the decoder
modules otherwise (training, CUDA, ``return_features=True``). One image per thread, every
intermediate in a per-thread buffer that stays in cache, separable 5x5 max-pool; float32 on
AVX2 + FMA CPUs takes an AVX2 build of the same code. Equal to the modules to float32 rounding
(the order of the sums differs from oneDNN's). ``pack_padnet_decoder(model.decoder)`` packs the
parameters (``decoder.parameters()`` in order, flattened).
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

import torch
import torch.nn as nn

from fastvision.ops._validation import check_same_device
from fastvision.ops.folding import fold_batch_norm

__all__ = ["FoldedPadnetEncoder", "PackedPadnetDecoder", "fold_padnet_encoder", "pack_padnet_decoder",
           "padnet_bnecks", "padnet_decoder", "padnet_encoder", "padnet_param_count"]

PADNET_WIDTHS = (1, 2, 4)

# PAD-Net's Table 1 at width 1, one bneck per row: (kernel, in, expansion, out, squeeze-excite,
# nonlinearity "RE"/"HS", stride). The one copy: the models build their encoders from it.
_TABLE1 = (
    (3, 2, 8, 4, True, "RE", 1),
    (3, 4, 8, 4, False, "RE", 1),
    (3, 4, 16, 8, True, "HS", 2),
    (3, 8, 16, 8, True, "HS", 1),
    (3, 8, 32, 16, True, "HS", 2),
    (3, 16, 32, 16, True, "HS", 1),
)


def padnet_bnecks(width: int = 1) -> tuple:
    """Table 1 bneck settings for PAD-Net (``width`` 1), PAD-Net x2 (2) or x4 (4)."""
    if int(width) < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    w = int(width)
    return tuple((k, cin * w, exp * w, out * w, se, nl, s) for k, cin, exp, out, se, nl, s in _TABLE1)


def _packed_shapes(width: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every packed tensor, in the kernels' order (weights row-major, each
    followed by its bias)."""
    stem = 2 * width
    shapes = [("stem.w", (stem, 9)), ("stem.b", (stem,))]
    for i, (k, cin, exp, out, se, _, s) in enumerate(padnet_bnecks(width)):
        p = f"blocks.{i}."
        shapes += [(p + "expand.w", (exp, cin)), (p + "expand.b", (exp,)),
                   (p + "depthwise.w", (exp, k * k)), (p + "depthwise.b", (exp,)),
                   (p + "project.w", (out, exp)), (p + "project.b", (out,))]
        if se:
            sq = out // 4
            shapes += [(p + "se.reduce.w", (sq, out)), (p + "se.reduce.b", (sq,)),
                       (p + "se.expand.w", (out, sq)), (p + "se.expand.b", (out,))]
        if s == 1 and cin != out:
            shapes += [(p + "shortcut.w", (out, cin)), (p + "shortcut.b", (out,))]
    return shapes


def padnet_param_count(width: int) -> int:
    """Number of folded parameters of a width-``width`` PAD-Net encoder (1, 2 or 4)."""
    _check_width(width)
    total = 0
    for _, shape in _packed_shapes(width):
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def unpack_padnet_params(params: torch.Tensor, width: int) -> dict[str, torch.Tensor]:
    """Views of the packed parameters by name (``_packed_shapes``)."""
    out, offset = {}, 0
    for name, shape in _packed_shapes(width):
        n = 1
        for d in shape:
            n *= d
        out[name] = params[offset:offset + n].view(shape)
        offset += n
    return out


def _check_width(width) -> None:
    if isinstance(width, bool) or not isinstance(width, int) or width not in PADNET_WIDTHS:
        raise ValueError(f"padnet_encoder: width must be 1, 2 or 4, got {width!r}")


class FoldedPadnetEncoder(NamedTuple):
    """The folded parameters of a PAD-Net encoder (1-D, packed) and its width (1, 2 or 4)."""

    params: torch.Tensor
    width: int


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    # In float64: w' = w * scale, b' = shift (the BN's eval-mode scale and shift).
    scale, shift = fold_batch_norm(bn, torch.float64)
    w = conv.weight.double() * scale.view(-1, 1, 1, 1)
    return w.reshape(w.shape[0], -1), shift


def _structure_mismatch(encoder: nn.Module) -> tuple[int | None, str]:
    """(width, "") when ``encoder`` is a PAD-Net encoder the op computes, else (None, why)."""
    # Checked by structure, not class: the encoder class is defined in a layer above the ops.
    if not all(hasattr(encoder, a) for a in ("stem", "stem_bn", "stem_act", "blocks", "taps")):
        return None, f"encoder must be a MobileNetV3Encoder, got {type(encoder).__name__}"
    stem = encoder.stem
    width = stem.out_channels // 2
    if width not in PADNET_WIDTHS or stem.out_channels != 2 * width:
        return None, f"the stem must have 2, 4 or 8 output channels (width 1, 2, 4), got {stem.out_channels}"
    if (stem.in_channels != 1 or stem.kernel_size != (3, 3) or stem.stride != (1, 1)
            or stem.padding != (1, 1) or stem.groups != 1 or stem.bias is not None
            or not isinstance(encoder.stem_act, nn.Hardswish)):
        return None, "the stem must be conv 3x3 stride 1, 1 input channel, no bias, then BN + h-swish"
    if tuple(encoder.taps) != (1, 3, 5):
        return None, f"the taps must be bnecks (1, 3, 5), got {tuple(encoder.taps)}"
    layout = []
    for block in encoder.blocks:
        acts = {type(block.expand_act), type(block.depthwise_act)}
        nl = "RE" if acts == {nn.ReLU} else "HS" if acts == {nn.Hardswish} else "?"
        se = block.se is not None
        if se and block.se.reduce.out_channels * 4 != block.project.out_channels:
            return None, "SE must have reduction 4"
        layout.append((block.depthwise.kernel_size[0], block.expand.in_channels, block.expand.out_channels,
                       block.project.out_channels, se, nl, block.stride))
    if tuple(layout) != padnet_bnecks(width):
        return None, f"the bnecks must be PAD-Net's Table 1 at width {width}, got {layout}"
    for m in encoder.modules():
        if isinstance(m, nn.BatchNorm2d) and (m.running_mean is None or not m.affine):
            return None, "every BatchNorm must be affine and track running statistics"
    return width, ""


def fold_padnet_encoder(encoder: nn.Module, dtype: torch.dtype | None = None) -> FoldedPadnetEncoder:
    """Folds the BatchNorms of a PAD-Net encoder (``model.encoder`` of ``padnet``, ``padnet_x2``
    or ``padnet_x4``) into its convolutions and packs the result for :func:`padnet_encoder`.

    Uses the BN running statistics (the eval-mode arithmetic) whatever the module's mode. Folding
    is done in float64, then cast to ``dtype`` (default: the dtype of the encoder's weights), on
    the encoder's device. Raises ValueError when the encoder is not PAD-Net's.
    """
    width, why = _structure_mismatch(encoder)
    if width is None:
        raise ValueError(f"fold_padnet_encoder: {why}")
    dtype = encoder.stem.weight.dtype if dtype is None else dtype
    parts = list(_fold(encoder.stem, encoder.stem_bn))
    for block in encoder.blocks:
        parts += _fold(block.expand, block.expand_bn)
        parts += _fold(block.depthwise, block.depthwise_bn)
        parts += _fold(block.project, block.project_bn)
        if block.se is not None:
            parts += _fold(block.se.reduce, block.se.reduce_bn)
            parts += _fold(block.se.expand, block.se.expand_bn)
        if block.shortcut is not None:
            parts += _fold(block.shortcut[0], block.shortcut[1])
    params = torch.cat([p.reshape(-1) for p in parts]).to(dtype)
    return FoldedPadnetEncoder(params, width)


def padnet_encoder(x: torch.Tensor, params: torch.Tensor, width: int):
    """PAD-Net's encoder with BatchNorm folded, fused into one op (see the module docstring).

    Args:
        x: grayscale images ``(B, 1, H, W)``, floating point, ``H, W >= 1`` (the paper: 112 x 48).
        params: the packed folded parameters, 1-D, of :func:`padnet_param_count` ``(width)``
            entries (``fold_padnet_encoder(model.encoder).params``); dtype and device of ``x``.
        width: 1, 2 or 4 (PAD-Net, PAD-Net x2, PAD-Net x4).

    Returns:
        ``(tap1, tap2, tap3)``: the outputs of bnecks 2, 4 and 6, ``(B, 4w, H, W)``,
        ``(B, 8w, H2, W2)``, ``(B, 16w, H4, W4)``, dtype of ``x`` (what ``model.encoder(x)``
        returns in eval mode).

    Inference only: raises RuntimeError if ``x`` or ``params`` requires grad while grad mode is on.
    """
    op = "padnet_encoder"
    _check_width(width)
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 1:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{op}: x must have shape (B, 1, H, W), got {got}")
    if not x.is_floating_point():
        raise TypeError(f"{op}: x must be a floating-point tensor, got {x.dtype}")
    if not isinstance(params, torch.Tensor):
        raise TypeError(f"{op}: params must be a tensor, got {type(params).__name__}")
    expected = padnet_param_count(width)
    if params.dim() != 1 or params.shape[0] != expected:
        raise ValueError(f"{op}: params must be a 1-D tensor of the {expected} folded parameters of a "
                         f"width-{width} PAD-Net encoder, got shape {tuple(params.shape)}")
    if torch.is_grad_enabled() and (x.requires_grad or params.requires_grad):
        raise RuntimeError(f"{op}: inference only (no backward); call it under torch.no_grad() or "
                           "torch.inference_mode(), or use the encoder modules for training")
    return torch.ops.fastvision.padnet_encoder(x, params, width)


# Folded parameters per encoder module, refolded when a weight or BN statistic changes (in-place
# updates bump a tensor's version), the dtype or the device changes.
_FOLD_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _fold_key(encoder: nn.Module) -> tuple:
    return tuple((id(t), t._version, t.dtype, t.device) for t in
                 list(encoder.parameters()) + list(encoder.buffers()))


def fused_encoder_taps(encoder: nn.Module, x: torch.Tensor):
    """``encoder(x)`` through :func:`padnet_encoder` in eval arithmetic (BN running statistics),
    with the folded parameters cached on the module; None when ``encoder`` is not a PAD-Net
    encoder (the caller then runs the modules)."""
    cached = _FOLD_CACHE.get(encoder)
    key = _fold_key(encoder)
    if cached is None or cached[0] != key:
        width, _ = _structure_mismatch(encoder)
        folded = None if width is None else fold_padnet_encoder(encoder)
        cached = (key, folded)
        _FOLD_CACHE[encoder] = cached
    folded = cached[1]
    if folded is None:
        return None
    return padnet_encoder(x, folded.params, folded.width)


# ---------------------------------------------------------------------------------------------
# The decoder


class PackedPadnetDecoder(NamedTuple):
    """The parameters of a PAD-Net decoder (1-D, packed) and its settings."""

    params: torch.Tensor
    channels: int
    chain_stages: int
    head_kernel: int


def _decoder_shapes(channels: int, tap_channels, chain_stages: int, head_kernel: int):
    """(name, shape) of every packed decoder tensor, in ``RefineDecoder.parameters()`` order."""
    c = channels
    fine, middle, deep = tap_channels
    shapes = [("project", (c, deep, 1, 1))]
    for i, tap in ((1, middle), (2, fine), (3, None)):
        for s in range(chain_stages):
            shapes += [(f"chain{i}.{s}.dw", (c, 1, 3, 3)), (f"chain{i}.{s}.pw", (c, c, 1, 1))]
        if tap is not None:
            shapes += [(f"fusion{i}.coarse", (c, c, 1, 1)), (f"fusion{i}.fine", (c, tap, 1, 1)),
                       (f"fusion{i}.merge", (c, 2 * c, 3, 3))]
    return shapes + [("head.w", (1, c, head_kernel, head_kernel)), ("head.b", (1,))]


def _count(shapes) -> int:
    total = 0
    for _, shape in shapes:
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def unpack_padnet_decoder(params: torch.Tensor, channels: int, tap_channels, chain_stages: int,
                          head_kernel: int) -> dict[str, torch.Tensor]:
    """Views of the packed decoder parameters by name (``_decoder_shapes``)."""
    out, offset = {}, 0
    for name, shape in _decoder_shapes(channels, tap_channels, chain_stages, head_kernel):
        n = _count([(name, shape)])
        out[name] = params[offset:offset + n].view(shape)
        offset += n
    return out


def _decoder_mismatch(decoder: nn.Module) -> str:
    """"" when ``decoder`` is a decoder the op computes, else why not."""
    # Checked by structure, not class: RefineDecoder is defined in a layer above the ops.
    needed = ("project", "chain1", "fusion1", "chain2", "fusion2", "chain3", "head", "channels")
    if not all(hasattr(decoder, a) for a in needed):
        return f"decoder must be a RefineDecoder, got {type(decoder).__name__}"
    c = decoder.channels
    for i in (1, 2, 3):
        chain = getattr(decoder, f"chain{i}")
        for stage in chain.convs:
            if not (isinstance(stage, nn.Sequential) and len(stage) == 2):
                return "the chains must be MDR chains (depthwise 3x3 + pointwise 1x1)"
            dw, pw = stage
            if (dw.kernel_size != (3, 3) or dw.groups != c or dw.padding != (1, 1)
                    or dw.stride != (1, 1) or dw.dilation != (1, 1) or dw.bias is not None
                    or pw.kernel_size != (1, 1) or pw.bias is not None):
                return "the chains must be MDR chains (depthwise 3x3 + pointwise 1x1, no bias)"
        pool = chain.pool
        if (pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode) != (5, 1, 2, 1, False):
            return "the chains must pool 5x5, stride 1, padding 2"
    stages = {len(getattr(decoder, f"chain{i}").convs) for i in (1, 2, 3)}
    if len(stages) != 1:
        return "the three chains must have the same number of stages"
    for i in (1, 2):
        f = getattr(decoder, f"fusion{i}")
        if (f.upsample.mode != "bilinear" or f.upsample.align_corners
                or not isinstance(f.merge_act, nn.ReLU6)):
            return "fusion must upsample bilinearly (align_corners=False) and end with ReLU6"
    if decoder.head.out_channels != 1 or decoder.head.bias is None:
        return "the head must be a conv to one channel with bias"
    return ""


def pack_padnet_decoder(decoder: nn.Module, dtype: torch.dtype | None = None) -> PackedPadnetDecoder:
    """Packs the parameters of a PAD-Net decoder (``model.decoder`` of ``padnet``, ``padnet_x2``,
    ``padnet_x4``, with or without ``decoder_plus``, or of the Table 2 encoders) for
    :func:`padnet_decoder`: ``decoder.parameters()`` flattened in order, cast to ``dtype``
    (default: the weights' dtype). Raises ValueError when the decoder is not one the op computes
    (the teacher's 1x1 CRP chains)."""
    why = _decoder_mismatch(decoder)
    if why:
        raise ValueError(f"pack_padnet_decoder: {why}")
    params = torch.cat([p.detach().reshape(-1) for p in decoder.parameters()])
    if dtype is not None:
        params = params.to(dtype)
    return PackedPadnetDecoder(params, int(decoder.channels), len(decoder.chain1.convs),
                               int(decoder.head.kernel_size[0]))


def padnet_decoder(fine: torch.Tensor, middle: torch.Tensor, deep: torch.Tensor, params: torch.Tensor,
                   channels: int, chain_stages: int, head_kernel: int) -> torch.Tensor:
    """PAD-Net's decoder (MDR chains) in one op, CPU, inference only (see the module docstring).

    Args:
        fine, middle, deep: the encoder taps ``(B, C_f, H, W)``, ``(B, C_m, H2, W2)``,
            ``(B, C_d, H4, W4)`` (any sizes >= 1: the coarse paths are upsampled bilinearly to
            the finer tap's size), floating point, one dtype, on the CPU.
        params: the packed parameters, 1-D (``pack_padnet_decoder(model.decoder).params``),
            dtype of the taps.
        channels: the decoder width (PAD-Net 4, ``decoder_plus`` 16).
        chain_stages: stages of each chain (PAD-Net 4).
        head_kernel: 1 or 3.

    Returns:
        logits ``(B, 1, H, W)``, dtype of the taps (float16 / bfloat16 computed in float32).

    Inference only: raises RuntimeError if an input requires grad while grad mode is on.
    """
    op = "padnet_decoder"
    taps = {"fine": fine, "middle": middle, "deep": deep}
    for name, t in taps.items():
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{op}: {name} must have shape (B, C, H, W), got {got}")
        if not t.is_floating_point():
            raise TypeError(f"{op}: {name} must be a floating-point tensor, got {t.dtype}")
        if t.device.type != "cpu":
            raise ValueError(f"{op}: CPU only, got {name} on {t.device} (the models run the "
                             "decoder modules on other devices)")
    for name, value in (("channels", channels), ("chain_stages", chain_stages)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{op}: {name} must be an int >= 1, got {value!r}")
    if head_kernel not in (1, 3) or isinstance(head_kernel, bool):
        raise ValueError(f"{op}: head_kernel must be 1 or 3, got {head_kernel!r}")
    if not isinstance(params, torch.Tensor):
        raise TypeError(f"{op}: params must be a tensor, got {type(params).__name__}")
    expected = _count(_decoder_shapes(channels, (fine.shape[1], middle.shape[1], deep.shape[1]),
                                      chain_stages, head_kernel))
    if params.dim() != 1 or params.shape[0] != expected:
        raise ValueError(f"{op}: params must be a 1-D tensor of the {expected} decoder parameters for "
                         f"these taps and settings, got shape {tuple(params.shape)}")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (fine, middle, deep, params)):
        raise RuntimeError(f"{op}: inference only (no backward); call it under torch.no_grad() or "
                           "torch.inference_mode(), or use the decoder modules for training")
    return torch.ops.fastvision.padnet_decoder(fine, middle, deep, params, channels, chain_stages,
                                               head_kernel)


# Packed parameters per decoder module, repacked when a parameter changes (as _FOLD_CACHE).
_PACK_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def fused_decoder_logits(decoder: nn.Module, taps):
    """``decoder(taps)[0]`` (the logits) through :func:`padnet_decoder`, with the packed
    parameters cached on the module; None when the op does not apply (not an MDR decoder, taps
    not on the CPU), in which case the caller runs the modules."""
    if any(t.device.type != "cpu" for t in taps):
        return None
    cached = _PACK_CACHE.get(decoder)
    key = _fold_key(decoder)
    if cached is None or cached[0] != key:
        packed = None if _decoder_mismatch(decoder) else pack_padnet_decoder(decoder)
        cached = (key, packed)
        _PACK_CACHE[decoder] = cached
    packed = cached[1]
    if packed is None:
        return None
    params = packed.params if packed.params.dtype == taps[0].dtype else packed.params.to(taps[0].dtype)
    return padnet_decoder(*taps, params, packed.channels, packed.chain_stages, packed.head_kernel)


# ---------------------------------------------------------------------------------------------
# Fake (meta) kernels and autograd registrations whose backward raises: the ops are inference only.


@torch.library.register_fake("fastvision::padnet_decoder")
def _padnet_decoder_fake(fine, middle, deep, params, channels, chain_stages, head_kernel):
    check_same_device("padnet_decoder", "fine", fine, middle=middle, deep=deep, params=params)
    torch._check(fine.dim() == 4, lambda: "padnet_decoder: fine must be (B, C, H, W)")
    return fine.new_empty((fine.shape[0], 1, fine.shape[2], fine.shape[3]))


def _padnet_decoder_no_backward(ctx, *grads):
    raise RuntimeError("padnet_decoder: inference only (no backward); run the decoder modules "
                       "(model.decoder) to train")


torch.library.register_autograd(
    "fastvision::padnet_decoder", _padnet_decoder_no_backward, setup_context=lambda ctx, inputs, output: None
)


@torch.library.register_fake("fastvision::padnet_encoder")
def _padnet_encoder_fake(x, params, width):
    check_same_device("padnet_encoder", "x", x, params=params)
    torch._check(width in PADNET_WIDTHS, lambda: f"padnet_encoder: width must be 1, 2 or 4, got {width}")
    torch._check(x.dim() == 4 and x.shape[1] == 1, lambda: "padnet_encoder: x must be (B, 1, H, W)")
    B, _, H, W = x.shape
    H2, W2 = (H - 1) // 2 + 1, (W - 1) // 2 + 1
    H4, W4 = (H2 - 1) // 2 + 1, (W2 - 1) // 2 + 1
    return (x.new_empty((B, 4 * width, H, W)), x.new_empty((B, 8 * width, H2, W2)),
            x.new_empty((B, 16 * width, H4, W4)))


def _padnet_encoder_no_backward(ctx, *grads):
    # Without this registration a raw call on inputs that require grad would return outputs that
    # silently drop the graph (backward() runs and x.grad stays None).
    raise RuntimeError(
        "padnet_encoder: inference only (no backward); run the encoder modules "
        "(model.encoder with use_fused=False) to train"
    )


torch.library.register_autograd(
    "fastvision::padnet_encoder", _padnet_encoder_no_backward, setup_context=lambda ctx, inputs, output: None
)
