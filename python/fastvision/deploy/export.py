"""``torch.export`` and AOTInductor packages of the registered models.

The fastvision ops export as themselves (``torch.ops.fastvision.*`` nodes, shaped by their fake
kernels), so an exported program or an AOTInductor package needs ``import fastvision`` (which
loads the kernels) before it is loaded or run.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.export import Dim

from fastvision.deploy.models import DeploymentInput

__all__ = ["dynamic_shapes", "export_program", "aoti_package", "load_aoti_package"]

# Upper bounds of the dynamic dimensions (torch.export needs finite ranges for its guards to be
# checked; these are far beyond what any of the models is run at).
MAX_BATCH = 1024
MAX_SPATIAL = 8192


def dynamic_shapes(spec: DeploymentInput, dynamic_batch: bool = True, dynamic_hw: bool = True):
    """The ``dynamic_shapes`` argument of ``torch.export.export`` for a model taking one tensor
    ``x`` laid out as ``spec``: the batch dimension (minimum 1: a batch of one must be allowed,
    and torch.export specialises a size-1 example, which is why the examples use batch 2) and,
    with ``dynamic_hw``, the spatial dimensions the model accepts in steps of their multiple."""
    dims = {}
    if dynamic_batch:
        dims[0] = Dim("batch", min=1, max=MAX_BATCH)
    if dynamic_hw:
        for axis, multiple in spec.spatial_multiples.items():
            name = "height" if axis == 2 else "width"
            dims[axis] = multiple * Dim(f"{name}_div_{multiple}", min=1, max=MAX_SPATIAL // multiple)
    return {"x": dims} if dims else None


def export_program(model: nn.Module, spec: DeploymentInput, dynamic_batch: bool = True,
                   dynamic_hw: bool = True) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``model`` (already in inference mode) on ``spec``'s example,
    with the dynamic dimensions of :func:`dynamic_shapes`, under ``torch.no_grad()`` (the
    deployed graph is inference only: PAD-Net's fused encoder, for one, is chosen only then)."""
    # A size-1 example dimension would be specialised to 1, so a dynamic batch is traced at 2.
    x = spec.example(batch=max(2, spec.shape[0]) if dynamic_batch else None)
    with torch.no_grad():
        return torch.export.export(model, (x,), dynamic_shapes=dynamic_shapes(spec, dynamic_batch, dynamic_hw))


def aoti_package(program: torch.export.ExportedProgram, path: str) -> str:
    """Compile ``program`` ahead of time with AOTInductor into the package file ``path``
    (``.pt2``) and return the path. Takes minutes on a small CPU."""
    from torch._inductor import aoti_compile_and_package

    return aoti_compile_and_package(program, package_path=str(path))


def load_aoti_package(path: str):
    """The runner of an AOTInductor package: call it with the inputs; needs ``import fastvision``."""
    import fastvision  # noqa: F401  (loads the kernels the package calls)
    from torch._inductor import aoti_load_package

    return aoti_load_package(str(path))
