// The run-time choice between the portable x86-64 build of a CPU kernel and its AVX2 + FMA build.
// FASTVISION_CPU_BASELINE=1 in the environment (read once, at first use) forces the portable
// code, so that the tests can run it on machines that have AVX2 (tests/test_cpu_baseline.py).
#pragma once
#include <cstdlib>
#include <cstring>

namespace fastvision {

inline bool cpu_avx2_fma() {
#if defined(__x86_64__) && defined(__GNUC__)
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
