"""The CUDA point kernels (fps_kernels.cuh), run on the CPU by the emulator and compared bit for
bit with the CPU kernels (both use the same round-to-nearest arithmetic)."""

import numpy as np
import pytest
import torch

import fastvision  # noqa: F401  (registers torch.ops.fastvision)
from emulated_harness import run

pytestmark = pytest.mark.emulated

# (variant, thread schedule, block order): two schedules in the plain build, one per sanitizer.
RUNS = [
    ("plain", "forward", "forward"),
    ("plain", "random:7", "shuffle:3"),
    ("asan", "reverse", "reverse"),
    ("tsan", "random:11", "forward"),
]
FPS_PATHS = {0: "points and distances in shared memory", 1: "distances in shared memory",
             2: "distances in global memory"}


def fps_case(B, P, D, K, dtype, *, lengths=None, seeds=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    points = torch.randn(B, P, D, generator=g, dtype=dtype)
    lengths = torch.full((B,), P) if lengths is None else torch.as_tensor(lengths)
    seeds = torch.full((B, 1), -1) if seeds is None else torch.as_tensor(seeds)
    return {"points": points.numpy(), "lengths": lengths.long().numpy(),
            "seeds": seeds.long().numpy(), "K": np.array(K, dtype=np.int64)}


def fps_cpu(case):
    idx, dists = torch.ops.fastvision.farthest_point_sample(
        torch.from_numpy(case["points"]), torch.from_numpy(case["lengths"]), int(case["K"]),
        torch.from_numpy(case["seeds"]), -1)
    return idx.numpy(), dists.numpy()


def fps_cases(dtype, small):
    """Every shared-memory path, seeds (with -1 skips), random starts, ragged clouds, K > n."""
    cases = [
        fps_case(3, 70, 3, 20, dtype, lengths=[70, 33, 0], seeds=[[5, -1], [-1, 2], [-1, -1]]),
        fps_case(2, 45, 5, 50, dtype, lengths=[45, 40], seeds=[[-1, -1], [39, 3]], seed=1),
        fps_case(1, 33, 1, 33, dtype, seeds=[[12]], seed=2),
    ]
    if not small:
        # Random start indices, as fastvision.ops.farthest_point_sample(random_start=True) draws.
        cases.append(fps_case(2, 300, 3, 40, dtype, seeds=[[17], [250]], seed=3))
        # The points do not fit in shared memory beside the distances: path 1.
        cases.append(fps_case(1, 1200, 64, 12, dtype, lengths=[1100], seed=4))
        # Not even the distances fit: path 2 (global scratch).
        cases.append(fps_case(1, 60000 if dtype == torch.float32 else 30000, 1, 5, dtype, seed=5))
    return cases


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant,schedule,block_order", RUNS)
def test_fps_matches_cpu(variant, schedule, block_order, dtype):
    cases = fps_cases(dtype, small=variant != "plain")
    outs = run("drive_fps", cases, variant=variant, schedule=schedule, block_order=block_order)
    for n, (case, out) in enumerate(zip(cases, outs)):
        idx, dists = fps_cpu(case)
        np.testing.assert_array_equal(out["idx"], idx, err_msg=f"case {n}")
        np.testing.assert_array_equal(out["dists"], dists, err_msg=f"case {n}")
    paths = {int(o["path"]) for o in outs}
    if variant == "plain":
        assert paths == set(FPS_PATHS), f"paths covered: {paths}"


# Issue 13, section 4 item 1: clouds whose dynamic shared memory is just under 48 KiB but whose
# static + dynamic is above it; the launch must opt in or a real GPU refuses it.
@pytest.mark.parametrize("gpu,dtype,P", [
    ("H100", torch.float32, 3025), ("H100", torch.float32, 3072), ("H100", torch.float64, 1520),
    ("A100", torch.float32, 3040), ("A100", torch.float32, 12200), ("A100", torch.float64, 6100),
])
def test_fps_window_static_plus_dynamic_shared_memory(gpu, dtype, P):
    case = fps_case(1, P, 3, 3, dtype, seed=P)
    (out,) = run("drive_fps", [case], gpu=gpu)
    idx, dists = fps_cpu(case)
    np.testing.assert_array_equal(out["idx"], idx)
    np.testing.assert_array_equal(out["dists"], dists)
