"""HyperSeg's patch-wise dynamic convolutions: the fastvision ops against HyperSeg's own
formulation (pad + unfold + one grouped convolution with ``B * patches`` groups + fold), at the
decoder shapes of HyperSeg-M for a 1024x512 input (batch 1, a 16 x 32 patch grid), and the whole
model.

Cases (``size="full"``):

* ``level{0,1,2}``: the 1x1 levels (``HyperPatchNoPadding``: 82->64 at 32x16, 94->32 at 64x32,
  44->16 at 128x64), ``patch_conv2d`` against the unfold formulation and against the plain
  grouped convolution a user would write for a 1x1 patch layer (:func:`grouped_conv_formulation`),
  forward (``fwd``) and forward + backward to the input and the weights (``fwd+bwd``, what
  training runs);
* ``level{3,4}_dw``: the 3x3 patch convolutions with a neighbour halo inside the two inverted
  residual levels (depthwise, 48 channels at 256x128 and 68 at 512x256, reflect padding), forward
  and forward + backward;
* ``level{3,4}_ir``: the whole inverted-residual block in inference (24->48->16 and 34->68->19),
  the fused ``patch_inverted_residual`` against HyperSeg's unfused block with its BatchNorms (eval);
* ``model``: HyperSeg-M at 1024x512, batch 1, eval, with the fastvision ops (and the channels_last
  backbone of fastvision's CPU inference path) against the same model switched to HyperSeg's
  formulation (``fastvision.nn.set_fastvision_ops(model, False)``, NCHW backbone as the official
  code); a variant row runs HyperSeg's formulation with the channels_last backbone, to separate the
  layout's share from the ops'.

Every variant's output is checked against fastvision's. ``size="small"``: the same cases at
1/8 of the resolution (smoke). Float32; ``torch.set_flush_denormal(True)`` (HyperSeg's random
initialisation drives the decoder into float denormals, which a trained network does not see).

``fastvision bench --family hyperseg [--size small|full] [--device cpu|cuda]``.
"""

from __future__ import annotations

from typing import Callable

import torch

from fastvision.benchmarks.harness import Case, Impl, measure_case, timed

__all__ = ["CASES", "build_case", "grouped_conv_formulation", "run"]

# HyperSeg-M decoder at 1024x512: (name, kind, cin, cout or hidden, out, height, width) at scale 1;
# the patch grid is the input / 32 (16 x 32).
_LEVELS = [
    ("level0", "conv1x1", 82, 64, None, 16, 32),
    ("level1", "conv1x1", 94, 32, None, 32, 64),
    ("level2", "conv1x1", 44, 16, None, 64, 128),
    ("level3_dw", "dw3x3", 48, 48, None, 128, 256),
    ("level4_dw", "dw3x3", 68, 68, None, 256, 512),
    ("level3_ir", "ir", 24, 48, 16, 128, 256),
    ("level4_ir", "ir", 34, 68, 19, 256, 512),
]
CASES: dict[str, list[tuple[str, str]]] = {
    "full": [(name, mode) for name, kind, *_ in _LEVELS for mode in (("fwd",) if kind == "ir" else ("fwd", "fwd+bwd"))]
    + [("model", "fwd")],
    "small": [("level1", "fwd+bwd"), ("level4_dw", "fwd+bwd"), ("level4_ir", "fwd"), ("model", "fwd")],
}


def grouped_conv_formulation(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A 1x1 patch-wise convolution in five lines of PyTorch: the cells become channel groups
    (view + permute, no pad / unfold / fold) and one ``conv2d`` with ``B x cells`` groups applies
    each cell's ``(Cout, Cin)`` kernel. ``weight``: ``(B, Cout * Cin, fh, fw)``; the cell size
    must divide the image."""
    B, C, H, W = x.shape
    fh, fw = weight.shape[-2:]
    ph, pw, cout = H // fh, W // fw, weight.shape[1] // C
    w = weight.view(B, cout, C, fh, fw).permute(0, 3, 4, 1, 2).reshape(B * fh * fw * cout, C, 1, 1)
    cells = x.view(B, C, fh, ph, fw, pw).permute(0, 2, 4, 1, 3, 5).reshape(1, B * fh * fw * C, ph, pw)
    y = torch.nn.functional.conv2d(cells, w, groups=B * fh * fw)
    return y.view(B, fh, fw, cout, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(B, cout, H, W)


def _check(out, ref, rtol: float = 1e-4) -> tuple[str, str]:
    outs = out if isinstance(out, (tuple, list)) else (out,)
    refs = ref if isinstance(ref, (tuple, list)) else (ref,)
    err = 0.0
    for a, b in zip(outs, refs):
        scale = float(b.float().abs().max().clamp(min=1e-30))
        err = max(err, float((a.float() - b.float()).abs().max()) / scale)
    return ("close" if err <= rtol else "differs"), f"max rel diff {err:.1e}"


def _level_case(name: str, mode: str, scale: int, device: str) -> Case:
    from fastvision.nn import HyperPatchInvertedResidual
    from fastvision.ops import _reference as ref
    from fastvision.ops import patch_conv2d

    _, kind, cin, c2, c3, h, w = next(level for level in _LEVELS if level[0] == name)
    h, w = h // scale, w // scale
    fh, fw = max(1, 16 // scale), max(1, 32 // scale)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, cin, h, w, generator=g).to(device)
    label = f"HyperSeg-M {name} ({kind}, {cin}->{c2}{'' if c3 is None else '->' + str(c3)}) {w}x{h}, {mode}"
    case = Case("hyperseg", f"{name}_{mode}", label,
                {"level": name, "kind": kind, "mode": mode, "height": h, "width": w, "fh": fh, "fw": fw})
    reference: dict[str, object] = {}

    def timed_call(f: Callable) -> Callable:
        if mode == "fwd":
            def fn():
                with torch.no_grad():
                    return f(x, weight)
        else:
            def fn():
                xs = x.detach().requires_grad_()
                ws = weight.detach().requires_grad_()
                out = f(xs, ws)
                out.backward(grad)
                return out.detach(), xs.grad, ws.grad
        return timed(fn, device)

    def with_reference(f: Callable) -> Callable:
        def setup():
            fn = timed_call(f)
            reference["out"] = fn()
            return fn
        return setup

    check = lambda out: _check(out, reference["out"])  # noqa: E731
    if kind == "ir":
        block = HyperPatchInvertedResidual(cin, c3, 3, expand_ratio=c2 / cin).to(device).eval()
        for bn in (block.bn1, block.bn2, block.bn3):
            bn.running_mean.copy_(torch.rand(bn.num_features, generator=g) - 0.5)
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        weight = (torch.randn(1, block.hyper_params, fh, fw, generator=g) * 0.2).to(device)

        def fused(x, weight):
            return block(x, weight)  # no signal2weights: the weights are given

        def unfused(x, weight):
            return ref.hyperpatch_inverted_residual_unfold(x, weight, block.hidden_dim, c3, block.bn1, block.bn2,
                                                           block.bn3, act=block.act_layer)

        case.impls.append(Impl("patch_inverted_residual (fused)", with_reference(fused), None, role="fastvision"))
        case.impls.append(Impl("HyperSeg unfold formulation", lambda: timed_call(unfused), check))
        return case

    k, groups = (1, 1) if kind == "conv1x1" else (3, cin)
    weight = (torch.randn(1, c2 * (cin // groups) * k * k, fh, fw, generator=g) * 0.2).to(device)
    grad = torch.randn(1, c2, h, w, generator=g).to(device)

    def ours(x, weight):
        return patch_conv2d(x, weight, k, padding=k // 2, padding_mode="reflect", groups=groups)

    def official(x, weight):
        return ref.hyperpatch_conv2d_unfold(x, weight, k, k // 2, "reflect", groups)

    case.impls.append(Impl("patch_conv2d", with_reference(ours), None, role="fastvision"))
    case.impls.append(Impl("HyperSeg unfold formulation", lambda: timed_call(official), check))
    if kind == "conv1x1":
        case.impls.append(Impl("grouped conv2d (view + permute)", lambda: timed_call(grouped_conv_formulation),
                               check))
    return case


def _model_case(scale: int, device: str) -> Case:
    from fastvision.models import get_model
    from fastvision.nn import set_fastvision_ops

    torch.manual_seed(0)
    model = get_model("hyperseg_m_cityscapes").to(device).eval()
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    h, w = 512 // scale, 1024 // scale
    image = torch.randn(1, 3, h, w, generator=g).to(device)
    case = Case("hyperseg", "model_fwd", f"HyperSeg-M whole model {w}x{h}, batch 1, eval",
                {"level": "model", "kind": "model", "mode": "fwd", "height": h, "width": w})
    reference: dict[str, object] = {}

    def run_with(enabled: bool, channels_last: bool | None = None) -> Callable:
        def fn():
            set_fastvision_ops(model, enabled)
            model.channels_last_backbone = enabled if channels_last is None else channels_last
            with torch.inference_mode():
                return model(image)
        return timed(fn, device)

    def ours_setup():
        fn = run_with(True)
        reference["out"] = fn()
        return fn

    case.impls.append(Impl("fastvision ops", ours_setup, None, role="fastvision"))
    case.impls.append(Impl("HyperSeg formulation (unfused)", lambda: run_with(False),
                           lambda out: _check(out, reference["out"], rtol=1e-3), "NCHW backbone, as the official code"))
    # The share of the layout alone: HyperSeg's formulation with fastvision's channels_last backbone.
    case.impls.append(Impl("HyperSeg formulation, channels_last backbone", lambda: run_with(False, True),
                           lambda out: _check(out, reference["out"], rtol=1e-3), role="variant"))
    return case


def build_case(name: str, mode: str, device: str, scale: int = 1) -> Case:
    if name == "model":
        return _model_case(scale, device)
    return _level_case(name, mode, scale, device)


def run(size: str = "full", device: str = "cpu", competitors: bool = True, repeats: int | None = None,
        *, only: list[str] | None = None, log: Callable[[str], None] | None = None, **_) -> list[dict]:
    """Runs the HyperSeg benchmarks; one row per case and implementation. ``competitors=False``
    times fastvision only; ``only`` selects case names (``"<level>_<mode>"``, ``"model_fwd"``)."""
    small = size == "small"
    rows: list[dict] = []
    torch.set_flush_denormal(True)
    try:
        for name, mode in CASES[size]:
            if only and f"{name}_{mode}" not in only:
                continue
            case = build_case(name, mode, device, scale=8 if small else 1)
            if not competitors:
                case.impls = case.impls[:1]
            if log:
                log(case.label)
            if small:
                rows += measure_case(case, device, repeats=repeats or 3, min_repeats=1, budget_s=0.05,
                                     rewarm_ms=5.0)
            else:
                rows += measure_case(case, device, repeats=repeats or 15, min_repeats=5, budget_s=2.0,
                                     slow_s=float("inf"), log=log)
    finally:
        torch.set_flush_denormal(False)
    return rows
