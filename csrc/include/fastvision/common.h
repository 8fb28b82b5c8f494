// Torch-free helpers shared by the CPU kernels, the CUDA kernels and the emulated tests.
#pragma once

#include <cstdint>
#include <type_traits>

#include "fastvision/macros.h"

namespace fastvision {

// The accumulation type of a storage type. Half-precision storage types (c10::Half,
// c10::BFloat16, __half, __nv_bfloat16) accumulate in float; float and double in themselves.
// A storage type opts in by being convertible to float and not being float or double; the
// specialisation below keeps integral types out.
template <typename T, typename = void>
struct OpMath {
  using type = T;
};
template <typename T>
struct OpMath<T, std::enable_if_t<!std::is_arithmetic_v<T> && std::is_convertible_v<T, float>>> {
  using type = float;
};
template <typename T>
using opmath_t = typename OpMath<T>::type;

template <typename I>
FV_HOST_DEVICE constexpr I ceil_div(I a, I b) {
  return (a + b - 1) / b;
}

// Compile-time int arguments of the dispatchers below.
template <int V>
using int_c = std::integral_constant<int, V>;

// Calls f(int_c<NORM>, int_c<DIM>) for the distance kernels of the point ops, CPU and CUDA alike:
// NORM is 1 or 2 (the caller has checked), DIM is 3 (the unrolled common case) or 0 (any D, read
// at run time).
template <typename F>
void dispatch_norm_dim(int64_t norm, int64_t D, F&& f) {
  if (norm == 2) {
    if (D == 3) {
      f(int_c<2>{}, int_c<3>{});
    } else {
      f(int_c<2>{}, int_c<0>{});
    }
  } else {
    if (D == 3) {
      f(int_c<1>{}, int_c<3>{});
    } else {
      f(int_c<1>{}, int_c<0>{});
    }
  }
}

// Calls f(int_c<NORM>) for kernels whose D is always read at run time (the point-op backwards).
template <typename F>
void dispatch_norm(int64_t norm, F&& f) {
  if (norm == 2) {
    f(int_c<2>{});
  } else {
    f(int_c<1>{});
  }
}

}  // namespace fastvision
