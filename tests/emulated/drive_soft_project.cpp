// Emulated driver of soft_project's forward and backward kernels (soft_project_kernels.cuh): for
// every case file named on the command line, launches them as soft_project_cuda.cu does (the
// backward's stable sort of the entry keys and the segment search done here with std::stable_sort
// and std::lower_bound, as at::sort(stable) and at::searchsorted do in the glue) and
// writes <case>.out with out (B, M, 3), out_f (B, M, F), gq (B, M, 3), gp (B, N, 3),
// gf (B, N, F) and gsig (B, M) (the per-query dL/dsigma).
// Inputs: q (B, M, 3), p (B, N, 3), feats (B, N, F) f4/f8; idx (B, M, k) i8 (the kNN indices,
// -1 for none); sigma (B,) in the dtype of q; g (B, M, 3), gF (B, M, F); hard () i8.
#include <algorithm>
#include <limits>
#include <numeric>
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
  // The glue allocates the outputs uninitialised when there are queries (the kernels write every
  // element): NaN here, so that an element left unwritten fails the comparison; zeros otherwise.
  const T fill = B * M > 0 ? std::numeric_limits<T>::quiet_NaN() : T(0);
  std::vector<T> y(B * M * 3, fill), yf(B * M * F, fill), gq(B * M * 3, fill), gsig(B * M, fill);
  std::vector<T> gp(B * N * 3, fill), gf(B * N * F, fill);
  if (B * M > 0) {
    fs::launch_soft_project_forward<T>(q.data<T>(), in.at("p").data<T>(), feats.data<T>(),
                                       idx.data<int64_t>(), in.at("sigma").data<T>(), B, M, N, F,
                                       k, hard, y.data(), yf.data(), fastvision::cuda::Stream{});
    const int64_t MK = M * k;
    std::vector<int64_t> keys(B * MK);
    std::vector<T> entry_w(B * MK), entry_gp(B * MK * 3);
    fs::launch_soft_project_backward_queries<T>(
        in.at("g").data<T>(), in.at("gF").data<T>(), q.data<T>(), in.at("p").data<T>(),
        feats.data<T>(), idx.data<int64_t>(), in.at("sigma").data<T>(), B, M, N, F, k, hard,
        gq.data(), gsig.data(), fs::EntryOut<T>{keys.data(), entry_w.data(), entry_gp.data()},
        fastvision::cuda::Stream{});
    std::vector<int64_t> order(B * MK), seg(B * (N + 1));
    for (int64_t b = 0; b < B; ++b) {
      const int64_t* kb = keys.data() + b * MK;
      int64_t* ob = order.data() + b * MK;
      std::iota(ob, ob + MK, int64_t{0});
      std::stable_sort(ob, ob + MK, [kb](int64_t x, int64_t y) { return kb[x] < kb[y]; });
      std::vector<int64_t> sorted(MK);
      for (int64_t e = 0; e < MK; ++e) sorted[e] = kb[ob[e]];
      for (int64_t j = 0; j <= N; ++j) {
        seg[b * (N + 1) + j] = std::lower_bound(sorted.begin(), sorted.end(), j) - sorted.begin();
      }
    }
    if (N > 0) {
      fs::launch_soft_project_backward_gather<T>(in.at("gF").data<T>(), order.data(), seg.data(),
                                                 entry_w.data(), entry_gp.data(), B, M, N, F, k,
                                                 gp.data(), gf.data(), fastvision::cuda::Stream{});
    }
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
