// The importable `fastvision._C` module: build information only. Loading it runs the static
// operator registrations of every kernel file linked into the same library.
#include <pybind11/pybind11.h>

#include "fastvision/cpu_simd.h"

#if FV_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastvision native extension (operators are in torch.ops.fastvision)";
  m.attr("version") = FV_VERSION;
  m.attr("torch_version") = FV_TORCH_VERSION;
  m.attr("cuda") = static_cast<bool>(FV_WITH_CUDA);
  m.attr("cuda_archs") = FV_CUDA_ARCHS;
#if FV_WITH_CUDA
  m.attr("cuda_version") = CUDART_VERSION;
#else
  m.attr("cuda_version") = pybind11::none();
#endif
  // Which build of the CPU kernels that have an AVX2 + FMA variant runs on this machine.
  m.attr("cpu_kernels") = fastvision::cpu_avx2_fma() ? "avx2+fma" : "baseline";
#if defined(__VERSION__)
  m.attr("compiler") = __VERSION__;
#endif
}
