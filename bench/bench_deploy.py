"""CPU deployment paths of PAD-Net, BiSeNet V2 and HyperSeg-M, timed interleaved in one run:
eager (the fastvision model, ``eval()``, ``no_grad``), ``torch.compile`` of it, its AOTInductor
package (``fastvision.deploy.aoti_package``) and its ONNX file on onnxruntime. Medians and ratios
(``vs fastvision`` = the path's median over eager's) go to ``OUT/deploy-cpu-<N>core-<date>.{md,json}``
with the load average at the start and at the end.

    .venv/bin/python bench/bench_deploy.py --out bench/results [--models padnet bisenetv2 ...]

Compiling (torch.compile, AOTInductor) takes minutes per model on a small CPU; the compile times
are recorded in the JSON (``warmup_ms`` of the first call, ``compile_s``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import torch

from fastvision.benchmarks.harness import Case, Impl, device_tag, environment, measure_case, write_json, write_table
from fastvision.deploy import aoti_package, deployment_input, export_program, load_aoti_package, prepare_for_deployment
from fastvision.deploy.onnx import export_onnx, run_onnxruntime
from fastvision.models import get_model

# (model, batch, H, W): PAD-Net at its pad size, batch 1 (one camera frame) and 64; the
# segmentation models at a quarter of Cityscapes' 1024x2048 (256x512), batch 1: the ONNX
# translation of HyperSeg's patch ops expands every tap per pixel, which at 512x1024 needs
# several GiB on this machine.
CASES = {
    "padnet": [(1, 112, 48), (64, 112, 48)],
    "bisenetv2": [(1, 256, 512)],
    "hyperseg_m_cityscapes": [(1, 256, 512)],
}


def _close(ref: torch.Tensor, out) -> tuple[str, str]:
    out = out[0] if isinstance(out, (list, tuple)) else out
    err = ((out.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-30)).item()
    return ("close" if err <= 1e-4 else "differs"), f"max rel. err {err:.1e}"


def model_case(name: str, batch: int, h: int, w: int, workdir: Path, log) -> Case:
    model = prepare_for_deployment(get_model(name))
    spec = deployment_input(name, model)
    spec = type(spec)((batch, spec.shape[1], h, w), spec.spatial_multiples)
    x = spec.example(seed=1)
    with torch.no_grad():
        ref = model(x)
    compile_s = {}

    def eager():
        def fn():
            with torch.no_grad():
                return model(x)
        return fn

    def compiled():
        cm = torch.compile(model)

        def fn():
            with torch.no_grad():
                return cm(x)
        t0 = time.perf_counter()
        fn()
        compile_s["torch.compile"] = time.perf_counter() - t0
        return fn

    program = None

    def exported():
        nonlocal program
        if program is None:
            t0 = time.perf_counter()
            program = export_program(model, spec)
            compile_s["torch.export"] = time.perf_counter() - t0
        return program

    def aoti():
        path = workdir / f"{name}-{batch}x{h}x{w}.pt2"
        t0 = time.perf_counter()
        aoti_package(exported(), str(path))
        compile_s["aoti"] = time.perf_counter() - t0
        runner = load_aoti_package(str(path))

        def fn():
            with torch.no_grad():
                return runner(x)
        return fn

    def onnxruntime():
        import onnxruntime as ort

        path = workdir / f"{name}-{batch}x{h}x{w}.onnx"
        t0 = time.perf_counter()
        export_onnx(exported(), str(path))
        compile_s["onnx"] = time.perf_counter() - t0
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feeds = {session.get_inputs()[0].name: x.numpy()}

        def fn():
            return torch.from_numpy(session.run(None, feeds)[0])
        return fn

    check = lambda out: _close(ref, out)  # noqa: E731
    impls = [
        Impl("eager", eager, role="fastvision", note="fastvision model, eval, no_grad"),
        Impl("torch.compile", compiled, check=check, role="variant", note="inductor, default mode"),
        Impl("aotinductor", aoti, check=check, role="variant", note="aoti_compile_and_package"),
        Impl("onnxruntime", onnxruntime, check=check, role="variant",
             note=f"onnxruntime, {torch.get_num_threads()} threads"),
    ]
    case = Case("deploy", f"{name}_b{batch}_{h}x{w}", f"{name} batch {batch}, {h}x{w}",
                {"model": name, "batch": batch, "height": h, "width": w}, impls)
    case.compile_s = compile_s
    return case


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--models", nargs="*", default=list(CASES))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of torch and onnxruntime (default: torch's default). On a "
                             "machine shared with other jobs, 1 keeps spinning thread pools from "
                             "measuring the other jobs instead of the model")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    env = environment("cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for batch, h, w in CASES[name]:
                case = model_case(name, batch, h, w, Path(tmp), print)
                print(f"[{case.name}] load average {os.getloadavg()[0]:.2f}", flush=True)
                case_rows = measure_case(case, "cpu", repeats=args.repeats, budget_s=3.0, slow_s=60.0,
                                         log=print)
                for row in case_rows:
                    row["compile_s"] = case.compile_s.get(
                        {"torch.compile": "torch.compile", "aotinductor": "aoti", "onnxruntime": "onnx"}
                        .get(row["impl"], ""))
                    print(f"  {row['impl']:<14} {row['status']:<6} median {row['median_ms']} ms "
                          f"x{row['ratio_vs_fastvision']} {row['check_detail']}", flush=True)
                rows += case_rows
                # Written after every case, so an interrupted run keeps what it measured.
                env["load_average_at_end_1_5_15min"] = list(os.getloadavg())
                stem = Path(args.out) / f"deploy-{device_tag('cpu')}-{dt.date.today().isoformat()}"
                write_json(rows, f"{stem}.json", env)
                write_table(rows, f"{stem}.md", env, title="Deployment paths on CPU: eager, "
                                                            "torch.compile, AOTInductor, onnxruntime")
                print(f"wrote {stem}.md / .json", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
