// CUDA kernel of nn_distance: the K = 1 search of knn_points (knn_cuda.cuh) in each direction.
// Rows past a cloud's length get distance 0 and index -1 (written by the search kernel itself);
// valid rows whose other cloud is empty get +inf and -1. Same results as the CPU kernel.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "knn_cuda.cuh"
#include "nn_distance_common.h"
#include "points_common.h"

namespace fastvision::points {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> nn_distance_cuda(
    const at::Tensor& p1, const at::Tensor& p2, const std::optional<at::Tensor>& lengths1,
    const std::optional<at::Tensor>& lengths2, int64_t norm, int64_t method) {
  constexpr const char* op = "nn_distance";
  check_nn_distance_args(p1, p2, norm, method, op);  // `method` selects a CPU search only
  const c10::cuda::CUDAGuard guard(p1.device());
  assert_coordinates_async(p1, op, "p1");
  assert_coordinates_async(p2, op, "p2");
  // Length values are checked asynchronously by the Python wrapper; the kernels clamp them.
  const at::Tensor l1 = lengths_or_full(lengths1, p1, op, "lengths1");
  const at::Tensor l2 = lengths_or_full(lengths2, p2, op, "lengths2");
  const at::Tensor a = p1.contiguous(), b = p2.contiguous();
  const int64_t B = a.size(0), P1 = a.size(1), P2 = b.size(1);
  at::Tensor d12 = at::empty({B, P1}, a.options());
  at::Tensor i12 = at::empty({B, P1}, a.options().dtype(at::kLong));
  at::Tensor d21 = at::empty({B, P2}, a.options());
  at::Tensor i21 = at::empty({B, P2}, a.options().dtype(at::kLong));
  knn_cuda_forward(a, b, l1, l2, 1, norm, 0.0, d12, i12);  // no-op when B * P1 == 0
  knn_cuda_forward(b, a, l2, l1, 1, norm, 0.0, d21, i21);
  return {d12, i12, d21, i21};
}

TORCH_LIBRARY_IMPL(fastvision, CUDA, m) { m.impl("nn_distance", &nn_distance_cuda); }

}  // namespace fastvision::points
