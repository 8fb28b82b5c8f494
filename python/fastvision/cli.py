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
    from fastvision.benchmarks import run_family

    run_family(args.family, size=args.size, device=args.device, out_dir=Path(args.out))
    return 0


def _demo(args) -> int:
    from fastvision.demo import run_demo

    return 0 if run_demo(Path(args.out), device=args.device) else 1


def _train(args) -> int:
    from fastvision.engine import TrainConfig, fit
    from fastvision.recipes import RECIPES

    recipe = RECIPES[args.recipe]
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


def _eval_sampling(args) -> int:
    from fastvision.experiments.sampling import SamplingExperiment, run_sampling_experiment
    from fastvision.recipes.sampling import PointCloudData

    exp = SamplingExperiment(
        out_dir=args.out,
        data=PointCloudData(
            args.data,
            args.num_points or (SamplingExperiment().data.num_points if args.data == "embedded" else 1024),
            args.train_samples, args.test_samples),
        ratios=tuple(args.ratios), seeds=tuple(args.seeds), methods=tuple(args.methods),
        task_net=args.task_net, task_model=args.task_model, task_epochs=args.task_epochs,
        sampler_epochs=args.sampler_epochs, progressive_epochs=args.progressive_epochs,
        jobs=args.jobs, device="cuda" if args.device == "cuda" else "cpu", progress=not args.quiet)
    run_sampling_experiment(exp)
    return 0


def _eval_padnet(args) -> int:
    from fastvision.experiments.padnet import PadNetExperiment, run_padnet_experiment
    from fastvision.recipes.padnet import ParticleData

    exp = PadNetExperiment(
        out_dir=args.out, data=ParticleData(args.data, args.train_images, args.test_images),
        models=tuple(args.models), teacher=args.teacher, teacher_epochs=args.teacher_epochs,
        student_epochs=args.student_epochs, val_images=args.val_images,
        device="cuda" if args.device == "cuda" else "cpu", progress=not args.quiet)
    run_padnet_experiment(exp)
    return 0


def _detect(args) -> int:
    from fastvision.detect import detect_images

    try:
        results = detect_images(args.images, args.out, model=args.model, threshold=args.threshold,
                                device="cuda" if args.device == "cuda" else "cpu",
                                progress=not args.quiet)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"fastvision detect: error: {err}", file=sys.stderr)
        return 2
    if not args.quiet:
        total = sum(r["count"] for r in results)
        print(f"{len(results)} image(s), {total} particles; outputs in {args.out}")
    return 0


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _add_eval_parser(sub) -> None:
    from fastvision.experiments.sampling import METHODS, SamplingExperiment

    defaults = SamplingExperiment()  # one source for the experiment's defaults
    ev = sub.add_parser("eval", help="the papers' experiments (tables and plots)")
    exps = ev.add_subparsers(dest="experiment", required=True)
    s = exps.add_parser("sampling", help="accuracy vs sampling ratio: random, FPS, S-NET, "
                                         "ProgressiveNet, SampleNet (trains what is missing)")
    s.add_argument("--out", default="fastvision-eval/sampling", help="output (and cache) folder")
    s.add_argument("--data", default="embedded",
                   help="'embedded' (procedural shapes) or a modelnet40_ply_hdf5_2048 folder")
    s.add_argument("--num-points", type=int, default=None,
                   help=f"points per cloud (default: {defaults.data.num_points} on the embedded "
                        "data to fit a 2-core CPU "
                        "budget, 1024 on ModelNet40 as the papers)")
    s.add_argument("--train-samples", type=int, default=defaults.data.train_samples,
                   help="embedded data: training clouds")
    s.add_argument("--test-samples", type=int, default=defaults.data.test_samples,
                   help="embedded data: test clouds")
    s.add_argument("--ratios", type=_int_list, default=list(defaults.ratios))
    s.add_argument("--seeds", type=_int_list, default=list(defaults.seeds),
                   help="training / sampling seeds")
    s.add_argument("--methods", type=lambda t: t.split(","), default=list(METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)}")
    s.add_argument("--task-net", default=None, help="task-network checkpoint (default: train one)")
    s.add_argument("--task-model", default=defaults.task_model,
                   choices=["pointnet_cls", "pointnet_cls_vanilla"])
    s.add_argument("--task-epochs", type=int, default=defaults.task_epochs)
    s.add_argument("--sampler-epochs", type=int, default=defaults.sampler_epochs)
    s.add_argument("--progressive-epochs", type=int, default=defaults.progressive_epochs)
    s.add_argument("--jobs", type=int, default=defaults.jobs,
                   help="trainings run in parallel processes (threads are split between them)")
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_eval_sampling)

    from fastvision.experiments.padnet import MODELS as PADNET_MODELS
    from fastvision.recipes.padnet import EMBEDDED_EPOCHS, EMBEDDED_TEACHER_EPOCHS

    pn = exps.add_parser("padnet", help="PAD-Net Tables 5/6: teacher, PAD-Net (KD), PAD-Net "
                                        "(x2, x4): params, MFLOPs, MAE, RMSE, Precision, Recall")
    pn.add_argument("--out", default="fastvision-eval/padnet", help="output (and cache) folder")
    pn.add_argument("--data", default="embedded",
                    help="'embedded' (procedural pads) or a folder with train/ and test/")
    pn.add_argument("--train-images", type=int, default=None, help="embedded: first N training pads")
    pn.add_argument("--test-images", type=int, default=None, help="embedded: first N test pads")
    pn.add_argument("--models", type=lambda t: t.split(","), default=["teacher", "padnet_kd", "padnet"],
                    help=f"comma-separated subset of {','.join(PADNET_MODELS)}")
    pn.add_argument("--teacher", default=None, help="teacher checkpoint (default: train one)")
    pn.add_argument("--teacher-epochs", type=int, default=EMBEDDED_TEACHER_EPOCHS,
                    help="CPU-feasible default; the paper trains 100")
    pn.add_argument("--student-epochs", type=int, default=EMBEDDED_EPOCHS,
                    help="CPU-feasible default; the paper trains 100")
    pn.add_argument("--val-images", type=int, default=200,
                    help="test pads used for the per-epoch validation curves (the table uses all)")
    pn.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    pn.add_argument("--quiet", action="store_true")
    pn.set_defaults(func=_eval_padnet)

    from fastvision.experiments import segmentation as segmentation_experiment

    seg = exps.add_parser("segmentation", help="mIoU table and prediction overlays of a trained "
                                               "segmentation checkpoint (single or multi-scale, flip)")
    segmentation_experiment.add_arguments(seg)
    seg.set_defaults(func=segmentation_experiment.run)

    from fastvision.experiments import pose as pose_experiment

    pose = exps.add_parser("pose", help="COCO OKS AP of a pose checkpoint (official post-processing, "
                                        "optional flip test)")
    pose_experiment.add_arguments(pose)
    pose.set_defaults(func=pose_experiment.run)


def _add_train_parser(sub) -> None:
    from fastvision.recipes import RECIPES

    train = sub.add_parser("train", help="train a recipe on the one engine (CPU/CUDA, torchrun DDP)")
    recipes = train.add_subparsers(dest="recipe", required=True)
    for name, recipe in RECIPES.items():
        p = recipes.add_parser(name, help=recipe.help)
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
        p.set_defaults(func=_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastvision", description="fast, faithful operators and models for five vision papers"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="build, CUDA and thread report")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)

    bench = sub.add_parser("bench", help="operator microbenchmarks: table, JSON and PNG plot")
    from fastvision.benchmarks import FAMILIES

    bench.add_argument("--family", default="points", choices=list(FAMILIES))
    bench.add_argument("--size", default="full", choices=["small", "full"])
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    bench.add_argument("--out", default="fastvision-bench", help="output folder")
    bench.set_defaults(func=_bench)

    _add_train_parser(sub)
    _add_eval_parser(sub)

    detect = sub.add_parser("detect", help="particle detection on pad images: counts, centres "
                                           "CSV, overlay PNG (PAD-Net)")
    detect.add_argument("images", nargs="+", help="PNG / BMP / TIFF pads (8- or 16-bit grayscale)")
    detect.add_argument("--out", required=True, help="output folder")
    detect.add_argument("--model", default=None,
                        help="training checkpoint of a PAD-Net (default: the shipped padnet_x1, "
                             "trained on the embedded procedural pads)")
    detect.add_argument("--threshold", type=float, default=0.5,
                        help="peak threshold on the particle probability, in (0, 1)")
    detect.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    detect.add_argument("--quiet", action="store_true")
    detect.set_defaults(func=_detect)

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
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
