"""Deployment: ``torch.export`` programs, AOTInductor packages and ONNX files of the registered
models (the ``fastvision export`` command), and the autocast policy of the ops (registered in
``fastvision.ops.autocast``).

* :func:`export_model` builds a registered model (optionally with weights), puts it in inference
  mode and exports it with a dynamic batch (and dynamic height / width where the model allows:
  :mod:`fastvision.deploy.models`) to a ``.pt2`` exported program or an ``.onnx`` file.
* ``fastvision.deploy.export``: ``export_program``, ``aoti_package``, ``load_aoti_package``.
* ``fastvision.deploy.onnx``: ``export_onnx``, ``run_onnxruntime`` (the optional ``deploy``
  extra); ``fastvision.deploy.onnx_ops``: the ONNX translations of the ops.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fastvision.deploy.export import aoti_package, dynamic_shapes, export_program, load_aoti_package
from fastvision.deploy.models import DeploymentInput, deployment_input, family_of, prepare_for_deployment

__all__ = ["FORMATS", "DeploymentInput", "aoti_package", "deployment_input", "dynamic_shapes",
           "export_model", "export_program", "family_of", "load_aoti_package",
           "prepare_for_deployment"]

FORMATS = ("onnx", "pt2", "aoti")


def export_model(name: str, fmt: str, out: str | Path, weights: str | None = None,
                 dynamic_batch: bool = True, dynamic_hw: bool = True, size: str = "small",
                 **model_kwargs) -> Path:
    """Export registered model ``name`` to ``out`` as ``fmt``: ``"pt2"`` (a ``torch.export``
    program, ``torch.export.load``), ``"aoti"`` (an AOTInductor package, compiled: minutes) or
    ``"onnx"``. ``weights``: the name of shipped weights or a checkpoint file (strict load). ``size`` picks the example input
    (``"small"`` or the official ``"full"`` resolution); static dimensions keep its size."""
    from fastvision.models import get_model

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "onnx":
        from fastvision.deploy.onnx import require_onnx

        require_onnx()
    model = prepare_for_deployment(get_model(name, weights=weights, **model_kwargs))
    spec = deployment_input(name, model, size=size)
    program = export_program(model, spec, dynamic_batch=dynamic_batch, dynamic_hw=dynamic_hw)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "pt2":
        torch.export.save(program, str(out))
    elif fmt == "aoti":
        aoti_package(program, str(out))
    else:
        from fastvision.deploy.onnx import export_onnx

        export_onnx(program, str(out))
    return out
