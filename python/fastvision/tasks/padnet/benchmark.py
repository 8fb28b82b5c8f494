"""Inference throughput of PAD-Net's encoder (x1, x2, x4): the fused op against the eager
modules and ``torch.compile`` of the modules, float32, random weights with random BN statistics,
112 x 48 one-channel images (the paper's pads), batch 1 and 256.

Cases (``size="full"``), for every width and batch:

* ``encoder``: ``padnet_encoder`` on the folded parameters (the baseline; folding is done once,
  untimed, as the model hook caches it), ``model.encoder`` in eager mode, and
  ``torch.compile(model.encoder)`` (default inductor mode; its first call, compilation included,
  is the warm-up).
* ``model``: the whole PAD-Net (encoder + decoder) with ``use_fused=True`` (the fused encoder)
  against ``use_fused=False`` (eager modules); the decoder runs eagerly in both, so this shows
  what the fused encoder buys end to end. No ``torch.compile`` here (compiling every whole model
  twice takes longer than the rest of the run on a 2-core CPU).

Every variant's output is checked against the fused op's. Rows carry ``images_per_s`` =
batch * 1000 / median ms. ``size="small"``: PAD-Net x1 at 28 x 12, batch 2, no compile (smoke).
All under ``torch.inference_mode()``, with ``torch.set_flush_denormal(True)`` (reset to the
default afterwards): the decoder's random weights drive some activations into float denormals,
which a trained network does not see and which make a CPU tens of times slower (as in
:mod:`fastvision.tasks.segmentation.benchmark`).

``fastvision bench --family padnet [--size small|full] [--device cpu|cuda]``.
"""

from __future__ import annotations

from typing import Callable

import torch

from fastvision.benchmarks.harness import Case, Impl, measure_case, timed

__all__ = ["CASES", "build_case", "run"]

WIDTHS = {"padnet": 1, "padnet_x2": 2, "padnet_x4": 4}
# (model, batch, height, width, scope) per size.
CASES: dict[str, list[tuple[str, int, int, int, str]]] = {
    "full": [(m, b, 112, 48, scope) for scope in ("encoder", "model") for m in WIDTHS for b in (1, 256)],
    "small": [("padnet", 2, 28, 12, "encoder"), ("padnet", 2, 28, 12, "model")],
}


def _build_model(name: str, device: str) -> torch.nn.Module:
    from fastvision.models import get_model

    torch.manual_seed(0)
    model = get_model(name)
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model.to(device).eval()


def _max_abs_diff(out, ref, atol: float = 1e-4) -> tuple[str, str]:
    outs = out if isinstance(out, tuple) else (out,)
    refs = ref if isinstance(ref, tuple) else (ref,)
    err = max(float((a.float() - b.float()).abs().max()) for a, b in zip(outs, refs))
    return ("close" if err <= atol else "differs"), f"max abs diff {err:.1e}"


def build_case(name: str, batch: int, height: int, width: int, scope: str, device: str,
               compile_model: bool) -> Case:
    from fastvision.ops import fold_padnet_encoder, padnet_encoder

    model = _build_model(name, device)
    w = WIDTHS[name]
    image = torch.randn(batch, 1, height, width, generator=torch.Generator().manual_seed(1)).to(device)
    label = f"{name} {scope} {height}x{width}, batch {batch}"
    case = Case("padnet", f"{name}_{scope}_b{batch}", label,
                {"model": name, "scope": scope, "batch": batch, "height": height, "width": width})
    reference: dict[str, object] = {}

    def infer(f: Callable) -> Callable[[], object]:
        def fn():
            with torch.inference_mode():
                return f()

        return timed(fn, device)

    check = lambda out: _max_abs_diff(out, reference["out"])  # noqa: E731
    if scope == "encoder":
        def fused_setup():
            params = fold_padnet_encoder(model.encoder).params
            fn = infer(lambda: padnet_encoder(image, params, w))
            reference["out"] = fn()
            return fn

        def compiled_setup():
            compiled = torch.compile(model.encoder)
            return infer(lambda: compiled(image))

        case.impls.append(Impl("fused op", fused_setup, None, role="fastvision"))
        case.impls.append(Impl("eager modules", lambda: infer(lambda: model.encoder(image)), check))
        if compile_model:
            case.impls.append(Impl("torch.compile", compiled_setup, check,
                                   note="first call (compilation) untimed"))
    else:
        def run_model(fused: bool):
            def f():
                model.use_fused = fused
                return model(image)

            return f

        def fused_setup():
            fn = infer(run_model(True))
            reference["out"] = fn()
            return fn

        case.impls.append(Impl("use_fused=True", fused_setup, None, role="fastvision"))
        case.impls.append(Impl("use_fused=False (eager)", lambda: infer(run_model(False)), check))
    return case


def run(size: str = "full", device: str = "cpu", competitors: bool = True, repeats: int | None = None,
        *, only: list[str] | None = None, log: Callable[[str], None] | None = None, **_) -> list[dict]:
    """Runs the PAD-Net encoder benchmarks; one row per case and implementation, with
    ``images_per_s`` added. ``competitors=False`` times the fused op only; ``only`` selects case
    names (``"<model>_<scope>_b<batch>"``)."""
    small = size == "small"
    rows: list[dict] = []
    torch.set_flush_denormal(True)
    try:
        for name, batch, height, width, scope in CASES[size]:
            case_name = f"{name}_{scope}_b{batch}"
            if only and case_name not in only:
                continue
            case = build_case(name, batch, height, width, scope, device, compile_model=not small)
            if not competitors:
                case.impls = case.impls[:1]
            if log:
                log(case.label)
            if small:
                case_rows = measure_case(case, device, repeats=repeats or 3, min_repeats=1,
                                         budget_s=0.05, rewarm_ms=5.0)
            else:
                case_rows = measure_case(case, device, repeats=repeats or 15, min_repeats=3,
                                         budget_s=1.5, slow_s=float("inf"), log=log)
            for row in case_rows:
                row["images_per_s"] = batch * 1000.0 / row["median_ms"] if row["median_ms"] else None
            rows += case_rows
    finally:
        torch.set_flush_denormal(False)
    return rows
