// Device code and launch planning of patch_conv2d and its backward (torch-free: compiled by nvcc
// for the CUDA build and by g++ with the CUDA-on-CPU emulator for `pytest -m emulated`).
//
// Each patch grid cell is a small GEMM, out_cell (Cout_g x pixels) = W_cell (Cout_g x Cin_g kh kw)
// . cols_cell, batched over the cells, with an implicit im2col from a halo tile in shared memory:
//   * forward (patch_conv2d_tile_forward_kernel): a block owns a strip of `cj` neighbouring cells
//     of one cell row (several cells when cells are small, so that the weight tile is read
//     coalesced from the hypernetwork layout (B, K, fh, fw), where an entry of neighbouring cells is
//     adjacent), one group, `bm` output channels and a th x tw tile of output pixels in each cell.
//     Per chunk of `bc` input channels it stages the cells' input region (the tile plus its halo,
//     mapped at the image border by the padding mode) and the matching weights in shared memory;
//     each thread accumulates a register tile of kCoPerThread output channels x 1 pixel, reading
//     the taps of its pixel from the staged region (each input element is read once from global
//     memory per block, and kh kw times from shared memory). The sum runs over (ci, ky, kx) in
//     index order from zero, then the bias: conv_tap_sum's order, so the tile and direct paths
//     round alike;
//   * grad_weight (patch_conv2d_tile_grad_weight_kernel): the per-cell GEMM reduction
//     dW_cell = grad_out_cell . cols_cell^T inside the block that owns the cell strip (no
//     atomics): each thread holds a register tile of 4 output channels x 4 taps and sums a fixed
//     residue class of the pixels; the pixel classes are combined by a fixed shuffle tree, so the
//     result is bitwise the same under any schedule;
//   * grad_input (patch_conv2d_tile_grad_input_kernel): the transposed GEMM dcols = W_cell^T .
//     grad_out_cell, gathered per input tile: a block owns a tile of input pixels and channels,
//     stages the output region that reads it (bm output channels at a time) and the weights of
//     the (usually at most 3 x 3) cells that region spans, and each thread sums 4 input channels
//     x 1 pixel over per-row / per-column lists of the (output pixel, tap) pairs that reach it
//     through the border mapping. No atomics, a fixed order: deterministic;
//   * grad_bias: a block per output channel, a fixed-shape tree reduction in shared memory.
// The direct kernels (a thread per output / weight entry / input element) stay for geometries
// whose tiles cannot fit in shared memory even for one pixel and one channel (huge dilations),
// the only sizes for which the planners refuse the tiled path, and as the benchmark's baseline.
// A is the compute type (float or double; the glue converts half and bfloat16 to float).
#pragma once

#include <cstdint>

#include "fastvision/cuda_compat.h"
#include "fastvision/patch_conv.h"

namespace fastvision::patch {

constexpr int kPatchThreads = 256;
// Output channels per thread in the forward's register tile, and taps per thread in the weight
// gradient's (4 x 4).
constexpr int kCoPerThread = 4;
constexpr int kTapsPerThread = 4;
// Shared memory a tile plan may use (below the 48 KiB every GPU grants without the opt-in, and
// small enough for several blocks per SM).
constexpr int64_t kTileSmemBytes = 40 * 1024;

// Grid-stride launch over n elements: at most 2^20 blocks, each thread loops over the rest.
inline cuda::LaunchConfig patch_grid_stride_config(int64_t n) {
  cuda::LaunchConfig cfg;
  const int64_t blocks = ceil_div<int64_t>(n, kPatchThreads);
  cfg.grid = dim3(static_cast<unsigned>(blocks < (int64_t{1} << 20) ? blocks : int64_t{1} << 20));
  cfg.block = dim3(kPatchThreads);
  return cfg;
}

FV_HOST_DEVICE FV_INLINE int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

FV_HOST_DEVICE FV_INLINE int64_t clamp_lo(int64_t v) { return v < 0 ? 0 : v; }
FV_HOST_DEVICE FV_INLINE int64_t clamp_hi(int64_t v, int64_t hi) { return v > hi ? hi : v; }

// ---- tile planning ------------------------------------------------------------------------------

// How a tiled kernel splits the work (shared by the forward and the weight gradient, whose
// plans differ in the register tile only). Block indices enumerate, slowest first: image, cell
// row, group, output-channel tile, input-channel chunk (weight gradient only), cell strip, pixel
// tile row, pixel tile column (forward only; the weight gradient loops over the pixel tiles).
struct ConvTilePlan {
  bool tiled = false;      // false: the halo tile does not fit (the direct kernel runs)
  int cj = 1;              // cells per block: a strip along the cell row
  int th = 1, tw = 1;      // output pixel tile per cell
  int rh = 1, rw = 1;      // the input region a pixel tile reads (tile + halo), per channel
  int bm = kCoPerThread;   // output channels per block
  int co_slots = 1;        // bm / kCoPerThread
  int bc = 1;              // input channels per chunk
  int kq = 1;              // weight gradient: tap quads per chunk, ceil(bc kh kw / 4)
  int ps = 1;              // weight gradient: threads that split one register tile's pixels
  int64_t strips = 1, co_tiles = 1, ci_chunks = 1, tiles_y = 1, tiles_x = 1;
  int64_t x_jj = 1, w_jj = 1, g_jj = 1;  // shared-memory strides between the cells of the strip
  int64_t blocks = 0;
  std::size_t smem = 0;
};

// Strides between cells in shared memory are odd, so that lanes reading the same offset in
// different cells hit different banks (the warp of a strip of 1-pixel cells).
inline int64_t odd_stride(int64_t n) { return n | 1; }

inline int64_t tile_region(int64_t t, int s, int d, int k) { return (t - 1) * s + int64_t{d} * (k - 1) + 1; }

// The forward's shared-memory layout for a plan: per cell, the input region of bc channels and
// the weights (bc kh kw taps x bm channels).
inline void layout_forward(ConvTilePlan& p, const ConvGeometry& g) {
  p.x_jj = odd_stride(int64_t{p.bc} * p.rh * p.rw);
  p.w_jj = odd_stride(int64_t{p.bc} * g.kh * g.kw * p.bm);
  p.smem = 0;
}

// At most this many cells per strip: 8 floats, a 32-byte sector of a weight entry in the
// hypernetwork layout. More would leave too few blocks for a GPU at HyperSeg's small levels.
constexpr int kMaxStripCells = 8;
// Plans aim at this many blocks at least (two per SM of an H100) before they trade output
// channels per block (register-tile reuse of the input) for more blocks.
constexpr int64_t kMinTileBlocks = 264;

// The cell tile and strip that fit: th x tw pixels (at most `pixels` of them) of the largest
// cell, as many cells as fit in `pixels` slots (at most kMaxStripCells).
inline void plan_pixels(ConvTilePlan& p, const ConvGeometry& g, int pixels) {
  const int64_t cell_h = ceil_div(g.Ho, g.fh), cell_w = ceil_div(g.Wo, g.fw);
  p.tw = static_cast<int>(cell_w < 16 ? cell_w : 16);
  const int64_t rows = pixels / p.tw;
  p.th = static_cast<int>(cell_h < rows ? cell_h : rows);
  int64_t cells = pixels / (int64_t{p.th} * p.tw);
  cells = cells < kMaxStripCells ? cells : kMaxStripCells;
  p.cj = static_cast<int>(cells < g.fw ? cells : g.fw);
}

// Halves the larger side of a th x tw pixel tile (th on a tie); false when the tile is one pixel.
inline bool halve_tile(int& th, int& tw) {
  if (th <= 1 && tw <= 1) return false;
  if (th >= tw) {
    th = (th + 1) / 2;
  } else {
    tw = (tw + 1) / 2;
  }
  return true;
}

// Halves the largest of bc, cj, th, tw until the shared memory fits; false when one pixel of one
// cell with one channel does not fit (a huge dilation).
template <typename Bytes>
inline bool shrink_to_fit(ConvTilePlan& p, const ConvGeometry& g, Bytes bytes) {
  for (;;) {
    const int64_t rh = tile_region(p.th, g.sh, g.dh, g.kh), rw = tile_region(p.tw, g.sw, g.dw, g.kw);
    if (rh <= kTileSmemBytes && rw <= kTileSmemBytes) {
      p.rh = static_cast<int>(rh);
      p.rw = static_cast<int>(rw);
      if (bytes(p) <= kTileSmemBytes) return true;
    }
    if (p.bc > 1) {
      p.bc = (p.bc + 1) / 2;
    } else if (p.cj > 1) {
      p.cj = (p.cj + 1) / 2;
    } else if (!halve_tile(p.th, p.tw)) {
      return false;
    }
  }
}

// The forward's plan for at most `max_slots` output-channel quads per block.
template <typename A>
inline ConvTilePlan plan_conv_forward_with(const ConvGeometry& g, int64_t max_slots) {
  ConvTilePlan p;
  const int64_t quads = ceil_div<int64_t>(g.cout_g, kCoPerThread);
  p.co_slots = static_cast<int>(quads < max_slots ? quads : max_slots);
  p.bm = p.co_slots * kCoPerThread;
  plan_pixels(p, g, kPatchThreads / p.co_slots);
  p.bc = static_cast<int>(g.cin_g < 16 ? g.cin_g : 16);
  p.tiled = shrink_to_fit(p, g, [&](ConvTilePlan& q) {
    layout_forward(q, g);
    return static_cast<int64_t>(sizeof(A)) * q.cj * (q.x_jj + q.w_jj);
  });
  if (!p.tiled) return p;
  layout_forward(p, g);
  p.smem = sizeof(A) * static_cast<std::size_t>(p.cj * (p.x_jj + p.w_jj));
  p.strips = ceil_div<int64_t>(g.fw, p.cj);
  p.co_tiles = ceil_div<int64_t>(g.cout_g, p.bm);
  p.tiles_y = ceil_div<int64_t>(ceil_div(g.Ho, g.fh), p.th);
  p.tiles_x = ceil_div<int64_t>(ceil_div(g.Wo, g.fw), p.tw);
  p.blocks = g.B * g.fh * g.groups * p.co_tiles * p.strips * p.tiles_y * p.tiles_x;
  return p;
}

// Up to 4 output-channel quads per block (16 channels), fewer while that leaves the GPU with
// fewer than kMinTileBlocks blocks.
template <typename A>
inline ConvTilePlan plan_conv_forward(const ConvGeometry& g) {
  ConvTilePlan p = plan_conv_forward_with<A>(g, 4);
  for (int64_t slots = 2; slots >= 1 && p.tiled && p.blocks < kMinTileBlocks; slots /= 2) {
    const ConvTilePlan q = plan_conv_forward_with<A>(g, slots);
    if (q.tiled && q.blocks > p.blocks) p = q;
  }
  return p;
}

// The weight gradient's layout: per cell, the input region of bc channels and grad_out of the
// tile's pixels for bm channels.
inline void layout_grad_weight(ConvTilePlan& p) {
  p.x_jj = odd_stride(int64_t{p.bc} * p.rh * p.rw);
  p.g_jj = odd_stride(int64_t{p.bm} * p.th * p.tw);
}

template <typename A>
inline ConvTilePlan plan_conv_grad_weight_with(const ConvGeometry& g, int64_t max_slots) {
  ConvTilePlan p;
  const int64_t quads = ceil_div<int64_t>(g.cout_g, kCoPerThread);
  p.co_slots = static_cast<int>(quads < max_slots ? quads : max_slots);
  p.bm = p.co_slots * kCoPerThread;
  plan_pixels(p, g, kPatchThreads);
  p.bc = static_cast<int>(g.cin_g < 16 ? g.cin_g : 16);
  p.tiled = shrink_to_fit(p, g, [&](ConvTilePlan& q) {
    layout_grad_weight(q);
    return static_cast<int64_t>(sizeof(A)) * q.cj * (q.x_jj + q.g_jj);
  });
  if (!p.tiled) return p;
  layout_grad_weight(p);
  p.smem = sizeof(A) * static_cast<std::size_t>(p.cj * (p.x_jj + p.g_jj));
  p.kq = static_cast<int>(ceil_div<int64_t>(int64_t{p.bc} * g.kh * g.kw, kTapsPerThread));
  // Register tiles (cell, output-channel quad, tap quad) of the block; when there are fewer than
  // threads, ps threads split each tile's pixels (a power of two up to a warp).
  const int64_t tiles = int64_t{p.cj} * p.co_slots * p.kq;
  p.ps = 1;
  while (p.ps < 32 && tiles * p.ps * 2 <= kPatchThreads && p.ps * 2 <= int64_t{p.th} * p.tw) p.ps *= 2;
  p.strips = ceil_div<int64_t>(g.fw, p.cj);
  p.co_tiles = ceil_div<int64_t>(g.cout_g, p.bm);
  p.ci_chunks = ceil_div<int64_t>(g.cin_g, p.bc);
  p.tiles_y = ceil_div<int64_t>(ceil_div(g.Ho, g.fh), p.th);
  p.tiles_x = ceil_div<int64_t>(ceil_div(g.Wo, g.fw), p.tw);
  p.blocks = g.B * g.fh * g.groups * p.co_tiles * p.ci_chunks * p.strips;
  return p;
}

template <typename A>
inline ConvTilePlan plan_conv_grad_weight(const ConvGeometry& g) {
  ConvTilePlan p = plan_conv_grad_weight_with<A>(g, 4);
  for (int64_t slots = 2; slots >= 1 && p.tiled && p.blocks < kMinTileBlocks; slots /= 2) {
    const ConvTilePlan q = plan_conv_grad_weight_with<A>(g, slots);
    if (q.tiled && q.blocks > p.blocks) p = q;
  }
  return p;
}

// A tiled launch (forward, weight or input gradient plan) covers plan.blocks work items with at
// most 2^30 blocks; a block loops over the items blockIdx.x, blockIdx.x + gridDim.x, ... (the same
// count for all its threads).
template <typename Plan>
cuda::LaunchConfig tile_config(const Plan& p) {
  cuda::LaunchConfig cfg;
  const int64_t cap = int64_t{1} << 30;
  cfg.grid = dim3(static_cast<unsigned>(p.blocks < cap ? p.blocks : cap));
  cfg.block = dim3(kPatchThreads);
  cfg.smem = p.smem;
  return cfg;
}

// The output pixel tile of a cell: rows [oy0, oy0 + nh), columns [ox0, ox0 + nw) (nh or nw may
// be <= 0 when the tile lies past a smaller, ragged cell).
struct CellTile {
  int64_t oy0, ox0, nh, nw;
};

FV_DEVICE CellTile cell_tile(const ConvGeometry& g, const ConvTilePlan& p, int64_t i, int64_t j,
                             int64_t ty, int64_t tx) {
  CellTile t;
  const int64_t y0 = cell_start(i, g.Ho, g.fh), y1 = cell_start(i + 1, g.Ho, g.fh);
  const int64_t x0 = cell_start(j, g.Wo, g.fw), x1 = cell_start(j + 1, g.Wo, g.fw);
  t.oy0 = y0 + ty * p.th;
  t.ox0 = x0 + tx * p.tw;
  const int64_t nh = y1 - t.oy0, nw = x1 - t.ox0;
  t.nh = nh < p.th ? nh : p.th;
  t.nw = nw < p.tw ? nw : p.tw;
  return t;
}

// Stages channels [c0, c0 + bc) of the input region of the strip's cell tiles in xs_tile
// ([cell][channel][row][column], cell stride plan.x_jj): region rows and columns that no valid
// output of the tile reads (past a ragged cell, past the last channel, or a cell past the grid)
// are zero; the others go through the border mapping (zero for zero padding).
template <typename A>
FV_DEVICE void stage_input_region(const A* __restrict__ xg, Strides4 xs, const ConvGeometry& g,
                                  const ConvTilePlan& p, int64_t i, int64_t j0, int64_t ty,
                                  int64_t tx, int64_t c0, A* xs_tile) {
  // 32-bit index arithmetic inside the tile (at most kTileSmemBytes): a 64-bit division per
  // staged element would cost more than the element's whole share of the convolution.
  const int area = p.rh * p.rw, per_cell = p.bc * area;
  for (int jj = 0; jj < p.cj; ++jj) {
    // The cell's tile and the region rows / columns its valid outputs read (the same for every
    // thread of the block).
    int64_t rows = 0, cols = 0;
    CellTile t{};
    if (j0 + jj < g.fw) {
      t = cell_tile(g, p, i, j0 + jj, ty, tx);
      rows = t.nh > 0 ? (t.nh - 1) * g.sh + int64_t{g.dh} * (g.kh - 1) + 1 : 0;
      cols = t.nw > 0 ? (t.nw - 1) * g.sw + int64_t{g.dw} * (g.kw - 1) + 1 : 0;
    }
    A* dst = xs_tile + jj * p.x_jj;
    for (int e = static_cast<int>(threadIdx.x); e < per_cell; e += static_cast<int>(blockDim.x)) {
      const int c = e / area, q = e - c * area, ry = q / p.rw, rx = q - ry * p.rw;
      A v = A(0);
      if (ry < rows && rx < cols && c0 + c < g.cin_g) {
        const int64_t iy = map_coord(t.oy0 * g.sh - g.ph + ry, g.H, g.mode);
        const int64_t ix = map_coord(t.ox0 * g.sw - g.pw + rx, g.W, g.mode);
        if (iy >= 0 && ix >= 0) v = xg[(c0 + c) * xs.c + iy * xs.h + ix * xs.w];
      }
      dst[e] = v;
    }
  }
}

// ---- forward --------------------------------------------------------------------------------------

// At least 3 blocks of 256 threads per SM: at most 85 registers (ptxas -v: bench/analysis).
template <typename A>
FV_GLOBAL __launch_bounds__(kPatchThreads, 3) void patch_conv2d_tile_forward_kernel(const A* __restrict__ x, Strides4 xs,
                                                const A* __restrict__ w, Strides4 ws,
                                                const A* __restrict__ bias, A* __restrict__ out,
                                                ConvGeometry g, ConvTilePlan p) {
  FV_DYNAMIC_SHARED(A, smem);
  A* xs_tile = smem;                 // [cell][bc][rh][rw]
  A* ws_tile = smem + p.cj * p.x_jj;  // [cell][bc kh kw][bm]
  const int khkw = g.kh * g.kw, taps = p.bc * khkw;
  const int64_t KK = g.cin_g * khkw;
  // A thread's register tile: output channels co_slot * 4 + [0, 4) of the block's bm, at pixel
  // `pix` of the strip (cell jj, row py, column px of the cell tile).
  const int pixel_slots = kPatchThreads / p.co_slots;
  const int co_slot = static_cast<int>(threadIdx.x) / pixel_slots, pix = static_cast<int>(threadIdx.x) % pixel_slots;
  const int jj = pix / (p.th * p.tw), py = pix % (p.th * p.tw) / p.tw, px = pix % p.tw;
  const bool computes = co_slot < p.co_slots && jj < p.cj;
  // Whether the weight tile is loaded with neighbouring cells (or neighbouring entries) on
  // neighbouring threads: whichever the hypernetwork layout keeps adjacent.
  const bool cells_fastest = (ws.w < 0 ? -ws.w : ws.w) <= (ws.c < 0 ? -ws.c : ws.c);
  for (int64_t item = blockIdx.x; item < p.blocks; item += gridDim.x) {
    int64_t rest = item;
    const int64_t tx = rest % p.tiles_x;
    rest /= p.tiles_x;
    const int64_t ty = rest % p.tiles_y;
    rest /= p.tiles_y;
    const int64_t j0 = rest % p.strips * p.cj;
    rest /= p.strips;
    const int64_t cot = rest % p.co_tiles;
    rest /= p.co_tiles;
    const int64_t grp = rest % g.groups;
    rest /= g.groups;
    const int64_t i = rest % g.fh, b = rest / g.fh;
    const A* xg = x + b * xs.b + grp * g.cin_g * xs.c;
    const int64_t co_base = grp * g.cout_g + cot * p.bm;  // the block's first output channel
    A acc[kCoPerThread];
    for (int r = 0; r < kCoPerThread; ++r) acc[r] = A(0);
    const int64_t x_base = jj * p.x_jj + int64_t{py} * g.sh * p.rw + int64_t{px} * g.sw;
    const int64_t w_base = jj * p.w_jj + co_slot * kCoPerThread;
    for (int64_t c0 = 0; c0 < g.cin_g; c0 += p.bc) {
      stage_input_region(xg, xs, g, p, i, j0, ty, tx, c0, xs_tile);
      const int w_elems = p.cj * taps * p.bm;  // 32-bit: within the shared-memory tile
      for (int e = static_cast<int>(threadIdx.x); e < w_elems; e += static_cast<int>(blockDim.x)) {
        int cj_i, kc, m;
        if (cells_fastest) {
          cj_i = e % p.cj;
          kc = e / p.cj % taps;
          m = e / (p.cj * taps);
        } else {
          kc = e % taps;
          cj_i = e / taps % p.cj;
          m = e / (taps * p.cj);
        }
        const int64_t j = j0 + cj_i;
        const int c = kc / khkw;
        A v = A(0);
        if (j < g.fw && c0 + c < g.cin_g && cot * p.bm + m < g.cout_g) {
          const int64_t k = (co_base + m) * KK + c0 * khkw + kc;  // entry (co, c0 + c, ky, kx)
          v = w[b * ws.b + k * ws.c + i * ws.h + j * ws.w];
        }
        ws_tile[cj_i * p.w_jj + kc * p.bm + m] = v;
      }
      __syncthreads();  // the input region and the weights are staged
      if (computes) {
        for (int c = 0; c < p.bc; ++c) {
          for (int ky = 0; ky < g.kh; ++ky) {
            const A* xrow = xs_tile + x_base + int64_t{c} * p.rh * p.rw + int64_t{ky} * g.dh * p.rw;
            const A* wk = ws_tile + w_base + int64_t{(c * g.kh + ky) * g.kw} * p.bm;
            for (int kx = 0; kx < g.kw; ++kx) {
              const A xv = xrow[int64_t{kx} * g.dw];
              for (int r = 0; r < kCoPerThread; ++r) acc[r] += wk[kx * p.bm + r] * xv;
            }
          }
        }
      }
      __syncthreads();  // the tiles are read before the next chunk overwrites them
    }
    if (computes) {
      const CellTile t = cell_tile(g, p, i, j0 + jj, ty, tx);
      if (j0 + jj < g.fw && py < t.nh && px < t.nw) {
        const int64_t oy = t.oy0 + py, ox = t.ox0 + px;
        for (int r = 0; r < kCoPerThread; ++r) {
          const int64_t co = co_base + co_slot * kCoPerThread + r;
          if (cot * p.bm + co_slot * kCoPerThread + r >= g.cout_g) break;
          A v = acc[r];
          if (bias != nullptr) v += bias[co];
          out[((b * g.Cout + co) * g.Ho + oy) * g.Wo + ox] = v;
        }
      }
    }
  }
}

// The direct forward: a thread per output element, conv_tap_sum over its cell's kernel read from
// the hypernetwork layout through strides, then the bias. Chosen only when plan_conv_forward
// finds no halo tile that fits in shared memory (a huge dilation).
template <typename A>
FV_GLOBAL void patch_conv2d_direct_forward_kernel(const A* __restrict__ x, Strides4 xs,
                                                  const A* __restrict__ w, Strides4 ws,
                                                  const A* __restrict__ bias, A* __restrict__ out,
                                                  ConvGeometry g) {
  const int64_t total = g.B * g.Cout * g.Ho * g.Wo;
  const int64_t KK = g.cin_g * g.kh * g.kw;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < total;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t ox = e % g.Wo, oy = e / g.Wo % g.Ho, co = e / (g.Wo * g.Ho) % g.Cout,
                  b = e / (g.Wo * g.Ho * g.Cout);
    const int64_t i = cell_of(oy, g.Ho, g.fh), j = cell_of(ox, g.Wo, g.fw);
    const int64_t grp = co / g.cout_g;
    const A* wp = w + b * ws.b + co * KK * ws.c + i * ws.h + j * ws.w;
    const A* xp = x + b * xs.b + grp * g.cin_g * xs.c;
    A acc = conv_tap_sum<A>(xp, xs.c, xs.h, xs.w, g.H, g.W, wp, ws.c, g.cin_g, g.kh, g.kw,
                            oy * g.sh - g.ph, ox * g.sw - g.pw, g.dh, g.dw, g.mode);
    if (bias != nullptr) acc += bias[co];
    out[e] = acc;
  }
}

// ---- weight gradient --------------------------------------------------------------------------

// grad_weight (B, K, fh, fw), contiguous; go contiguous (B, Cout, Ho, Wo); x through strides.
// 2 blocks per SM (at most 128 registers): with 3 (85 registers) ptxas spills the 4 x 4 tile.
template <typename A>
FV_GLOBAL __launch_bounds__(kPatchThreads, 2) void patch_conv2d_tile_grad_weight_kernel(const A* __restrict__ go, const A* __restrict__ x,
                                                    Strides4 xs, A* __restrict__ gw, ConvGeometry g,
                                                    ConvTilePlan p) {
  FV_DYNAMIC_SHARED(A, smem);
  A* xs_tile = smem;                  // [cell][bc][rh][rw]
  A* go_tile = smem + p.cj * p.x_jj;  // [cell][bm][th][tw]
  const int khkw = g.kh * g.kw, taps = p.bc * khkw, tile_pixels = p.th * p.tw;
  const int64_t KK = g.cin_g * khkw;
  // Register tiles of the block: (cell, output-channel quad, tap quad), cells fastest (adjacent
  // cells write adjacent grad_weight entries); ps consecutive threads split one tile's pixels.
  const int64_t reg_tiles = int64_t{p.cj} * p.co_slots * p.kq;
  const int part = static_cast<int>(threadIdx.x) % p.ps;
  const int64_t tiles_per_pass = kPatchThreads / p.ps;
  for (int64_t item = blockIdx.x; item < p.blocks; item += gridDim.x) {
    int64_t rest = item;
    const int64_t j0 = rest % p.strips * p.cj;
    rest /= p.strips;
    const int64_t c0 = rest % p.ci_chunks * p.bc;
    rest /= p.ci_chunks;
    const int64_t cot = rest % p.co_tiles;
    rest /= p.co_tiles;
    const int64_t grp = rest % g.groups;
    rest /= g.groups;
    const int64_t i = rest % g.fh, b = rest / g.fh;
    const A* xg = x + b * xs.b + grp * g.cin_g * xs.c;
    // Passes over the register tiles when they outnumber the thread groups (large kernels).
    for (int64_t pass = 0; pass * tiles_per_pass < reg_tiles; ++pass) {
      const int64_t tile = pass * tiles_per_pass + threadIdx.x / p.ps;
      const bool computes = tile < reg_tiles;
      const int jj = static_cast<int>(tile % p.cj);
      const int co_slot = static_cast<int>(tile / p.cj % p.co_slots);
      const int tq = static_cast<int>(tile / (int64_t{p.cj} * p.co_slots));
      // Shared-memory offsets of the tile's 4 taps (relative to a pixel's region origin); taps
      // past the chunk read offset 0 and are never written.
      // (int: offsets inside a shared-memory tile of at most kTileSmemBytes.)
      int tap_off[kTapsPerThread];
      for (int r = 0; r < kTapsPerThread; ++r) {
        const int kc = tq * kTapsPerThread + r;
        const int c = kc / khkw, ky = kc % khkw / g.kw, kx = kc % g.kw;
        tap_off[r] = kc < taps ? c * p.rh * p.rw + ky * g.dh * p.rw + kx * g.dw : 0;
      }
      A acc[kCoPerThread][kTapsPerThread];
      for (int m = 0; m < kCoPerThread; ++m) {
        for (int r = 0; r < kTapsPerThread; ++r) acc[m][r] = A(0);
      }
      for (int64_t ty = 0; ty < p.tiles_y; ++ty) {
        for (int64_t tx = 0; tx < p.tiles_x; ++tx) {
          stage_input_region(xg, xs, g, p, i, j0, ty, tx, c0, xs_tile);
          // grad_out of the tile's valid pixels, zero elsewhere (so they add nothing).
          for (int cj_i = 0; cj_i < p.cj; ++cj_i) {
            const int64_t j = j0 + cj_i;
            CellTile t{};
            if (j < g.fw) t = cell_tile(g, p, i, j, ty, tx);
            for (int e = static_cast<int>(threadIdx.x); e < p.bm * tile_pixels; e += static_cast<int>(blockDim.x)) {
              const int m = e / tile_pixels, q = e - m * tile_pixels, qy = q / p.tw, qx = q - qy * p.tw;
              const int64_t co_in_group = cot * p.bm + m;
              A v = A(0);
              if (j < g.fw && co_in_group < g.cout_g && qy < t.nh && qx < t.nw) {
                v = go[((b * g.Cout + grp * g.cout_g + co_in_group) * g.Ho + t.oy0 + qy) * g.Wo + t.ox0 + qx];
              }
              go_tile[cj_i * p.g_jj + e] = v;
            }
          }
          __syncthreads();  // the input region and the grad_out tile are staged
          if (computes) {
            const A* gt = go_tile + jj * p.g_jj + int64_t{co_slot} * kCoPerThread * tile_pixels;
            const A* xt = xs_tile + jj * p.x_jj;
            for (int q = part; q < tile_pixels; q += p.ps) {
              const int origin = q / p.tw * g.sh * p.rw + q % p.tw * g.sw;
              A gv[kCoPerThread], xv[kTapsPerThread];
              for (int m = 0; m < kCoPerThread; ++m) gv[m] = gt[m * tile_pixels + q];
              for (int r = 0; r < kTapsPerThread; ++r) xv[r] = xt[origin + tap_off[r]];
              for (int m = 0; m < kCoPerThread; ++m) {
                for (int r = 0; r < kTapsPerThread; ++r) acc[m][r] += gv[m] * xv[r];
              }
            }
          }
          __syncthreads();  // the tiles are read before the next pixel tile overwrites them
        }
      }
      // Combine the ps partial sums of a tile: a fixed shuffle tree inside aligned groups of ps
      // lanes (every lane takes part, so the masks are whole warps).
      for (int off = p.ps / 2; off > 0; off /= 2) {
        for (int m = 0; m < kCoPerThread; ++m) {
          for (int r = 0; r < kTapsPerThread; ++r) acc[m][r] += __shfl_down_sync(0xffffffffu, acc[m][r], off);
        }
      }
      if (computes && part == 0 && j0 + jj < g.fw) {
        for (int m = 0; m < kCoPerThread; ++m) {
          const int64_t co_in_group = cot * p.bm + co_slot * kCoPerThread + m;
          if (co_in_group >= g.cout_g) break;
          for (int r = 0; r < kTapsPerThread; ++r) {
            const int kc = tq * kTapsPerThread + r;
            if (kc >= taps || c0 + kc / khkw >= g.cin_g) break;
            const int64_t k = (grp * g.cout_g + co_in_group) * KK + c0 * khkw + kc;
            gw[((b * g.K + k) * g.fh + i) * g.fw + j0 + jj] = acc[m][r];
          }
        }
      }
    }
  }
}

// The per-entry weight gradient: a thread per (image, kernel entry, cell) sums over the cell's
// pixels. Chosen only with the direct forward (no halo tile fits).
template <typename A>
FV_GLOBAL void patch_conv2d_direct_grad_weight_kernel(const A* __restrict__ go, const A* __restrict__ x,
                                               Strides4 xs, A* __restrict__ gw, ConvGeometry g) {
  const int64_t total = g.B * g.K * g.fh * g.fw;
  const int64_t KK = g.cin_g * g.kh * g.kw;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < total;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t j = e % g.fw, i = e / g.fw % g.fh, k = e / (g.fw * g.fh) % g.K, b = e / (g.fw * g.fh * g.K);
    const int64_t co = k / KK, rem = k % KK;
    const int64_t ci = rem / (g.kh * g.kw);
    const int ky = static_cast<int>(rem / g.kw % g.kh), kx = static_cast<int>(rem % g.kw);
    const A* xc = x + b * xs.b + (co / g.cout_g * g.cin_g + ci) * xs.c;
    const A* gc = go + (b * g.Cout + co) * g.Ho * g.Wo;
    const int64_t y0 = cell_start(i, g.Ho, g.fh), y1 = cell_start(i + 1, g.Ho, g.fh);
    const int64_t x0 = cell_start(j, g.Wo, g.fw), x1 = cell_start(j + 1, g.Wo, g.fw);
    A acc = A(0);
    for (int64_t oy = y0; oy < y1; ++oy) {
      const int64_t iy = map_coord(oy * g.sh - g.ph + int64_t{ky} * g.dh, g.H, g.mode);
      if (iy < 0) continue;
      for (int64_t ox = x0; ox < x1; ++ox) {
        const int64_t ix = map_coord(ox * g.sw - g.pw + int64_t{kx} * g.dw, g.W, g.mode);
        if (ix >= 0) acc += gc[oy * g.Wo + ox] * xc[iy * xs.h + ix * xs.w];
      }
    }
    gw[e] = acc;
  }
}

// ---- input gradient ------------------------------------------------------------------------------
//
// grad_x = the transposed patch convolution: input element (c, iy, ix) of group grp receives
// sum over the padded coordinates (py, px) that map to it (itself, its reflections, or the
// replicated border run), the taps (ky, kx) and the output pixels (oy, ox) with
// oy sh - ph + ky dh = py, ox sw - pw + kx dw = px, and the output channels co of the group, of
// W_cell(oy, ox)[co, c, ky, kx] grad_out[co, oy, ox].
// The tiled kernel gives a block an input tile of th x tw pixels and bci input channels of one
// group (or, when groups have one input channel (depthwise), bci consecutive groups, so that no
// register-tile slot is padding): it stages the output region that reads the tile (bm output channels at a time) and the
// weights of the cells that region spans, and each thread sums a register tile of kCiPerThread
// input channels x 1 input pixel. Which (output row, tap row) pairs reach an input row is a short
// list per row (and per column), built once per block in shared memory, so the inner loop is two
// shared-memory offsets added per term: no divisions, no border mapping, no cell lookup. A
// gather, so no atomics: the sum per element runs over the output-channel chunks, then the row
// list, the column list, the chunk's channels, in a fixed order (deterministic).

// Input channels per thread in the input gradient's register tile.
constexpr int kCiPerThread = 4;

// One spatial axis of the geometry, as the input gradient's planning and lists see it.
struct GradAxis {
  int64_t n, no, f;  // input size, output size, cells
  int64_t pad_hi;    // how far past the last input coordinate the taps reach (>= 0)
  int s, pad, d, k, mode;
};

inline GradAxis grad_axis_y(const ConvGeometry& g) {
  const int64_t reach = (g.Ho - 1) * g.sh - g.ph + int64_t{g.dh} * (g.kh - 1) - (g.H - 1);
  return {g.H, g.Ho, g.fh, reach > 0 ? reach : 0, g.sh, g.ph, g.dh, g.kh, g.mode};
}

inline GradAxis grad_axis_x(const ConvGeometry& g) {
  const int64_t reach = (g.Wo - 1) * g.sw - g.pw + int64_t{g.dw} * (g.kw - 1) - (g.W - 1);
  return {g.W, g.Wo, g.fw, reach > 0 ? reach : 0, g.sw, g.pw, g.dw, g.kw, g.mode};
}

// The output coordinates that read input coordinates [i0, i1) of an axis (through the border
// mapping): the hull [o0, o0 + count) (count 0: none does) and the cells it spans,
// [c0, c0 + cells).
struct AxisRegion {
  int64_t o0, count, c0, cells;
};

FV_HOST_DEVICE FV_INLINE AxisRegion axis_region(const GradAxis& a, int64_t i0, int64_t i1) {
  // The hull of the padded coordinates that map into [i0, i1): its extremes are preimages of the
  // first and last coordinates (the tile itself, the replicated runs) or of the coordinates
  // nearest the reflection limits (the farthest reflections).
  int64_t plo = i0, phi = i1 - 1;
  const int64_t cand[4] = {i0, i1 - 1, clamp_hi(a.pad > i0 ? a.pad : i0, i1 - 1),
                           clamp_hi(a.n - 1 - a.pad_hi > i0 ? a.n - 1 - a.pad_hi : i0, i1 - 1)};
  for (int q = 0; q < 4; ++q) {
    int64_t lo[3], hi[3];
    const int cnt = preimages(cand[q], a.n, a.pad, a.pad_hi, a.mode, lo, hi);
    for (int t = 0; t < cnt; ++t) {
      plo = lo[t] < plo ? lo[t] : plo;
      phi = hi[t] > phi ? hi[t] : phi;
    }
  }
  // oy s - pad + ky d = py for some ky in [0, k): oy in [ceil((plo + pad - (k-1) d) / s),
  // floor((phi + pad) / s)].
  const int64_t o0 = clamp_lo(floor_div(plo + a.pad - int64_t{a.d} * (a.k - 1) + a.s - 1, a.s));
  const int64_t o1 = clamp_hi(floor_div(phi + a.pad, a.s), a.no - 1);
  AxisRegion r{o0, 0, 0, 0};
  if (o1 < o0) return r;
  r.count = o1 - o0 + 1;
  r.c0 = cell_of(o0, a.no, a.f);
  r.cells = cell_of(o1, a.no, a.f) - r.c0 + 1;
  return r;
}

// The (output coordinate, tap) pairs of an axis that read input coordinate i, in a fixed order
// (preimage, padded coordinate, tap), as shared-memory offsets: go_off = (o - region.o0) go_mult
// into the staged grad_out, w_off = (cell(o) - region.c0) cell_mult + tap tap_mult into the staged
// weights. Writes them when go_off is not null; returns how many there are.
FV_DEVICE int axis_entries(const GradAxis& a, const AxisRegion& r, int64_t i, int go_mult, int cell_mult,
                           int tap_mult, int* go_off, int* w_off) {
  int64_t lo[3], hi[3];
  const int cnt = preimages(i, a.n, a.pad, a.pad_hi, a.mode, lo, hi);
  int n = 0;
  for (int t = 0; t < cnt; ++t) {
    for (int64_t pc = lo[t]; pc <= hi[t]; ++pc) {
      for (int kk = 0; kk < a.k; ++kk) {
        const int64_t num = pc + a.pad - int64_t{kk} * a.d;  // o s
        if (num < 0 || num % a.s != 0) continue;
        const int64_t o = num / a.s;
        if (o >= a.no) continue;
        if (go_off != nullptr) {
          go_off[n] = static_cast<int>((o - r.o0) * go_mult);
          w_off[n] = static_cast<int>((cell_of(o, a.no, a.f) - r.c0) * cell_mult + kk * tap_mult);
        }
        ++n;
      }
    }
  }
  return n;
}

struct GradInputPlan {
  bool tiled = false;  // false: no plan fits (the direct kernel runs)
  int th = 1, tw = 1;  // input pixel tile
  int ci_slots = 1;    // input-channel quads per block
  int bci = kCiPerThread;  // input channels per block (ci_slots kCiPerThread)
  bool packed = false;     // the block's channels are bci groups of one input channel each
  int bm = 1;          // output channels per staged chunk (the reduction)
  int orh = 1, orw = 1;  // the largest output region of a tile (rows, columns)
  int ncy = 1, ncx = 1;  // the most cells such a region spans (rows, columns)
  int ylist = 1, xlist = 1;  // list capacities: each (output row, tap row) pair reaches one input row
  GradAxis ay{}, ax{};
  int64_t w_elems = 0, go_elems = 0;  // staged weights [cell y][cell x][tap][co][ci], grad_out [co][row][col]
  int64_t tiles_y = 1, tiles_x = 1, ci_tiles = 1, blocks = 0;
  std::size_t smem = 0;
};

// The largest output region (and cell span) of any tile of size t along an axis: exact (every
// tile position is visited), since the border tiles' regions differ from the interior ones'.
inline AxisRegion max_axis_region(const GradAxis& a, int64_t t) {
  AxisRegion m{0, 1, 0, 1};
  for (int64_t i0 = 0; i0 < a.n; i0 += t) {
    const AxisRegion r = axis_region(a, i0, i0 + t < a.n ? i0 + t : a.n);
    m.count = r.count > m.count ? r.count : m.count;
    m.cells = r.cells > m.cells ? r.cells : m.cells;
  }
  return m;
}

template <typename A>
inline std::size_t grad_input_smem(GradInputPlan& p, const ConvGeometry& g) {
  p.w_elems = int64_t{p.ncy} * p.ncx * g.kh * g.kw * p.bm * p.bci;
  p.go_elems = int64_t{p.packed ? p.bci : 1} * p.bm * p.orh * p.orw;
  const int64_t ints = (p.th + 1) + 2 * int64_t{p.ylist} + (p.tw + 1) + 2 * int64_t{p.xlist};
  return sizeof(A) * static_cast<std::size_t>(p.w_elems + p.go_elems) + sizeof(int) * static_cast<std::size_t>(ints);
}

// The plan for `ci_slots` input-channel quads and at most `pixels` input pixels per block:
// halves the output-channel chunk, then the tile, until the shared memory fits.
template <typename A>
inline GradInputPlan plan_conv_grad_input_with(const ConvGeometry& g, int ci_slots, int pixels) {
  GradInputPlan p;
  p.ay = grad_axis_y(g);
  p.ax = grad_axis_x(g);
  p.ci_slots = ci_slots;
  p.bci = ci_slots * kCiPerThread;
  p.packed = g.cin_g == 1 && g.groups > 1;
  p.bm = static_cast<int>(g.cout_g < 16 ? g.cout_g : 16);
  p.tw = static_cast<int>(g.W < 16 ? g.W : 16);
  p.tw = p.tw < pixels ? p.tw : pixels;
  p.th = static_cast<int>(g.H < pixels / p.tw ? g.H : pixels / p.tw);
  for (;;) {
    const AxisRegion ry = max_axis_region(p.ay, p.th), rx = max_axis_region(p.ax, p.tw);
    const int64_t ylist = ry.count * g.kh, xlist = rx.count * g.kw;
    if (ylist <= kTileSmemBytes && xlist <= kTileSmemBytes) {
      p.orh = static_cast<int>(ry.count);
      p.orw = static_cast<int>(rx.count);
      p.ncy = static_cast<int>(ry.cells);
      p.ncx = static_cast<int>(rx.cells);
      p.ylist = static_cast<int>(ylist);
      p.xlist = static_cast<int>(xlist);
      p.smem = grad_input_smem<A>(p, g);
      if (p.smem <= static_cast<std::size_t>(kTileSmemBytes)) break;
    }
    if (p.bm > 1) {
      p.bm = (p.bm + 1) / 2;
    } else if (!halve_tile(p.th, p.tw)) {
      return p;  // not tiled
    }
  }
  p.tiled = true;
  p.tiles_y = ceil_div<int64_t>(g.H, p.th);
  p.tiles_x = ceil_div<int64_t>(g.W, p.tw);
  p.ci_tiles = ceil_div<int64_t>(p.packed ? g.groups : g.cin_g, p.bci);
  p.blocks = g.B * (p.packed ? 1 : g.groups) * p.ci_tiles * p.tiles_y * p.tiles_x;
  return p;
}

// Up to 4 input-channel quads and 256 / quads pixels per block; fewer quads, then smaller tiles,
// while that leaves the GPU fewer than min_blocks blocks (HyperSeg's small levels; the emulated
// tests pass 1 to run the largest tiles on small images).
template <typename A>
inline GradInputPlan plan_conv_grad_input(const ConvGeometry& g, int64_t min_blocks = kMinTileBlocks) {
  // Packed groups share no grad_out or weights between slots: one quad per block, so that the
  // pixel tile (and the reuse of each staged element by the taps) is as large as it can be.
  const int64_t quads = g.cin_g == 1 && g.groups > 1 ? 1 : ceil_div<int64_t>(g.cin_g, kCiPerThread);
  GradInputPlan best;
  for (int slots = static_cast<int>(quads < 4 ? quads : 4); slots >= 1; slots /= 2) {
    for (int pixels = kPatchThreads / slots; pixels >= 1; pixels /= 2) {
      const GradInputPlan q = plan_conv_grad_input_with<A>(g, slots, pixels);
      if (!q.tiled) break;
      if (!best.tiled || (best.blocks < min_blocks && q.blocks > best.blocks)) best = q;
      if (best.blocks >= min_blocks) return best;
    }
  }
  return best;
}

// grad_out (B, Cout, Ho, Wo) contiguous, weight through strides, grad_x (B, Cin, H, W) contiguous.
// At least 3 blocks of 256 threads per SM (ptxas -v: bench/analysis/patch_conv2d.md).
template <typename A>
FV_GLOBAL __launch_bounds__(kPatchThreads, 3) void patch_conv2d_tile_grad_input_kernel(
    const A* __restrict__ go, const A* __restrict__ w, Strides4 ws, A* __restrict__ gx, ConvGeometry g,
    GradInputPlan p) {
  FV_DYNAMIC_SHARED(A, smem);
  A* w_tile = smem;                 // [cell row][cell column][tap][bm][bci]
  A* go_tile = smem + p.w_elems;    // [bm][orh][orw]; packed: [bci][bm][orh][orw]
  int* y_start = reinterpret_cast<int*>(go_tile + p.go_elems);  // th + 1 list offsets
  int* y_go = y_start + p.th + 1;   // ylist entries
  int* y_w = y_go + p.ylist;
  int* x_start = y_w + p.ylist;     // tw + 1
  int* x_go = x_start + p.tw + 1;
  int* x_w = x_go + p.xlist;
  const int khkw = g.kh * g.kw, pixels = p.th * p.tw, mb = p.bm * p.bci;
  const int64_t KK = g.cin_g * khkw;
  const int tid = static_cast<int>(threadIdx.x);
  const int ci_slot = tid / pixels, pix = tid % pixels, py = pix / p.tw, px = pix % p.tw;
  const bool computes = ci_slot < p.ci_slots;
  // Whether neighbouring threads stage neighbouring cells (or neighbouring entries) of the
  // weights: whichever the hypernetwork layout keeps adjacent.
  const bool cells_fastest = (ws.w < 0 ? -ws.w : ws.w) <= (ws.c < 0 ? -ws.c : ws.c);
  for (int64_t item = blockIdx.x; item < p.blocks; item += gridDim.x) {
    int64_t rest = item;
    const int64_t tx = rest % p.tiles_x;
    rest /= p.tiles_x;
    const int64_t ty = rest % p.tiles_y;
    rest /= p.tiles_y;
    const int64_t ci0 = rest % p.ci_tiles * p.bci;  // packed: the first group
    rest /= p.ci_tiles;
    const int64_t grp = p.packed ? 0 : rest % g.groups, b = p.packed ? rest : rest / g.groups;
    // The block's channel slot s is input channel c_base + s (of group grp, or, packed, of group
    // c_base + s); `channels` of them exist.
    const int64_t c_base = grp * g.cin_g + ci0, channels = p.packed ? g.groups - ci0 : g.cin_g - ci0;
    const int64_t y0 = ty * p.th, x0 = tx * p.tw;
    const int64_t y1 = y0 + p.th < g.H ? y0 + p.th : g.H, x1 = x0 + p.tw < g.W ? x0 + p.tw : g.W;
    const AxisRegion ry = axis_region(p.ay, y0, y1), rx = axis_region(p.ax, x0, x1);
    // The lists: threads [0, th) count their input row's pairs, threads [th, th + tw) their
    // column's; one thread turns the counts into offsets; then each writes its entries.
    for (int pass = 0; pass < 2; ++pass) {
      for (int e = tid; e < p.th + p.tw; e += static_cast<int>(blockDim.x)) {
        const bool row = e < p.th;
        const int r = row ? e : e - p.th;
        int* start = row ? y_start : x_start;
        int count = 0;
        if (row ? y0 + r < y1 : x0 + r < x1) {
          count = row ? axis_entries(p.ay, ry, y0 + r, p.orw, p.ncx * khkw * mb, g.kw * mb,
                                     pass ? y_go + start[r] : nullptr, pass ? y_w + start[r] : nullptr)
                      : axis_entries(p.ax, rx, x0 + r, 1, khkw * mb, mb, pass ? x_go + start[r] : nullptr,
                                     pass ? x_w + start[r] : nullptr);
        }
        if (pass == 0) start[r + 1] = count;
      }
      if (pass == 0) {
        __syncthreads();  // the counts are written
        if (tid == 0) {
          y_start[0] = 0;
          for (int r = 0; r < p.th; ++r) y_start[r + 1] += y_start[r];
          x_start[0] = 0;
          for (int r = 0; r < p.tw; ++r) x_start[r + 1] += x_start[r];
        }
        __syncthreads();  // the offsets are known
      }
    }
    A acc[kCiPerThread];
    for (int r = 0; r < kCiPerThread; ++r) acc[r] = A(0);
    const int region_cells = static_cast<int>(ry.cells * rx.cells);
    for (int64_t co0 = 0; co0 < g.cout_g; co0 += p.bm) {
      // grad_out of the region (packed: of each slot's group), zero for channels past the group.
      const int plane = static_cast<int>(ry.count * rx.count);
      const int go_n = (p.packed ? p.bci : 1) * p.bm * plane;
      for (int e = tid; e < go_n; e += static_cast<int>(blockDim.x)) {
        const int sm = e / plane, q = e - sm * plane, r = q / static_cast<int>(rx.count),
                  c = q - r * static_cast<int>(rx.count);
        const int slot = sm / p.bm, m = sm - slot * p.bm;  // slot 0 unless packed
        A v = A(0);
        if (co0 + m < g.cout_g && slot < channels) {
          const int64_t co = (p.packed ? c_base + slot : grp) * g.cout_g + co0 + m;
          v = go[((b * g.Cout + co) * g.Ho + ry.o0 + r) * g.Wo + rx.o0 + c];
        }
        go_tile[(sm * p.orh + r) * p.orw + c] = v;
      }
      // The weights of the region's cells, zero for channels past the group.
      const int w_n = region_cells * khkw * mb;
      for (int e = tid; e < w_n; e += static_cast<int>(blockDim.x)) {
        int cell, tap, m, ci;
        if (cells_fastest) {
          cell = e % region_cells;
          const int q = e / region_cells;
          tap = q % khkw;
          ci = q / khkw % p.bci;
          m = q / (khkw * p.bci);
        } else {
          tap = e % khkw;
          ci = e / khkw % p.bci;
          m = e / (khkw * p.bci) % p.bm;
          cell = e / (khkw * mb);
        }
        const int cy = cell / static_cast<int>(rx.cells), cx = cell - cy * static_cast<int>(rx.cells);
        A v = A(0);
        if (co0 + m < g.cout_g && ci < channels) {
          // Entry (co, ci, ky, kx) of the cell's kernel; packed: ci = 0 of group c_base + ci.
          const int64_t k = p.packed ? ((c_base + ci) * g.cout_g + co0 + m) * KK + tap
                                     : (grp * g.cout_g + co0 + m) * KK + (ci0 + ci) * khkw + tap;
          v = w[b * ws.b + k * ws.c + (ry.c0 + cy) * ws.h + (rx.c0 + cx) * ws.w];
        }
        w_tile[(((cy * p.ncx + cx) * khkw + tap) * p.bm + m) * p.bci + ci] = v;
      }
      __syncthreads();  // grad_out and the weights are staged
      if (computes && py < y1 - y0 && px < x1 - x0) {
        const int area = p.orh * p.orw, yend = y_start[py + 1], xbeg = x_start[px], xend = x_start[px + 1];
        // Packed, each slot reads its own group's grad_out, bm area apart.
        const int slot_stride = p.bm * area;
        const A* go_slot = go_tile + (p.packed ? ci_slot * kCiPerThread * slot_stride : 0);
        for (int ey = y_start[py]; ey < yend; ++ey) {
          const int gy = y_go[ey], wy = y_w[ey] + ci_slot * kCiPerThread;
          for (int ex = xbeg; ex < xend; ++ex) {
            const A* gt = go_slot + gy + x_go[ex];
            const A* wt = w_tile + wy + x_w[ex];
            if (p.packed) {
              for (int m = 0; m < p.bm; ++m) {
                for (int r = 0; r < kCiPerThread; ++r) acc[r] += wt[m * p.bci + r] * gt[r * slot_stride + m * area];
              }
            } else {
              for (int m = 0; m < p.bm; ++m) {
                const A gv = gt[m * area];
                for (int r = 0; r < kCiPerThread; ++r) acc[r] += wt[m * p.bci + r] * gv;
              }
            }
          }
        }
      }
      __syncthreads();  // the tiles (and the lists, after the last chunk) are read before they are overwritten
    }
    if (computes && py < y1 - y0 && px < x1 - x0) {
      for (int r = 0; r < kCiPerThread; ++r) {
        const int slot = ci_slot * kCiPerThread + r;
        if (slot >= channels) break;
        gx[((b * g.Cin + c_base + slot) * g.H + y0 + py) * g.W + x0 + px] = acc[r];
      }
    }
  }
}

// The direct input gradient (B, Cin, H, W), contiguous: a thread per input element gathers over
// the output pixels and taps that read it. Chosen only where no input tile's output region and
// cell weights fit in shared memory (huge dilations or paddings), and by `direct`.
template <typename A>
FV_GLOBAL void patch_conv2d_direct_grad_input_kernel(const A* __restrict__ go, const A* __restrict__ w,
                                              Strides4 ws, A* __restrict__ gx, ConvGeometry g,
                                              int64_t pad_hi_y, int64_t pad_hi_x) {
  const int64_t total = g.B * g.Cin * g.H * g.W;
  const int64_t KK = g.cin_g * g.kh * g.kw;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < total;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t ix = e % g.W, iy = e / g.W % g.H, c = e / (g.W * g.H) % g.Cin, b = e / (g.W * g.H * g.Cin);
    const int64_t grp = c / g.cin_g, ci = c % g.cin_g;
    int64_t ylo[3], yhi[3], xlo[3], xhi[3];
    const int ny = preimages(iy, g.H, g.ph, pad_hi_y, g.mode, ylo, yhi);
    const int nx = preimages(ix, g.W, g.pw, pad_hi_x, g.mode, xlo, xhi);
    A acc = A(0);
    for (int ky = 0; ky < g.kh; ++ky) {
      for (int ay = 0; ay < ny; ++ay) {
        // oy * sh - ph + ky * dh in [ylo, yhi]
        const int64_t off_y = g.ph - int64_t{ky} * g.dh;
        const int64_t oy0 = clamp_lo(floor_div(ylo[ay] + off_y + g.sh - 1, g.sh));
        const int64_t oy1 = clamp_hi(floor_div(yhi[ay] + off_y, g.sh), g.Ho - 1);
        for (int64_t oy = oy0; oy <= oy1; ++oy) {
          const int64_t pi = cell_of(oy, g.Ho, g.fh);
          for (int kx = 0; kx < g.kw; ++kx) {
            for (int ax = 0; ax < nx; ++ax) {
              const int64_t off_x = g.pw - int64_t{kx} * g.dw;
              const int64_t ox0 = clamp_lo(floor_div(xlo[ax] + off_x + g.sw - 1, g.sw));
              const int64_t ox1 = clamp_hi(floor_div(xhi[ax] + off_x, g.sw), g.Wo - 1);
              for (int64_t ox = ox0; ox <= ox1; ++ox) {
                const int64_t pj = cell_of(ox, g.Wo, g.fw);
                const A* wp = w + b * ws.b + pi * ws.h + pj * ws.w;
                const int64_t tap = (ci * g.kh + ky) * g.kw + kx;
                for (int64_t r = 0; r < g.cout_g; ++r) {
                  const int64_t co = grp * g.cout_g + r;
                  acc += wp[(co * KK + tap) * ws.c] * go[((b * g.Cout + co) * g.Ho + oy) * g.Wo + ox];
                }
              }
            }
          }
        }
      }
    }
    gx[e] = acc;
  }
}

// grad_bias: one block per output channel, a fixed-shape tree reduction (deterministic).
template <typename A>
FV_GLOBAL void patch_conv2d_grad_bias_kernel(const A* __restrict__ go, A* __restrict__ gb,
                                             ConvGeometry g) {
  FV_SHARED(A[kPatchThreads], partial);
  const int64_t co = blockIdx.x;
  const int64_t plane = g.Ho * g.Wo;
  A s = A(0);
  for (int64_t b = 0; b < g.B; ++b) {
    const A* p = go + (b * g.Cout + co) * plane;
    for (int64_t t = threadIdx.x; t < plane; t += blockDim.x) s += p[t];
  }
  partial[threadIdx.x] = s;
  __syncthreads();
  for (unsigned half = kPatchThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) gb[co] = partial[0];
}

// Launch sequences. Every output is written (no zero-initialisation needed); each requires a
// non-empty output. They return the launch status.

// x (B, Cin, H, W) and weight (B, K, fh, fw) read through strides, bias (Cout) or null,
// out (B, Cout, Ho, Wo) contiguous.
// `direct` forces the direct kernel (the benchmark's pre-tiling baseline; tests compare the two).
template <typename A>
auto launch_patch_conv2d_forward(const A* x, Strides4 xs, const A* w, Strides4 ws, const A* bias,
                                 A* out, const ConvGeometry& g, cuda::Stream stream, bool direct = false) {
  const ConvTilePlan p = plan_conv_forward<A>(g);
  if (!p.tiled || direct) {
    return cuda::launch(patch_conv2d_direct_forward_kernel<A>,
                        patch_grid_stride_config(g.B * g.Cout * g.Ho * g.Wo), stream, x, xs, w, ws,
                        bias, out, g);
  }
  return cuda::launch(patch_conv2d_tile_forward_kernel<A>, tile_config(p), stream, x, xs, w, ws,
                      bias, out, g, p);
}

// grad_out (B, Cout, Ho, Wo) contiguous, weight through strides, grad_x (B, Cin, H, W) contiguous.
// Geometries that no tile plan fits take the direct gather, as does `direct`.
template <typename A>
auto launch_patch_conv2d_grad_input(const A* go, const A* w, Strides4 ws, A* gx,
                                    const ConvGeometry& g, cuda::Stream stream, bool direct = false,
                                    int64_t min_blocks = kMinTileBlocks) {
  const GradInputPlan p = plan_conv_grad_input<A>(g, min_blocks);
  if (!p.tiled || direct) {
    return cuda::launch(patch_conv2d_direct_grad_input_kernel<A>,
                        patch_grid_stride_config(g.B * g.Cin * g.H * g.W), stream, go, w, ws, gx, g,
                        p.ay.pad_hi, p.ax.pad_hi);
  }
  return cuda::launch(patch_conv2d_tile_grad_input_kernel<A>, tile_config(p), stream, go, w, ws,
                      gx, g, p);
}

// grad_out contiguous, x through strides, grad_weight (B, K, fh, fw) contiguous. Halo tiles that
// no plan fits (huge dilations) take the per-entry kernel, as does `direct`.
template <typename A>
auto launch_patch_conv2d_grad_weight(const A* go, const A* x, Strides4 xs, A* gw,
                                     const ConvGeometry& g, cuda::Stream stream, bool direct = false) {
  const ConvTilePlan p = plan_conv_grad_weight<A>(g);
  if (!p.tiled || direct) {
    return cuda::launch(patch_conv2d_direct_grad_weight_kernel<A>,
                        patch_grid_stride_config(g.B * g.K * g.fh * g.fw), stream, go, x, xs, gw, g);
  }
  return cuda::launch(patch_conv2d_tile_grad_weight_kernel<A>, tile_config(p), stream, go, x, xs,
                      gw, g, p);
}

// grad_out contiguous, grad_bias (Cout): one block per output channel.
template <typename A>
auto launch_patch_conv2d_grad_bias(const A* go, A* gb, const ConvGeometry& g, cuda::Stream stream) {
  cuda::LaunchConfig cfg;
  cfg.grid = dim3(static_cast<unsigned>(g.Cout));
  cfg.block = dim3(kPatchThreads);
  return cuda::launch(patch_conv2d_grad_bias_kernel<A>, cfg, stream, go, gb, g);
}

}  // namespace fastvision::patch
