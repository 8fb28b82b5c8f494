"""Property-based fuzzing of ``patch_conv2d``, ``soft_project`` and ``padnet_encoder`` (public wrappers and raw ops):
shapes (0 and 1 included), dtypes, geometry far out of range (2**62), strides of the hypernetwork
weight (sliced, permuted), a ``meta`` tensor among CPU ones, NaN / inf / 1e19 values, bad
temperatures, images with an empty spatial axis. Each draw runs in a worker process
(``fuzz_harness``), so a crash fails the test with its input. A valid draw must equal the oracle
of ``fastvision.ops._reference``; an invalid one must raise a ValueError/RuntimeError/TypeError
naming the op and the argument."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_harness import Worker, check, long_run_only

SHORT = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck),
                 derandomize=True)
LONG = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
SIDES = [0, 1, 2, 5, 8]
HUGE = 2**62


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


def same_or_close(got, want, dtype):
    tol = 1e-12 if dtype == "float64" else 2e-5
    torch.testing.assert_close(got, want, rtol=tol, atol=tol, equal_nan=True)


# ---------------------------------------------------------------------------------------------
# patch_conv2d


def _out(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


@st.composite
def patch_cases(draw):
    pick = lambda values: draw(st.sampled_from(values))  # noqa: E731
    case = {"seed": draw(st.integers(0, 2**31 - 1)), "api": pick(["public", "raw"]),
            "B": pick([0, 1, 2]), "Cin": pick([0, 1, 2, 4]), "H": pick(SIDES), "W": pick(SIDES),
            "k": pick([1, 2, 3]), "stride": pick([1, 1, 2, HUGE]), "padding": pick([0, 1, 2, HUGE]),
            "dilation": pick([1, 1, 2, HUGE]), "groups": pick([1, 1, 2, 3]), "cout_g": pick([1, 2]),
            "mode": pick(["zeros", "reflect", "replicate"]), "fh": pick([1, 2, 3, 9]), "fw": pick([1, 2, 9]),
            "bias": pick(["none", "ok", "wrong_shape", "meta"]), "dtype": pick(["float32", "float64"]),
            "weight_layout": pick(["contiguous", "sliced", "permuted"]), "weight_meta": pick([False, False, True]),
            "x_special": pick([None, None, "nan", "inf", "1e-30"])}
    invalid = []
    for name in ("stride", "padding", "dilation"):
        if case[name] == HUGE:
            invalid.append(name)
    cin, g, k, d, p, s = case["Cin"], case["groups"], case["k"], case["dilation"], case["padding"], case["stride"]
    if cin == 0:
        invalid.append("x")
    elif cin % g:
        invalid.append("groups")
    if not invalid:
        if case["mode"] == "reflect" and (p >= case["H"] or p >= case["W"]):
            invalid.append("padding")
        if case["mode"] == "replicate" and p > 0 and 0 in (case["H"], case["W"]):
            invalid.append("replicate padding")  # nothing to replicate on an empty axis
        span = d * (k - 1) + 1
        if span > case["H"] + 2 * p or span > case["W"] + 2 * p:
            invalid += ["padded input", "kernel"]
        elif case["fh"] > _out(case["H"], k, s, p, d) or case["fw"] > _out(case["W"], k, s, p, d):
            invalid.append("weight")
    if case["bias"] in ("wrong_shape", "meta"):
        invalid.append("bias")
    if case["weight_meta"]:
        invalid.append("weight")
    return case, invalid


def run_patch(case):
    import fastvision.ops as ops
    from fastvision.ops import _reference as ref

    g = torch.Generator().manual_seed(case["seed"])
    dt = getattr(torch, case["dtype"])
    B, cin, groups, k = case["B"], case["Cin"], case["groups"], case["k"]
    cout = case["cout_g"] * groups
    x = torch.rand(B, cin, case["H"], case["W"], generator=g, dtype=torch.float64).to(dt) - 0.5
    if case["x_special"] and x.numel() > 0:
        if case["x_special"] == "1e-30":
            x = x * 1e-30
        else:
            x[0, 0, 0, 0] = float(case["x_special"])
    K = max(cout * (max(cin, 1) // groups or 1) * k * k, 1)
    fh, fw = case["fh"], case["fw"]
    if case["weight_layout"] == "sliced":  # a channel slice of a bigger hypernetwork output
        w = torch.rand(B, K + 3, fh, fw, generator=g, dtype=torch.float64).to(dt)[:, 2:K + 2]
    elif case["weight_layout"] == "permuted":  # channels-last memory
        w = torch.rand(B, fh, fw, K, generator=g, dtype=torch.float64).to(dt).permute(0, 3, 1, 2)
    else:
        w = torch.rand(B, K, fh, fw, generator=g, dtype=torch.float64).to(dt)
    w = w - 0.5
    if case["weight_meta"]:
        w = w.to("meta")
    bias = {"none": None, "ok": torch.rand(cout, generator=g, dtype=torch.float64).to(dt),
            "wrong_shape": torch.rand(cout + 1, dtype=dt), "meta": torch.rand(cout, dtype=dt, device="meta")}[case["bias"]]
    pair = lambda v: [v, v]  # noqa: E731
    s, p, d = case["stride"], case["padding"], case["dilation"]
    if case["api"] == "public":
        out = ops.patch_conv2d(x, w, k, s, p, case["mode"], d, groups, bias)
    else:
        mode = {"zeros": 0, "reflect": 1, "replicate": 2}[case["mode"]]
        out = torch.ops.fastvision.patch_conv2d(x, w, bias, pair(k), pair(s), pair(p), pair(d), groups, mode)
    want = ref.patch_conv2d(x, w, k, s, p, case["mode"], d, groups, bias)
    same_or_close(out, want, case["dtype"])


@given(patch_cases())
@SHORT
def test_fuzz_patch_conv2d(worker, drawn):
    case, invalid = drawn
    check(worker, "test_fuzz_ops:run_patch", case, "patch_conv2d", invalid)


@pytest.mark.slow
@given(patch_cases())
@LONG
def test_fuzz_patch_conv2d_long(request, worker, drawn):
    long_run_only(request)
    case, invalid = drawn
    check(worker, "test_fuzz_ops:run_patch", case, "patch_conv2d", invalid)


# ---------------------------------------------------------------------------------------------
# soft_project


@st.composite
def soft_cases(draw):
    pick = lambda values: draw(st.sampled_from(values))  # noqa: E731
    case = {"seed": draw(st.integers(0, 2**31 - 1)), "api": pick(["public", "raw"]),
            "B": pick([0, 1, 2]), "M": pick([0, 1, 3]), "N": pick([1, 2, 5]), "k": pick([1, 2, 3, 6]),
            "dtype": pick(["float32", "float64"]), "layout": pick(["bnc", "bcn"]),
            "temperature": pick(["number", "scalar", "per_cloud", "zero", "nan", "meta"]),
            "min_sigma": pick([None, 0.01]), "features": pick([None, 2]), "hard": pick([False, True]),
            "special": pick([None, None, ("query", "nan"), ("points", "inf"), ("points", "1e19"),
                             ("query", "1e-30")]),
            "points_meta": pick([False, False, True])}
    if case["api"] == "raw":
        case["layout"] = "bnc"
    invalid = []
    if case["k"] > case["N"]:
        invalid.append("k")
    if case["points_meta"]:
        invalid.append("points")
    if case["temperature"] == "meta":
        invalid.append("temperature")
    bad_sigma = case["temperature"] == "nan" or (case["temperature"] == "zero" and case["min_sigma"] is None)
    if bad_sigma and case["B"] > 0:
        invalid.append("temperature")
    special = case["special"]
    if special and special[1] in ("nan", "inf", "1e19") and case["B"] * (case["M"] if special[0] == "query" else case["N"]) > 0:
        if special[1] != "1e19" or case["dtype"] == "float32":
            invalid.append(special[0])
    return case, invalid


def run_soft(case):
    import fastvision.ops as ops
    from fastvision.ops import _reference as ref

    g = torch.Generator().manual_seed(case["seed"])
    dt = getattr(torch, case["dtype"])
    B, M, N, k = case["B"], case["M"], case["N"], case["k"]
    q = torch.rand(B, M, 3, generator=g, dtype=torch.float64).to(dt)
    p = torch.rand(B, N, 3, generator=g, dtype=torch.float64).to(dt)
    f = None if case["features"] is None else torch.rand(B, N, case["features"], generator=g, dtype=torch.float64).to(dt)
    if case["special"]:
        target, value = case["special"]
        t_ = q if target == "query" else p
        if value == "1e-30":
            t_.mul_(1e-30)
        elif t_.numel() > 0:
            t_[0, 0, 1] = float(value)
    temperature = {"number": 0.3, "scalar": torch.tensor(0.3, dtype=dt),
                   "per_cloud": torch.linspace(0.2, 0.6, B, dtype=dt), "zero": torch.tensor(0.0, dtype=dt),
                   "nan": torch.tensor(float("nan"), dtype=dt), "meta": torch.tensor(0.3, dtype=dt, device="meta")}[case["temperature"]]
    points = p.to("meta") if case["points_meta"] else p
    if case["api"] == "public":
        to = (lambda t: t.transpose(1, 2)) if case["layout"] == "bcn" else (lambda t: t)  # noqa: E731
        out = ops.soft_project(to(q), to(points), temperature, k, None if f is None else to(f),
                               case["min_sigma"], case["hard"], case["layout"])
        out = (to(out),) if f is None else (to(out[0]), to(out[1]))
    else:
        t = temperature if isinstance(temperature, torch.Tensor) else torch.tensor(temperature, dtype=dt)
        proj, proj_f, _ = torch.ops.fastvision.soft_project(q, points, t, k, f, case["min_sigma"], case["hard"])
        out = (proj,) if f is None else (proj, proj_f)
    if B * M == 0:  # the oracle's sort cannot run on empty clouds; the op's outputs are empty
        assert all(o.numel() == 0 for o in out)
        return
    t = temperature if isinstance(temperature, torch.Tensor) else torch.tensor(temperature, dtype=dt)
    want = ref.soft_project(q, p, t, k, f, case["min_sigma"], case["hard"])
    want = (want,) if f is None else want
    for a, b in zip(out, want):
        same_or_close(a, b, case["dtype"])


@given(soft_cases())
@SHORT
def test_fuzz_soft_project(worker, drawn):
    case, invalid = drawn
    check(worker, "test_fuzz_ops:run_soft", case, "soft_project", invalid)


@pytest.mark.slow
@given(soft_cases())
@LONG
def test_fuzz_soft_project_long(request, worker, drawn):
    long_run_only(request)
    case, invalid = drawn
    check(worker, "test_fuzz_ops:run_soft", case, "soft_project", invalid)


# ---------------------------------------------------------------------------------------------
# padnet_encoder


@st.composite
def padnet_cases(draw):
    pick = lambda values: draw(st.sampled_from(values))  # noqa: E731
    case = {"seed": draw(st.integers(0, 2**31 - 1)), "api": pick(["public", "raw"]),
            "B": pick([0, 1, 2]), "C": pick([1, 1, 1, 2]), "H": pick([1, 2, 7, 12]), "W": pick([1, 3, 8]),
            "width": pick([1, 2, 4, 4, 3]), "params": pick(["ok", "ok", "short", "meta"]),
            "dtype": pick(["float32", "float64", "int64"]), "x_layout": pick(["contiguous", "transposed"]),
            "x_scale": pick([1.0, 1.0, 1e-30, 1e3])}
    invalid = []
    if case["width"] not in (1, 2, 4):
        invalid.append("width")
    if case["C"] != 1 or case["dtype"] == "int64":
        invalid.append("x")
    if case["params"] != "ok":
        invalid.append("params")
    return case, invalid


def run_padnet(case):
    from fastvision.ops import _reference as ref
    from fastvision.ops.padnet import padnet_encoder, padnet_param_count

    g = torch.Generator().manual_seed(case["seed"])
    B, C, H, W, width = case["B"], case["C"], case["H"], case["W"], case["width"]
    float_dtype = torch.float32 if case["dtype"] == "int64" else getattr(torch, case["dtype"])
    if case["x_layout"] == "transposed":
        x = torch.rand(B, C, W, H, generator=g, dtype=torch.float64).transpose(2, 3)
    else:
        x = torch.rand(B, C, H, W, generator=g, dtype=torch.float64)
    x = (x * case["x_scale"]).to(getattr(torch, case["dtype"]))
    n = padnet_param_count(width if width in (1, 2, 4) else 1)
    params = (torch.rand(n - (case["params"] == "short"), generator=g, dtype=torch.float64) - 0.5).to(float_dtype)
    if case["params"] == "meta":
        params = params.to("meta")
    if case["api"] == "public":
        taps = padnet_encoder(x, params, width)
    else:
        taps = torch.ops.fastvision.padnet_encoder(x, params, width)
    # The oracle in float64: float32 results (FMA kernels, another summation order) are judged by
    # their error, relative to the largest activation (random weights on 1e3 inputs cancel a lot).
    want = ref.padnet_encoder(x.double(), params.double(), width)
    tol = 1e-10 if case["dtype"] == "float64" else 1e-3
    for a, b in zip(taps, want):
        scale = max(1.0, float(b.abs().max()) if b.numel() else 1.0)
        torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol * scale)


@given(padnet_cases())
@SHORT
def test_fuzz_padnet_encoder(worker, drawn):
    case, invalid = drawn
    check(worker, "test_fuzz_ops:run_padnet", case, "padnet_encoder", invalid)


@pytest.mark.slow
@given(padnet_cases())
@LONG
def test_fuzz_padnet_encoder_long(request, worker, drawn):
    long_run_only(request)
    case, invalid = drawn
    check(worker, "test_fuzz_ops:run_padnet", case, "padnet_encoder", invalid)
