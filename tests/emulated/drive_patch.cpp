// Emulated driver of the patch-wise convolution kernels (patch_conv2d_kernels.cuh and
// patch_inverted_residual_kernels.cuh): for every case file named on the command line, runs the
// op the case names and writes <case>.out.
//
// Either op takes an optional scalar `direct`: 1 runs the direct kernels instead of the tiled ones;
// patch_conv2d an optional scalar `min_blocks`: the input gradient's target block count.
// op 0, patch_conv2d: inputs x (B, Cin, H, W), weight (B, K, fh, fw) (stored as (B, fh, fw, K)
// when weight_channels_last is 1, to read it through strides as the hypernetwork layout does),
// bias (Cout) (or (0,): none), grad_out (B, Cout, Ho, Wo); conv (10,) i8
// [kh, kw, sh, sw, ph, pw, dh, dw, groups, mode]. Writes out, grad_x, grad_weight, grad_bias, and
// the tile plans of the forward and the weight gradient (forward_plan, grad_weight_plan: tiled,
// cells per block, tile rows, tile columns, input channels per chunk, output-channel tiles,
// input-channel chunks, pixel tiles per cell, pixel-splitting threads, register-tile passes) and
// of the input gradient (grad_input_plan: tiled, tile rows, tile columns, input-channel quads per
// block, output channels per chunk, output-channel chunks, input-channel tiles, input tiles,
// the most cell rows and cell columns a tile's output region spans, whether a block's channels
// are packed groups).
// op 1, patch_inverted_residual: x, weight, the folded BN vectors s1, b1, s2, b2 (hidden) and
// s3, b3 (Cout), ir (4,) i8 [hidden, kernel_size, mode, residual]. Writes out and the tile plan
// (plan: tiled, tile rows, tile columns, hidden channels per chunk, hidden chunks, threads per
// pixel in the projection, output-channel tiles, tiles per cell).
#include <utility>
#include <vector>

#include "array_io.h"
#include "patch_conv2d_kernels.cuh"
#include "patch_inverted_residual_kernels.cuh"

namespace fp = fastvision::patch;

// A (B, C, H, W) array as the kernels see it: its logical sizes and element strides, stored
// contiguously or, when channels_last, as (B, H, W, C).
struct View4 {
  int64_t B, C, H, W;
  fp::Strides4 strides;
};

View4 view_of(const std::vector<int64_t>& s, bool channels_last) {
  if (channels_last) return {s[0], s[3], s[1], s[2], {s[1] * s[2] * s[3], 1, s[2] * s[3], s[3]}};
  return {s[0], s[1], s[2], s[3], {s[1] * s[2] * s[3], s[2] * s[3], s[3], 1}};
}

// An optional scalar `direct` = 1 forces the direct (untiled) kernels.
bool forced_direct(fvtest::Arrays& in) { return in.count("direct") != 0 && in.at("direct").scalar_int() != 0; }

template <typename T>
void run_conv(fvtest::Arrays& in, FILE* out) {
  fvtest::Array& x = in.at("x");
  fvtest::Array& w = in.at("weight");
  fvtest::Array& go = in.at("grad_out");
  const int64_t* c = in.at("conv").data<int64_t>();
  fp::ConvGeometry g{};
  g.B = x.shape[0];
  g.Cin = x.shape[1];
  g.H = x.shape[2];
  g.W = x.shape[3];
  g.Cout = go.shape[1];
  g.Ho = go.shape[2];
  g.Wo = go.shape[3];
  const View4 wv = view_of(w.shape, in.at("weight_channels_last").scalar_int() != 0);
  g.fh = wv.H;
  g.fw = wv.W;
  g.K = wv.C;
  g.kh = static_cast<int>(c[0]);
  g.kw = static_cast<int>(c[1]);
  g.sh = static_cast<int>(c[2]);
  g.sw = static_cast<int>(c[3]);
  g.ph = static_cast<int>(c[4]);
  g.pw = static_cast<int>(c[5]);
  g.dh = static_cast<int>(c[6]);
  g.dw = static_cast<int>(c[7]);
  g.groups = c[8];
  g.mode = static_cast<int>(c[9]);
  g.cin_g = g.Cin / g.groups;
  g.cout_g = g.Cout / g.groups;
  const fp::Strides4 ws = wv.strides;
  const fp::Strides4 xs = view_of(x.shape, false).strides;
  fvtest::Array& bias = in.at("bias");
  std::vector<T> y(go.numel()), gx(x.numel()), gw(w.numel()), gb(g.Cout);
  const fastvision::cuda::Stream stream{};
  const bool direct = forced_direct(in);
  if (!y.empty()) {
    fp::launch_patch_conv2d_forward<T>(x.data<T>(), xs, w.data<T>(), ws,
                                       bias.numel() > 0 ? bias.data<T>() : nullptr, y.data(), g,
                                       stream, direct);
  }
  // An optional scalar `min_blocks` overrides the input gradient's block target (1: the largest
  // tiles, which a GPU-sized image would get, on the tests' small images).
  const int64_t min_blocks = in.count("min_blocks") != 0 ? in.at("min_blocks").scalar_int() : fp::kMinTileBlocks;
  if (!gx.empty()) {
    fp::launch_patch_conv2d_grad_input<T>(go.data<T>(), w.data<T>(), ws, gx.data(), g, stream, direct, min_blocks);
  }
  if (!gw.empty()) fp::launch_patch_conv2d_grad_weight<T>(go.data<T>(), x.data<T>(), xs, gw.data(), g, stream, direct);
  if (!gb.empty()) fp::launch_patch_conv2d_grad_bias<T>(go.data<T>(), gb.data(), g, stream);
  const char* dt = fvtest::dtype_of<T>();
  // The plans the launches chose, so that the tests can check which tilings they cover.
  for (const auto& [name, plan] : {std::pair{"forward_plan", fp::plan_conv_forward<T>(g)},
                                   std::pair{"grad_weight_plan", fp::plan_conv_grad_weight<T>(g)}}) {
    const int64_t reg_tiles = int64_t{plan.cj} * plan.co_slots * plan.kq;
    const std::vector<int64_t> fields = {plan.tiled, plan.cj, plan.th, plan.tw, plan.bc, plan.co_tiles,
                                         plan.ci_chunks, plan.tiles_y * plan.tiles_x, plan.ps,
                                         fastvision::ceil_div<int64_t>(reg_tiles, fp::kPatchThreads / plan.ps)};
    fvtest::write_array(out, name, "i8", {static_cast<int64_t>(fields.size())}, fields.data(), sizeof(int64_t));
  }
  const fp::GradInputPlan gi = fp::plan_conv_grad_input<T>(g, min_blocks);
  const std::vector<int64_t> gi_fields = {gi.tiled, gi.th, gi.tw, gi.ci_slots, gi.bm,
                                          fastvision::ceil_div<int64_t>(g.cout_g, gi.bm), gi.ci_tiles,
                                          gi.tiles_y * gi.tiles_x, gi.ncy, gi.ncx, gi.packed};
  fvtest::write_array(out, "grad_input_plan", "i8", {static_cast<int64_t>(gi_fields.size())}, gi_fields.data(),
                      sizeof(int64_t));
  fvtest::write_array(out, "out", dt, go.shape, y.data(), sizeof(T));
  fvtest::write_array(out, "grad_x", dt, x.shape, gx.data(), sizeof(T));
  fvtest::write_array(out, "grad_weight", dt, {g.B, g.K, g.fh, g.fw}, gw.data(), sizeof(T));
  fvtest::write_array(out, "grad_bias", dt, {g.Cout}, gb.data(), sizeof(T));
}

template <typename T>
void run_inverted_residual(fvtest::Arrays& in, FILE* out) {
  fvtest::Array& x = in.at("x");
  fvtest::Array& w = in.at("weight");
  const int64_t* c = in.at("ir").data<int64_t>();
  fp::IrGeometry g{};
  g.B = x.shape[0];
  g.Cin = x.shape[1];
  g.H = x.shape[2];
  g.W = x.shape[3];
  g.hidden = c[0];
  g.k = static_cast<int>(c[1]);
  g.mode = static_cast<int>(c[2]);
  g.residual = c[3] != 0;
  g.Cout = in.at("s3").shape[0];
  g.fh = w.shape[2];
  g.fw = w.shape[3];
  g.K = w.shape[1];
  std::vector<T> y(g.B * g.Cout * g.H * g.W);
  if (!y.empty()) {
    fp::launch_patch_inverted_residual<T>(x.data<T>(), view_of(x.shape, false).strides, w.data<T>(),
                                          view_of(w.shape, false).strides, in.at("s1").data<T>(),
                                          in.at("b1").data<T>(), in.at("s2").data<T>(),
                                          in.at("b2").data<T>(), in.at("s3").data<T>(),
                                          in.at("b3").data<T>(), y.data(), g,
                                          fastvision::cuda::Stream{}, forced_direct(in));
  }
  fvtest::write_array(out, "out", fvtest::dtype_of<T>(), {g.B, g.Cout, g.H, g.W}, y.data(), sizeof(T));
  const fp::IrTilePlan plan = fp::plan_inverted_residual<T>(g);
  const std::vector<int64_t> fields = {plan.tiled, plan.th, plan.tw, plan.hc,
                                       fastvision::ceil_div<int64_t>(g.hidden, plan.hc), plan.co_slots,
                                       plan.co_tiles, plan.tiles_y * plan.tiles_x};
  fvtest::write_array(out, "plan", "i8", {static_cast<int64_t>(fields.size())}, fields.data(), sizeof(int64_t));
}

int main(int argc, char** argv) {
  for (int c = 1; c < argc; ++c) {
    fvtest::Arrays in = fvtest::read_arrays(argv[c]);
    FILE* out = std::fopen((std::string(argv[c]) + ".out").c_str(), "wb");
    const bool f32 = in.at("x").dtype == "f4";
    if (in.at("op").scalar_int() == 0) {
      f32 ? run_conv<float>(in, out) : run_conv<double>(in, out);
    } else {
      f32 ? run_inverted_residual<float>(in, out) : run_inverted_residual<double>(in, out);
    }
    std::fclose(out);
  }
  return 0;
}
