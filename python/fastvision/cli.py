"""The ``fastvision`` command (also ``python -m fastvision``)."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path


def _info(args) -> int:
    import torch

    import fastvision

    info = fastvision.build_info()
    info.update(
        {
            # PTX of the newest architecture lets GPUs newer than the list JIT-compile the kernels.
            "cuda_ptx_embedded": "+PTX" in (info["cuda_archs"] or ""),
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(),
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            # Every registered public operator (dir(torch.ops.fastvision) lists only those
            # already looked up).
            "operators": sorted(
                name.split("::", 1)[1] for name in torch._C._dispatch_get_all_op_names()
                if name.startswith("fastvision::") and not name.split("::", 1)[1].startswith("_")
            ),
        }
    )
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            if isinstance(value, list):
                value = ", ".join(map(str, value)) or "none"
            print(f"{key:<{width}}  {value}")
    return 0


def _bench(args) -> int:
    from fastvision.tasks import run_family

    run_family(args.family, size=args.size, device=args.device, out_dir=Path(args.out),
               only=args.only, threads=args.threads)
    return 0


def _demo(args) -> int:
    from fastvision.demo import run_demo

    return 0 if run_demo(Path(args.out), device=args.device) else 1


def _train(args) -> int:
    from fastvision.engine import TrainConfig, fit

    recipe = args.recipe_spec
    config = TrainConfig(
        out_dir=args.out or f"fastvision-train/{args.recipe}", epochs=args.epochs or recipe.epochs,
        batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, device=args.device,
        seed=args.seed, num_workers=args.workers, resume=args.resume,
        max_steps_per_epoch=args.max_steps_per_epoch, progress=not args.quiet,
    )
    record = fit(recipe.build(args, config), config)
    if not args.quiet and record.get("history"):
        best = record["best"]
        print(f"[{args.recipe}] done: best {best['monitor']} = {best['value']}; "
              f"outputs in {config.out_dir}")
    return 0


def _detect(args) -> int:
    from fastvision.tasks.padnet.detect import detect_images

    try:
        results = detect_images(args.images, args.out, model=args.weights, threshold=args.threshold,
                                device="cuda" if args.device == "cuda" else "cpu",
                                progress=not args.quiet)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"fastvision detect: error: {err}", file=sys.stderr)
        return 2
    if not args.quiet:
        total = sum(r["count"] for r in results)
        print(f"{len(results)} image(s), {total} particles; outputs in {args.out}")
    return 0


def _weights(args) -> int:
    from fastvision.models import get_weights, list_weights

    entries = [get_weights(name) for name in list_weights(args.model)]
    if args.json:
        print(json.dumps({e.name: {"model": e.model, "kwargs": e.kwargs, "file": str(e.path),
                                   "sha256": e.sha256, "recipe": e.recipe, "data": e.data,
                                   "metrics": e.metrics, "evaluation": e.evaluation,
                                   "license": e.license} for e in entries}, indent=2))
        return 0
    for e in entries:
        metrics = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in e.metrics.items())
        print(f"{e.name}\n  model    {e.model} {json.dumps(e.kwargs)}\n  recipe   {e.recipe}\n"
              f"  data     {e.data}\n  metrics  {metrics} ({e.evaluation})\n  license  {e.license}")
    return 0


def _export(args) -> int:
    from fastvision.deploy import export_model

    suffix = {"onnx": ".onnx", "pt2": ".pt2", "aoti": ".aoti.pt2"}[args.format]
    out = args.out or f"{args.model}{suffix}"
    try:
        path = export_model(args.model, args.format, out, weights=args.weights,
                            dynamic_batch=args.dynamic_batch, dynamic_hw=args.dynamic_hw,
                            size=args.size)
    except ImportError as err:
        print(f"fastvision export: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"fastvision export: error: {_one_line(err)}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def _add_export_parser(sub) -> None:
    from fastvision.models import list_models

    export = sub.add_parser("export", help="export a registered model: ONNX, torch.export (.pt2) "
                                           "or an AOTInductor package")
    export.add_argument("model", choices=list_models(), metavar="MODEL",
                        help="a registered model (fastvision.models.list_models())")
    export.add_argument("--format", required=True, choices=["onnx", "pt2", "aoti"],
                        help="onnx (runs on onnxruntime; needs the 'deploy' extra), pt2 "
                             "(torch.export.load; needs import fastvision) or aoti (compiled "
                             "AOTInductor package: minutes)")
    export.add_argument("--weights", default=None, help="shipped weights (a name, see `fastvision weights`) or a checkpoint file")
    export.add_argument("--dynamic-batch", action=argparse.BooleanOptionalAction, default=True,
                        help="dynamic batch dimension (default on)")
    export.add_argument("--dynamic-hw", action=argparse.BooleanOptionalAction, default=True,
                        help="dynamic height / width where the model allows it (default on)")
    export.add_argument("--size", default="small", choices=["small", "full"],
                        help="example input: small, or the official full resolution (static "
                             "dimensions keep it)")
    export.add_argument("--out", default=None, help="output file (default MODEL.onnx / .pt2 / .aoti.pt2)")
    export.set_defaults(func=_export)


def _add_eval_parser(sub) -> None:
    from fastvision.tasks import FAMILIES

    ev = sub.add_parser("eval", help="the papers' experiments (tables and plots)")
    exps = ev.add_subparsers(dest="experiment", required=True)
    for family in FAMILIES:
        if family.eval_help is not None:
            experiment = family.module("experiment")
            parser = exps.add_parser(family.name, help=family.eval_help)
            experiment.add_arguments(parser)
            parser.set_defaults(func=experiment.run)
        for name, (module_name, help_text) in family.studies.items():
            study = family.module(module_name)
            parser = exps.add_parser(name, help=help_text)
            study.add_arguments(parser)
            parser.set_defaults(func=study.run)


def _add_train_parser(sub) -> None:
    from fastvision.tasks import recipes

    train = sub.add_parser("train", help="train a recipe on the one engine (CPU/CUDA, torchrun DDP)")
    subparsers = train.add_subparsers(dest="recipe", required=True)
    for name, recipe in recipes().items():
        p = subparsers.add_parser(name, help=recipe.help)
        p.add_argument("--out", default=None, help="output folder (default fastvision-train/RECIPE)")
        p.add_argument("--epochs", type=int, default=None,
                       help=f"epochs (default {recipe.epochs}: the embedded-data recipe)")
        p.add_argument("--batch-size", type=int, default=32,
                       help="global batch over all processes (default 32, the sampling papers' "
                            "batch; a recipe may set its own default)")
        p.add_argument("--eval-batch-size", type=int, default=64)
        p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
        p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint_last.pt")
        p.add_argument("--max-steps-per-epoch", type=int, default=None, help="cap (smoke runs)")
        p.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
        recipe.add_arguments(p)
        p.set_defaults(func=_train, recipe_spec=recipe)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastvision", description="fast, faithful operators and models for six vision papers"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="build, CUDA and thread report")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)

    bench = sub.add_parser("bench", help="operator microbenchmarks: table, JSON and PNG plot")
    from fastvision.tasks import benchmark_names
    from fastvision.tasks.arguments import int_list, name_list

    bench.add_argument("--family", default="points", choices=benchmark_names())
    bench.add_argument("--size", default="full", choices=["small", "full"])
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    bench.add_argument("--out", default="fastvision-bench", help="output folder")
    bench.add_argument("--only", type=name_list, default=None,
                       help="comma-separated case names (see the family's benchmark module)")
    bench.add_argument("--threads", type=int_list, default=None,
                       help="run every case once per torch thread count, e.g. 1,2 (default: torch's)")
    bench.set_defaults(func=_bench)

    _add_train_parser(sub)
    _add_eval_parser(sub)
    _add_export_parser(sub)

    detect = sub.add_parser("detect", help="particle detection on pad images: counts, centres "
                                           "CSV, overlay PNG (PAD-Net)")
    detect.add_argument("images", nargs="+",
                        help="PNG / BMP / TIFF pads, 8- or 16-bit grayscale (colour is converted to "
                             "grayscale with a warning), at most 2048 x 2048 pixels (4 Mpx)")
    detect.add_argument("--out", required=True, help="output folder")
    detect.add_argument("--weights", "--model", dest="weights", default=None,
                        help="named shipped weights (`fastvision weights`) or a training checkpoint "
                             "/ safetensors file of a PAD-Net (default: the shipped padnet.embedded, "
                             "trained on the embedded procedural pads)")
    detect.add_argument("--threshold", type=float, default=0.5,
                        help="peak threshold on the particle probability, in (0, 1)")
    detect.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    detect.add_argument("--quiet", action="store_true")
    detect.set_defaults(func=_detect)

    weights = sub.add_parser("weights", help="the named weights shipped with the package: model, "
                                             "recipe, data, metrics, license")
    weights.add_argument("--model", default=None, help="only the weights of this model")
    weights.add_argument("--json", action="store_true", help="print JSON")
    weights.set_defaults(func=_weights)

    demo = sub.add_parser("demo", help="the main job on embedded defaults: checks, benchmarks, report")
    demo.add_argument("--out", default="fastvision-demo", help="output folder for the report")
    demo.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "device", None) == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("fastvision: --device cuda was asked for but no CUDA GPU is available", file=sys.stderr)
            return 2
    if args.command not in ("eval", "bench"):
        return args.func(args)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        # A bad checkpoint or argument: one line and exit code 2, as `detect` does.
        what = args.experiment if args.command == "eval" else f"--family {args.family}"
        print(f"fastvision {args.command} {what}: error: {_one_line(err)}", file=sys.stderr)
        return 2


def _one_line(err: Exception) -> str:
    lines = str(err).strip().splitlines() or [type(err).__name__]
    if lines[0].startswith("Error(s) in loading state_dict"):
        return f"the checkpoint does not fit the model ({lines[0].rstrip(':')}: {len(lines) - 1} mismatch line(s))"
    return lines[0]


if __name__ == "__main__":
    sys.exit(main())
