"""The CUDA PAD-Net encoder kernel (padnet_encoder_kernels.cuh), run on the CPU by the emulator
and compared with the CPU kernel on the same inputs and folded parameters.

Not bit-exact with the CPU: the float32 CPU kernel uses AVX2 FMAs (one rounding per term) and sums
the SE means in 16 partial sums; compared within rtol 1e-5 / atol 5e-6 (float32) and 1e-9 / 1e-11
(float64), the tolerances of the CPU tests against the modules. The kernels run per bneck over
(tile, image) blocks; the cases cover one and many tiles per image (partial last tiles in both
directions, tiles of one row or column, H or W = 1), several images per launch, more than one
chunk of images (scratch reuse across chunks), and the scratch bound (issue 13, 4.6)."""

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
    # sm_count sets the tiling: few SMs keep the biggest tile that fits (one tile per image at
    # these sizes), many SMs (the GPU's 132) split a small batch into small tiles.
    cases = [padnet_case(1, 3, 9, 7, dtype, sm_count=2), padnet_case(2, 2, 1, 13, dtype, seed=1),
             padnet_case(1, 1, 19, 21, dtype, seed=5)]
    if not small:
        cases += [padnet_case(4, 3, 10, 1, dtype, sm_count=2, seed=2),
                  padnet_case(1, 5, 23, 17, dtype, sm_count=4, seed=3),
                  padnet_case(2, 1, 112, 48, dtype, seed=4),
                  padnet_case(4, 2, 13, 9, dtype, seed=6)]
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
        assert int(out["chunk"]) == x.shape[0]  # the default budget holds these batches whole


def test_padnet_encoder_tiles_and_scratch_bound():
    # Issue 13, 4.6: the scratch used to be min(B, SMs) whole-image plans (~70 GiB at 1024 x 1024,
    # width 4, B >= 132 on H100). Planned here for that case: one image per chunk, scratch within
    # max(budget, one image).
    (plan,) = run("drive_padnet", [padnet_case(4, 256, 1024, 1024, torch.float32, plan_only=True)])
    assert int(plan["chunk"]) == 1 and int(plan["scratch_elements"]) * 4 < 256 << 20
    # Batch 1 at 112 x 48 on 132 SMs: every bneck runs many blocks (the old kernel ran one).
    (one,) = run("drive_padnet", [padnet_case(1, 1, 112, 48, torch.float32, plan_only=True)])
    assert (one["tiles"] >= 28).all(), one["tiles"]
    # A budget of 2.5 images: chunks of two images over a batch of five (the last chunk partial),
    # run under ASan with tiles split across rows and columns.
    # (The tiling depends on the images per launch: probe the per-image scratch with two.)
    (probe,) = run("drive_padnet", [padnet_case(1, 2, 24, 20, torch.float32, plan_only=True)])
    per_image = int(probe["scratch_elements"]) // int(probe["chunk"]) * 4
    case = padnet_case(1, 5, 24, 20, torch.float32, budget=per_image * 5 // 2)
    (out,) = run("drive_padnet", [case], variant="asan")
    assert int(out["chunk"]) == 2 and int(out["scratch_elements"]) * 4 <= per_image * 5 // 2
    assert (out["tiles"] > 1).all()
    taps = torch.ops.fastvision.padnet_encoder(torch.from_numpy(case["x"]), torch.from_numpy(case["params"]), 1)
    for i, want in enumerate(taps):
        torch.testing.assert_close(torch.from_numpy(out[f"t{i + 1}"]), want, **TOL[torch.float32])
