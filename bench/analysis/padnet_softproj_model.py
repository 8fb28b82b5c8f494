"""The performance model behind bench/analysis/padnet_encoder.md and soft_project.md (issue 20,
items 3 and 4): a MODEL, not a measurement. It counts FLOPs and DRAM bytes from the layer shapes
and the kernels' memory schedules, takes registers and shared memory from `nvcc -Xptxas -v`
(pasted below, CUDA 13.0, float32 instantiations), computes the theoretical occupancy on sm_80
(A100) and sm_90 (H100), and turns bytes, FLOPs and launches into a roofline time on an H100 SXM.

Run: python bench/analysis/padnet_softproj_model.py   (needs torch and fastvision for the eager
PAD-Net byte count; prints the tables of the two analyses).
"""

from __future__ import annotations

import math

# H100 SXM5 (the reference GPU): 132 SMs, HBM3 3.35 TB/s, FP32 (FMA, non-tensor) 67
# TFLOP/s, 50 MB L2.
H100 = dict(sms=132, dram_bps=3.35e12, fp32_flops=67e12, l2_bytes=50e6)
# A dependent kernel launch on the GPU (back to back in one stream, no CPU bound): ~3 us.
# Eager PyTorch at small sizes is bound by its CPU dispatch instead: ~10 us per aten op.
LAUNCH_S = 3e-6
EAGER_OP_S = 10e-6
# Dependent global-memory latency (L2 hit ~ 0.3 us, DRAM ~ 0.6 us): the floor of a thread's
# chain of dependent loads.
LATENCY_S = 0.5e-6

# Occupancy limits per SM: (max warps, max blocks, registers, shared memory per SM usable by
# blocks, reserved shared memory per block).
ARCH = {
    "sm_80": dict(warps=64, blocks=32, regs=65536, smem=164 * 1024, reserved=1024),
    "sm_90": dict(warps=64, blocks=32, regs=65536, smem=228 * 1024, reserved=1024),
}


def occupancy(arch: str, threads: int, regs: int, smem: int) -> tuple[int, float]:
    """Resident blocks per SM and the fraction of the SM's warps (theoretical occupancy)."""
    a = ARCH[arch]
    warps = math.ceil(threads / 32)
    regs_per_warp = math.ceil(regs * 32 / 256) * 256
    by_regs = a["regs"] // (regs_per_warp * warps)
    by_warps = a["warps"] // warps
    by_smem = a["smem"] // (smem + a["reserved"]) if smem else a["blocks"]
    blocks = min(by_regs, by_warps, by_smem, a["blocks"])
    return blocks, blocks * warps / a["warps"]


def roofline(bytes_: float, flops: float, launches: int, launch_s: float = LAUNCH_S) -> float:
    return max(bytes_ / H100["dram_bps"], flops / H100["fp32_flops"]) + launches * launch_s


# ---- PAD-Net --------------------------------------------------------------------------------
def padnet_layers(width: int, H: int = 112, W: int = 48):
    """(name, K, S, CIN, EXP, COUT, SE, HWin, HWout) of the six bnecks, and the stem."""
    def out(n, s):
        return (n + 2 - 3) // s + 1

    w = width
    H2, W2 = out(H, 2), out(W, 2)
    H4, W4 = out(H2, 2), out(W2, 2)
    px = [H * W, H2 * W2, H4 * W4]
    return [
        ("B1", 3, 1, 2 * w, 8 * w, 4 * w, True, px[0], px[0]),
        ("B2", 3, 1, 4 * w, 8 * w, 4 * w, False, px[0], px[0]),
        ("B3", 3, 2, 4 * w, 16 * w, 8 * w, True, px[0], px[1]),
        ("B4", 3, 1, 8 * w, 16 * w, 8 * w, True, px[1], px[1]),
        ("B5", 3, 2, 8 * w, 32 * w, 16 * w, True, px[1], px[2]),
        ("B6", 3, 1, 16 * w, 32 * w, 16 * w, True, px[2], px[2]),
    ], px


def padnet_macs(width: int) -> int:
    layers, px = padnet_layers(width)
    macs = 2 * width * 9 * px[0]  # stem
    for _, K, S, cin, exp, cout, se, hwi, hwo in layers:
        macs += exp * cin * hwi + exp * K * K * hwo + cout * exp * hwo
        if se:
            macs += 2 * cout * (cout // 4)
        if S == 1 and cin != cout:
            macs += cout * cin * hwo
    return macs


def padnet_bytes_old(width: int) -> int:
    """Old kernel (one block per image, activations in global scratch): each global buffer written
    once and read once per consuming pass (re-reads by other passes counted as L2 hits)."""
    layers, px = padnet_layers(width)
    el = px[0] + 2 * 2 * width * px[0]  # image; stem output written and read
    for _, K, S, cin, exp, cout, se, hwi, hwo in layers:
        el += 2 * exp * hwi + 2 * exp * hwo + cout * hwo  # e (w + r), d (w + r), out written
        if se:
            el += 3 * cout * hwo  # mean read, gate read + write
        if S == 1:
            el += cout * hwo  # residual read
            if cin != cout:
                el += cin * hwi + cout * hwo  # shortcut: input read, r written
    return 4 * el


def padnet_bytes_new(width: int) -> int:
    """New kernels: per bneck its input (and residual) read once, its output (and residual)
    written once; the expanded and depthwise tensors stay in shared memory."""
    w = width
    _, px = padnet_layers(width)
    el = 0
    el += px[0] + 2 * 4 * w * px[0]                    # B1: image; y, r (shortcut) written
    el += 2 * 4 * w * px[0] + 4 * w * px[0]            # B2: y, r read; t1 written
    el += 4 * w * px[0] + 8 * w * px[1]                # B3: t1 read; y written
    el += 8 * w * px[1] + 2 * 8 * w * px[1]            # B4: y read; y, r written
    el += 2 * 8 * w * px[1] + 8 * w * px[1] + 16 * w * px[2]  # B5: y, r read; t2, y written
    el += 16 * w * px[2] + 2 * 16 * w * px[2]          # B6: y read; y, r written
    el += 2 * 16 * w * px[2] + 16 * w * px[2]          # finish: y, r read; t3 written
    return 4 * el


def padnet_bytes_eager(width: int, batch: int) -> tuple[int, int]:
    """Eager PyTorch (the modules in eval mode, BN not folded): every aten op reads its inputs and
    writes its outputs (counted with a dispatch mode); returns (bytes, aten ops)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from fastvision.models import get_model

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.bytes = 0
            self.ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.ops += 1
            flat = list(args) + list((kwargs or {}).values())
            flat += list(out) if isinstance(out, (tuple, list)) else [out]
            for t in flat:
                if isinstance(t, torch.Tensor) and t.numel() > 64:  # weights: negligible
                    self.bytes += t.numel() * t.element_size()
            return out

    name = {1: "padnet", 2: "padnet_x2", 4: "padnet_x4"}[width]
    model = get_model(name).eval()
    x = torch.randn(batch, 1, 112, 48)
    with torch.no_grad(), Count() as c:
        model.encoder(x)
    return c.bytes, c.ops


# ptxas -v, CUDA 13.0, float32: registers (sm_80, sm_90) and spill stores (bytes, sm_80 / sm_90).
PTXAS_PADNET_OLD = {  # padnet_encoder_kernel<WIDTH, float>: 256 threads, 1152 B static smem
    1: ((128, 128), "0 / 16"), 2: ((128, 128), "180 / 164"), 4: ((128, 128), "156 / 164"),
}
PTXAS_PADNET_NEW = {  # bneck_tile_kernel per bneck (B1..B6), then se_finish_kernel; 128 threads
    1: {"sm_80": [66, 56, 56, 56, 64, 52, 43], "sm_90": [72, 54, 55, 56, 64, 56, 38]},
    2: {"sm_80": [72, 59, 56, 52, 56, 63, 40], "sm_90": [72, 56, 56, 56, 56, 64, 40]},
    4: {"sm_80": [72, 54, 56, 63, 62, 54, 43], "sm_90": [72, 56, 56, 64, 63, 63, 43]},
}
PADNET_STATIC_SMEM = 576  # SharedGate<float>


def padnet_tilings(width: int, batch: int, H: int = 112, W: int = 48, elem: int = 4, sms: int = 132,
                   budget: int = 24 * 1024):
    """choose_tiling of padnet_encoder_kernels.cuh: per bneck (th, tw, tiles, smem bytes)."""
    candidates = [(8, 32), (8, 16), (4, 16), (4, 8), (2, 8), (2, 4), (1, 4), (1, 2), (1, 1)]
    layers, _ = padnet_layers(width, H, W)
    sizes = [(H, W), (H, W), (H, W)]
    h2, w2 = (H - 1) // 2 + 1, (W - 1) // 2 + 1
    h4, w4 = (h2 - 1) // 2 + 1, (w2 - 1) // 2 + 1
    sizes += [(h2, w2), (h2, w2), (h4, w4)]
    out = []
    for (name, K, S, cin, exp, cout, se, _, _), (h, w) in zip(layers, sizes):
        ho, wo = (h - 1) // S + 1, (w - 1) // S + 1
        g = min(exp, 16)
        min_px = min(16, ho * wo)
        chosen = None
        for th, tw in candidates:
            th, tw = min(th, ho), min(tw, wo)
            tiles = -(-ho // th) * -(-wo // tw)
            win = ((th - 1) * S + K) * ((tw - 1) * S + K)
            smem = ((cin + g) * win + (g + cout) * th * tw) * elem
            if smem > budget or (chosen and th * tw < min_px):
                continue
            if chosen is None or tiles > chosen[2]:
                chosen = (th, tw, tiles, smem)
            if batch * tiles >= 2 * sms and th * tw >= min_px:
                break
        out.append(chosen)
    return out
PTXAS_SOFTPROJ = {
    # kernel: {arch: (registers, spills, static smem)}
    "old forward (thread per query)": {"sm_80": (32, 0, 0), "sm_90": (32, 0, 0)},
    "old backward (thread per query, atomics)": {"sm_80": (63, 0, 0), "sm_90": (64, 0, 0)},
    "new forward (group per query)": {"sm_80": (56, 0, 0), "sm_90": (48, 0, 0)},
    "new backward, queries (group per query)": {"sm_80": (64, 0, 16896), "sm_90": (64, 0, 16896)},
    "new backward, gather (group per point)": {"sm_80": (54, 0, 0), "sm_90": (52, 0, 0)},
}


def main() -> None:
    print("== PAD-Net encoder, 112x48, per image")
    for width in (1, 2, 4):
        macs = padnet_macs(width)
        print(f"x{width}: {macs / 1e6:.2f} MMAC, old {padnet_bytes_old(width) / 1e6:.2f} MB, "
              f"new {padnet_bytes_new(width) / 1e6:.2f} MB")
    for width in (1, 2, 4):
        for batch in (1, 256):
            eb, ops = padnet_bytes_eager(width, batch)
            flops = 2 * padnet_macs(width) * batch
            old_b, new_b = padnet_bytes_old(width) * batch, padnet_bytes_new(width) * batch
            print(f"x{width} b{batch}: FLOP {flops / 1e9:.3f} G; bytes old {old_b / 1e6:.1f} MB "
                  f"new {new_b / 1e6:.1f} MB eager {eb / 1e6:.1f} MB ({ops} ops); roofline "
                  f"new {roofline(new_b, flops, 7) * 1e6:.1f} us, eager (GPU) "
                  f"{roofline(eb, flops, ops) * 1e6:.1f} us, eager CPU-bound floor "
                  f"{ops * EAGER_OP_S * 1e6:.0f} us")
    print("== PAD-Net tilings and occupancy (float32)")
    for width in (1, 2, 4):
        for batch in (1, 256):
            tl = padnet_tilings(width, batch)
            for arch in ("sm_80", "sm_90"):
                regs = PTXAS_PADNET_NEW[width][arch]
                occ = [occupancy(arch, 128, r, t[3] + PADNET_STATIC_SMEM)[1]
                       for r, t in zip(regs, tl)]
                print(f"x{width} b{batch} {arch}: tiles " +
                      ", ".join(f"{t[0]}x{t[1]}:{t[2]}:{t[3] // 1024}K" for t in tl) +
                      " occupancy " + ", ".join(f"{o:.0%}" for o in occ))
        print(f"x{width} old: occupancy " + ", ".join(
            f"{a} {occupancy(a, 256, PTXAS_PADNET_OLD[width][0][i], 1152)[1]:.1%} (grid <= SMs: 12.5%)"
            for i, a in enumerate(("sm_80", "sm_90"))))
    print("== soft_project occupancy")
    for k, v in PTXAS_SOFTPROJ.items():
        threads = 256 if k.startswith("old") else 128
        for arch, (regs, _, smem) in v.items():
            print(k, arch, occupancy(arch, threads, regs, smem))


if __name__ == "__main__":
    main()
