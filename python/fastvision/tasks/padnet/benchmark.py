"""Inference throughput of PAD-Net (x1, x2, x4): the fused ops against the eager modules and
``torch.compile`` of the modules, float32, random weights with random BN statistics, 112 x 48
one-channel images (the paper's pads), batch 1 and 256, at 1 and 2 threads.

Cases (``size="full"``; name ``<model>_<scope>_b<batch>_t<threads>``):

* ``encoder``: ``padnet_encoder`` on the folded parameters (the baseline; folding is done once,
  untimed, as the model caches it), ``model.encoder`` in eager mode, and
  ``torch.compile(model.encoder)`` (default inductor mode; its first call, compilation included,
  is the warm-up).
* ``model``: the whole PAD-Net as a user runs it, ``model(x)`` in eval mode under
  ``torch.inference_mode()``: ``use_fused=True`` (the default: the fused encoder and, on the CPU,
  the fused decoder) against ``use_fused=False`` (the eager modules) and ``torch.compile`` of the
  eager modules.
* ``detect``: what ``fastvision detect`` computes per batch of pads after reading them: the
  shipped PAD-Net x1, ``sigmoid`` and the peak extraction
  (:func:`fastvision.tasks.padnet.detect.detect_batch`), on embedded test pads (standardised),
  fused against the eager modules. Rows carry ``images_per_s``. The paper's figure, 0.082 ms
  per image on an RTX 2080 (12,200 images/s), is a GPU reference, not a goal for a CPU.

Every variant's output is checked against the baseline's. Rows carry ``images_per_s`` =
batch * 1000 / median ms, and (harness) ``cpu_ms``, the thread count and the load average.
Cases of a given thread count run inside :func:`fastvision.benchmarks.harness.torch_threads`.
``size="small"``: PAD-Net x1 at 28 x 12, batch 2, no compile (smoke).
All under ``torch.inference_mode()``, with ``torch.set_flush_denormal(True)`` (reset to the
default afterwards): the decoder's random weights drive some activations into float denormals,
which a trained network does not see and which make a CPU tens of times slower (as in
:mod:`fastvision.tasks.segmentation.benchmark`).

``fastvision bench --family padnet [--size small|full] [--device cpu|cuda]``.
"""

from __future__ import annotations

from typing import Callable

import torch

import copy

from fastvision.benchmarks.harness import Case, Impl, measure_case, timed, torch_threads

__all__ = ["CASES", "PAPER_MS_PER_IMAGE", "build_case", "run"]

WIDTHS = {"padnet": 1, "padnet_x2": 2, "padnet_x4": 4}
# (model, batch, height, width, scope, threads) per size.
CASES: dict[str, list[tuple[str, int, int, int, str, int]]] = {
    "full": [("padnet", 256, 112, 48, "detect", t) for t in (1, 2)]
    + [(m, b, 112, 48, scope, t) for scope in ("model", "encoder") for m in WIDTHS
       for b in (256, 1) for t in (1, 2)],
    "small": [("padnet", 2, 28, 12, scope, 1) for scope in ("encoder", "model", "detect")],
}
# PAD-Net paper (PRCV 2021): 0.082 ms per image on an RTX 2080.
PAPER_MS_PER_IMAGE = (0.082, "RTX 2080")


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


def _detect_inputs(batch: int, height: int, width: int) -> torch.Tensor:
    from fastvision.data.particles import ProceduralParticles

    data = ProceduralParticles("test", num_images=batch, height=height, width=width)
    return torch.stack([data[i]["image"] for i in range(batch)])


def _same_centres(out, ref) -> tuple[str, str]:
    same = len(out) == len(ref) and all(torch.equal(a, b) for a, b in zip(out, ref))
    total = sum(len(c) for c in ref)
    return ("exact" if same else "differs"), f"{total} particles"


def build_case(name: str, batch: int, height: int, width: int, scope: str, device: str,
               compile_model: bool, threads: int = 1) -> Case:
    from fastvision.ops import fold_padnet_encoder, padnet_encoder

    w = WIDTHS[name]
    label = f"{name} {scope} {height}x{width}, batch {batch}, {threads} thread{'s' if threads > 1 else ''}"
    case = Case("padnet", f"{name}_{scope}_b{batch}_t{threads}", label,
                {"model": name, "scope": scope, "batch": batch, "height": height, "width": width,
                 "threads": threads})
    reference: dict[str, object] = {}

    def infer(f: Callable) -> Callable[[], object]:
        def fn():
            with torch.inference_mode():
                return f()

        return timed(fn, device)

    check = lambda out: _max_abs_diff(out, reference["out"])  # noqa: E731
    if scope == "detect":
        from fastvision.tasks.padnet.detect import detect_batch, load_detector

        model, _ = load_detector(None, device)
        images = _detect_inputs(batch, height, width).to(device)
        case.label += f" (paper: {PAPER_MS_PER_IMAGE[0]} ms/image on an {PAPER_MS_PER_IMAGE[1]})"

        def run_detect(fused: bool):
            def f():
                model.use_fused = fused
                return detect_batch(model, images)

            return f

        def fused_setup():
            fn = infer(run_detect(True))
            reference["out"] = fn()
            return fn

        case.impls.append(Impl("fastvision detect (fused)", fused_setup, None, role="fastvision"))
        case.impls.append(Impl("eager modules + same peaks", lambda: infer(run_detect(False)),
                               lambda out: _same_centres(out, reference["out"])))
        return case

    model = _build_model(name, device)
    image = torch.randn(batch, 1, height, width, generator=torch.Generator().manual_seed(1)).to(device)
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

        def compiled_setup():
            eager = copy.deepcopy(model)
            eager.use_fused = False
            compiled = torch.compile(eager)
            return infer(lambda: compiled(image))

        case.impls.append(Impl("use_fused=True", fused_setup, None, role="fastvision"))
        case.impls.append(Impl("use_fused=False (eager)", lambda: infer(run_model(False)), check))
        if compile_model:
            case.impls.append(Impl("torch.compile (eager modules)", compiled_setup, check,
                                   note="first call (compilation) untimed"))
    return case


def run(size: str = "full", device: str = "cpu", competitors: bool = True, repeats: int | None = None,
        *, only: list[str] | None = None, log: Callable[[str], None] | None = None, **_) -> list[dict]:
    """Runs the PAD-Net benchmarks; one row per case and implementation, with ``images_per_s``
    added. ``competitors=False`` times the fused path only; ``only`` selects case names
    (``"<model>_<scope>_b<batch>_t<threads>"``)."""
    small = size == "small"
    rows: list[dict] = []
    torch.set_flush_denormal(True)
    try:
        for name, batch, height, width, scope, threads in CASES[size]:
            case_name = f"{name}_{scope}_b{batch}_t{threads}"
            if only and case_name not in only:
                continue
            with torch_threads(threads):
                case = build_case(name, batch, height, width, scope, device,
                                  compile_model=not small, threads=threads)
                if not competitors:
                    case.impls = case.impls[:1]
                if log:
                    log(case.label)
                if small:
                    case_rows = measure_case(case, device, repeats=repeats or 3, min_repeats=1,
                                             budget_s=0.05, rewarm_ms=5.0)
                else:
                    # slow_s: an eager call of many seconds at batch 256 is timed once more only.
                    case_rows = measure_case(case, device, repeats=repeats or 15, min_repeats=3,
                                             budget_s=1.5, slow_s=10.0, log=log)
            for row in case_rows:
                row["images_per_s"] = batch * 1000.0 / row["median_ms"] if row["median_ms"] else None
            rows += case_rows
    finally:
        torch.set_flush_denormal(False)
    return rows
