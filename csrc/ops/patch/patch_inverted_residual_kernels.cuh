// Device code and launch planning of patch_inverted_residual (torch-free: compiled by nvcc for
// the CUDA build and by g++ with the CUDA-on-CPU emulator for `pytest -m emulated`).
//
// One block per tile of a patch grid cell (patch_inverted_residual_tile_kernel): the input tile
// and its halo (k / 2 pixels, mapped at the image border by the padding mode) are staged in
// shared memory once; then per chunk of hidden channels the block stages the cell's weights of
// the chunk, expands the tile + halo once into shared memory (1x1 conv, folded BN, ReLU6; halo
// pixels with this cell's weights, as HyperSeg's unfold does; zero outside the image for zero
// padding), runs the depthwise k x k from shared memory (folded BN, ReLU6) and accumulates the
// projection in registers (each thread a register tile of output channels of one pixel). After
// the last chunk: the projection's folded BN, the residual from the staged tile, one write.
// Every sum runs in the index order of the direct kernel (input channels, taps, hidden channels)
// from zero, so both round alike. A is the compute type (float or double).
//
// The direct kernel (a thread per output pixel, the hidden values of its taps recomputed per tap,
// accumulating in the output) stays for blocks whose input tile cannot fit in shared memory even
// for one pixel (thousands of input channels or a huge kernel), the only sizes for which
// plan_inverted_residual refuses the tiled path.
#pragma once

#include <cstdint>

#include "fastvision/cuda_compat.h"
#include "fastvision/patch_conv.h"
#include "patch_conv2d_kernels.cuh"

namespace fastvision::patch {

// Register tiles: hidden channels per thread in the expansion (x 1 region pixel), and at most
// this many output channels per thread in the projection (x 1 pixel).
constexpr int kIrHiddenPerThread = 8;
constexpr int kIrMaxCoPerThread = 16;
constexpr int64_t kIrSmemBytes = 46 * 1024;  // below the 48 KiB granted without the opt-in

struct IrTilePlan {
  bool tiled = false;  // false: the tile does not fit (the direct kernel runs)
  int th = 1, tw = 1;  // output pixels per tile
  int rh = 1, rw = 1;  // tile + halo
  int hc = 1;          // hidden channels per chunk
  int co_slots = 1;    // threads per pixel in the projection
  int rc = 1;          // output channels per projection thread (<= kIrMaxCoPerThread)
  int bm = 1;          // output channels per block (co_slots * rc, at most Cout)
  int64_t tiles_y = 1, tiles_x = 1, co_tiles = 1, blocks = 0;
  // Shared-memory offsets (elements): x tile, expand / depthwise / project weights of the chunk,
  // expanded chunk, depthwise chunk; total.
  int64_t off_w1 = 0, off_w2 = 0, off_w3 = 0, off_e = 0, off_d = 0, elems = 0;
  std::size_t smem = 0;
};

inline void layout_ir(IrTilePlan& p, const IrGeometry& g) {
  const int64_t area = int64_t{p.rh} * p.rw;
  p.off_w1 = g.Cin * area;
  p.off_w2 = p.off_w1 + p.hc * g.Cin;
  p.off_w3 = p.off_w2 + int64_t{p.hc} * g.k * g.k;
  p.off_e = p.off_w3 + g.Cout * p.hc;
  p.off_d = p.off_e + p.hc * area;
  p.elems = p.off_d + int64_t{p.hc} * p.th * p.tw;
}

template <typename A>
inline IrTilePlan plan_inverted_residual(const IrGeometry& g) {
  IrTilePlan p;
  const int64_t cell_h = ceil_div(g.H, g.fh), cell_w = ceil_div(g.W, g.fw);
  p.tw = static_cast<int>(cell_w < 16 ? cell_w : 16);
  const int64_t rows = kPatchThreads / p.tw;
  p.th = static_cast<int>(cell_h < rows ? cell_h : rows);
  p.hc = static_cast<int>(g.hidden < 32 ? g.hidden : 32);
  const int64_t limit = kIrSmemBytes / static_cast<int64_t>(sizeof(A));
  for (;;) {
    if (int64_t{g.k} - 1 + p.th <= limit && int64_t{g.k} - 1 + p.tw <= limit) {
      p.rh = p.th + g.k - 1;
      p.rw = p.tw + g.k - 1;
      layout_ir(p, g);
      if (p.elems <= limit) break;
    }
    // Smaller hidden chunks first, down to the expansion's register tile; then smaller pixel
    // tiles (more halo recomputed); then chunks of a single hidden channel.
    if (p.hc > kIrHiddenPerThread) {
      p.hc = (p.hc + 1) / 2;
    } else if (p.th > 1 || p.tw > 1) {
      if (p.th >= p.tw) {
        p.th = (p.th + 1) / 2;
      } else {
        p.tw = (p.tw + 1) / 2;
      }
    } else if (p.hc > 1) {
      p.hc = (p.hc + 1) / 2;
    } else {
      return p;  // not tiled
    }
  }
  p.tiled = true;
  const int64_t pixels = int64_t{p.th} * p.tw;
  const int64_t slots = kPatchThreads / pixels;
  p.co_slots = static_cast<int>(slots < g.Cout ? slots : g.Cout);
  const int64_t per_block = int64_t{p.co_slots} * kIrMaxCoPerThread;
  p.bm = static_cast<int>(per_block < g.Cout ? per_block : g.Cout);
  p.rc = static_cast<int>(ceil_div<int64_t>(p.bm, p.co_slots));
  p.co_tiles = ceil_div<int64_t>(g.Cout, p.bm);
  p.tiles_y = ceil_div<int64_t>(cell_h, p.th);
  p.tiles_x = ceil_div<int64_t>(cell_w, p.tw);
  p.blocks = g.B * g.fh * g.fw * p.tiles_y * p.tiles_x * p.co_tiles;
  p.smem = static_cast<std::size_t>(p.elems) * sizeof(A);
  return p;
}

// At least 2 blocks of 256 threads per SM: at most 128 registers (ptxas -v: bench/analysis).
template <typename A>
FV_GLOBAL __launch_bounds__(kPatchThreads, 2) void patch_inverted_residual_tile_kernel(const A* __restrict__ x, Strides4 xs,
                                                   const A* __restrict__ w, Strides4 ws,
                                                   const A* __restrict__ s1, const A* __restrict__ b1,
                                                   const A* __restrict__ s2, const A* __restrict__ b2,
                                                   const A* __restrict__ s3, const A* __restrict__ b3,
                                                   A* __restrict__ out, IrGeometry g, IrTilePlan p) {
  FV_DYNAMIC_SHARED(A, smem);
  A* xt = smem;             // [Cin][rh][rw]: the input tile + halo
  A* w1 = smem + p.off_w1;  // [hc][Cin]
  A* w2 = smem + p.off_w2;  // [hc][k k]
  A* w3 = smem + p.off_w3;  // [Cout][hc]
  A* et = smem + p.off_e;   // [hc][rh][rw]: the expanded chunk
  A* dt = smem + p.off_d;   // [hc][th][tw]: the depthwise chunk
  const int r = g.k / 2, kk = g.k * g.k;
  // 32-bit index arithmetic inside the tile (at most kIrSmemBytes): 64-bit divisions per
  // element would cost more than the element's arithmetic.
  const int area = p.rh * p.rw, pixels = p.th * p.tw;
  const int64_t n1 = g.Cin * g.hidden, n2 = g.hidden * kk;
  // The projection's register tile: output channels co_slot + co_slots * [0, rc) of the block's
  // bm, at tile pixel (py, px).
  const int co_slot = static_cast<int>(threadIdx.x) / pixels;
  const int pix = static_cast<int>(threadIdx.x) % pixels, py = pix / p.tw, px = pix % p.tw;
  const int tid = static_cast<int>(threadIdx.x), nthreads = static_cast<int>(blockDim.x);
  const bool projects = co_slot < p.co_slots;
  for (int64_t item = blockIdx.x; item < p.blocks; item += gridDim.x) {
    int64_t rest = item;
    const int64_t cot = rest % p.co_tiles;
    rest /= p.co_tiles;
    const int64_t tx = rest % p.tiles_x;
    rest /= p.tiles_x;
    const int64_t ty = rest % p.tiles_y;
    rest /= p.tiles_y;
    const int64_t j = rest % g.fw;
    rest /= g.fw;
    const int64_t i = rest % g.fh, b = rest / g.fh;
    const int64_t y0 = cell_start(i, g.H, g.fh), y1 = cell_start(i + 1, g.H, g.fh);
    const int64_t x0 = cell_start(j, g.W, g.fw), x1 = cell_start(j + 1, g.W, g.fw);
    const int64_t oy0 = y0 + ty * p.th, ox0 = x0 + tx * p.tw;
    // The tile's valid pixels (a ragged cell's last tile is smaller).
    const int64_t nh = (y1 - oy0) < p.th ? y1 - oy0 : p.th, nw = (x1 - ox0) < p.tw ? x1 - ox0 : p.tw;
    const A* xb = x + b * xs.b;
    const A* wp = w + b * ws.b + i * ws.h + j * ws.w;
    // Stage the input tile + halo: region rows and columns the valid pixels read, through the
    // border mapping; -1 (zero padding) and unread positions hold 0.
    for (int e = tid; e < g.Cin * area; e += nthreads) {
      const int c = e / area, q = e - c * area, ry = q / p.rw, rx = q - ry * p.rw;
      A v = A(0);
      if (ry < nh + 2 * r && rx < nw + 2 * r) {
        const int64_t iy = map_coord(oy0 - r + ry, g.H, g.mode), ix = map_coord(ox0 - r + rx, g.W, g.mode);
        if (iy >= 0 && ix >= 0) v = xb[c * xs.c + iy * xs.h + ix * xs.w];
      }
      xt[e] = v;
    }
    A acc[kIrMaxCoPerThread];
    for (int c = 0; c < kIrMaxCoPerThread; ++c) acc[c] = A(0);
    for (int64_t h0 = 0; h0 < g.hidden; h0 += p.hc) {
      const int64_t hn = g.hidden - h0 < p.hc ? g.hidden - h0 : p.hc;
      // The chunk's weights from the hypernetwork layout: expand rows h0.., their depthwise
      // taps, and the projection columns h0.. of every output channel.
      for (int e = tid; e < hn * g.Cin; e += nthreads) {
        w1[e] = wp[(h0 * g.Cin + e) * ws.c];
      }
      for (int e = tid; e < hn * kk; e += nthreads) {
        w2[e] = wp[(n1 + h0 * kk + e) * ws.c];
      }
      for (int e = tid; e < g.Cout * hn; e += nthreads) {
        const int co = e / static_cast<int>(hn), h = e - co * static_cast<int>(hn);
        w3[co * p.hc + h] = wp[(n1 + n2 + co * g.hidden + h0 + h) * ws.c];
      }
      __syncthreads();  // the x tile (first chunk) and the chunk's weights are staged
      // Expand once: a thread per (region pixel, group of kIrHiddenPerThread hidden channels).
      const int groups = static_cast<int>(ceil_div<int64_t>(hn, kIrHiddenPerThread));
      for (int e = tid; e < area * groups; e += nthreads) {
        const int hg = e / area * kIrHiddenPerThread, q = e % area, ry = q / p.rw, rx = q % p.rw;
        // Zero padding pads the hidden activation: positions off the image expand to 0.
        const bool on_image = map_coord(oy0 - r + ry, g.H, g.mode) >= 0 && map_coord(ox0 - r + rx, g.W, g.mode) >= 0;
        A sum[kIrHiddenPerThread];
        for (int u = 0; u < kIrHiddenPerThread; ++u) sum[u] = A(0);
        for (int64_t c = 0; c < g.Cin; ++c) {
          const A xv = xt[c * area + q];
          for (int u = 0; u < kIrHiddenPerThread; ++u) {
            if (hg + u < hn) sum[u] += w1[(hg + u) * g.Cin + c] * xv;
          }
        }
        for (int u = 0; u < kIrHiddenPerThread; ++u) {
          const int64_t h = hg + u;
          if (h < hn) et[h * area + q] = on_image ? relu6(affine(sum[u], s1[h0 + h], b1[h0 + h])) : A(0);
        }
      }
      __syncthreads();  // the expanded chunk is complete
      // Depthwise k x k from shared memory: a thread per (hidden channel, tile pixel).
      for (int e = tid; e < hn * pixels; e += nthreads) {
        const int h = e / pixels, q = e - h * pixels, qy = q / p.tw, qx = q - qy * p.tw;
        const A* eh = et + h * area + qy * p.rw + qx;
        A dsum = A(0);
        for (int ky = 0; ky < g.k; ++ky) {
          for (int kx = 0; kx < g.k; ++kx) dsum += w2[h * kk + ky * g.k + kx] * eh[ky * p.rw + kx];
        }
        dt[e] = relu6(affine(dsum, s2[h0 + h], b2[h0 + h]));
      }
      __syncthreads();  // the depthwise chunk is complete
      if (projects) {
        for (int64_t h = 0; h < hn; ++h) {
          const A dv = dt[h * pixels + pix];
          for (int c = 0; c < kIrMaxCoPerThread; ++c) {
            const int64_t co = cot * p.bm + co_slot + int64_t{p.co_slots} * c;
            if (c < p.rc && co < g.Cout) acc[c] += w3[co * p.hc + h] * dv;
          }
        }
      }
      __syncthreads();  // w3 and dt are read before the next chunk overwrites them
    }
    if (projects && py < nh && px < nw) {
      const int64_t oy = oy0 + py, ox = ox0 + px;
      for (int c = 0; c < kIrMaxCoPerThread; ++c) {
        const int64_t co = cot * p.bm + co_slot + int64_t{p.co_slots} * c;
        if (c >= p.rc || co >= g.Cout || co >= (cot + 1) * p.bm) break;
        A v = affine(acc[c], s3[co], b3[co]);
        if (g.residual) v += xt[co * area + (py + r) * p.rw + px + r];
        out[((b * g.Cout + co) * g.H + oy) * g.W + ox] = v;
      }
    }
    __syncthreads();  // the x tile is read (residual) before the next item restages it
  }
}

// The direct kernel (fallback): a thread per output pixel.
template <typename A>
FV_GLOBAL void patch_inverted_residual_direct_kernel(const A* __restrict__ x, Strides4 xs,
                                              const A* __restrict__ w, Strides4 ws,
                                              const A* __restrict__ s1, const A* __restrict__ b1,
                                              const A* __restrict__ s2, const A* __restrict__ b2,
                                              const A* __restrict__ s3, const A* __restrict__ b3,
                                              A* __restrict__ out, IrGeometry g) {
  const int64_t total = g.B * g.H * g.W;
  const int r = g.k / 2, kk = g.k * g.k;
  const int64_t n1 = g.Cin * g.hidden, n2 = g.hidden * kk;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < total;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t px = e % g.W, py = e / g.W % g.H, b = e / (g.W * g.H);
    const int64_t i = cell_of(py, g.H, g.fh), j = cell_of(px, g.W, g.fw);
    const A* wp = w + b * ws.b + i * ws.h + j * ws.w;
    const A* xb = x + b * xs.b;
    A* ob = out + b * g.Cout * g.H * g.W + py * g.W + px;
    const int64_t plane = g.H * g.W;
    for (int64_t co = 0; co < g.Cout; ++co) ob[co * plane] = A(0);
    for (int64_t h = 0; h < g.hidden; ++h) {
      A dsum = A(0);
      for (int ky = 0; ky < g.k; ++ky) {
        const int64_t iy = map_coord(py - r + ky, g.H, g.mode);
        for (int kx = 0; kx < g.k; ++kx) {
          const int64_t ix = map_coord(px - r + kx, g.W, g.mode);
          A hv = A(0);
          if (iy >= 0 && ix >= 0) {
            A esum = A(0);
            for (int64_t ci = 0; ci < g.Cin; ++ci) {
              esum += wp[(h * g.Cin + ci) * ws.c] * xb[ci * xs.c + iy * xs.h + ix * xs.w];
            }
            hv = relu6(affine(esum, s1[h], b1[h]));
          }
          dsum += wp[(n1 + h * kk + ky * g.k + kx) * ws.c] * hv;
        }
      }
      const A dv = relu6(affine(dsum, s2[h], b2[h]));
      for (int64_t co = 0; co < g.Cout; ++co) ob[co * plane] += wp[(n1 + n2 + co * g.hidden + h) * ws.c] * dv;
    }
    for (int64_t co = 0; co < g.Cout; ++co) {
      A v = affine(ob[co * plane], s3[co], b3[co]);
      if (g.residual) v += xb[co * xs.c + py * xs.h + px * xs.w];
      ob[co * plane] = v;
    }
  }
}

// x (B, Cin, H, W) and weight (B, K, fh, fw) through strides; the six folded-BN vectors
// contiguous; out (B, Cout, H, W) contiguous. Requires B * H * W > 0. `direct` forces the direct
// kernel (the benchmark's pre-tiling baseline; tests compare the two). Returns the launch status.
template <typename A>
auto launch_patch_inverted_residual(const A* x, Strides4 xs, const A* w, Strides4 ws, const A* s1,
                                    const A* b1, const A* s2, const A* b2, const A* s3,
                                    const A* b3, A* out, const IrGeometry& g,
                                    cuda::Stream stream, bool direct = false) {
  const IrTilePlan p = plan_inverted_residual<A>(g);
  if (!p.tiled || direct) {
    return cuda::launch(patch_inverted_residual_direct_kernel<A>, patch_grid_stride_config(g.B * g.H * g.W),
                        stream, x, xs, w, ws, s1, b1, s2, b2, s3, b3, out, g);
  }
  cuda::LaunchConfig cfg;
  const int64_t cap = int64_t{1} << 30;
  cfg.grid = dim3(static_cast<unsigned>(p.blocks < cap ? p.blocks : cap));
  cfg.block = dim3(kPatchThreads);
  cfg.smem = p.smem;
  return cuda::launch(patch_inverted_residual_tile_kernel<A>, cfg, stream, x, xs, w, ws, s1, b1, s2,
                      b2, s3, b3, out, g, p);
}

}  // namespace fastvision::patch
