"""ONNX export through the dynamo exporter (``torch.onnx.export(..., dynamo=True)``), with the
fastvision ops translated by :mod:`fastvision.deploy.onnx_ops` into standard ONNX, and the check
that a file runs on onnxruntime with the outputs of PyTorch.

``onnx``, ``onnxscript`` and ``onnxruntime`` are the optional ``deploy`` extra
(``pip install 'fastvision[deploy]'``); without them these functions raise an ``ImportError``
that names it.
"""

from __future__ import annotations

import torch

__all__ = ["ONNX_OPSET", "require_onnx", "export_onnx", "run_onnxruntime"]

ONNX_OPSET = 18

_EXTRA_HINT = ("ONNX export needs the 'deploy' extra (onnx, onnxscript, onnxruntime): "
               "pip install 'fastvision[deploy]'")


def require_onnx(*modules: str):
    """Import ``modules`` (default: the three of the ``deploy`` extra) or raise an ImportError
    naming the extra; returns the last one imported."""
    import importlib

    module = None
    for name in modules or ("onnx", "onnxscript", "onnxruntime"):
        try:
            module = importlib.import_module(name)
        except ImportError as err:
            raise ImportError(f"{_EXTRA_HINT} (missing: {name})") from err
    return module


def export_onnx(program: torch.export.ExportedProgram, path: str, check: bool = True) -> str:
    """Write ``program`` (from :func:`fastvision.deploy.export_program`) as an ONNX file at
    ``path`` (its dynamic dimensions stay dynamic) and, with ``check``, validate it with
    ``onnx.checker`` (full check, shape inference included). Returns the path."""
    onnx = require_onnx("onnxscript", "onnx")

    from fastvision.deploy.onnx_ops import translation_table

    onnx_program = torch.onnx.export(program, dynamo=True, opset_version=ONNX_OPSET,
                                     custom_translation_table=translation_table(), verbose=False)
    onnx_program.save(str(path))
    if check:
        onnx.checker.check_model(str(path), full_check=True)
    return str(path)


def run_onnxruntime(path: str, *inputs: torch.Tensor, threads: int | None = None) -> list[torch.Tensor]:
    """Run the ONNX file ``path`` on onnxruntime's CPU provider; returns the outputs (flattened
    as the exporter flattens them) as tensors."""
    onnxruntime = require_onnx("onnxruntime")

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {arg.name: t.detach().cpu().numpy() for arg, t in zip(session.get_inputs(), inputs)}
    return [torch.from_numpy(out) for out in session.run(None, feeds)]
