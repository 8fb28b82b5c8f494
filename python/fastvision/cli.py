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
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(),
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "operators": sorted(
                name for name in dir(torch.ops.fastvision) if not name.startswith("__")
                and name not in ("name", "_dir")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastvision", description="fast, faithful operators and models for five vision papers"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="build, CUDA and thread report")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)

    bench = sub.add_parser("bench", help="operator microbenchmarks: table, JSON and PNG plot")
    bench.add_argument("--family", default="points", choices=["points", "sampling"])
    bench.add_argument("--size", default="full", choices=["small", "full"])
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    bench.add_argument("--out", default="fastvision-bench", help="output folder")
    bench.set_defaults(func=_bench)

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
