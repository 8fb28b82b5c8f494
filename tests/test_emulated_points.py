"""The CUDA point kernels (fps_kernels.cuh, knn_kernels.cuh, nn_distance_kernels.cuh), run on the
CPU by the emulator and compared bit for bit with the CPU kernels (both use the same
round-to-nearest arithmetic)."""

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


def nn_case(B, P1, P2, D, dtype, *, norm=2, lengths1=None, lengths2=None, sms=None,
            integer=False, seed=0, **tuning):
    """tuning: NnDistanceTuning overrides (max_column_partials, max_row_partials,
    min_split_cols). integer: coordinates in {-2..2} (many exact ties)."""
    case = knn_case(B, P1, P2, D, 1, dtype, norm=norm, lengths1=lengths1, lengths2=lengths2,
                    sms=sms, integer=integer, seed=seed)
    del case["K"], case["pad"]
    case.update({k: np.array(v, dtype=np.int64) for k, v in tuning.items()})
    return case


def nn_oracle(case):
    """The CPU kernel's rule written out in numpy, for inputs the CPU op rejects (non-finite
    coordinates): distances summed in coordinate order, the first strict minimum of each row; a
    row without a distance below +inf (all +inf or NaN) gets (+inf, -1); rows past a cloud's
    length (0, -1)."""
    p1, p2, norm = case["p1"], case["p2"], int(case["norm"])
    l1 = np.clip(case["lengths1"], 0, p1.shape[1])
    l2 = np.clip(case["lengths2"], 0, p2.shape[1])

    def nearest(a, c, n_a, n_c, P):
        d = np.zeros(P, a.dtype)
        i = np.full(P, -1, np.int64)
        if n_a == 0:
            return d, i
        d[:n_a] = np.inf
        if n_c == 0:
            return d, i
        diff = a[:n_a, None, :] - c[None, :n_c, :]
        terms = diff * diff if norm == 2 else np.abs(diff)
        dist = terms[..., 0]
        for k in range(1, a.shape[1]):
            dist = dist + terms[..., k]
        entered = dist < np.inf  # False for NaN
        masked = np.where(entered, dist, np.inf)
        first = masked.argmin(axis=1)
        has = entered.any(axis=1)
        d[:n_a] = np.where(has, masked[np.arange(n_a), first], np.inf)
        i[:n_a] = np.where(has, first, -1)
        return d, i

    out = [[], [], [], []]
    with np.errstate(invalid="ignore", over="ignore"):
        for b in range(p1.shape[0]):
            d12, i12 = nearest(p1[b], p2[b], l1[b], l2[b], p1.shape[1])
            d21, i21 = nearest(p2[b], p1[b], l2[b], l1[b], p2.shape[1])
            for lst, v in zip(out, (d12, i12, d21, i21)):
                lst.append(v)
    return [np.stack(v) for v in out]


def with_duplicates(case):
    """p2 repeats points of p1 (distance 0 to several columns, and several rows)."""
    p1, p2 = case["p1"].copy(), case["p2"].copy()
    n = min(p1.shape[1], p2.shape[1]) // 3
    p2[:, 2 * n:3 * n] = p1[:, :n]
    p2[:, :n] = p1[:, :n]
    p1[:, -n:] = p1[:, :n]
    return dict(case, p1=p1, p2=p2)


def with_non_finite(case):
    """+-inf and NaN coordinates: a row all NaN (never enters), +inf columns (inf or NaN
    distances), single non-finite coordinates."""
    p1, p2 = case["p1"].copy(), case["p2"].copy()
    p1[0, 3, :] = np.nan
    p1[0, 5, 1] = np.inf
    p1[0, 70, 0] = -np.inf
    p2[0, 7, :] = np.inf
    p2[0, 9, 0] = np.nan
    p2[0, 66, 2] = -np.inf
    return dict(case, p1=p1, p2=p2)


def nn_cases(dtype, small):
    """Row groups of one pass and of several (memory-bounded), one split and the column split,
    P1 / P2 off the 64-point tiles, ragged and empty clouds, ties (integer coordinates,
    duplicates) across row groups, passes, tiles and splits, D = 3 (compile-time), 1, 2, 5 and
    40 (three staged coordinate chunks), norms 1 and 2."""
    if small:  # the sanitizer builds: every fiber switch is slow
        return [
            nn_case(2, 70, 90, 3, dtype, lengths1=[70, 33], lengths2=[90, 0], integer=True),
            nn_case(1, 20, 200, 3, dtype, integer=True, sms=4, min_split_cols=64, seed=1),
            nn_case(1, 150, 40, 2, dtype, norm=1, integer=True, max_column_partials=40, seed=2),
            nn_case(1, 30, 40, 19, dtype, seed=3),
        ]
    return [
        nn_case(2, 150, 200, 3, dtype, lengths1=[150, 70], lengths2=[200, 9]),
        nn_case(1, 200, 170, 3, dtype, integer=True, seed=1),  # ties across row groups, tiles
        nn_case(1, 130, 150, 3, dtype, norm=1, integer=True, seed=2),
        # The column split: few blocks, ties across splits.
        nn_case(1, 40, 700, 3, dtype, integer=True, sms=8, min_split_cols=64, seed=3),
        nn_case(2, 100, 500, 3, dtype, lengths1=[100, 65], lengths2=[130, 500], sms=2, seed=4),
        # Several passes per row group (the column-partial budget), ties across passes.
        nn_case(2, 300, 100, 3, dtype, integer=True, max_column_partials=400, seed=5),
        nn_case(1, 333, 90, 3, dtype, lengths1=[300], max_column_partials=90, seed=6),
        # Both at once, generic D.
        nn_case(1, 200, 300, 4, dtype, integer=True, sms=2, min_split_cols=64,
                max_column_partials=600, seed=7),
        # Run-time D: 1, 2, 5 (one chunk), 40 (chunks of 16, 16, 8).
        nn_case(1, 65, 64, 1, dtype, integer=True, seed=8),
        nn_case(2, 90, 80, 2, dtype, norm=1, lengths1=[90, 1], lengths2=[1, 80], seed=9),
        nn_case(1, 64, 129, 5, dtype, seed=10),
        nn_case(1, 70, 75, 40, dtype, integer=True, seed=11),
        # Empty clouds (each side) and single points.
        nn_case(3, 80, 60, 3, dtype, lengths1=[0, 80, 5], lengths2=[60, 0, 1], seed=12),
        nn_case(3, 1, 1, 3, dtype, seed=13),
        nn_case(2, 0, 10, 3, dtype, seed=14),
        nn_case(2, 10, 0, 3, dtype, seed=15),
        with_duplicates(nn_case(1, 190, 150, 3, dtype, seed=16)),
        with_duplicates(nn_case(2, 150, 250, 3, dtype, norm=1, sms=2, min_split_cols=64,
                                max_column_partials=500, seed=17)),
    ]


def assert_nn_equal(out, expected, n):
    for name, value in zip(("d12", "i12", "d21", "i21"), expected):
        np.testing.assert_array_equal(out[name], value, err_msg=f"case {n}: {name}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant,schedule,block_order", RUNS)
def test_nn_distance_matches_cpu(variant, schedule, block_order, dtype):
    small = variant != "plain"
    cases = nn_cases(dtype, small)
    non_finite = [with_non_finite(nn_case(1, 80, 70, 3, dtype, seed=20)),
                  with_non_finite(nn_case(1, 90, 80, 3, dtype, norm=1, sms=2, min_split_cols=64,
                                          max_column_partials=80, seed=21))]
    outs = run("drive_nn_distance", cases + non_finite, variant=variant, schedule=schedule,
               block_order=block_order)
    for n, (case, out) in enumerate(zip(cases, outs)):
        expected = nn_distance_cpu(case)
        assert_nn_equal(out, expected, n)
        if not small:  # the oracle of the non-finite cases agrees with the CPU kernel
            assert_nn_equal(out, nn_oracle(case), n)
    # The CPU op rejects non-finite coordinates (the CUDA op asserts asynchronously, and its
    # kernels still run): compared with the CPU kernel's rule.
    for n, (case, out) in enumerate(zip(non_finite, outs[len(cases):]), len(cases)):
        assert_nn_equal(out, nn_oracle(case), n)
        assert np.isinf(out["d12"]).any() and (out["i12"] == -1).any()
    plans = {(int(o["row_groups"]) > 1, int(o["rows_per_group"]) > 64, int(o["splits"]) > 1)
             for o in outs}
    assert {p[0] for p in plans} == {p[1] for p in plans} == {p[2] for p in plans} == {True, False}
    if not small:
        assert {int(o["dim_chunk"]) for o in outs} == {1, 2, 3, 4, 5, 16}


# The production plan at sizes too large to emulate: (GPU, B, P1, P2, D) -> (row groups, rows per
# group, splits, columns per split).
@pytest.mark.parametrize("gpu,shape,expected", [
    ("H100", (32, 2048, 1024, 3), (32, 64, 1, 1024)),     # Chamfer: one pass per row group
    ("H100", (32, 1024, 2048, 3), (16, 64, 1, 2048)),
    ("H100", (32, 1024, 64, 3), (16, 64, 1, 64)),         # SampleNet's projection size
    ("H100", (1, 100_000, 100_000, 3), (41, 2496, 13, 7744)),  # the partial budget: passes
    ("A100", (1, 2048, 2048, 3), (32, 64, 8, 256)),       # few blocks: the column split
    ("H100", (1, 64, 1_000_000, 3), (1, 64, 521, 1920)),
    ("H100", (1, 10_000_000, 10_000, 3), (419, 23872, 1, 10048)),
])
def test_nn_distance_plan(gpu, shape, expected):
    (out,) = run("drive_nn_distance", [{"plan_shape": np.array(shape, dtype=np.int64)}], gpu=gpu)
    got = (int(out["row_groups"]), int(out["rows_per_group"]), int(out["splits"]),
           int(out["cols_per_split"]))
    assert got == expected
