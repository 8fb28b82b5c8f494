"""HyperSeg's patch-wise dynamic convolutions.

A hypernetwork predicts a different convolution kernel for every cell of an ``fh x fw`` grid of
image patches (HyperSeg, Nirkin et al., CVPR 2021). Two ops:

:func:`patch_conv2d` is the general layer (HyperSeg's ``HyperPatchConv2d`` /
``HyperPatchNoPadding``): forward and backward (to ``x``, ``weight`` and ``bias``), CPU and CUDA.

* The output is an ordinary 2-D convolution grid, ``Ho = (H + 2 ph - dh (kh - 1) - 1) // sh + 1``
  (likewise ``Wo``); the patch grid splits the **output**: cell ``i`` of ``Ho`` rows split into
  ``fh`` cells covers rows ``[floor(i Ho / fh), floor((i + 1) Ho / fh))``, and an output pixel
  uses the kernel of its cell. When ``fh`` divides ``Ho`` the patches are equal (HyperSeg);
  otherwise they are **ragged**: sizes differ by at most one pixel (adaptive-pooling boundaries),
  which is supported, not rejected.
* Taps read the unpadded input at ``o * s - p + k * d``: the halo of a patch comes from its
  neighbours and the padding mode (``"zeros"``, ``"reflect"``, ``"replicate"``) applies only at the
  image border. For stride 1 and equal patches this is exactly HyperSeg's pad + unfold + per-patch
  conv + fold, without any of those copies.
* ``weight`` is the hypernetwork output as it comes, ``(B, Cout * Cin/groups * kh * kw, fh, fw)``,
  kernel ``(o, c, ky, kx)`` of cell ``(i, j)`` at channel ``((o * Cin/groups + c) * kh + ky) * kw + kx``
  (read through strides: a sliced or permuted view is not copied); ``bias`` is ``(Cout,)``, shared
  by all patches.
* Backward is deterministic (no floating-point atomics): the weight gradient is reduced by the
  one work item that owns the patch (CPU) or one thread per weight entry (CUDA); the input gradient is a
  scatter over patch rows that never overlap (CPU) or a gather (CUDA).

:func:`patch_inverted_residual` is HyperSeg's decoder block (``HyperPatchInvertedResidual``) fused
for inference with BatchNorm folded: per-patch 1x1 expand, BN, ReLU6, per-patch depthwise
``kernel_size`` on the patch plus a ``kernel_size // 2`` halo of neighbouring pixels, BN, ReLU6,
per-patch 1x1 project, BN, optional residual. Halo pixels are expanded with the weights of the
patch that reads them (as HyperSeg's unfold does). At the image border, reflect / replicate
padding equals HyperSeg's padding of the input before the expansion; ``"zeros"`` pads the hidden
map with zeros (an ordinary depthwise convolution; HyperSeg's own zeros mode crashes). Its
backward recomputes the block with the unfused reference under autograd (correct, not fast:
training uses the module's unfused path, whose BatchNorm statistics must include the halo as
HyperSeg's do). :class:`fastvision.nn.HyperPatchInvertedResidual` calls it in eval mode.

dtypes: float32 and float64; float16 and bfloat16 accumulate in float32 (the CPU converts).
"""

from __future__ import annotations

import torch
from torch.nn.modules.utils import _pair

from fastvision.ops import _reference
from fastvision.ops._validation import check_same_device
from fastvision.ops.folding import fold_batch_norm
from fastvision.ops.points import register_no_double_backward

__all__ = ["PADDING_MODES", "fold_batch_norm", "patch_conv2d", "patch_inverted_residual"]

PADDING_MODES = {"zeros": 0, "reflect": 1, "replicate": 2}
_MODE_NAMES = {v: k for k, v in PADDING_MODES.items()}


def _mode(padding_mode, op: str) -> int:
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"{op}: padding_mode must be one of {sorted(PADDING_MODES)}, got {padding_mode!r}")
    return PADDING_MODES[padding_mode]


def _pair_of_ints(value, op: str, name: str, minimum: int) -> tuple[int, int]:
    pair = _pair(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in pair):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{op}: {name} must be at least {minimum}, got {value!r}")
    return pair


def _check_tensor(t, op: str, name: str, dim: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a tensor, got {type(t).__name__}")
    if t.dim() != dim:
        raise ValueError(f"{op}: {name} must be {dim}-D, got shape {tuple(t.shape)}")


def patch_conv2d(x: torch.Tensor, weight: torch.Tensor, kernel_size, stride=1, padding=None,
                 padding_mode: str = "reflect", dilation=1, groups: int = 1,
                 bias: torch.Tensor | None = None) -> torch.Tensor:
    """Patch-wise dynamic 2-D convolution (see the module docstring for the exact semantics).

    Args:
        x: ``(B, Cin, H, W)``, floating point.
        weight: ``(B, Cout * Cin/groups * kh * kw, fh, fw)``: one kernel per patch cell; dtype and
            device of ``x``. ``1 <= fh <= Ho`` and ``1 <= fw <= Wo``.
        kernel_size, stride, dilation: int or ``(h, w)``.
        padding: int or ``(h, w)``; ``None`` (default): ``dilation * (kernel_size - 1) // 2``
            ("same" for odd kernels, HyperSeg's ``kernel_size // 2``).
        padding_mode: ``"reflect"`` (default, HyperSeg's), ``"replicate"`` or ``"zeros"``; reflect
            needs padding smaller than the input.
        groups: ``Cin`` and ``Cout`` must be divisible by it.
        bias: optional ``(Cout,)``.

    Returns:
        ``(B, Cout, Ho, Wo)``, dtype of ``x``.
    """
    op = "patch_conv2d"
    _check_tensor(x, op, "x", 4)
    _check_tensor(weight, op, "weight", 4)
    k = _pair_of_ints(kernel_size, op, "kernel_size", 1)
    s = _pair_of_ints(stride, op, "stride", 1)
    d = _pair_of_ints(dilation, op, "dilation", 1)
    p = (d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2) if padding is None else \
        _pair_of_ints(padding, op, "padding", 0)
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise ValueError(f"{op}: groups must be an int, got {groups!r}")
    return torch.ops.fastvision.patch_conv2d(x, weight, bias, list(k), list(s), list(p), list(d), groups,
                                             _mode(padding_mode, op))


def _conv_out(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


@torch.library.register_fake("fastvision::patch_conv2d")
def _patch_conv2d_fake(x, weight, bias, kernel_size, stride, padding, dilation, groups, padding_mode):
    torch._check(x.dim() == 4 and weight.dim() == 4, lambda: "patch_conv2d: x and weight must be 4-D")
    check_same_device("patch_conv2d", "x", x, weight=weight, bias=bias)
    per_out = x.shape[1] // groups * kernel_size[0] * kernel_size[1]
    cout = weight.shape[1] // per_out
    ho = _conv_out(x.shape[2], kernel_size[0], stride[0], padding[0], dilation[0])
    wo = _conv_out(x.shape[3], kernel_size[1], stride[1], padding[1], dilation[1])
    return x.new_empty((x.shape[0], cout, ho, wo))


@torch.library.register_fake("fastvision::_patch_conv2d_backward")
def _patch_conv2d_backward_fake(grad_out, x, weight, kernel_size, stride, padding, dilation, groups,
                                padding_mode, need_x, need_weight, need_bias):
    check_same_device("_patch_conv2d_backward", "x", x, grad_out=grad_out, weight=weight)
    # Gradients not asked for come back with 0 elements.
    return (torch.empty_like(x) if need_x else x.new_empty((0,)),
            torch.empty_like(weight) if need_weight else x.new_empty((0,)),
            x.new_empty((grad_out.shape[1],)) if need_bias else x.new_empty((0,)))


def _patch_conv2d_setup_context(ctx, inputs, output):
    x, weight, bias, kernel_size, stride, padding, dilation, groups, padding_mode = inputs
    ctx.save_for_backward(x, weight)
    ctx.args = (kernel_size, stride, padding, dilation, groups, padding_mode)
    ctx.has_bias = bias is not None


def _patch_conv2d_backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
    gx, gw, gb = torch.ops.fastvision._patch_conv2d_backward(
        grad_out, x, weight, *ctx.args, need_x, need_w, need_b and ctx.has_bias)
    return (gx if need_x else None, gw if need_w else None, gb if (need_b and ctx.has_bias) else None,
            None, None, None, None, None, None)


torch.library.register_autograd("fastvision::patch_conv2d", _patch_conv2d_backward,
                                setup_context=_patch_conv2d_setup_context)
register_no_double_backward("fastvision::_patch_conv2d_backward", "patch_conv2d")


def patch_inverted_residual(x: torch.Tensor, weight: torch.Tensor, hidden_channels: int, bn1, bn2, bn3,
                            kernel_size: int = 3, padding_mode: str = "reflect",
                            residual: bool = False) -> torch.Tensor:
    """HyperSeg's patch-wise inverted residual, fused, BatchNorm folded (module docstring).

    Args:
        x: ``(B, Cin, H, W)``, floating point; stride 1, so the output is ``H x W``.
        weight: ``(B, Cin*hidden + hidden*k*k + hidden*Cout, fh, fw)``: per patch cell, the expand
            ``(hidden, Cin)``, depthwise ``(hidden, k, k)`` and project ``(Cout, hidden)`` kernels,
            in that order (HyperSeg's ranges). ``1 <= fh <= H``, ``1 <= fw <= W``; ragged patches
            as in :func:`patch_conv2d`.
        hidden_channels: the expanded width.
        bn1, bn2, bn3: ``(scale, shift)`` of the folded BatchNorms (:func:`fold_batch_norm`),
            shapes ``(hidden,)``, ``(hidden,)``, ``(Cout,)``; ``Cout`` is taken from ``bn3``.
        kernel_size: odd depthwise kernel size (HyperSeg: 3).
        padding_mode: ``"reflect"`` (HyperSeg's), ``"replicate"`` or ``"zeros"``.
        residual: add ``x`` (needs ``Cin == Cout``).

    Returns:
        ``(B, Cout, H, W)``, dtype of ``x``.
    """
    op = "patch_inverted_residual"
    _check_tensor(x, op, "x", 4)
    _check_tensor(weight, op, "weight", 4)
    for name, bn in (("bn1", bn1), ("bn2", bn2), ("bn3", bn3)):
        if not (isinstance(bn, (tuple, list)) and len(bn) == 2 and all(isinstance(t, torch.Tensor) for t in bn)):
            raise ValueError(f"{op}: {name} must be a (scale, shift) pair of tensors, got {type(bn).__name__}")
    if isinstance(hidden_channels, bool) or not isinstance(hidden_channels, int):
        raise ValueError(f"{op}: hidden_channels must be an int, got {hidden_channels!r}")
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int):
        raise ValueError(f"{op}: kernel_size must be an int, got {kernel_size!r}")
    return torch.ops.fastvision.patch_inverted_residual(
        x, weight, bn1[0], bn1[1], bn2[0], bn2[1], bn3[0], bn3[1], hidden_channels, kernel_size,
        _mode(padding_mode, op), bool(residual))


@torch.library.register_fake("fastvision::patch_inverted_residual")
def _patch_inverted_residual_fake(x, weight, s1, b1, s2, b2, s3, b3, hidden_channels, kernel_size,
                                  padding_mode, residual):
    torch._check(x.dim() == 4, lambda: "patch_inverted_residual: x must be 4-D")
    check_same_device("patch_inverted_residual", "x", x, weight=weight, scale1=s1, shift1=b1,
                      scale2=s2, shift2=b2, scale3=s3, shift3=b3)
    return x.new_empty((x.shape[0], s3.shape[0], x.shape[2], x.shape[3]))


def _ir_setup_context(ctx, inputs, output):
    x, weight, s1, b1, s2, b2, s3, b3, hidden, k, mode, residual = inputs
    ctx.save_for_backward(x, weight, s1, b1, s2, b2, s3, b3)
    ctx.args = (hidden, k, mode, residual)


def _ir_backward(ctx, grad_out):
    # Recompute with the unfused reference under autograd: a correct gradient for every input.
    # With create_graph (grad mode on here) the recomputation stays attached to the inputs, so
    # double backward is supported too.
    saved = ctx.saved_tensors
    hidden, k, mode, residual = ctx.args
    needs = ctx.needs_input_grad[:8]
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        leaves = list(saved) if create_graph else [t.detach().requires_grad_(need) for t, need in zip(saved, needs)]
        x, weight, s1, b1, s2, b2, s3, b3 = leaves
        out = _reference.patch_inverted_residual(x, weight, hidden, (s1, b1), (s2, b2), (s3, b3),
                                                 kernel_size=k, padding_mode=_MODE_NAMES[mode],
                                                 residual=residual)
        wanted = [t for t, need in zip(leaves, needs) if need]
        grads = iter(torch.autograd.grad(out, wanted, grad_out, allow_unused=True,
                                         create_graph=create_graph)) if wanted else iter(())
    result = [next(grads) if need else None for need in needs]
    return (*result, None, None, None, None)


torch.library.register_autograd("fastvision::patch_inverted_residual", _ir_backward,
                                setup_context=_ir_setup_context)
