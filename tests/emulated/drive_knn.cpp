// Emulated driver of knn_points and its backward (knn_kernels.cuh). For every case file named on
// the command line, plans and launches exactly as knn_cuda.cu does, with the SM count of the
// emulated GPU (FVEMU_GPU) or the case's `sms`, and writes <case>.out.
// Inputs: p1 (B, P1, D), p2 (B, P2, D) f4/f8; lengths1 (B,), lengths2 (B,) i8; K, norm () i8;
// pad () f8 (the distance of queries past lengths1); optional sms () i8; optional backward
// inputs bidx (B, P1, KB) i8 and grad (B, P1, KB) in the dtype of p1.
// Outputs: dists (B, P1, K), idx (B, P1, K), splits () i8, register_capacity () i8, and with
// backward inputs grad_p1 (B, P1, D), grad_p2 (B, P2, D).
#include <vector>

#include "array_io.h"
#include "knn_kernels.cuh"

namespace kd = fastvision::points::knn_device;

template <typename T>
void run_case(fvtest::Arrays& in, FILE* out) {
  fvtest::Array& p1 = in.at("p1");
  fvtest::Array& p2 = in.at("p2");
  const int64_t B = p1.shape[0], P1 = p1.shape[1], D = p1.shape[2], P2 = p2.shape[1];
  const int64_t K = in.at("K").scalar_int(), norm = in.at("norm").scalar_int();
  const int sms =
      in.count("sms") ? static_cast<int>(in.at("sms").scalar_int()) : fvemu::gpu().sm_count;
  const T pad = static_cast<T>(*in.at("pad").data<double>());
  const int kc = kd::register_capacity(K);
  const kd::KnnPlan plan = kd::plan_knn(B, P1, P2, D, K, kc, sizeof(T), sms);
  std::vector<T> dists(B * P1 * K), part_d(plan.splits > 1 ? plan.splits * B * P1 * K : 0);
  std::vector<int64_t> idx(B * P1 * K), part_i(part_d.size());
  kd::launch_knn<T>(plan, norm, kc, p1.data<T>(), p2.data<T>(), in.at("lengths1").data<int64_t>(),
                    in.at("lengths2").data<int64_t>(), B, P1, P2, D, K, pad, part_d.data(),
                    part_i.data(), dists.data(), idx.data(), fastvision::cuda::Stream{});
  const int64_t splits = plan.splits, capacity = kc;
  fvtest::write_array(out, "dists", fvtest::dtype_of<T>(), {B, P1, K}, dists.data(), sizeof(T));
  fvtest::write_array(out, "idx", "i8", {B, P1, K}, idx.data(), 8);
  fvtest::write_array(out, "splits", "i8", {}, &splits, 8);
  fvtest::write_array(out, "register_capacity", "i8", {}, &capacity, 8);
  if (in.count("grad")) {
    fvtest::Array& bidx = in.at("bidx");
    const int64_t KB = bidx.shape[2];
    std::vector<T> g1(B * P1 * D), g2(B * P2 * D, T(0));
    kd::launch_knn_backward<T>(norm, p1.data<T>(), p2.data<T>(), bidx.data<int64_t>(),
                               in.at("grad").data<T>(), B, P1, P2, D, KB, g1.data(), g2.data(),
                               fastvision::cuda::Stream{});
    fvtest::write_array(out, "grad_p1", fvtest::dtype_of<T>(), {B, P1, D}, g1.data(), sizeof(T));
    fvtest::write_array(out, "grad_p2", fvtest::dtype_of<T>(), {B, P2, D}, g2.data(), sizeof(T));
  }
}

int main(int argc, char** argv) {
  for (int c = 1; c < argc; ++c) {
    fvtest::Arrays in = fvtest::read_arrays(argv[c]);
    FILE* out = std::fopen((std::string(argv[c]) + ".out").c_str(), "wb");
    if (in.at("p1").dtype == "f4") {
      run_case<float>(in, out);
    } else {
      run_case<double>(in, out);
    }
    std::fclose(out);
  }
  return 0;
}
