"""Property-based fuzzing of the point ops: the public wrappers, the raw ``torch.ops.fastvision``
ops (what ``torch.compile`` and users reach without the Python checks) and the PyTorch3D compat
layer. Draws shapes (0 and 1 included), dtypes, strides (transposed, batch-expanded), devices
(a ``meta`` tensor among CPU ones), values (1e-30, 1e18, NaN, inf, 1e19), out-of-range and
ill-typed lengths, K beyond the cloud. Every draw runs in a worker process (``fuzz_harness``):
a crash fails the test with its input. A valid draw must equal the oracle of
``fastvision.ops._reference`` exactly (all paths compute the same expression); an invalid one
must raise a ValueError/RuntimeError/TypeError naming the op and the argument."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_harness import Worker, check, long_run_only

SHORT = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck),
                 derandomize=True)
LONG = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


# ---------------------------------------------------------------------------------------------
# Drawing (test process): plain data, plus the list of arguments the draw made invalid.

LENGTH_KINDS = ["none", "none", "valid", "valid", "negative", "too_long", "list", "int32", "meta"]


@st.composite
def cloud_spec(draw, name, B, P, D, dtype):
    spec = {"P": P, "layout": draw(st.sampled_from(["contiguous", "transposed", "expanded"])),
            "values": draw(st.sampled_from(["normal", "normal", "tiny", "large"])),
            # A meta cloud beside a CPU one (an all-meta call is a valid shape computation).
            "special": None, "meta": name == "p2" and draw(st.booleans()) and draw(st.booleans())}
    invalid = []
    if B * P * D > 0 and draw(st.integers(0, 3)) == 0:
        spec["special"] = draw(st.sampled_from(["nan", "inf", "1e19"]))
        if spec["special"] != "1e19" or dtype == "float32":  # 1e19 is within float64's bound
            invalid.append(name)
    if spec["meta"]:
        invalid.append(name)
    return spec, invalid


def lengths_kind(draw, B, name, compat):
    kind = draw(st.sampled_from(LENGTH_KINDS))
    if B == 0 and kind in ("negative", "too_long"):
        kind = "valid"
    bad = kind in ("negative", "too_long", "list", "meta") or (kind == "int32" and not compat)
    return kind, [name] if bad else []


@st.composite
def knn_cases(draw):
    api = draw(st.sampled_from(["public", "raw", "compat"]))
    B, P1, P2 = draw(st.sampled_from([0, 1, 2, 3])), draw(st.sampled_from([0, 1, 2, 5])), draw(st.sampled_from([0, 1, 3, 7]))
    D, K = draw(st.sampled_from([1, 2, 3, 4])), draw(st.sampled_from([1, 2, 3, 8]))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    p1, bad1 = draw(cloud_spec("p1", B, P1, D, dtype))
    p2, bad2 = draw(cloud_spec("p2", B, P2, D, dtype))
    l1, badl1 = lengths_kind(draw, B, "lengths1", api == "compat")
    l2, badl2 = lengths_kind(draw, B, "lengths2", api == "compat")
    case = {"seed": draw(st.integers(0, 2**31 - 1)), "api": api, "B": B, "D": D, "K": K,
            "dtype": dtype, "norm": draw(st.sampled_from([1, 2])),
            "method": draw(st.sampled_from(["auto", "brute_force", "kdtree"])),
            "p1": p1, "p2": p2, "lengths1": l1, "lengths2": l2}
    invalid = bad1 + bad2 + badl1 + badl2 + (["K"] if K > P2 and api != "compat" else [])
    return case, invalid


# ---------------------------------------------------------------------------------------------
# Building and checking (worker process).


def make_cloud(spec, B, D, dtype, g):
    P = spec["P"]
    scale = {"normal": 1.0, "tiny": 1e-30, "large": 1e18}[spec["values"]]
    dt = getattr(torch, dtype)
    if spec["layout"] == "transposed":
        x = (torch.rand(B, D, P, generator=g, dtype=torch.float64) * 2 - 1).to(dt).transpose(1, 2)
    elif spec["layout"] == "expanded" and B > 0:
        x = (torch.rand(1, P, D, generator=g, dtype=torch.float64) * 2 - 1).to(dt).expand(B, P, D)
    else:
        x = (torch.rand(B, P, D, generator=g, dtype=torch.float64) * 2 - 1).to(dt)
    x = x * scale
    if spec["special"] is not None:
        x = x.clone()  # keeps the strides of the layout
        flat = torch.randint(0, x.numel(), (1,), generator=g).item()
        x[torch.unravel_index(torch.tensor(flat), x.shape)] = float(spec["special"])
    return x.to("meta") if spec["meta"] else x


def make_lengths(kind, B, P, g, low=0):
    if kind == "none":
        return None
    valid = torch.randint(low, P + 1, (B,), generator=g)
    if kind == "negative":
        valid[torch.randint(0, B, (1,), generator=g)] = -1
    elif kind == "too_long":
        valid[torch.randint(0, B, (1,), generator=g)] = P + 1
    elif kind == "list":
        return valid.tolist()
    elif kind == "int32":
        return valid.to(torch.int32)
    elif kind == "meta":
        return valid.to("meta")
    return valid


def same(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def run_knn(case):
    import fastvision.ops as ops
    from fastvision.compat import pytorch3d as p3d
    from fastvision.ops import _reference as ref

    g = torch.Generator().manual_seed(case["seed"])
    B, D, K = case["B"], case["D"], case["K"]
    p1 = make_cloud(case["p1"], B, D, case["dtype"], g)
    p2 = make_cloud(case["p2"], B, D, case["dtype"], g)
    l1 = make_lengths(case["lengths1"], B, case["p1"]["P"], g)
    l2 = make_lengths(case["lengths2"], B, case["p2"]["P"], g)
    norm, api = case["norm"], case["api"]
    if api == "public":
        dists, idx = ops.knn_points(p1, p2, K, l1, l2, norm=norm, method=case["method"])
    elif api == "raw":
        code = {"auto": -1, "brute_force": 0, "kdtree": 1}[case["method"]]
        dists, idx = torch.ops.fastvision.knn_points(p1, p2, l1, l2, K, norm, True, code)
    else:
        dists, idx, _ = p3d.knn_points(p1, p2, l1, l2, norm=norm, K=K)
    as64 = lambda lengths: None if lengths is None else lengths.to(torch.int64)  # noqa: E731
    want_d, want_i = ref.knn_points(p1, p2, min(K, p2.shape[1]), as64(l1), as64(l2), norm)
    if api == "compat":  # PyTorch3D's padding: 0 / 0, and K beyond P2 allowed
        pad = want_i < 0
        want_d, want_i = want_d.masked_fill(pad, 0), want_i.masked_fill(pad, 0)
        extra = K - want_i.shape[2]
        want_d = torch.cat([want_d, want_d.new_zeros(B, p1.shape[1], extra)], 2)
        want_i = torch.cat([want_i, want_i.new_zeros(B, p1.shape[1], extra)], 2)
    same(idx, want_i)
    same(dists, want_d)


@given(knn_cases())
@SHORT
def test_fuzz_knn_points(worker, drawn):
    case, invalid = drawn
    check(worker, "test_fuzz_points:run_knn", case, ("knn_points", "nn_distance"), invalid)


@pytest.mark.slow
@given(knn_cases())
@LONG
def test_fuzz_knn_points_long(request, worker, drawn):
    long_run_only(request)
    case, invalid = drawn
    check(worker, "test_fuzz_points:run_knn", case, ("knn_points", "nn_distance"), invalid)


# ---------------------------------------------------------------------------------------------
# nn_distance and chamfer_distance (public, raw, compat).


@st.composite
def nn_cases(draw):
    api = draw(st.sampled_from(["public", "raw", "chamfer", "compat_chamfer"]))
    B, P1, P2 = draw(st.sampled_from([0, 1, 2, 3])), draw(st.sampled_from([0, 1, 2, 5])), draw(st.sampled_from([0, 1, 3, 7]))
    D = draw(st.sampled_from([1, 2, 3, 4]))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    p1, bad1 = draw(cloud_spec("p1", B, P1, D, dtype))
    p2, bad2 = draw(cloud_spec("p2", B, P2, D, dtype))
    compat = api == "compat_chamfer"
    l1, badl1 = lengths_kind(draw, B, "lengths1", compat)
    l2, badl2 = lengths_kind(draw, B, "lengths2", compat)
    case = {"seed": draw(st.integers(0, 2**31 - 1)), "api": api, "B": B, "D": D, "dtype": dtype,
            "norm": draw(st.sampled_from([1, 2])), "method": draw(st.sampled_from(["auto", "brute_force", "kdtree"])),
            "p1": p1, "p2": p2, "lengths1": l1, "lengths2": l2}
    invalid = bad1 + bad2 + badl1 + badl2
    if compat:  # the compat layer's own checks use PyTorch3D's argument names
        invalid += [{"lengths1": "x_lengths", "lengths2": "y_lengths"}[n] for n in badl1 + badl2]
    return case, invalid


def run_nn(case):
    import fastvision.ops as ops
    from fastvision.compat import pytorch3d as p3d
    from fastvision.ops import _reference as ref

    g = torch.Generator().manual_seed(case["seed"])
    B, D = case["B"], case["D"]
    p1 = make_cloud(case["p1"], B, D, case["dtype"], g)
    p2 = make_cloud(case["p2"], B, D, case["dtype"], g)
    l1 = make_lengths(case["lengths1"], B, case["p1"]["P"], g)
    l2 = make_lengths(case["lengths2"], B, case["p2"]["P"], g)
    norm, api = case["norm"], case["api"]
    # The op first: on an invalid input it must raise before the oracle would.
    if api == "public":
        got = ops.nn_distance(p1, p2, l1, l2, norm=norm, method=case["method"])
    elif api == "raw":
        code = {"auto": -1, "brute_force": 0, "kdtree": 1}[case["method"]]
        got = torch.ops.fastvision.nn_distance(p1, p2, l1, l2, norm, code)
    elif api == "chamfer":
        got = ops.chamfer_distance(p1, p2, l1, l2, reduction="none", norm=norm)
    else:
        loss, _ = p3d.chamfer_distance(p1, p2, l1, l2, norm=norm)
    as64 = lambda lengths: None if lengths is None else lengths.to(torch.int64)  # noqa: E731
    want = ref.nn_distance(p1, p2, as64(l1), as64(l2), norm)
    if api in ("public", "raw"):
        for a, b in zip(got, want):
            same(a, b)
        return
    if api == "chamfer":
        torch.testing.assert_close(got, ref.chamfer_distance(p1, p2, l1, l2, norm))
        return
    # PyTorch3D: a point facing an empty cloud counts 0; means over max(length, 1) and max(N, 1).
    n1 = as64(l1) if l1 is not None else torch.full((B,), p1.shape[1])
    n2 = as64(l2) if l2 is not None else torch.full((B,), p2.shape[1])
    d12, d21 = want[0].masked_fill(torch.isinf(want[0]), 0), want[2].masked_fill(torch.isinf(want[2]), 0)
    per_cloud = d12.sum(1) / n1.clamp(min=1) + d21.sum(1) / n2.clamp(min=1)
    torch.testing.assert_close(loss, per_cloud.sum() / max(B, 1))


@given(nn_cases())
@SHORT
def test_fuzz_nn_distance_and_chamfer(worker, drawn):
    case, invalid = drawn
    check(worker, "test_fuzz_points:run_nn", case, ("nn_distance", "chamfer_distance"), invalid)


@pytest.mark.slow
@given(nn_cases())
@LONG
def test_fuzz_nn_distance_and_chamfer_long(request, worker, drawn):
    long_run_only(request)
    case, invalid = drawn
    check(worker, "test_fuzz_points:run_nn", case, ("nn_distance", "chamfer_distance"), invalid)


# ---------------------------------------------------------------------------------------------
# farthest_point_sample (public, raw, compat).


@st.composite
def fps_cases(draw):
    api = draw(st.sampled_from(["public", "raw", "compat"]))
    B, P, D = draw(st.sampled_from([0, 1, 2, 3])), draw(st.sampled_from([0, 1, 2, 6, 9])), draw(st.sampled_from([1, 2, 3, 5]))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    # The compat layer samples in float32 (as PyTorch3D), so float32's bound applies to it.
    points, bad = draw(cloud_spec("points", B, P, D, dtype if api != "compat" else "float32"))
    kind, badl = lengths_kind(draw, B, "lengths", api == "compat")
    K = draw(st.sampled_from([0, 1, 2, 4, 10]))
    start = draw(st.sampled_from(["default", "index", "seeds", "bad_seeds"])) if api != "compat" else "default"
    invalid = bad + badl
    if api == "public" and K > P:  # the raw op and the compat layer pad with -1 instead
        invalid.append("K")
    if start == "bad_seeds" and B > 0:
        invalid.append("start")
    case = {"seed": draw(st.integers(0, 2**31 - 1)), "api": api, "B": B, "D": D, "K": K, "dtype": dtype,
            "points": points, "lengths": kind, "start": start, "method": draw(st.sampled_from(["auto", "scan", "buckets"]))}
    return case, invalid


def run_fps(case):
    import fastvision.ops as ops
    from fastvision.compat import pytorch3d as p3d
    from fastvision.ops import _reference as ref

    g = torch.Generator().manual_seed(case["seed"])
    B, D, K = case["B"], case["D"], case["K"]
    P = case["points"]["P"]
    pts = make_cloud(case["points"], B, D, case["dtype"], g)
    # The public wrapper rejects K beyond a length (tested elsewhere): valid lengths hold K.
    lengths = make_lengths(case["lengths"], B, P, g, low=min(K, P) if case["api"] == "public" else 0)
    lens = lengths.to(torch.int64) if isinstance(lengths, torch.Tensor) and lengths.device.type == "cpu" else None
    if case["api"] == "compat":
        _, idx = p3d.sample_farthest_points(pts, lengths, K)
        want_k = K
        limit = lens if lens is not None else torch.full((B,), P)
        # PyTorch3D: -1 past min(K, length), and float32 sampling.
        want, _ = ref.farthest_point_sample(pts.float(), min(K, P), lens, torch.where(limit > 0, 0, -1).unsqueeze(1))
        want = torch.cat([want, want.new_full((B, want_k - want.shape[1]), -1)], 1)
        same(idx, want)
        return
    n = lens if lens is not None else torch.full((B,), P)
    if case["start"] == "index":
        start = 0
    elif case["start"] in ("seeds", "bad_seeds"):
        start = torch.stack([torch.randint(-1, max(int(m), 1), (2,), generator=g) if m > 0 else torch.full((2,), -1)
                             for m in n]) if B > 0 else torch.zeros(0, 2, dtype=torch.int64)
        if case["start"] == "bad_seeds" and B > 0:
            start[0, 1] = P + 3
    else:
        start = None
    if case["api"] == "public":
        idx = ops.farthest_point_sample(pts, K, lengths, **({} if start is None else {"start": start}),
                                        method=case["method"])
    else:
        seeds = start if isinstance(start, torch.Tensor) else torch.zeros(B, 1, dtype=torch.int64)
        if lens is not None and not isinstance(start, torch.Tensor):
            seeds = torch.where(lens.unsqueeze(1) > 0, seeds, -1)
        if P == 0 and not isinstance(start, torch.Tensor):
            seeds = torch.full((B, 1), -1)
        code = {"auto": -1, "scan": 0, "buckets": 1}[case["method"]]
        idx, _ = torch.ops.fastvision.farthest_point_sample(pts, lengths, K, seeds, code)
    seeds = start if isinstance(start, torch.Tensor) else None
    if seeds is None:
        seeds = torch.where(n.unsqueeze(1) > 0, 0, -1) if B > 0 else torch.zeros(0, 1, dtype=torch.int64)
    want, _ = ref.farthest_point_sample(pts, K, lens, seeds)
    same(idx, want)


@given(fps_cases())
@SHORT
def test_fuzz_farthest_point_sample(worker, drawn):
    case, invalid = drawn
    check(worker, "test_fuzz_points:run_fps", case, ("farthest_point_sample", "sample_farthest_points"), invalid)


@pytest.mark.slow
@given(fps_cases())
@LONG
def test_fuzz_farthest_point_sample_long(request, worker, drawn):
    long_run_only(request)
    case, invalid = drawn
    check(worker, "test_fuzz_points:run_fps", case, ("farthest_point_sample", "sample_farthest_points"), invalid)


# ---------------------------------------------------------------------------------------------
# knn_gather (public, compat): padding, inf/NaN features, bad indices, empty clouds.


@st.composite
def gather_cases(draw):
    api = draw(st.sampled_from(["public", "compat"]))
    B, N, P, K, F = (draw(st.sampled_from(v)) for v in ([0, 1, 2], [0, 1, 4], [0, 1, 3], [1, 2], [1, 3]))
    idx = draw(st.sampled_from(["valid", "valid", "bad_low", "bad_high"]))
    invalid = ["idx"] if idx != "valid" and B * P * K > 0 else []
    case = {"seed": draw(st.integers(0, 2**31 - 1)), "api": api, "B": B, "N": N, "P": P, "K": K, "F": F,
            "idx": idx, "x_special": draw(st.sampled_from([None, "nan", "inf"])),
            "transposed": draw(st.booleans())}
    return case, invalid


def run_gather(case):
    import fastvision.ops as ops
    from fastvision.compat import pytorch3d as p3d
    from fastvision.ops import _reference as ref

    g = torch.Generator().manual_seed(case["seed"])
    B, N, P, K, F = case["B"], case["N"], case["P"], case["K"], case["F"]
    x = torch.rand(B, F, N, generator=g).transpose(1, 2) if case["transposed"] else torch.rand(B, N, F, generator=g)
    if case["x_special"] and x.numel() > 0:
        x = x.clone()
        x[0, 0, 0] = float(case["x_special"])
    idx = torch.randint(-1, max(N, 1), (B, P, K), generator=g) if N > 0 else torch.full((B, P, K), -1)
    if case["idx"] != "valid" and idx.numel() > 0:
        idx.view(-1)[-1] = -2 if case["idx"] == "bad_low" else max(N, 1)
    if case["api"] == "public":
        same(ops.knn_gather(x, idx), ref.knn_gather(x, idx))
    else:  # PyTorch3D also zero-fills the slots k >= M (lengths=None)
        got = p3d.knn_gather(x, idx)
        want = ref.knn_gather(x, idx)
        want[:, :, N:] = 0
        same(got, want)


@given(gather_cases())
@SHORT
def test_fuzz_knn_gather(worker, drawn):
    case, invalid = drawn
    check(worker, "test_fuzz_points:run_gather", case, "knn_gather", invalid)


@pytest.mark.slow
@given(gather_cases())
@LONG
def test_fuzz_knn_gather_long(request, worker, drawn):
    long_run_only(request)
    case, invalid = drawn
    check(worker, "test_fuzz_points:run_gather", case, "knn_gather", invalid)
