// Host-side argument handling shared by the CPU and CUDA kernels of the point-cloud ops.
#pragma once
#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <optional>

#include "fastvision/aten_opmath.h"
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

// The overflow contract of the point ops. A distance is a sum of D terms (a - b)^2 (or |a - b|)
// computed in float32 (float64 for float64 clouds; float16 and bfloat16 are computed in float32
// on every device). With every coordinate within +-coordinate_bound no term and no sum can
// overflow: D (2 bound)^2 = max / 4. Clouds beyond it are rejected rather than computed in a
// wider type: their float32 distances would overflow the returned dists all the same.
inline double coordinate_bound(at::ScalarType input_type, int64_t D) {
  const double max = input_type == at::kDouble ? std::numeric_limits<double>::max()
                                               : static_cast<double>(std::numeric_limits<float>::max());
  const double exact = std::sqrt(max / static_cast<double>(D)) / 4.0;
  // Rounded down to three significant digits, so that the number in the messages is the bound.
  const double unit = std::pow(10.0, std::floor(std::log10(exact)) - 2.0);
  return std::floor(exact / unit) * unit;
}

// CPU: raises a ValueError naming the first entry of the contiguous (B, P, D) cloud `p` (in its
// compute type) that is NaN, infinite or beyond coordinate_bound.
inline void check_coordinates_cpu(const at::Tensor& p, const char* op, const char* name) {
  const int64_t n = p.numel(), P = p.size(1), D = p.size(2);
  const double bound = coordinate_bound(p.scalar_type(), D);
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "check_coordinates_cpu", [&] {
    const scalar_t* x = p.const_data_ptr<scalar_t>();
    const auto lim = static_cast<scalar_t>(bound);
    // Branch-free with an int accumulator, so that it vectorises (GCC leaves a bool one scalar:
    // 4x slower, measured); a NaN compares false.
    int inside = 1;
    for (int64_t i = 0; i < n; ++i) {
      inside &= static_cast<int>(x[i] <= lim) & static_cast<int>(x[i] >= -lim);
    }
    const bool ok = inside != 0;
    for (int64_t i = 0; !ok && i < n; ++i) {
      const scalar_t v = x[i];
      if (v <= lim && v >= -lim) {
        continue;
      }
      const int64_t b = i / (P * D), j = i / D % P, d = i % D;
      FV_CHECK_VALUE(std::isfinite(v), op, name, " contains NaN or infinite values (", name, "[",
                     b, ", ", j, ", ", d, "] = ", v, ")");
      FV_CHECK_VALUE(false, op, name, "[", b, ", ", j, ", ", d, "] = ", v,
                     " is too large: coordinates must lie within +-", bound, " (",
                     p.scalar_type() == at::kDouble ? "float64" : "float32", " arithmetic, D = ", D,
                     "), beyond which squared distances can overflow");
    }
  });
}

// CUDA (any device): the same contract as an asynchronous device-side assertion, no host sync.
inline void assert_coordinates_async(const at::Tensor& p, const char* op, const char* name) {
  if (p.numel() == 0) {
    return;
  }
  const at::ScalarType ct = p.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const double bound = coordinate_bound(ct, p.size(2));
  at::_assert_async((p.to(ct).abs() <= bound).all(),
                    c10::str(op, ": ", name, " must hold finite coordinates within +-", bound,
                             " (beyond it squared distances can overflow)"));
}

}  // namespace fastvision::points
