// Emulated driver of nn_distance's forward (nn_distance_kernels.cuh). For every case file named on
// the command line, plans and launches exactly as nn_distance_cuda.cu does (scratch only where it
// allocates scratch, the outputs as partials otherwise), with the SM count of the emulated GPU
// (FVEMU_GPU) or the case's `sms`, and writes <case>.out.
// Inputs: p1 (B, P1, D), p2 (B, P2, D) f4/f8; lengths1 (B,), lengths2 (B,) i8; norm () i8;
// optional sms () i8 and NnDistanceTuning overrides max_column_partials, max_row_partials,
// min_split_cols () i8.
// Outputs: d12 (B, P1), i12 (B, P1), d21 (B, P2), i21 (B, P2); the plan: row_groups,
// rows_per_group, splits, cols_per_split, dim_chunk () i8.
// Or, planning only: plan_shape (4,) i8 = (B, P1, P2, D) -> the plan of float32 clouds on the
// emulated GPU.
#include <vector>

#include "array_io.h"
#include "nn_distance_kernels.cuh"

namespace nd = fastvision::points::nn_distance_device;

// Writes the fields of `plan`.
void write_plan(FILE* out, const nd::NnDistancePlan& plan) {
  const int64_t dim_chunk = plan.dim_chunk;
  fvtest::write_array(out, "row_groups", "i8", {}, &plan.row_groups, 8);
  fvtest::write_array(out, "rows_per_group", "i8", {}, &plan.rows_per_group, 8);
  fvtest::write_array(out, "splits", "i8", {}, &plan.splits, 8);
  fvtest::write_array(out, "cols_per_split", "i8", {}, &plan.cols_per_split, 8);
  fvtest::write_array(out, "dim_chunk", "i8", {}, &dim_chunk, 8);
}

template <typename T>
void run_case(fvtest::Arrays& in, FILE* out) {
  fvtest::Array& p1 = in.at("p1");
  fvtest::Array& p2 = in.at("p2");
  const int64_t B = p1.shape[0], P1 = p1.shape[1], D = p1.shape[2], P2 = p2.shape[1];
  const int64_t norm = in.at("norm").scalar_int();
  const int sms =
      in.count("sms") ? static_cast<int>(in.at("sms").scalar_int()) : fvemu::gpu().sm_count;
  nd::NnDistanceTuning tuning;
  if (in.count("max_column_partials")) {
    tuning.max_column_partials = in.at("max_column_partials").scalar_int();
  }
  if (in.count("max_row_partials")) {
    tuning.max_row_partials = in.at("max_row_partials").scalar_int();
  }
  if (in.count("min_split_cols")) {
    tuning.min_split_cols = in.at("min_split_cols").scalar_int();
  }
  const nd::NnDistancePlan plan = nd::plan_nn_distance(B, P1, P2, D, sizeof(T), sms, tuning);
  std::vector<T> d12(B * P1), d21(B * P2);
  std::vector<int64_t> i12(B * P1), i21(B * P2);
  // Scratch as the glue allocates it: only for more than one split / row group.
  std::vector<T> row_d(plan.splits > 1 ? plan.splits * B * P1 : 0);
  std::vector<int64_t> row_i(row_d.size());
  std::vector<T> col_d(plan.row_groups > 1 ? B * plan.row_groups * P2 : 0);
  std::vector<int64_t> col_i(col_d.size());
  const bool split = plan.splits > 1, grouped = plan.row_groups > 1;
  const fastvision::cuda::Error err = nd::launch_nn_distance<T>(
      plan, norm, p1.data<T>(), p2.data<T>(), in.at("lengths1").data<int64_t>(),
      in.at("lengths2").data<int64_t>(), B, P1, P2, D, split ? row_d.data() : d12.data(),
      split ? row_i.data() : i12.data(), grouped ? col_d.data() : d21.data(),
      grouped ? col_i.data() : i21.data(), d12.data(), i12.data(), d21.data(), i21.data(),
      fastvision::cuda::Stream{});
  if (err != fastvision::cuda::kSuccess) {
    std::fprintf(stderr, "launch_nn_distance failed\n");
    std::exit(1);
  }
  fvtest::write_array(out, "d12", fvtest::dtype_of<T>(), {B, P1}, d12.data(), sizeof(T));
  fvtest::write_array(out, "i12", "i8", {B, P1}, i12.data(), 8);
  fvtest::write_array(out, "d21", fvtest::dtype_of<T>(), {B, P2}, d21.data(), sizeof(T));
  fvtest::write_array(out, "i21", "i8", {B, P2}, i21.data(), 8);
  write_plan(out, plan);
}

int main(int argc, char** argv) {
  for (int c = 1; c < argc; ++c) {
    fvtest::Arrays in = fvtest::read_arrays(argv[c]);
    FILE* out = std::fopen((std::string(argv[c]) + ".out").c_str(), "wb");
    if (in.count("plan_shape")) {  // the production plan of (B, P1, P2, D) in float32, no launch
      const int64_t* s = in.at("plan_shape").data<int64_t>();
      write_plan(out, nd::plan_nn_distance(s[0], s[1], s[2], s[3], sizeof(float),
                                           fvemu::gpu().sm_count));
    } else if (in.at("p1").dtype == "f4") {
      run_case<float>(in, out);
    } else {
      run_case<double>(in, out);
    }
    std::fclose(out);
  }
  return 0;
}
