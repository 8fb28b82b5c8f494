// Torch-free helpers shared by the CPU kernels, the CUDA kernels and the emulated tests.
#pragma once

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

}  // namespace fastvision
