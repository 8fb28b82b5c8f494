"""The CUDA patch-wise convolution kernels (patch_conv2d_kernels.cuh: forward, input, weight and
bias gradients, tiled and direct; patch_inverted_residual_kernels.cuh), run on the CPU by the
emulator and compared with the CPU kernels on the same inputs.

Not bit-exact with the CPU: the CPU kernels sum in tiles (and with AVX2 FMAs in float32), the CUDA
kernels one output at a time in index order; compared within 1e-5 (float32) / 1e-12 (float64) of
the largest magnitude of each output. The CUDA backward is deterministic (no atomics): the same
inputs give bitwise the same gradients under every thread schedule and block order."""

import numpy as np
import pytest
import torch

import fastvision  # noqa: F401  (registers torch.ops.fastvision)
from emulated_harness import run

pytestmark = pytest.mark.emulated

RUNS = [
    ("plain", "forward", "forward"),
    ("plain", "random:7", "shuffle:3"),
    ("asan", "reverse", "reverse"),
    ("tsan", "random:11", "forward"),
]
EPS = {torch.float32: 1e-5, torch.float64: 1e-12}
MODES = {"zeros": 0, "reflect": 1, "replicate": 2}


def conv_case(dtype, *, B=2, C=4, H=9, W=7, cout=4, k=(3, 3), stride=(1, 1), padding=(1, 1),
              dilation=(1, 1), groups=1, fh=2, fw=3, mode="reflect", bias=True, channels_last=False,
              min_blocks=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    Ho = (H + 2 * padding[0] - dilation[0] * (k[0] - 1) - 1) // stride[0] + 1
    Wo = (W + 2 * padding[1] - dilation[1] * (k[1] - 1) - 1) // stride[1] + 1
    K = cout * C // groups * k[0] * k[1]
    w = torch.randn(B, K, fh, fw, generator=g, dtype=dtype)
    # min_blocks = 1: the input gradient's largest tiles (the ones a GPU-sized image gets), which the
    # default block target would shrink on these small images.
    extra = {} if min_blocks is None else {"min_blocks": np.array(min_blocks)}
    return extra | {
        "op": np.array(0), "x": torch.randn(B, C, H, W, generator=g, dtype=dtype).numpy(),
        # The weight as the hypernetwork writes it, (B, fh, fw, K) in memory, when channels_last.
        "weight": (w.permute(0, 2, 3, 1) if channels_last else w).contiguous().numpy(),
        "weight_channels_last": np.array(int(channels_last)),
        "bias": (torch.randn(cout, generator=g, dtype=dtype) if bias else torch.zeros(0, dtype=dtype)).numpy(),
        "grad_out": torch.randn(B, cout, Ho, Wo, generator=g, dtype=dtype).numpy(),
        "conv": np.array([*k, *stride, *padding, *dilation, groups, MODES[mode]], dtype=np.int64),
    }


def conv_weight(case):
    w = torch.from_numpy(case["weight"])
    return w.permute(0, 3, 1, 2) if case["weight_channels_last"] else w


def conv_cpu(case):
    kh, kw, sh, sw, ph, pw, dh, dw, groups, mode = (int(v) for v in case["conv"])
    x, w = torch.from_numpy(case["x"]), conv_weight(case)
    bias = torch.from_numpy(case["bias"]) if case["bias"].size else None
    args = ([kh, kw], [sh, sw], [ph, pw], [dh, dw], groups, mode)
    out = torch.ops.fastvision.patch_conv2d(x, w, bias, *args)
    gx, gw, gb = torch.ops.fastvision._patch_conv2d_backward(
        torch.from_numpy(case["grad_out"]), x, w, *args, True, True, True)
    return {"out": out, "grad_x": gx, "grad_weight": gw, "grad_bias": gb}


def conv_cases(dtype, small):
    cases = [
        conv_case(dtype, mode="reflect", channels_last=True),  # ragged 2 x 3 grid over 9 x 7
        conv_case(dtype, mode="zeros", k=(3, 2), stride=(2, 1), dilation=(1, 2), padding=(2, 1),
                  groups=2, cout=6, fh=3, fw=2, seed=1),
        conv_case(dtype, mode="replicate", padding=(2, 3), fh=4, fw=3, bias=False, seed=2),
        # Depthwise, the input gradient's 16 x 16 tiles (partial at the right and bottom) over 6-
        # and 7-pixel cells: a tile's output region spans 4 x 4 cells; reflected borders.
        conv_case(dtype, mode="reflect", B=1, C=2, cout=2, groups=2, H=18, W=20, fh=3, fw=3, min_blocks=1,
                  seed=16),
    ]
    if not small:
        cases += [
            conv_case(dtype, mode="reflect", C=6, cout=6, groups=6, H=13, W=11, fh=3, fw=4, seed=3),  # depthwise
            conv_case(dtype, mode="replicate", k=(1, 1), padding=(0, 0), H=1, W=5, fh=1, fw=5, seed=4),
            conv_case(dtype, mode="zeros", B=1, C=3, cout=5, H=20, W=18, stride=(2, 3), dilation=(2, 1),
                      padding=(3, 2), fh=5, fw=3, seed=5),  # > 256 outputs per plane: several blocks
            # 20 input channels: two channel chunks, the second partial.
            conv_case(dtype, mode="reflect", C=20, cout=5, H=10, W=11, fh=2, fw=3, seed=7),
            # A 9x9 kernel of 16 input channels: 324 tap quads, the weight gradient's register
            # tiles take two passes.
            conv_case(dtype, mode="replicate", B=1, C=16, cout=4, k=(9, 9), padding=(4, 4), H=9, W=9,
                      fh=1, fw=1, bias=False, seed=8),
            # One 6 x 37 cell, per-channel groups: three pixel tiles per cell, the last partial.
            conv_case(dtype, mode="reflect", B=1, C=2, cout=2, groups=2, H=6, W=37, fh=1, fw=1, seed=9),
            # A dilation of 101: no halo tile fits in shared memory, the direct forward and weight
            # gradient run (the input gradient tiles: an input pixel's output region is small).
            conv_case(dtype, mode="zeros", B=1, C=2, cout=2, k=(2, 2), padding=(0, 0), dilation=(101, 101),
                      H=102, W=102, fh=1, fw=1, seed=10),
            # The input gradient's tiles: HyperSeg's depthwise level in miniature (ragged 7-/8-pixel
            # cells, a 16 x 16 input tile spanning 4 x 3 cells, reflected border rows and columns).
            conv_case(dtype, mode="reflect", B=1, C=3, cout=3, groups=3, H=30, W=22, fh=4, fw=3, min_blocks=1,
                      seed=11),
            # Depthwise 5 x 5, stride 2, replicated borders (a 2-wide replicated run per border),
            # tiles of 17 x 19 input pixels: partial tiles on both axes.
            conv_case(dtype, mode="replicate", B=2, C=2, cout=2, groups=2, k=(5, 5), stride=(2, 2), padding=(2, 2),
                      H=17, W=19, fh=3, fw=2, min_blocks=1, seed=12),
            # Grouped, 20 input and 18 output channels per group: two input-channel tiles and two
            # output-channel chunks per block, stride 2 on one axis, zero padding.
            conv_case(dtype, mode="zeros", B=1, C=40, cout=36, groups=2, k=(3, 3), stride=(2, 1), padding=(1, 1),
                      H=9, W=10, fh=2, fw=3, min_blocks=1, seed=13),
            # Depthwise with 2 outputs per group, 18 groups: the input gradient packs 16 groups per
            # block (two packs, the second partial), 2 output channels reduced per group.
            conv_case(dtype, mode="reflect", B=1, C=18, cout=36, groups=18, H=10, W=9, fh=2, fw=3, min_blocks=1,
                      seed=18),
            # A 5 x 5 reflect-padded kernel over 1-pixel cells: each input pixel is read by 5 x 5
            # cells, the region of a tile spans many cells.
            conv_case(dtype, mode="reflect", B=1, C=3, cout=2, k=(5, 5), padding=(2, 2), H=6, W=7, fh=6, fw=7,
                      min_blocks=1, seed=14),
            # A 51 x 51 kernel: the weights of the 2 cells that read any input pixel (2601 taps each)
            # do not fit in shared memory, the direct input gradient runs.
            conv_case(dtype, mode="zeros", B=1, C=1, cout=1, k=(51, 51), padding=(25, 25), H=4, W=5, fh=2, fw=1,
                      seed=17),
            # Reflect padding wider than 'same' (2 at k = 3): the output region of a tile near the
            # border starts at the farthest reflection of its rows, not at the tile's own rows.
            conv_case(dtype, mode="reflect", B=1, C=2, cout=3, padding=(2, 2), H=9, W=8, fh=2, fw=2, seed=19),
            # A 1 x 1 kernel with reflect padding 2: output 0 reads input row 2 (reflected) only,
            # so the first tile's region starts below its own rows' outputs; multi-row tiles.
            conv_case(dtype, mode="reflect", B=1, C=2, cout=3, k=(1, 1), padding=(2, 2), H=7, W=6, fh=2, fw=2,
                      min_blocks=1, seed=20),
            # Stride 2 with a 1 x 1 kernel: every other input row / column is read by no output
            # (its gradient is zero), ragged cells.
            conv_case(dtype, mode="zeros", B=1, C=5, cout=3, k=(1, 1), stride=(2, 2), padding=(0, 0), H=11, W=9,
                      fh=2, fw=3, seed=15),
        ]
    # HyperSeg's level 0 in miniature: 1-pixel cells, strips of 8 cells per block (the last one
    # partial), several output-channel tiles, the hypernetwork's weight layout.
    cases.append(conv_case(dtype, mode="zeros", B=1, C=5, cout=18, k=(1, 1), padding=(0, 0), H=2, W=70,
                           fh=2, fw=70, channels_last=not small, seed=6))
    return cases


def ir_case(dtype, *, B=2, C=5, H=12, W=8, hidden=6, cout=5, k=3, fh=3, fw=2, mode="reflect",
            residual=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    K = C * hidden + hidden * k * k + hidden * cout
    case = {"op": np.array(1), "x": torch.randn(B, C, H, W, generator=g, dtype=dtype).numpy(),
            "weight": (torch.randn(B, K, fh, fw, generator=g, dtype=dtype) * 0.5).numpy(),
            "ir": np.array([hidden, k, MODES[mode], int(residual)], dtype=np.int64)}
    for n, size in (("1", hidden), ("2", hidden), ("3", cout)):
        case["s" + n] = (torch.rand(size, generator=g, dtype=dtype) + 0.5).numpy()
        case["b" + n] = torch.randn(size, generator=g, dtype=dtype).numpy()
    return case


def ir_cpu(case):
    hidden, k, mode, residual = (int(v) for v in case["ir"])
    t = {n: torch.from_numpy(v) for n, v in case.items()}
    return torch.ops.fastvision.patch_inverted_residual(
        t["x"], t["weight"], t["s1"], t["b1"], t["s2"], t["b2"], t["s3"], t["b3"], hidden, k, mode,
        bool(residual))


def ir_cases(dtype, small):
    cases = [ir_case(dtype, mode="reflect"), ir_case(dtype, mode="zeros", residual=True, seed=1)]
    if not small:
        cases += [ir_case(dtype, mode="replicate", cout=3, k=5, H=9, W=11, fh=2, fw=3, seed=2),
                  ir_case(dtype, mode="reflect", residual=True, H=17, W=19, fh=4, fw=5, seed=3),
                  # 40 hidden channels (two chunks, the second partial), 36 outputs (two channel
                  # tiles), ragged 9-/8-row cells of 37 columns (three pixel tiles per cell).
                  ir_case(dtype, mode="reflect", B=1, C=3, hidden=40, cout=36, H=17, W=37, fh=2, fw=1, seed=4),
                  # A 111 x 111 kernel: not even one pixel's tile fits, the direct kernel runs.
                  ir_case(dtype, mode="zeros", B=1, C=2, hidden=2, cout=2, k=111, H=3, W=2, fh=1, fw=1,
                          seed=5)]
    return cases


def assert_close_scaled(actual, expected, dtype, what):
    eps = EPS[dtype]
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(torch.from_numpy(actual), expected, rtol=eps, atol=eps * scale,
                               msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant,schedule,block_order", RUNS)
def test_patch_kernels_match_cpu(variant, schedule, block_order, dtype):
    small = variant != "plain"
    convs, irs = conv_cases(dtype, small), ir_cases(dtype, small)
    outs = run("drive_patch", convs + irs, variant=variant, schedule=schedule, block_order=block_order)
    for n, (case, out) in enumerate(zip(convs, outs)):
        cpu = conv_cpu(case)
        for name, want in cpu.items():
            got = out[name]  # grad_weight: contiguous (B, K, fh, fw) whatever the weight's layout
            if name == "grad_bias" and not case["bias"].size:
                want = torch.from_numpy(case["grad_out"]).sum((0, 2, 3))
            assert_close_scaled(got, want, dtype, f"conv case {n}: {name}")
    for n, (case, out) in enumerate(zip(irs, outs[len(convs):])):
        assert_close_scaled(out["out"], ir_cpu(case), dtype, f"inverted residual case {n}")


PLAN_FIELDS = ("tiled", "cells", "tile_rows", "tile_cols", "chunk_channels", "co_tiles", "ci_chunks",
               "pixel_tiles", "pixel_split", "passes")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_patch_conv2d_cases_cover_every_tiling(dtype):
    # The cases above must exercise every branch of the tile plans (else a bug there goes unseen).
    cases = conv_cases(dtype, small=False)
    outs = run("drive_patch", cases)
    for kind in ("forward_plan", "grad_weight_plan"):
        plans = [dict(zip(PLAN_FIELDS, map(int, out[kind]))) for out in outs]
        tiled = [p for p in plans if p["tiled"]]
        assert len(tiled) < len(plans), f"{kind}: no case takes the direct kernels"
        assert any(p["cells"] == 8 for p in tiled), f"{kind}: no strip of 8 cells"
        assert any(p["co_tiles"] > 1 for p in tiled), f"{kind}: no case with several output-channel tiles"
        assert any(p["pixel_tiles"] > 1 for p in tiled), f"{kind}: no cell with several pixel tiles"
        assert any(p["chunk_channels"] < c["x"].shape[1] for p, c in zip(plans, cases) if p["tiled"]), \
            f"{kind}: no case with several input-channel chunks"
    gi = [dict(zip(GI_PLAN_FIELDS, map(int, out["grad_input_plan"]))) for out in outs]
    gi_tiled = [p for p in gi if p["tiled"]]
    assert len(gi_tiled) < len(gi), "grad_input: no case takes the direct kernel"
    for field, what in (("co_chunks", "several output-channel chunks"), ("ci_tiles", "several input-channel tiles"),
                        ("tiles", "several input tiles"), ("ci_slots", "several input-channel quads per block")):
        assert any(p[field] > 1 for p in gi_tiled), f"grad_input: no case with {what}"
    for packed in (0, 1):
        assert any(p["packed"] == packed for p in gi_tiled), f"grad_input: no case with packed == {packed}"
    assert any(p["packed"] and p["ci_tiles"] > 1 for p in gi_tiled), "grad_input: no case with several group packs"
    assert any(p["cell_rows"] > 2 and p["cell_cols"] > 2 for p in gi_tiled), \
        "grad_input: no tile whose output region spans more than 2 x 2 cells"
    assert any(c["x"].shape[2] % p["tile_rows"] and c["x"].shape[3] % p["tile_cols"] for p, c in zip(gi, cases)
               if p["tiled"]), "grad_input: no case with partial tiles on both axes"
    gw = [dict(zip(PLAN_FIELDS, map(int, out["grad_weight_plan"]))) for out in outs]
    assert any(p["pixel_split"] > 1 for p in gw if p["tiled"]), "no weight gradient splits pixels over threads"
    assert any(p["passes"] > 1 for p in gw if p["tiled"]), "no weight gradient takes several passes"


GI_PLAN_FIELDS = ("tiled", "tile_rows", "tile_cols", "ci_slots", "co_chunk", "co_chunks", "ci_tiles", "tiles",
                  "cell_rows", "cell_cols", "packed")


IR_PLAN_FIELDS = ("tiled", "tile_rows", "tile_cols", "chunk_hidden", "hidden_chunks", "co_slots", "co_tiles",
                  "tiles_per_cell")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_patch_inverted_residual_cases_cover_every_tiling(dtype):
    plans = [dict(zip(IR_PLAN_FIELDS, map(int, out["plan"]))) for out in run("drive_patch", ir_cases(dtype, False))]
    tiled = [p for p in plans if p["tiled"]]
    assert len(tiled) < len(plans), "no case takes the direct kernel"
    for field, what in (("hidden_chunks", "several hidden chunks"), ("co_tiles", "several output-channel tiles"),
                        ("tiles_per_cell", "several tiles per cell"), ("co_slots", "several threads per pixel")):
        assert any(p[field] > 1 for p in tiled), f"no inverted-residual case with {what}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_tiled_kernels_round_like_the_direct_ones(dtype):
    # The tiled forward and inverted residual sum in the direct kernels' order (input channels,
    # taps, hidden channels, from zero): bitwise equal results. The weight gradient splits the
    # pixel sum over threads, the input gradient sums over output-channel chunks first (other
    # orders): equal within the tolerance.
    cases = conv_cases(dtype, small=False) + ir_cases(dtype, small=False)
    tiled = run("drive_patch", cases)
    direct = run("drive_patch", [dict(c, direct=np.array(1)) for c in cases])
    for n, (t, d) in enumerate(zip(tiled, direct)):
        np.testing.assert_array_equal(t["out"], d["out"], err_msg=f"case {n}: out")
        for name in ("grad_weight", "grad_x"):
            if name in t:
                assert_close_scaled(t[name], torch.from_numpy(d[name]), dtype, f"case {n}: {name}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_patch_conv2d_backward_is_deterministic(dtype):
    # Issue 13, 4.5: the documented deterministic backward, bitwise across thread schedules and
    # block orders (an atomicAdd scatter would change the float sums between these runs).
    cases = conv_cases(dtype, small=False)
    first = run("drive_patch", cases, schedule="forward", block_order="forward")
    for schedule, order in (("reverse", "reverse"), ("random:5", "shuffle:9")):
        again = run("drive_patch", cases, schedule=schedule, block_order=order)
        for n, (a, b) in enumerate(zip(first, again)):
            for name in ("out", "grad_x", "grad_weight", "grad_bias"):  # the plans are the same too
                np.testing.assert_array_equal(a[name], b[name], err_msg=f"case {n}: {name} ({schedule}, {order})")
