// Scalar arithmetic of the patch-wise dynamic convolutions (HyperSeg), called by both the CPU and
// the CUDA kernels of patch_conv2d and patch_inverted_residual, so the CPU tests exercise the
// index mapping and the sums the GPU runs.
//
// Geometry (python/fastvision/ops/patch.py documents it for users):
//   * the output is an ordinary 2-D convolution grid: Ho = (H + 2 ph - dh (kh - 1) - 1) / sh + 1;
//   * the fh x fw patch grid splits the OUTPUT: cell i of n outputs split into f cells covers
//     [floor(i n / f), floor((i + 1) n / f)) (adaptive-pooling boundaries: equal patches when f
//     divides n, ragged ones otherwise); an output pixel uses the kernel of its cell;
//   * taps read the unpadded input at padded coordinate c = o s - p + k d, mapped at the image
//     border by the padding mode (zeros: no value; reflect: edge not repeated, as F.pad;
//     replicate: clamped). So a patch's halo comes from its neighbours, padding only happens at
//     the image border (HyperSeg's HyperPatchConv2d / HyperPatchNoPadding, whose pad + unfold
//     gives exactly this when the patch size divides the image).
#pragma once
#include <cstdint>

#include "fastvision/macros.h"

namespace fastvision::patch {

enum PaddingMode : int { kZeros = 0, kReflect = 1, kReplicate = 2 };

// The checked geometry of a patch_conv2d call (built by conv_geometry on the host).
struct ConvGeometry {
  int64_t B, Cin, H, W, Cout, Ho, Wo, fh, fw, groups, cin_g, cout_g;
  int64_t K;  // weights per patch: Cout * cin_g * kh * kw
  int kh, kw, sh, sw, ph, pw, dh, dw, mode;
};

// The checked geometry of a patch_inverted_residual call (built by ir_geometry on the host).
struct IrGeometry {
  int64_t B, Cin, H, W, hidden, Cout, fh, fw, K;
  int k, mode;
  bool residual;
};

// Element strides of a 4-D tensor, for kernels that read inputs through strides.
struct Strides4 {
  int64_t b, c, h, w;
};

// The input coordinate that padded coordinate c reads from an axis of n pixels; -1 for a zero.
// Reflect needs |c| < n and c < 2n - 1 (padding < n, checked on the host).
FV_HOST_DEVICE FV_INLINE int64_t map_coord(int64_t c, int64_t n, int mode) {
  if (c >= 0 && c < n) return c;
  if (mode == kZeros) return -1;
  if (mode == kReplicate) return c < 0 ? 0 : n - 1;
  return c < 0 ? -c : 2 * (n - 1) - c;
}

// First output coordinate of cell i when n outputs are split into f cells.
FV_HOST_DEVICE FV_INLINE int64_t cell_start(int64_t i, int64_t n, int64_t f) { return i * n / f; }

// The cell that output coordinate o belongs to (the inverse of cell_start; needs n >= f).
FV_HOST_DEVICE FV_INLINE int64_t cell_of(int64_t o, int64_t n, int64_t f) {
  return ((o + 1) * f - 1) / n;
}

// The padded coordinates that map to input coordinate i (axis of n, padding pad_lo before the
// image and pad_hi after it), as at most three closed intervals [lo[t], hi[t]]; returns how many.
FV_HOST_DEVICE FV_INLINE int preimages(int64_t i, int64_t n, int64_t pad_lo, int64_t pad_hi,
                                       int mode, int64_t* lo, int64_t* hi) {
  int count = 0;
  lo[count] = i;
  hi[count] = i;
  if (mode == kReplicate) {
    if (i == 0) lo[count] = -pad_lo;
    if (i == n - 1) hi[count] = n - 1 + pad_hi;
  }
  ++count;
  if (mode == kReflect) {
    if (i > 0 && i <= pad_lo) {
      lo[count] = hi[count] = -i;
      ++count;
    }
    const int64_t mirrored = 2 * (n - 1) - i;
    if (i < n - 1 && mirrored <= n - 1 + pad_hi) {
      lo[count] = hi[count] = mirrored;
      ++count;
    }
  }
  return count;
}

template <typename A>
FV_HOST_DEVICE FV_INLINE A relu6(A v) {
  return v < A(0) ? A(0) : (v > A(6) ? A(6) : v);
}

// One output element of patch_conv2d before the bias: sum over (ci, ky, kx) in index order of
// w[((ci * kh + ky) * kw + kx) * w_stride] * x(ci, map(oy sh - ph + ky dh), map(ox sw - pw + kx dw)),
// x pointing at the group's first input channel. The CPU kernel's tiled sums use the same order.
template <typename A, typename T, typename W>
FV_HOST_DEVICE FV_INLINE A conv_tap_sum(const T* x, int64_t x_sc, int64_t x_sh, int64_t x_sw,
                                        int64_t H, int64_t Wd, const W* w, int64_t w_stride,
                                        int64_t cin_g, int kh, int kw, int64_t iy0, int64_t ix0,
                                        int dh, int dw, int mode) {
  A acc = A(0);
  int64_t k = 0;
  for (int64_t ci = 0; ci < cin_g; ++ci) {
    for (int ky = 0; ky < kh; ++ky) {
      const int64_t iy = map_coord(iy0 + int64_t{ky} * dh, H, mode);
      for (int kx = 0; kx < kw; ++kx, ++k) {
        const int64_t ix = map_coord(ix0 + int64_t{kx} * dw, Wd, mode);
        if (iy >= 0 && ix >= 0) {
          acc += static_cast<A>(w[k * w_stride]) * static_cast<A>(x[ci * x_sc + iy * x_sh + ix * x_sw]);
        }
      }
    }
  }
  return acc;
}

// The folded-BN affine of the inverted residual: scale * conv + shift (scale = gamma /
// sqrt(var + eps), shift = beta - mean * scale), then ReLU6 where the block has one.
template <typename A>
FV_HOST_DEVICE FV_INLINE A affine(A conv, A scale, A shift) {
  return conv * scale + shift;
}

}  // namespace fastvision::patch
