"""A MODEL, NOT A MEASUREMENT: roofline estimates of the patch kernels on an H100 SXM at HyperSeg-M's
decoder shapes (1024x512 input, batch 1, a 16 x 32 patch grid, float32), for the old CUDA kernels
(one thread per output or input element), the new tiled ones, and HyperSeg's own formulation (pad + unfold + one
grouped conv through cuDNN + fold, as fastvision.ops._reference.hyperpatch_*_unfold).

time = max(DRAM bytes / 3.35 TB/s, FMAs / 33.5 T/s (67 FP32 TFLOPS), warp instructions /
1.045 T/s (132 SMs x 4 schedulers x 1.98 GHz)) + 3 us per kernel launch. DRAM bytes count each
tensor a kernel reads or writes once (halo and weight re-reads are assumed to hit the 50 MB L2);
cuDNN is credited with its pure roofline (no per-group inefficiency), which favours it. Thread
instructions per FMA and per staged element are estimates from the source loops (ptxas gives
registers, not instruction counts). Run: python bench/analysis/patch_model.py
"""

DRAM, FMA_RATE, ISSUE, LAUNCH = 3.35e12, 33.5e12, 132 * 4 * 1.98e9, 3e-6
P = 16 * 32  # patch grid cells
F = 4  # bytes per float

# Thread instructions (estimates from the source loops).
OLD_FWD_PER_FMA, OLD_FWD_PER_OUT = 16, 400      # 2 LDG, FFMA, 2 map_coord, 64-bit addressing; 6 64-bit divisions
NEW_FWD_PER_FMA = 2.6                           # per tap: 1 LDS x, 4 LDS w, 4 FFMA, addressing
STAGE = 50                                      # per staged element: 32-bit divisions, map_coord, LDG, STS
OLD_GW_PER_FMA, OLD_GW_PER_ENTRY = 12, 400      # per pixel; per entry (decomposition, cell bounds)
NEW_GW_PER_FMA = 1.7                            # 4 LDS go + 4 LDS x + 16 FFMA per pixel
GI_PER_FMA, GI_PER_TAP = 10, 140                # old grad-input gather: per term; per tap (2 cell_of)
# Tiled grad-input, per (row entry, column entry) pair of a thread: 2 LDS of the column entry, 2
# IADD, loop control; per output channel of the chunk: 1 LDS grad_out (4 when the 4 channels are
# packed groups), 4 LDS weights, 4 FFMA.
GI_TILE_PER_PAIR, GI_TILE_PER_CO, GI_TILE_PER_CO_PACKED = 6, 9, 12
GI_LIST = 80                                    # per list-building thread and tap row (2 passes: preimages, 64-bit %)
OLD_IR_PER_FMA, OLD_IR_PROJECT = 6, 8           # expand / depthwise terms; project term with the out RMW
NEW_IR_EXPAND, NEW_IR_DW, NEW_IR_PROJECT = 2.25, 3.5, 2.1

CONV = [  # name, cin, cout, k, groups, H, W, plan: (forward x re-staging factor, grad-weight x re-staging)
    ("level0 1x1 82->64", 82, 64, 1, 1, 16, 32, 8, 4),
    ("level1 1x1 94->32", 94, 32, 1, 1, 32, 64, 8, 2),
    ("level2 1x1 44->16", 44, 16, 1, 1, 64, 128, 4, 2),
    ("level3 dw3x3 48", 48, 48, 3, 48, 128, 256, 100 / 64, 100 / 64),
    ("level4 dw3x3 68", 68, 68, 3, 68, 256, 512, 324 / 256, 324 / 256),
]
# The tiled input gradient's plans (bench/analysis/patch_plans.cpp): tile rows, columns, output
# region rows, columns, cells the region spans, output channels per chunk, input channels per block,
# output-channel chunks, input-channel tiles (packed: group packs), blocks, whether the channels of
# a block are packed groups (depthwise).
GI_PLANS = {
    "level0 1x1 82->64": (1, 8, 1, 8, 8, 16, 16, 4, 6, 384, False),
    "level1 1x1 94->32": (2, 16, 2, 16, 8, 16, 16, 2, 6, 384, False),
    "level2 1x1 44->16": (4, 16, 4, 16, 4, 16, 16, 1, 3, 384, False),
    "level3 dw3x3 48": (16, 16, 18, 18, 16, 1, 4, 1, 12, 1536, True),
    "level4 dw3x3 68": (16, 16, 18, 18, 9, 1, 4, 1, 17, 8704, True),
}

IR = [  # name, cin, hidden, cout, H, W, tile pixels, region pixels
    ("level3 IR 24->48->16", 24, 48, 16, 128, 256, 64, 100),
    ("level4 IR 34->68->19", 34, 68, 19, 256, 512, 128, 180),
]


def t(dram, fma, instr, launches):
    parts = {"DRAM": dram / DRAM, "FP32": fma / FMA_RATE, "issue": instr / 32 / ISSUE}
    bound = max(parts, key=parts.get)
    return parts[bound] + launches * LAUNCH, bound


def conv_rows():
    rows = []
    for name, cin, cout, k, groups, H, W, fwd_restage, gw_restage in CONV:
        ph, pw = H // 16, W // 32
        cg, kk = cin // groups, k * k
        X, O, Wt = cin * H * W * F, cout * H * W * F, P * cout * cg * kk * F
        fma = cout * cg * kk * H * W
        outs, entries = cout * H * W, P * cout * cg * kk
        # Forward.
        old = t(X + Wt + O, fma, fma * OLD_FWD_PER_FMA + outs * OLD_FWD_PER_OUT, 1)
        new = t(X + Wt + O, fma, fma * NEW_FWD_PER_FMA + (X / F * fwd_restage + Wt / F) * STAGE, 1)
        if k == 1:  # HyperPatchNoPadding: permute copies of x, weights, out; the grouped conv
            comp_bytes, comp_k = 3 * X + 3 * Wt + 3 * O, 4
        else:  # pad, unfold, contiguous, weight copy, conv, fold (zero + col2im)
            Xp = cin * (H + 2) * (W + 2) * F
            U = cin * P * (ph + 2) * (pw + 2) * F
            comp_bytes, comp_k = X + 2 * Xp + 4 * U + 3 * Wt + 4 * O, 7
        comp = t(comp_bytes, fma, 0, comp_k)
        # Backward: grad_input (old gather, new tiled) + grad_weight.
        gi_instr = fma * GI_PER_FMA + cin * H * W * kk * GI_PER_TAP
        gi = t(O + Wt + X, fma, gi_instr, 1)
        th, tw, orh, orw, cells, bm, bci, co_chunks, ci_tiles, blocks, packed = GI_PLANS[name]
        # Every (pixel, input-channel quad) register tile of the blocks, padded channels included,
        # kk pairs per pixel in the interior.
        tiles = H * W * (1 if packed else groups) * ci_tiles * (bci // 4)
        per_co = GI_TILE_PER_CO_PACKED if packed else GI_TILE_PER_CO
        go_staged = (bci if packed else 1) * bm * orh * orw
        gi_tile_instr = (tiles * kk * (GI_TILE_PER_PAIR * co_chunks + co_chunks * bm * per_co)
                         + blocks * co_chunks * (go_staged + cells * kk * bm * bci) * STAGE
                         + blocks * (th + tw) * k * GI_LIST)
        gi_new = t(O + Wt + X, fma, gi_tile_instr, 1)
        gw_old = t(O + X + Wt, fma, fma * OLD_GW_PER_FMA + entries * OLD_GW_PER_ENTRY, 1)
        gw_new = t(O + X + Wt, fma, fma * NEW_GW_PER_FMA + (X / F * gw_restage + O / F) * STAGE, 1)
        # cuDNN backward: fold / permute backward, dgrad, wgrad, unfold backward (col2im), pad and
        # weight-copy backward: about twice the forward's traffic.
        comp_bwd = t(2 * comp_bytes, 2 * fma, 0, comp_k + 2)
        rows.append(dict(name=name, X=X, O=O, Wt=Wt, fma=fma, old=old, new=new, comp=comp,
                         fb_old=old[0] + gi[0] + gw_old[0], fb_new=new[0] + gi_new[0] + gw_new[0],
                         fb_comp=comp[0] + comp_bwd[0], gi=gi, gi_new=gi_new, gw_old=gw_old, gw_new=gw_new,
                         comp_bytes=comp_bytes))
    return rows


def ir_rows():
    rows = []
    for name, cin, hid, cout, H, W, tile, region in IR:
        ph, pw = H // 16, W // 32
        X, O = cin * H * W * F, cout * H * W * F
        Wt = P * (cin * hid + hid * 9 + hid * cout) * F
        pix = H * W
        useful = pix * (hid * 9 + cout * hid) + P * (ph + 2) * (pw + 2) * cin * hid  # HyperSeg's count
        old_fma = pix * (9 * hid * cin + 9 * hid + cout * hid)
        old = t(X + Wt + O, old_fma, pix * (9 * hid * cin + 9 * hid) * OLD_IR_PER_FMA
                + pix * cout * hid * OLD_IR_PROJECT, 1)
        new_fma = pix * region / tile * cin * hid + pix * (9 * hid + cout * hid)
        staged = X / F * region / tile + Wt / F * (2 if name.startswith("level4") else 1)
        new_instr = (pix * region / tile * cin * hid * NEW_IR_EXPAND + pix * 9 * hid * NEW_IR_DW
                     + pix * cout * hid * NEW_IR_PROJECT + staged * STAGE)
        new = t(X + Wt + O, new_fma, new_instr, 1)
        Xp = cin * (H + 2) * (W + 2) * F
        U = cin * P * (ph + 2) * (pw + 2) * F
        E = hid * P * (ph + 2) * (pw + 2) * F
        D = hid * pix * F
        comp_bytes = (X + Xp) + (Xp + U) + 2 * Wt + (U + E) + 6 * E + (E + D) + 6 * D + (D + O) + 4 * O + 2 * O
        comp = t(comp_bytes, useful, 0, 13)
        rows.append(dict(name=name, X=X, O=O, Wt=Wt, useful=useful, old_fma=old_fma, new_fma=new_fma,
                         old=old, new=new, comp=comp, comp_bytes=comp_bytes))
    return rows


def mb(b):
    return f"{b / 1e6:.1f}"


def us(x):
    return f"{x[0] * 1e6:.1f} ({x[1]})" if isinstance(x, tuple) else f"{x * 1e6:.1f}"


def main():
    print("patch_conv2d (model, H100 SXM, float32; times in us, bound in brackets)\n")
    print("| level | x / out / weights MB | MFMA | old fwd | new fwd | cuDNN formulation fwd (its DRAM MB) "
          "| old fwd+bwd | new fwd+bwd | cuDNN fwd+bwd | new vs cuDNN fwd+bwd |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in conv_rows():
        print(f"| {r['name']} | {mb(r['X'])} / {mb(r['O'])} / {mb(r['Wt'])} | {r['fma'] / 1e6:.1f} | {us(r['old'])} "
              f"| {us(r['new'])} | {us(r['comp'])} ({mb(r['comp_bytes'])}) | {us(r['fb_old'])} | {us(r['fb_new'])} "
              f"| {us(r['fb_comp'])} | {r['fb_comp'] / r['fb_new']:.2f}x |")
    print("\nbackward parts (us): old grad_input (gather) / new grad_input (tiled) / old grad_weight / "
          "new grad_weight\n")
    for r in conv_rows():
        print(f"- {r['name']}: {us(r['gi'])} / {us(r['gi_new'])} / {us(r['gw_old'])} / {us(r['gw_new'])}")
    print("\npatch_inverted_residual (model, H100 SXM, float32, inference)\n")
    print("| level | x / out / weights MB | MFMA useful / old / new | old | new | cuDNN formulation (its DRAM MB) "
          "| new vs cuDNN |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in ir_rows():
        print(f"| {r['name']} | {mb(r['X'])} / {mb(r['O'])} / {mb(r['Wt'])} | {r['useful'] / 1e6:.0f} / "
              f"{r['old_fma'] / 1e6:.0f} / {r['new_fma'] / 1e6:.0f} | {us(r['old'])} | {us(r['new'])} "
              f"| {us(r['comp'])} ({mb(r['comp_bytes'])}) | {r['comp'][0] / r['new'][0]:.2f}x |")


if __name__ == "__main__":
    main()
