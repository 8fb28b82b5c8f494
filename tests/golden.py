"""Golden model outputs: seeded weights, a seeded input, and a compact record of the outputs.

Shared by the golden tests (``tests/test_golden_*.py``) and by ``tools/gen_golden_outputs.py``,
which writes the records once from the official model code (or from fastvision where no official
code runs here). Both sides fill the *same* state-dict keys, in state-dict order, with the same
draws, so an official model and its fastvision twin get identical weights without any checkpoint
being committed.

Every draw is ``torch.rand(..., dtype=float64)`` from a CPU generator (the plain Mersenne-Twister
stream, stable across torch builds) mapped affinely, then cast to the tensor's dtype.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn as nn

GOLDEN_DIR = os.path.join(os.path.dirname(__file__), "data", "golden")

# name -> (registered model, builder kwargs, input shape, source of the golden outputs).
# "official": the official repository's model class with the same seeded weights (written by
# tools/gen_golden_outputs.py, which builds them as tools/gen_official_keys.py does);
# "fastvision": no official code runs here (TensorFlow graphs; PAD-Net has no public code), so
# the outputs pin fastvision's own forward (any change of it fails the test).
CASES = {
    "hrnetv2_w18_small_v1": ("hrnetv2_w18_small_v1", {}, (1, 3, 64, 64), "official"),
    "hrnetv1_w32_pose": ("hrnetv1_w32_pose", {}, (1, 3, 64, 64), "official"),
    "hrnetv2p_w18": ("hrnetv2p_w18", {}, (1, 3, 64, 64), "official"),
    "bisenetv2": ("bisenetv2", {}, (1, 3, 64, 64), "official"),
    "bisenetv2_eval": ("bisenetv2", {"aux_mode": "eval"}, (1, 3, 64, 64), "official"),
    "hyperseg_m_cityscapes": ("hyperseg_m_cityscapes", {}, (1, 3, 128, 128), "official"),
    "hyperseg_s_cityscapes": ("hyperseg_s_cityscapes", {}, (1, 3, 128, 128), "official"),
    "hyperseg_l_voc": ("hyperseg_l_voc", {}, (1, 3, 128, 128), "official"),
    "pointnet_cls": ("pointnet_cls", {}, (2, 64, 3), "fastvision"),
    "snet": ("snet", {}, (2, 64, 3), "fastvision"),
    "samplenet": ("samplenet", {}, (2, 3, 64), "fastvision"),
    "padnet": ("padnet", {}, (2, 1, 112, 48), "fastvision"),
    "padnet_x2": ("padnet_x2", {}, (1, 1, 112, 48), "fastvision"),
    "padnet_teacher": ("padnet_teacher", {}, (1, 1, 112, 48), "fastvision"),
}
WEIGHT_SEED = 15
INPUT_SEED = 1015
# Each output keeps at most this many values (an evenly strided subsample of the flattened
# tensor) plus its full sum and sum of magnitudes: a few KB per output, and the sum sees a change
# at any position.
MAX_VALUES = 2048


def _uniform(shape, g: torch.Generator, low: float, high: float) -> torch.Tensor:
    return torch.rand(shape, generator=g, dtype=torch.float64) * (high - low) + low


@torch.no_grad()
def seed_weights(model: nn.Module, seed: int) -> None:
    """Overwrites the floating-point parameters and BN running statistics of ``model`` with seeded
    values that keep activations moderate through deep nets: uniform convolution/linear weights of variance 1 / fan-in
    (fan-in from the shape), norm scales in [0.5, 1.5], biases in [-0.1, 0.1], running means in
    [-0.2, 0.2] and variances in [0.5, 1.5]. Scalar parameters and other buffers (coordinate
    grids, counters) keep their constructed values."""
    g = torch.Generator().manual_seed(seed)
    params = {name for name, _ in model.named_parameters()}
    for name, t in model.state_dict().items():
        if not t.is_floating_point() or t.dim() == 0:
            continue
        if name.endswith("running_mean"):
            value = _uniform(t.shape, g, -0.2, 0.2)
        elif name.endswith("running_var"):
            value = _uniform(t.shape, g, 0.5, 1.5)
        elif name not in params:
            continue
        elif t.dim() == 1 and name.endswith("weight"):
            value = _uniform(t.shape, g, 0.5, 1.5)
        elif t.dim() == 1:
            value = _uniform(t.shape, g, -0.1, 0.1)
        else:
            bound = math.sqrt(3.0 / t[0].numel())
            value = _uniform(t.shape, g, -bound, bound)
        t.copy_(value.to(t.dtype))


def seeded_input(shape, seed: int, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    return _uniform(shape, torch.Generator().manual_seed(seed), low, high).to(torch.float32)


def flatten_outputs(out) -> list[torch.Tensor]:
    """The output tensors of a model in a fixed order (dict values, tuple/list items, nested;
    None skipped)."""
    if out is None:
        return []
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flatten_outputs(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in flatten_outputs(v)]
    raise TypeError(f"unexpected model output type {type(out).__name__}")


def record(outputs: list[torch.Tensor]) -> list[dict]:
    """The compact golden record of each output tensor."""
    result = []
    for t in outputs:
        t = t.detach().to(torch.float64)
        flat = t.flatten()
        step = max(1, math.ceil(flat.numel() / MAX_VALUES))
        step += step % 2 == 0 and step > 1  # odd: a strided subsample then crosses rows unevenly
        result.append({
            "shape": tuple(t.shape),
            "step": step,
            "values": flat[::step].to(torch.float32).clone(),
            "sum": float(flat.sum()),
            "sum_abs": float(flat.abs().sum()),
        })
    return result


def path_of(name: str) -> str:
    return os.path.join(GOLDEN_DIR, f"{name}.pt")


def save(name: str, entry: dict) -> None:
    os.makedirs(GOLDEN_DIR, exist_ok=True)
    torch.save(entry, path_of(name))


def load(name: str) -> dict:
    return torch.load(path_of(name), weights_only=True)


def assert_matches(name: str, outputs: list[torch.Tensor], rtol: float = 1e-4, atol: float = 1e-5,
                   sum_rtol: float = 1e-5) -> None:
    """Compares fastvision's outputs with the committed record of ``name``: the sampled values
    elementwise (``atol`` relative to the largest golden magnitude), the sums to ``sum_rtol``
    times the sum of magnitudes (float32 rounding of different summation orders stays far
    below it; a changed pixel, channel or activation does not)."""
    golden = load(name)["outputs"]
    got = record(outputs)
    assert len(got) == len(golden), f"{name}: {len(got)} outputs, golden has {len(golden)}"
    for i, (a, b) in enumerate(zip(got, golden)):
        assert a["shape"] == tuple(b["shape"]), f"{name} output {i}: shape {a['shape']} != {b['shape']}"
        scale = max(1.0, float(b["values"].abs().max()))
        torch.testing.assert_close(a["values"], b["values"], rtol=rtol, atol=atol * scale,
                                   msg=lambda m: f"{name} output {i}: {m}")
        for key in ("sum", "sum_abs"):
            tol = sum_rtol * b["sum_abs"]
            assert abs(a[key] - b[key]) <= tol, f"{name} output {i}: {key} {a[key]} != golden {b[key]}"


def check_case(name: str, **tolerances) -> None:
    """Builds the fastvision model of case ``name`` with the seeded weights, runs it in eval mode
    on the seeded input and compares with the committed record."""
    from fastvision.models import get_model

    model_name, kwargs, shape, _ = CASES[name]
    model = get_model(model_name, **kwargs)
    seed_weights(model, WEIGHT_SEED)
    model.eval()
    with torch.no_grad():
        outputs = flatten_outputs(model(seeded_input(shape, INPUT_SEED)))
    assert_matches(name, outputs, **tolerances)
