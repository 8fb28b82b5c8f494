// Prints the tile plans that the patch kernels choose at HyperSeg-M's decoder shapes (1024x512
// input, batch 1, 16 x 32 patch grid, float32): the inputs of the model in patch_conv2d.md and
// patch_inverted_residual.md. Host code only (the plans are torch-free):
//   g++ -std=c++20 -DFV_CUDA_EMULATION -Icsrc/include -Icsrc/testing -Icsrc/ops/patch \
//       bench/analysis/patch_plans.cpp -o /tmp/patch_plans && /tmp/patch_plans
#include <cstdio>

#include "patch_conv2d_kernels.cuh"
#include "patch_inverted_residual_kernels.cuh"

namespace fp = fastvision::patch;

fp::ConvGeometry conv(int64_t cin, int64_t cout, int k, int64_t groups, int64_t H, int64_t W) {
  fp::ConvGeometry g{};
  g.B = 1;
  g.Cin = cin;
  g.H = H;
  g.W = W;
  g.Cout = cout;
  g.Ho = H;
  g.Wo = W;
  g.fh = 16;
  g.fw = 32;
  g.groups = groups;
  g.cin_g = cin / groups;
  g.cout_g = cout / groups;
  g.K = cout * g.cin_g * k * k;
  g.kh = g.kw = k;
  g.sh = g.sw = g.dh = g.dw = 1;
  g.ph = g.pw = k / 2;
  g.mode = fp::kReflect;
  return g;
}

void print(const char* name, const char* kind, const fp::ConvTilePlan& p) {
  std::printf("%-10s %-11s tiled %d cells %3d tile %2dx%-2d region %2dx%-2d bm %2d bc %2d kq %2d ps %2d "
              "co_tiles %lld ci_chunks %lld pixel_tiles %lld blocks %6lld smem %6zu B\n",
              name, kind, p.tiled, p.cj, p.th, p.tw, p.rh, p.rw, p.bm, p.bc, p.kq, p.ps,
              static_cast<long long>(p.co_tiles), static_cast<long long>(p.ci_chunks),
              static_cast<long long>(p.tiles_y * p.tiles_x), static_cast<long long>(p.blocks), p.smem);
}

int main() {
  struct Level {
    const char* name;
    int64_t cin, cout;
    int k;
    int64_t groups, H, W;
  };
  const Level levels[] = {{"level0", 82, 64, 1, 1, 16, 32},    {"level1", 94, 32, 1, 1, 32, 64},
                          {"level2", 44, 16, 1, 1, 64, 128},   {"level3_dw", 48, 48, 3, 48, 128, 256},
                          {"level4_dw", 68, 68, 3, 68, 256, 512}};
  for (const Level& l : levels) {
    const fp::ConvGeometry g = conv(l.cin, l.cout, l.k, l.groups, l.H, l.W);
    print(l.name, "forward", fp::plan_conv_forward<float>(g));
    print(l.name, "grad_weight", fp::plan_conv_grad_weight<float>(g));
    const fp::GradInputPlan gi = fp::plan_conv_grad_input<float>(g);
    std::printf("%-10s grad_input  tiled %d tile %2dx%-2d region %2dx%-2d cells %dx%d bm %2d bci %2d "
                "co_chunks %lld ci_tiles %lld tiles %lld blocks %6lld smem %6zu B\n",
                l.name, gi.tiled, gi.th, gi.tw, gi.orh, gi.orw, gi.ncy, gi.ncx, gi.bm, gi.bci,
                static_cast<long long>(fastvision::ceil_div<int64_t>(g.cout_g, gi.bm)),
                static_cast<long long>(gi.ci_tiles), static_cast<long long>(gi.tiles_y * gi.tiles_x),
                static_cast<long long>(gi.blocks), gi.smem);
  }
  struct Ir {
    const char* name;
    int64_t cin, hidden, cout, H, W;
  };
  for (const Ir& l : {Ir{"level3_ir", 24, 48, 16, 128, 256}, Ir{"level4_ir", 34, 68, 19, 256, 512}}) {
    fp::IrGeometry g{};
    g.B = 1;
    g.Cin = l.cin;
    g.H = l.H;
    g.W = l.W;
    g.hidden = l.hidden;
    g.Cout = l.cout;
    g.fh = 16;
    g.fw = 32;
    g.k = 3;
    g.mode = fp::kReflect;
    g.K = l.cin * l.hidden + l.hidden * 9 + l.hidden * l.cout;
    const fp::IrTilePlan p = fp::plan_inverted_residual<float>(g);
    std::printf("%-10s inverted_residual tiled %d tile %2dx%-2d region %2dx%-2d hc %2d co_slots %d rc %2d "
                "bm %2d co_tiles %lld tiles/cell %lld blocks %6lld smem %6zu B\n",
                l.name, p.tiled, p.th, p.tw, p.rh, p.rw, p.hc, p.co_slots, p.rc, p.bm,
                static_cast<long long>(p.co_tiles), static_cast<long long>(p.tiles_y * p.tiles_x),
                static_cast<long long>(p.blocks), p.smem);
  }
  return 0;
}
