// The one way fastvision's CPU kernels use SIMD.
//
// The library is built for the x86-64 baseline (SSE2), so that one wheel runs everywhere. A kernel
// that profits from AVX2 + FMA has two builds of its hot loops:
// * the portable build: plain C++ templates over the element type (register tiles may use GCC
//   vector types, which compile to SSE2 here and to NEON elsewhere); what CPUs without AVX2 + FMA,
//   and the tests with FASTVISION_CPU_BASELINE=1, run;
// * the AVX2 build: functions marked FV_TARGET_AVX2, inside `#if FV_X86_SIMD`, that either
//   instantiate the portable template (the compiler vectorises it for AVX2) or, where that is not
//   enough, spell the loop in <immintrin.h> intrinsics (_mm256_*).
// The choice is made at run time, per call, by cpu_avx2_fma(). Both builds sum the same terms in
// the same order; the AVX2 build may fuse multiply-adds (one rounding per term, as CUDA does), so
// the two agree to float32 rounding, not bit for bit, unless a kernel says otherwise.
#pragma once
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FV_X86_SIMD 1
#define FV_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define FV_X86_SIMD 0
#define FV_TARGET_AVX2
#endif

namespace fastvision {

// Whether this CPU runs the AVX2 build. FASTVISION_CPU_BASELINE=1 in the environment (read once,
// at first use) forces the portable build, so that the tests can run it on machines with AVX2
// (tests/test_ops_cpu_baseline.py).
inline bool cpu_avx2_fma() {
#if FV_X86_SIMD
  static const bool use = [] {
    const char* env = std::getenv("FASTVISION_CPU_BASELINE");
    if (env != nullptr && env[0] != '\0' && std::strcmp(env, "0") != 0) return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return use;
#else
  return false;
#endif
}

}  // namespace fastvision
