// Emulated driver of padnet_encoder (padnet_encoder_kernels.cuh): for every case file named on the
// command line, plans the launch as padnet_encoder_cuda.cu does (the emulated GPU's limits, with
// sm_count and the scratch budget taken from the case), runs it unless plan_only, and writes
// <case>.out with t1, t2, t3 (the taps; empty when plan_only), chunk (images per launch
// sequence), scratch_elements (of the compute type) and tiles (the tile count of each bneck).
// Inputs: x (B, 1, H, W) f4/f8 (only its shape is read when plan_only), params (P,), width,
// sm_count (0: the GPU's), scratch_budget (bytes; 0: kPadnetScratchBudget), plan_only: () i8.
#include <type_traits>
#include <vector>

#include "array_io.h"
#include "padnet_encoder_kernels.cuh"

namespace fpn = fastvision::padnet;

template <int WIDTH, typename T>
void run_case(fvtest::Arrays& in, FILE* out) {
  using P = fpn::PadnetSpec<WIDTH>;
  fvtest::Array& x = in.at("x");
  const int64_t B = x.shape[0], H = x.shape[2], W = x.shape[3];
  fastvision::cuda::DeviceLimits limits;
  limits.sm_count = fvemu::gpu().sm_count;
  limits.smem_per_block_default = fvemu::gpu().smem_per_block_default;
  limits.smem_per_block_optin = fvemu::gpu().smem_per_block_optin;
  limits.max_threads_per_block = fvemu::gpu().max_threads_per_block;
  if (const int64_t sms = in.at("sm_count").scalar_int(); sms > 0) limits.sm_count = static_cast<int>(sms);
  const int64_t budget = in.at("scratch_budget").scalar_int();
  const fpn::PadnetLaunchPlan plan = fpn::padnet_encoder_launch_plan<WIDTH, T>(
      B, H, W, limits, budget > 0 ? budget : fpn::kPadnetScratchBudget);
  const fpn::TapSizes s = fpn::tap_sizes(H, W);
  const std::vector<int64_t> shapes[3] = {{B, P::B2::COUT, s.h[0], s.w[0]},
                                          {B, P::B4::COUT, s.h[1], s.w[1]},
                                          {B, P::B6::COUT, s.h[2], s.w[2]}};
  std::vector<T> taps[3];
  if (in.at("plan_only").scalar_int() == 0) {
    for (int i = 0; i < 3; ++i) taps[i].resize(shapes[i][0] * shapes[i][1] * shapes[i][2] * shapes[i][3]);
    std::vector<T> scratch(plan.scratch_elements());
    fpn::launch_padnet_encoder<WIDTH, T>(plan, x.data<T>(), in.at("params").data<T>(), B, H, W,
                                         scratch.data(), taps[0].data(), taps[1].data(),
                                         taps[2].data(), fastvision::cuda::Stream{});
  }
  for (int i = 0; i < 3; ++i) {
    const std::vector<int64_t> shape = taps[i].empty() ? std::vector<int64_t>{0} : shapes[i];
    fvtest::write_array(out, "t" + std::to_string(i + 1), fvtest::dtype_of<T>(), shape,
                        taps[i].data(), sizeof(T));
  }
  const int64_t chunk = plan.chunk, elements = plan.scratch_elements();
  int64_t tiles[6];
  for (int i = 0; i < 6; ++i) tiles[i] = plan.tiling[i].tiles;
  fvtest::write_array(out, "chunk", "i8", {}, &chunk, 8);
  fvtest::write_array(out, "scratch_elements", "i8", {}, &elements, 8);
  fvtest::write_array(out, "tiles", "i8", {6}, tiles, 8);
}

template <typename T>
void run_width(fvtest::Arrays& in, FILE* out) {
  switch (in.at("width").scalar_int()) {
    case 1: run_case<1, T>(in, out); break;
    case 2: run_case<2, T>(in, out); break;
    default: run_case<4, T>(in, out); break;
  }
}

int main(int argc, char** argv) {
  for (int c = 1; c < argc; ++c) {
    fvtest::Arrays in = fvtest::read_arrays(argv[c]);
    FILE* out = std::fopen((std::string(argv[c]) + ".out").c_str(), "wb");
    if (in.at("x").dtype == "f4") {
      run_width<float>(in, out);
    } else {
      run_width<double>(in, out);
    }
    std::fclose(out);
  }
  return 0;
}
