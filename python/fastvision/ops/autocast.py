"""Autocast (mixed precision) behaviour of every fastvision op, decided per op and registered on
the ``AutocastCPU`` and ``AutocastCUDA`` dispatch keys.

Without a registration a custom op is a fallthrough under ``torch.autocast``: it receives whatever
dtypes the autocast ops before it produced, so a model mixing ``bfloat16`` activations with
``float32`` parameters or inputs stops with a dtype mismatch. Each op therefore gets one of two
policies (the table ``AUTOCAST_POLICY``), on both devices:

``"float32"``
    Floating inputs in float16 / bfloat16 are cast to float32 (float64 is left alone, as
    PyTorch's own float32-list ops do), the op runs with autocast off, outputs are float32.
    For the point ops (``knn_points``, ``nn_distance``, ``farthest_point_sample``,
    ``soft_project`` and their backward ops): they select neighbours or points by comparing
    distances, and in bfloat16's 8-bit mantissa distinct distances tie, which changes the chosen
    indices, not just the digits; ``soft_project`` also takes a softmax (``exp``), which PyTorch's
    autocast keeps in float32 too. For ``padnet_encoder`` (and ``padnet_decoder``): inference-only fused ops whose
    CPU and CUDA kernels compute and keep every activation in float32 anyway, so the low dtype
    would only round its folded weights and its input and save nothing.

``"lower"`` (the autocast dtype)
    Floating float32 inputs are cast to the autocast dtype (``torch.get_autocast_dtype``:
    bfloat16 by default on the CPU, float16 or bfloat16 on CUDA), the op runs with autocast
    off and returns that dtype. For the convolution-like ops (``patch_conv2d``,
    ``patch_inverted_residual``, ``_patch_conv2d_backward``), as ``torch.nn.functional.conv2d``
    is on PyTorch's lower-precision list: a model's activations stay in the low dtype between
    them and the ordinary convolutions around them. Their kernels accumulate in float32 (the
    CPU converts to float32, computes and rounds the output).

The registration mirrors ``torch.library.register_autocast`` (a kernel on the autocast key plus
the same rule for the Python dispatcher that ``torch.compile`` and ``torch.export`` use), which
can only cast to one fixed dtype; ``"lower"`` needs the dtype of the enclosing autocast region.
"""

from __future__ import annotations

import torch

__all__ = ["AUTOCAST_DEVICES", "AUTOCAST_POLICY", "autocast_cast"]

# Op name (torch.ops.fastvision.<name>) -> "float32" | "lower" (see the module docstring).
AUTOCAST_POLICY = {
    "knn_points": "float32",
    "_knn_points_backward": "float32",
    "nn_distance": "float32",
    "farthest_point_sample": "float32",
    "soft_project": "float32",
    "_soft_project_backward": "float32",
    "padnet_encoder": "float32",
    "padnet_decoder": "float32",
    "patch_conv2d": "lower",
    "_patch_conv2d_backward": "lower",
    "patch_inverted_residual": "lower",
}

AUTOCAST_DEVICES = ("cpu", "cuda")

_LOW_DTYPES = (torch.float16, torch.bfloat16)


def autocast_cast(value, device_type: str, policy: str):
    """``value`` (a tensor, a list / tuple of them, or anything else) with the floating tensors on
    ``device_type`` cast as ``policy`` says; float64 and integer tensors are never touched."""
    if isinstance(value, torch.Tensor):
        if value.device.type != device_type or not value.is_floating_point():
            return value
        if policy == "float32":
            return value.float() if value.dtype in _LOW_DTYPES else value
        if value.dtype == torch.float32:
            return value.to(torch.get_autocast_dtype(device_type))
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(autocast_cast(v, device_type, policy) for v in value)
    return value


def _register(lib: torch.library.Library, name: str, device_type: str, policy: str) -> None:
    op = getattr(torch.ops.fastvision, name).default
    key_name = "Autocast" + torch._C._dispatch_key_for_device(device_type)
    key = getattr(torch._C.DispatchKey, key_name)

    def run(*args):
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key)):
            return op(*autocast_cast(args, device_type, policy))

    # The Python dispatcher (torch.compile, torch.export) consults py_kernels, not the C++ table.
    if op.has_kernel_for_dispatch_key(key):
        op.py_kernels.pop(key, None)
    op.py_impl(key)(run)
    lib.impl(name, lambda _keyset, *args: run(*args), key_name, with_keyset=True)


def _register_all() -> torch.library.Library:
    lib = torch.library.Library("fastvision", "IMPL")
    for name, policy in AUTOCAST_POLICY.items():
        for device_type in AUTOCAST_DEVICES:
            _register(lib, name, device_type, policy)
    return lib


_LIBRARY = _register_all()  # kept alive: the registrations last as long as this object


_DOC = {
    "float32": ("Autocast: runs in float32 inside ``torch.autocast`` (CPU and CUDA): float16 / "
                "bfloat16 inputs are cast to float32 and the outputs are float32 (see "
                "``fastvision.ops.autocast``)."),
    "lower": ("Autocast: runs in the autocast dtype inside ``torch.autocast`` (CPU bfloat16, CUDA "
              "float16 / bfloat16), like ``conv2d``: float32 inputs are cast to it and the output "
              "has it; the kernels accumulate in float32 (see ``fastvision.ops.autocast``)."),
}


def document(fn, *ops: str) -> None:
    """Append the autocast policy of ``ops`` (the ops ``fn`` calls) to ``fn``'s docstring."""
    policies = {AUTOCAST_POLICY[name] for name in ops}
    if len(policies) != 1:
        raise ValueError(f"{fn.__name__} calls ops with different autocast policies: {ops}")
    fn.__doc__ = (fn.__doc__ or "").rstrip() + "\n\n    " + _DOC[policies.pop()] + "\n"


def _document_wrappers() -> None:
    from fastvision.ops.matching import nn_match
    from fastvision.ops.padnet import padnet_decoder, padnet_encoder
    from fastvision.ops.patch import patch_conv2d, patch_inverted_residual
    from fastvision.ops.points import chamfer_distance, farthest_point_sample, knn_points, nn_distance
    from fastvision.ops.sampling import soft_project

    document(knn_points, "knn_points", "_knn_points_backward")
    document(nn_distance, "nn_distance", "_knn_points_backward")
    document(chamfer_distance, "nn_distance")
    document(farthest_point_sample, "farthest_point_sample")
    document(nn_match, "knn_points", "farthest_point_sample")
    document(soft_project, "soft_project", "_soft_project_backward")
    document(padnet_encoder, "padnet_encoder")
    document(padnet_decoder, "padnet_decoder")
    document(patch_conv2d, "patch_conv2d", "_patch_conv2d_backward")
    document(patch_inverted_residual, "patch_inverted_residual")


_document_wrappers()
