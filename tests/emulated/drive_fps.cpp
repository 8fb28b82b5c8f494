// Emulated driver of farthest_point_sample (fps_kernels.cuh): for every case file named on the
// command line, plans the launch for the emulated GPU (FVEMU_GPU) exactly as fps_cuda.cu does,
// runs it and writes <case>.out with idx (B, K), dists (B, K), path (the planned shared-memory
// path, 0..2) and blocks_per_cloud (> 1: the multi-block cooperative path).
// Inputs: points (B, P, D) f4/f8, lengths (B,) i8, seeds (B, S) i8, K () i8; optional planning
// overrides (FpsTuning) multi_block_min_points, min_points_per_block, max_dynamic_smem () i8 and
// sms () i8 (the SM count the plan sees), which let small clouds take the multi-block path.
// A case with plan_shape (3,) i8 = (B, P, D) instead of points only plans (float32, default
// tuning) and writes path, blocks_per_cloud, threads and chunk: the production choice at sizes
// too large to emulate.
#include <type_traits>

#include "array_io.h"
#include "fps_kernels.cuh"

namespace fd = fastvision::points::fps_device;

fastvision::cuda::DeviceLimits emulated_limits(fvtest::Arrays& in) {
  const fvemu::Gpu& gpu = fvemu::gpu();
  fastvision::cuda::DeviceLimits limits;
  limits.sm_count = in.count("sms") ? static_cast<int>(in.at("sms").scalar_int()) : gpu.sm_count;
  limits.smem_per_block_default = gpu.smem_per_block_default;
  limits.smem_per_block_optin = gpu.smem_per_block_optin;
  limits.max_threads_per_block = gpu.max_threads_per_block;
  return limits;
}

void plan_only(fvtest::Arrays& in, FILE* out) {
  const int64_t* shape = in.at("plan_shape").data<int64_t>();
  const fd::FpsPlan plan = fd::plan_fps(shape[0], shape[1], shape[2], sizeof(float),
                                        sizeof(float), fd::static_smem_bytes<float>(),
                                        emulated_limits(in));
  const int64_t path = static_cast<int64_t>(plan.path), threads = plan.threads;
  fvtest::write_array(out, "path", "i8", {}, &path, 8);
  fvtest::write_array(out, "blocks_per_cloud", "i8", {}, &plan.blocks_per_cloud, 8);
  fvtest::write_array(out, "threads", "i8", {}, &threads, 8);
  fvtest::write_array(out, "chunk", "i8", {}, &plan.chunk, 8);
}

template <typename T>
void run_case(fvtest::Arrays& in, FILE* out) {
  using A = fastvision::opmath_t<T>;
  fvtest::Array& pts = in.at("points");
  const int64_t B = pts.shape[0], P = pts.shape[1], D = pts.shape[2];
  const int64_t K = in.at("K").scalar_int();
  fvtest::Array& seeds = in.at("seeds");
  const fastvision::cuda::DeviceLimits limits = emulated_limits(in);
  fd::FpsTuning tuning;
  if (in.count("multi_block_min_points")) {
    tuning.multi_block_min_points = in.at("multi_block_min_points").scalar_int();
  }
  if (in.count("min_points_per_block")) {
    tuning.min_points_per_block = in.at("min_points_per_block").scalar_int();
  }
  if (in.count("max_dynamic_smem")) {
    tuning.max_dynamic_smem = in.at("max_dynamic_smem").scalar_int();
  }
  const fd::FpsPlan plan =
      fd::plan_fps(B, P, D, sizeof(T), sizeof(A), fd::static_smem_bytes<T>(), limits, tuning);
  std::vector<A> scratch(plan.path == fd::FpsPath::kGlobalDistances ? B * P : 0);
  const int64_t blocks = B * plan.blocks_per_cloud;
  std::vector<A> slot_d(plan.multi_block() ? 2 * blocks : 0);
  std::vector<int64_t> slot_i(slot_d.size());
  std::vector<T> slot_c(slot_d.size() * 3);
  const fd::FpsSlots<T> slots{slot_d.data(), slot_i.data(), slot_c.data()};
  std::vector<int64_t> idx(B * K);
  std::vector<T> dists(B * K);
  auto launch = [&](auto ds_c) {
    fd::launch_fps<T, decltype(ds_c)::value>(
        plan, pts.data<T>(), in.at("lengths").data<int64_t>(), seeds.data<int64_t>(), B, P,
        static_cast<int>(D), K, seeds.shape[1], scratch.data(), slots, idx.data(), dists.data(),
        fastvision::cuda::Stream{});
  };
  if (D == 3) {
    launch(std::integral_constant<int, 3>{});
  } else {
    launch(std::integral_constant<int, 0>{});
  }
  const int64_t path = static_cast<int64_t>(plan.path);
  fvtest::write_array(out, "idx", "i8", {B, K}, idx.data(), 8);
  fvtest::write_array(out, "dists", fvtest::dtype_of<T>(), {B, K}, dists.data(), sizeof(T));
  fvtest::write_array(out, "path", "i8", {}, &path, 8);
  fvtest::write_array(out, "blocks_per_cloud", "i8", {}, &plan.blocks_per_cloud, 8);
}

int main(int argc, char** argv) {
  for (int c = 1; c < argc; ++c) {
    fvtest::Arrays in = fvtest::read_arrays(argv[c]);
    FILE* out = std::fopen((std::string(argv[c]) + ".out").c_str(), "wb");
    if (in.count("plan_shape")) {
      plan_only(in, out);
    } else if (in.at("points").dtype == "f4") {
      run_case<float>(in, out);
    } else {
      run_case<double>(in, out);
    }
    std::fclose(out);
  }
  return 0;
}
