"""Inference throughput of the segmentation models: HRNetV2-W18-Small-v1, HRNetV2-W48 and
BiSeNet V2 (``aux_mode="eval"``: no booster heads), batch 1, float32, random weights in eval mode.

Cases: every model at 1024x512 and 2048x1024 (``size="full"``); at ``size="small"`` (tests,
smoke runs) W18-Small-v1 and BiSeNet V2 at 128x64 only. Implementations, timed interleaved by
:func:`fastvision.benchmarks.harness.measure_case`: eager (the baseline), ``channels_last``
(model and input), and ``torch.compile`` (default mode; full size only: compiling takes
minutes on a small CPU, and its first call, compilation included, is the warm-up). Each
variant's output is checked against eager's. Rows also carry ``fps`` = 1000 / median ms and
``cpu_ms`` (CPU only), the median CPU time of the process (all threads) per call, over every call
but the first: on a shared machine the wall-clock times include waiting for a core, the CPU
time does not (uncontended, it is about the wall time x the threads that were busy). The
BiSeNet V2 1024x512 case is labelled with the paper's 156 FPS (GTX 1080 Ti, the input of its
2048x1024 Cityscapes setting resized to 1024x512), which is comparable only on a GPU.

Denormals: HRNet's official N(0, 0.001) initialisation, run in eval mode with BN's initial
statistics (mean 0, variance 1), shrinks the activations through the network until many are
float denormals, which CPUs process tens of times more slowly; a trained network never sees
them. The benchmark therefore runs with ``torch.set_flush_denormal(True)`` (reset to the default,
False, afterwards), so that the times are those of a network with realistic activations.

``fastvision bench --family segmentation [--size small|full] [--device cpu|cuda]``.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Callable

import torch

from fastvision.benchmarks.harness import Case, Impl, measure_case, timed

__all__ = ["CASES", "MODELS", "PAPER_FPS", "build_case", "run"]

MODELS = ("hrnetv2_w18_small_v1", "hrnetv2_w48", "bisenetv2")
# (model, width, height) per size.
CASES: dict[str, list[tuple[str, int, int]]] = {
    "full": [(m, w, h) for m in MODELS for (w, h) in ((1024, 512), (2048, 1024))],
    "small": [("hrnetv2_w18_small_v1", 128, 64), ("bisenetv2", 128, 64)],
}
# BiSeNet V2 paper (IJCV 2021): 156 FPS on one GTX 1080 Ti at 1024x512.
PAPER_FPS = {("bisenetv2", 1024, 512): (156.0, "GTX 1080 Ti")}
# Peak memory takes one more call; HRNet-W48 at 2048x1024 runs for many seconds per call on a
# 2-core CPU, so there it is measured on CUDA only.
_NO_CPU_MEMORY = {("hrnetv2_w48", 2048, 1024)}


def _build_model(name: str) -> torch.nn.Module:
    from fastvision.models import get_model

    kwargs = {"aux_mode": "eval"} if name == "bisenetv2" else {}
    return get_model(name, **kwargs).eval()


def _relative_error(out: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-3) -> tuple[str, str]:
    err = float((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp(min=1e-30))
    return ("close" if err <= rtol else "differs"), f"max rel. err {err:.1e}"


def build_case(name: str, width: int, height: int, device: str, compile_model: bool) -> Case:
    """One model at one input size: eager, channels_last and (``compile_model``) torch.compile."""
    torch.manual_seed(0)
    eager = _build_model(name).to(device)
    image = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(1)).to(device)
    label = f"{name} {width}x{height}, batch 1"
    paper = PAPER_FPS.get((name, width, height))
    if paper is not None:
        label += f" (paper: {paper[0]:.0f} FPS on a {paper[1]})"
    case = Case("segmentation", f"{name}_{width}x{height}", label,
                {"model": name, "width": width, "height": height, "batch": 1})
    reference: dict[str, torch.Tensor] = {}
    case.cpu_times = {}  # type: ignore[attr-defined]  # impl name -> CPU seconds of each call

    def infer(impl: str, model, x) -> Callable[[], torch.Tensor]:
        cpu = case.cpu_times.setdefault(impl, [])

        def fn():
            start = time.process_time()
            with torch.no_grad():
                out = model(x)
            cpu.append(time.process_time() - start)
            return out

        return timed(fn, device)

    def eager_setup():
        fn = infer("eager", eager, image)
        reference["out"] = fn()
        return fn

    def channels_last_setup():
        model = copy.deepcopy(eager).to(memory_format=torch.channels_last)
        return infer("channels_last", model, image.contiguous(memory_format=torch.channels_last))

    def compiled_setup():
        return infer("torch.compile", torch.compile(eager), image)

    check = lambda out: _relative_error(out, reference["out"])  # noqa: E731
    case.impls.append(Impl("eager", eager_setup, None, role="fastvision"))
    case.impls.append(Impl("channels_last", channels_last_setup, check, role="variant"))
    if compile_model:
        case.impls.append(Impl("torch.compile", compiled_setup, check, role="variant",
                               note="first call (compilation) untimed"))
    return case


def run(size: str = "full", device: str = "cpu", competitors: bool = True, repeats: int | None = None,
        *, only: list[str] | None = None, log: Callable[[str], None] | None = None, **_) -> list[dict]:
    """Runs the segmentation inference benchmarks; one row per case and implementation, with
    ``fps`` added. ``competitors=False`` times eager only; ``only`` selects case names
    (``"<model>_<W>x<H>"``)."""
    small = size == "small"
    rows: list[dict] = []
    torch.set_flush_denormal(True)
    try:
        for name, width, height in CASES[size]:
            case_name = f"{name}_{width}x{height}"
            if only and case_name not in only:
                continue
            case = build_case(name, width, height, device, compile_model=not small)
            if not competitors:
                case.impls = case.impls[:1]
            if log:
                log(case.label)
            memory = str(device).startswith("cuda") or (name, width, height) not in _NO_CPU_MEMORY
            if small:
                case_rows = measure_case(case, device, repeats=repeats or 3, min_repeats=1,
                                         budget_s=0.05, rewarm_ms=5.0, memory=memory)
            else:
                # slow_s=inf: even a call of many seconds gets min_repeats timed repeats.
                case_rows = measure_case(case, device, repeats=repeats or 10, min_repeats=3,
                                         budget_s=2.0, slow_s=float("inf"), memory=memory, log=log)
            for row in case_rows:
                row["fps"] = 1000.0 / row["median_ms"] if row["median_ms"] else None
                calls = case.cpu_times.get(row["impl"], [])[1:]  # the first call warms up
                row["cpu_ms"] = (statistics.median(calls) * 1e3
                                 if calls and not str(device).startswith("cuda") else None)
            rows += case_rows
            del case
    finally:
        torch.set_flush_denormal(False)
    return rows
