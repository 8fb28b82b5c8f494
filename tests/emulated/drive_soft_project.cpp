// Emulated driver of soft_project's forward and backward kernels (soft_project_kernels.cuh): for
// every case file named on the command line, launches both as soft_project_cuda.cu does and
// writes <case>.out with out (B, M, 3), out_f (B, M, F), gq (B, M, 3), gp (B, N, 3),
// gf (B, N, F) and gsig (B, M) (the per-query dL/dsigma).
// Inputs: q (B, M, 3), p (B, N, 3), feats (B, N, F) f4/f8; idx (B, M, k) i8 (the kNN indices,
// -1 for none); sigma (B,) in the dtype of q; g (B, M, 3), gF (B, M, F); hard () i8.
#include <vector>

#include "array_io.h"
#include "soft_project_kernels.cuh"

namespace fs = fastvision::sampling;

template <typename T>
void run_case(fvtest::Arrays& in, FILE* out) {
  fvtest::Array& q = in.at("q");
  fvtest::Array& feats = in.at("feats");
  fvtest::Array& idx = in.at("idx");
  const int64_t B = q.shape[0], M = q.shape[1], N = in.at("p").shape[1], F = feats.shape[2];
  const int k = static_cast<int>(idx.shape[2]);
  const bool hard = in.at("hard").scalar_int() != 0;
  std::vector<T> y(B * M * 3), yf(B * M * F), gq(B * M * 3), gsig(B * M);
  std::vector<T> gp(B * N * 3, T(0)), gf(B * N * F, T(0));  // accumulated into: zeroed, as the glue
  if (B * M > 0) {
    fs::launch_soft_project_forward<T>(q.data<T>(), in.at("p").data<T>(), feats.data<T>(),
                                       idx.data<int64_t>(), in.at("sigma").data<T>(), B, M, N, F,
                                       k, hard, y.data(), yf.data(), fastvision::cuda::Stream{});
    fs::launch_soft_project_backward<T>(in.at("g").data<T>(), in.at("gF").data<T>(), q.data<T>(),
                                        in.at("p").data<T>(), feats.data<T>(),
                                        idx.data<int64_t>(), in.at("sigma").data<T>(), B, M, N, F,
                                        k, hard, gq.data(), gp.data(), gf.data(), gsig.data(),
                                        fastvision::cuda::Stream{});
  }
  const char* dt = fvtest::dtype_of<T>();
  fvtest::write_array(out, "out", dt, {B, M, 3}, y.data(), sizeof(T));
  fvtest::write_array(out, "out_f", dt, {B, M, F}, yf.data(), sizeof(T));
  fvtest::write_array(out, "gq", dt, {B, M, 3}, gq.data(), sizeof(T));
  fvtest::write_array(out, "gp", dt, {B, N, 3}, gp.data(), sizeof(T));
  fvtest::write_array(out, "gf", dt, {B, N, F}, gf.data(), sizeof(T));
  fvtest::write_array(out, "gsig", dt, {B, M}, gsig.data(), sizeof(T));
}

int main(int argc, char** argv) {
  for (int c = 1; c < argc; ++c) {
    fvtest::Arrays in = fvtest::read_arrays(argv[c]);
    FILE* out = std::fopen((std::string(argv[c]) + ".out").c_str(), "wb");
    if (in.at("q").dtype == "f4") {
      run_case<float>(in, out);
    } else {
      run_case<double>(in, out);
    }
    std::fclose(out);
  }
  return 0;
}
