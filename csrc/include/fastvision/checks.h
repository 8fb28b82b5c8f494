// Argument checks with messages that name the argument, the expectation and the actual value.
#pragma once
#include <ATen/ATen.h>

namespace fastvision {

// "<op>: <name> must be <what>, got <actual>" as a RuntimeError.
#define FV_CHECK(cond, op, ...) TORCH_CHECK(cond, op, ": ", __VA_ARGS__)
// The same as a ValueError (a bad value rather than a bad type or device).
#define FV_CHECK_VALUE(cond, op, ...) TORCH_CHECK_VALUE(cond, op, ": ", __VA_ARGS__)

inline void check_floating(const at::Tensor& t, const char* op, const char* name) {
  FV_CHECK(at::isFloatingType(t.scalar_type()), op, name,
           " must be a floating-point tensor (float32, float64, float16 or bfloat16), got ",
           t.scalar_type());
}

inline void check_same_device(const at::Tensor& t, const at::Tensor& ref, const char* op,
                              const char* name, const char* ref_name) {
  FV_CHECK(t.device() == ref.device(), op, name, " must be on the same device as ", ref_name,
           " (", ref.device(), "), got ", t.device());
}

inline void check_same_dtype(const at::Tensor& t, const at::Tensor& ref, const char* op,
                             const char* name, const char* ref_name) {
  FV_CHECK(t.scalar_type() == ref.scalar_type(), op, name, " must have the dtype of ", ref_name,
           " (", ref.scalar_type(), "), got ", t.scalar_type());
}

}  // namespace fastvision
