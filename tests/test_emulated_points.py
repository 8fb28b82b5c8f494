"""The CUDA point kernels (fps_kernels.cuh, knn_kernels.cuh), run on the CPU by the emulator and
compared bit for bit with the CPU kernels (both use the same round-to-nearest arithmetic)."""

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


def fps_case(B, P, D, K, dtype, *, lengths=None, seeds=None, seed=0, grid=False, **plan):
    """plan: FpsTuning overrides (multi_block_min_points, min_points_per_block, max_dynamic_smem)
    and sms, the SM count the plan sees. grid: points on a 3-per-axis lattice (many exact ties)."""
    g = torch.Generator().manual_seed(seed)
    if grid:
        points = torch.randint(0, 3, (B, P, D), generator=g).to(dtype)
    else:
        points = torch.randn(B, P, D, generator=g, dtype=dtype)
    lengths = torch.full((B,), P) if lengths is None else torch.as_tensor(lengths)
    seeds = torch.full((B, 1), -1) if seeds is None else torch.as_tensor(seeds)
    case = {"points": points.numpy(), "lengths": lengths.long().numpy(),
            "seeds": seeds.long().numpy(), "K": np.array(K, dtype=np.int64)}
    case.update({k: np.array(v, dtype=np.int64) for k, v in plan.items()})
    return case


# Planning overrides that send clouds of a few hundred points down the multi-block path (the
# production threshold is 16384 points per cloud), in blocks of 64-128 threads.
MULTI = {"multi_block_min_points": 64, "min_points_per_block": 100}
# Blocks of 64 threads, for the sanitizer builds.
MULTI_SMALL = {"multi_block_min_points": 64, "min_points_per_block": 50}
# The one-block-per-cloud path at any size.
SINGLE = {"multi_block_min_points": 2**62}


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
        # Not even the distances fit: path 2 (global scratch), kept to one block per cloud.
        cases.append(fps_case(1, 60000 if dtype == torch.float32 else 30000, 1, 5, dtype, seed=5,
                              **SINGLE))
    # The multi-block path: one cloud over 5 blocks; ragged clouds (one shorter than a chunk,
    # one empty) with seeds over 4 blocks each, K past a cloud's length; ties on a lattice
    # (the lowest index must win across blocks); generic D.
    # (Smaller in the sanitizer builds, where every fiber switch is slow.)
    if small:
        cases += [
            fps_case(1, 150, 3, 12, dtype, seed=10, **MULTI_SMALL),
            fps_case(3, 100, 3, 35, dtype, lengths=[100, 30, 0], seeds=[[5, 70], [-1, 29], [-1, -1]],
                     seed=11, sms=6, **MULTI_SMALL),
            fps_case(1, 120, 3, 15, dtype, seed=12, grid=True, **MULTI_SMALL),
        ]
    else:
        cases += [
            fps_case(1, 450, 3, 30, dtype, seed=10, **MULTI),
            fps_case(3, 380, 3, 90, dtype, lengths=[380, 70, 0],
                     seeds=[[5, 300], [-1, 69], [-1, -1]], seed=11, sms=12, **MULTI),
            fps_case(1, 400, 3, 40, dtype, seed=12, grid=True, **MULTI),
            fps_case(2, 350, 5, 25, dtype, lengths=[350, 340], seeds=[[-1], [339]], seed=13,
                     **MULTI),
            # Multi-block with the min-distances only in shared memory (path 1), and in global
            # memory (path 2).
            fps_case(1, 500, 3, 20, dtype, seed=14, max_dynamic_smem=1024, **MULTI),
            fps_case(1, 500, 3, 20, dtype, seed=15, max_dynamic_smem=0, **MULTI),
        ]
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
    multi_paths = {int(o["path"]) for o in outs if int(o["blocks_per_cloud"]) > 1}
    assert {int(o["blocks_per_cloud"]) > 1 for o in outs} == {True, False}
    if variant == "plain":
        assert paths == set(FPS_PATHS), f"paths covered: {paths}"
        assert multi_paths == set(FPS_PATHS), f"multi-block paths covered: {multi_paths}"


# The production plan (default FpsTuning) at sizes too large to emulate: (GPU, B, P, D) ->
# (blocks per cloud, shared-memory path, threads).
@pytest.mark.parametrize("gpu,shape,expected", [
    ("H100", (1, 1_000_000, 3), (132, 0, 1024)),   # 7576 points per block, all in shared memory
    ("A100", (1, 1_000_000, 3), (108, 0, 1024)),
    ("H100", (1, 100_000, 3), (98, 0, 1024)),      # at least 1024 points per block
    ("H100", (2, 100_000, 3), (66, 0, 1024)),
    ("H100", (4, 16_384, 3), (16, 0, 1024)),       # the threshold
    ("H100", (4, 16_383, 3), (1, 1, 1024)),        # just below it: one block per cloud
    ("H100", (32, 1024, 3), (1, 0, 1024)),         # SampleNet-size clouds: one block per cloud
    ("H100", (66, 100_000, 3), (2, 1, 1024)),
    ("H100", (67, 100_000, 3), (1, 2, 1024)),      # more clouds than half the SMs
    ("H100", (1, 10_000_000, 3), (132, 2, 1024)),  # 75758 points per block: global scratch
])
def test_fps_plan_chooses_multi_block_by_size(gpu, shape, expected):
    (out,) = run("drive_fps", [{"plan_shape": np.array(shape, dtype=np.int64)}], gpu=gpu)
    assert (int(out["blocks_per_cloud"]), int(out["path"]), int(out["threads"])) == expected


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


def knn_case(B, P1, P2, D, K, dtype, *, norm=2, lengths1=None, lengths2=None, sms=None, pad=np.inf,
             integer=False, backward=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    if integer:  # many exact ties
        p1 = torch.randint(-2, 3, (B, P1, D), generator=g).to(dtype)
        p2 = torch.randint(-2, 3, (B, P2, D), generator=g).to(dtype)
    else:
        p1 = torch.randn(B, P1, D, generator=g, dtype=dtype)
        p2 = torch.randn(B, P2, D, generator=g, dtype=dtype)
    case = {
        "p1": p1.numpy(), "p2": p2.numpy(),
        "lengths1": np.array(lengths1 if lengths1 is not None else [P1] * B, dtype=np.int64),
        "lengths2": np.array(lengths2 if lengths2 is not None else [P2] * B, dtype=np.int64),
        "K": np.array(K, dtype=np.int64), "norm": np.array(norm, dtype=np.int64),
        "pad": np.array(pad, dtype=np.float64),
    }
    if sms is not None:
        case["sms"] = np.array(sms, dtype=np.int64)
    if backward:
        _, idx = knn_cpu(case)
        case["bidx"] = idx
        case["grad"] = torch.randn(idx.shape, generator=g, dtype=dtype).numpy()
    return case


def knn_cpu(case):
    dists, idx = torch.ops.fastvision.knn_points(
        torch.from_numpy(case["p1"]), torch.from_numpy(case["p2"]),
        torch.from_numpy(case["lengths1"]), torch.from_numpy(case["lengths2"]), int(case["K"]),
        int(case["norm"]), True, 0)
    return dists.numpy(), idx.numpy()


def knn_cases(dtype, small):
    """Register (capacities 1..32) and global top-K, split + merge and one split, D = 3 and
    generic D (tiled and read from global memory), norms 1 and 2, ragged clouds, ties."""
    cases = [
        knn_case(2, 37, 300, 3, 1, dtype, lengths1=[37, 20], lengths2=[300, 5], sms=1,
                 backward=True),
        knn_case(2, 37, 300, 3, 5, dtype, norm=1, lengths2=[300, 3], backward=True),  # split
        knn_case(1, 50, 60, 7, 20, dtype, integer=True, sms=1, backward=True, seed=1),
        knn_case(1, 20, 90, 3, 40, dtype, seed=2, backward=True),  # global top-K, split
    ]
    if not small:
        cases += [
            knn_case(3, 300, 700, 3, 8, dtype, lengths1=[300, 0, 129], lengths2=[700, 650, 8],
                     sms=2, seed=3),
            knn_case(1, 64, 2000, 3, 16, dtype, norm=1, seed=4, backward=True),
            knn_case(1, 40, 33, 3, 33, dtype, integer=True, seed=5),  # global top-K, ties
            knn_case(1, 9, 40, 9000 if dtype == torch.float32 else 4500, 3, dtype, seed=6,
                     backward=True),  # points too large for a shared tile
            knn_case(1, 30, 500, 12, 2, dtype, norm=1, sms=1, seed=7),
        ]
    return cases


def nn_distance_cpu(case):
    out = torch.ops.fastvision.nn_distance(
        torch.from_numpy(case["p1"]), torch.from_numpy(case["p2"]),
        torch.from_numpy(case["lengths1"]), torch.from_numpy(case["lengths2"]),
        int(case["norm"]), 0)
    return [t.numpy() for t in out]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant,schedule,block_order", RUNS)
def test_knn_matches_cpu(variant, schedule, block_order, dtype):
    cases = knn_cases(dtype, small=variant != "plain")
    outs = run("drive_knn", cases, variant=variant, schedule=schedule, block_order=block_order)
    for n, (case, out) in enumerate(zip(cases, outs)):
        dists, idx = knn_cpu(case)
        np.testing.assert_array_equal(out["idx"], idx, err_msg=f"case {n}")
        np.testing.assert_array_equal(out["dists"], dists, err_msg=f"case {n}")
        if "grad" not in case:
            continue
        g1, g2 = torch.ops.fastvision._knn_points_backward(
            torch.from_numpy(case["p1"]), torch.from_numpy(case["p2"]),
            torch.from_numpy(case["bidx"]), torch.from_numpy(case["grad"]), int(case["norm"]))
        np.testing.assert_array_equal(out["grad_p1"], g1.numpy(), err_msg=f"case {n}")
        if (schedule, block_order) == ("forward", "forward"):
            # Threads run in query order, so the atomicAdds land in the CPU's order.
            np.testing.assert_array_equal(out["grad_p2"], g2.numpy(), err_msg=f"case {n}")
        else:
            np.testing.assert_allclose(out["grad_p2"], g2.numpy(), rtol=1e-5, atol=1e-5,
                                       err_msg=f"case {n}")
    if variant == "plain":
        assert {int(o["splits"]) > 1 for o in outs} == {True, False}
        assert {int(o["register_capacity"]) for o in outs} == {0, 1, 2, 4, 8, 16, 32}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant,schedule,block_order", [RUNS[1], RUNS[2]])
def test_nn_distance_matches_cpu(variant, schedule, block_order, dtype):
    # nn_distance on CUDA is the K = 1 search in both directions with pad 0 (nn_distance_cuda.cu).
    cases = [knn_case(2, 50, 70, 3, 1, dtype, lengths1=[50, 0], lengths2=[70, 9], pad=0.0),
             knn_case(1, 300, 4, 5, 1, dtype, norm=1, pad=0.0, seed=1)]
    flipped = [dict(c, p1=c["p2"], p2=c["p1"], lengths1=c["lengths2"], lengths2=c["lengths1"])
               for c in cases]
    outs = run("drive_knn", cases + flipped, variant=variant, schedule=schedule,
               block_order=block_order)
    for n, case in enumerate(cases):
        d12, i12, d21, i21 = nn_distance_cpu(case)
        fwd, back = outs[n], outs[n + len(cases)]
        np.testing.assert_array_equal(fwd["dists"][..., 0], d12, err_msg=f"case {n}")
        np.testing.assert_array_equal(fwd["idx"][..., 0], i12, err_msg=f"case {n}")
        np.testing.assert_array_equal(back["dists"][..., 0], d21, err_msg=f"case {n}")
        np.testing.assert_array_equal(back["idx"][..., 0], i21, err_msg=f"case {n}")
