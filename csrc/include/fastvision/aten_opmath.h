// The dtype the kernels compute in, on the ATen side of the glue: ATen's own opmath type
// (float32 for float16 / bfloat16, the dtype itself for float32 / float64). The torch-free
// kernels name the same type fastvision::opmath_t<T> (common.h).
#pragma once
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

namespace fastvision {

inline at::ScalarType opmath_dtype(at::ScalarType t) { return at::toOpMathType(t); }

// t in its compute dtype (t itself when it already is).
inline at::Tensor to_opmath(const at::Tensor& t) { return t.to(opmath_dtype(t.scalar_type())); }

}  // namespace fastvision
