"""The CUDA PAD-Net encoder kernel (padnet_encoder_kernels.cuh), run on the CPU by the emulator
and compared with the CPU kernel on the same inputs and folded parameters.

Not bit-exact with the CPU: the float32 CPU kernel uses AVX2 FMAs (one rounding per term) and sums
the SE means in 16 partial sums; compared within rtol 1e-5 / atol 5e-6 (float32) and 1e-9 / 1e-11
(float64), the tolerances of the CPU tests against the modules. The launch plan is checked too:
more images than SMs (the image loop and the scratch reuse run), and a scratch bounded by the
budget (issue 13, 4.6)."""

import numpy as np
import pytest
import torch

import fastvision  # noqa: F401  (registers torch.ops.fastvision)
from emulated_harness import run
from fastvision.ops import fold_padnet_encoder
from test_ops_padnet_encoder import _model

pytestmark = pytest.mark.emulated

RUNS = [
    ("plain", "forward", "forward"),
    ("plain", "random:7", "shuffle:3"),
    ("asan", "reverse", "reverse"),
    ("tsan", "random:11", "forward"),
]
NAMES = {1: "padnet", 2: "padnet_x2", 4: "padnet_x4"}
TOL = {torch.float32: dict(rtol=1e-5, atol=5e-6), torch.float64: dict(rtol=1e-9, atol=1e-11)}


def params(width, dtype):
    return fold_padnet_encoder(_model(NAMES[width], dtype=dtype, seed=width).encoder).params


def padnet_case(width, B, H, W, dtype, *, sm_count=0, budget=0, plan_only=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(B, 1, H, W, generator=g, dtype=dtype).numpy(),
            "params": params(width, dtype).numpy(), "width": np.array(width),
            "sm_count": np.array(sm_count), "scratch_budget": np.array(budget),
            "plan_only": np.array(int(plan_only))}


def padnet_cases(dtype, small):
    # Two SMs: more images than SMs, so each block loops and reuses its scratch.
    cases = [padnet_case(1, 3, 9, 7, dtype, sm_count=2), padnet_case(2, 3, 1, 13, dtype, sm_count=2, seed=1)]
    if not small:
        cases += [padnet_case(4, 3, 10, 1, dtype, sm_count=2, seed=2),
                  padnet_case(1, 5, 23, 17, dtype, sm_count=4, seed=3),
                  padnet_case(2, 1, 112, 48, dtype, seed=4)]
    return cases


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant,schedule,block_order", RUNS)
def test_padnet_encoder_kernel_matches_cpu(variant, schedule, block_order, dtype):
    cases = padnet_cases(dtype, small=variant != "plain")
    outs = run("drive_padnet", cases, variant=variant, schedule=schedule, block_order=block_order)
    for n, (case, out) in enumerate(zip(cases, outs)):
        x, p = torch.from_numpy(case["x"]), torch.from_numpy(case["params"])
        taps = torch.ops.fastvision.padnet_encoder(x, p, int(case["width"]))
        for i, want in enumerate(taps):
            torch.testing.assert_close(torch.from_numpy(out[f"t{i + 1}"]), want, **TOL[dtype],
                                       msg=lambda m, i=i: f"case {n}: tap {i + 1}: {m}")
        sms = int(case["sm_count"]) or 132
        assert int(out["blocks"]) == min(x.shape[0], sms)


def test_padnet_encoder_scratch_is_bounded_by_the_budget():
    # Issue 13, 4.6: the scratch used to be min(B, SMs) whole-image plans (~70 GiB at 1024 x 1024,
    # width 4, B >= 132 on H100). Planned here for that case; then a run where the budget binds.
    (plan,) = run("drive_padnet", [padnet_case(4, 256, 1024, 1024, torch.float32, plan_only=True)])
    per_block_bytes = int(plan["scratch_elements"]) // int(plan["blocks"]) * 4
    assert int(plan["blocks"]) == 1 and per_block_bytes < 512 << 20
    # A small image on 4 SMs with room for two blocks' scratch: two blocks loop over 5 images.
    (probe,) = run("drive_padnet", [padnet_case(1, 5, 24, 20, torch.float32, sm_count=4, plan_only=True)])
    one_block = int(probe["scratch_elements"]) // int(probe["blocks"]) * 4
    case = padnet_case(1, 5, 24, 20, torch.float32, sm_count=4, budget=one_block * 5 // 2)
    (out,) = run("drive_padnet", [case], variant="asan")
    assert int(out["blocks"]) == 2 and int(out["scratch_elements"]) * 4 <= one_block * 5 // 2
    taps = torch.ops.fastvision.padnet_encoder(torch.from_numpy(case["x"]), torch.from_numpy(case["params"]), 1)
    for i, want in enumerate(taps):
        torch.testing.assert_close(torch.from_numpy(out[f"t{i + 1}"]), want, **TOL[torch.float32])
