// Host-side argument handling shared by the CPU and CUDA kernels of the point-cloud ops.
#pragma once
#include <ATen/ATen.h>

#include <optional>

#include "fastvision/checks.h"

namespace fastvision::points {

// A batch of clouds: (B, P, D) floating point with D >= 1.
inline void check_cloud(const at::Tensor& p, const char* op, const char* name) {
  FV_CHECK(p.dim() == 3, op, name, " must have shape (B, P, D), got ", p.sizes());
  check_floating(p, op, name);
  FV_CHECK_VALUE(p.size(2) >= 1, op, name, " must have at least one coordinate (D >= 1), got ",
                 p.sizes());
}

// Validates an optional lengths tensor for a (B, P, D) cloud and returns it as int64 (B,), or a
// tensor filled with P when absent. Value ranges are checked by the CPU kernels (the data is on
// the host there) and by the Python wrappers on CUDA (without a host synchronisation).
inline at::Tensor lengths_or_full(const std::optional<at::Tensor>& lengths, const at::Tensor& p,
                                  const char* op, const char* name) {
  const int64_t B = p.size(0);
  if (!lengths.has_value()) {
    return at::full({B}, p.size(1), p.options().dtype(at::kLong));
  }
  const at::Tensor& l = *lengths;
  FV_CHECK(l.dim() == 1 && l.size(0) == B, op, name, " must have shape (B,) = (", B, ",), got ",
           l.sizes());
  FV_CHECK(l.scalar_type() == at::kLong, op, name, " must be an int64 tensor, got ",
           l.scalar_type());
  FV_CHECK(l.device() == p.device(), op, name, " must be on the device of the points (",
           p.device(), "), got ", l.device());
  return l.contiguous();
}

// CPU only: every length within [0, P].
inline void check_lengths_values(const at::Tensor& lengths, int64_t P, const char* op,
                                 const char* name) {
  const int64_t* l = lengths.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < lengths.size(0); ++b) {
    FV_CHECK_VALUE(l[b] >= 0 && l[b] <= P, op, name, "[", b, "] must lie in [0, ", P, "], got ",
                   l[b]);
  }
}

// p1 and p2 of a pairwise op: same batch size, dimension, dtype and device.
inline void check_cloud_pair(const at::Tensor& p1, const at::Tensor& p2, const char* op) {
  check_cloud(p1, op, "p1");
  check_cloud(p2, op, "p2");
  check_same_device(p2, p1, op, "p2", "p1");
  check_same_dtype(p2, p1, op, "p2", "p1");
  FV_CHECK(p1.size(0) == p2.size(0), op, "p1 and p2 must hold the same number of clouds, got ",
           p1.size(0), " and ", p2.size(0));
  FV_CHECK(p1.size(2) == p2.size(2), op,
           "p1 and p2 must have the same point dimension D, got ", p1.size(2), " and ",
           p2.size(2));
}

inline void check_norm(int64_t norm, const char* op) {
  FV_CHECK_VALUE(norm == 1 || norm == 2, op, "norm must be 1 or 2, got ", norm);
}

// CPU kernels compute half and bfloat16 in float32 (the contract allows the upcast).
inline at::ScalarType cpu_compute_type(at::ScalarType t) {
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
}

}  // namespace fastvision::points
