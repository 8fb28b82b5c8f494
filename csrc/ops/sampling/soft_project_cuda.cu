// CUDA kernels of soft_project and its backward.
//
// Forward: the k nearest points of every query come from the knn_points CUDA search
// (knn_cuda_forward: one thread per query, shared-memory tiles of the cloud, top-k in registers
// with a compile-time capacity for k <= 32, ties to the lower index, exactly the CPU's result).
// A second kernel, one thread per query, recomputes the k distances from the gathered points and
// forms the shifted softmax weights and the weighted sums of points and features
// (sp_forward_query, the function the CPU kernel calls). Only the (B, M, k) indices are kept.
//
// Backward: one thread per query recomputes the weights (sp_backward_query); dL/dquery and the
// per-query dL/dsigma are written directly, the neighbours' gradients are scattered into
// grad_points / grad_features with atomicAdd (float32 buffers for half/bfloat16 inputs).
// dL/dtemperature is a reduction of the per-query dL/dsigma (no atomics, deterministic).
//
// Half and bfloat16 are read as such and computed in float32 (at::opmath_type).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>
#include <optional>
#include <tuple>

#include "../points/knn_cuda.cuh"
#include "../points/points_common.h"
#include "fastvision/soft_projection.h"
#include "soft_project_common.h"

namespace fastvision::sampling {

namespace {

constexpr int kThreads = 256;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename T>
__global__ void __launch_bounds__(kThreads)
    soft_project_kernel(const T* __restrict__ q, const T* __restrict__ p,
                        const T* __restrict__ feats, const int64_t* __restrict__ idx,
                        const at::opmath_type<T>* __restrict__ sigma, int64_t BM, int64_t M,
                        int64_t N, int64_t F, int k, bool hard, at::opmath_type<T>* __restrict__ out,
                        at::opmath_type<T>* __restrict__ out_f) {
  using A = at::opmath_type<T>;
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r >= BM) {
    return;
  }
  const int64_t b = r / M;
  A y[3];
  sp_forward_query<A>(q + r * 3, p + b * N * 3, feats + b * N * F, F, idx + r * k, k, sigma[b],
                      hard, y, out_f + r * F);
  out[r * 3 + 0] = y[0];
  out[r * 3 + 1] = y[1];
  out[r * 3 + 2] = y[2];
}

template <typename A>
struct GpuScatter {
  A* gp;  // (N, 3) of one cloud
  A* gf;  // (N, F) of one cloud
  int64_t F;
  __host__ __device__ void point(int64_t j, int d, A v) {
#if defined(__CUDA_ARCH__)
    atomicAdd(gp + j * 3 + d, v);
#else
    gp[j * 3 + d] += v;
#endif
  }
  __host__ __device__ void feature(int64_t j, int64_t c, A v) {
#if defined(__CUDA_ARCH__)
    atomicAdd(gf + j * F + c, v);
#else
    gf[j * F + c] += v;
#endif
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
    soft_project_backward_kernel(const at::opmath_type<T>* __restrict__ g,
                                 const at::opmath_type<T>* __restrict__ gF,
                                 const T* __restrict__ q, const T* __restrict__ p,
                                 const T* __restrict__ feats, const int64_t* __restrict__ idx,
                                 const at::opmath_type<T>* __restrict__ sigma, int64_t BM,
                                 int64_t M, int64_t N, int64_t F, int k, bool hard,
                                 at::opmath_type<T>* __restrict__ gq,
                                 at::opmath_type<T>* __restrict__ gp,
                                 at::opmath_type<T>* __restrict__ gf,
                                 at::opmath_type<T>* __restrict__ gsig) {
  using A = at::opmath_type<T>;
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r >= BM) {
    return;
  }
  const int64_t b = r / M;
  GpuScatter<A> scatter{gp + b * N * 3, gf + b * N * F, F};
  A gqr[3];
  gsig[r] = sp_backward_query<A>(q + r * 3, p + b * N * 3, feats + b * N * F, F, idx + r * k, k,
                                 sigma[b], hard, g + r * 3, gF + r * F, gqr, scatter);
  gq[r * 3 + 0] = gqr[0];
  gq[r * 3 + 1] = gqr[1];
  gq[r * 3 + 2] = gqr[2];
}

at::ScalarType opmath_scalar_type(at::ScalarType t) {
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_project_cuda(
    const at::Tensor& query, const at::Tensor& points, const at::Tensor& temperature, int64_t k,
    const std::optional<at::Tensor>& features, std::optional<double> min_sigma, bool hard) {
  constexpr const char* op = "soft_project";
  check_soft_project_args(query, points, temperature, k, features, min_sigma, op);
  const c10::cuda::CUDAGuard guard(query.device());
  points::assert_coordinates_async(query, op, "query");
  points::assert_coordinates_async(points, op, "points");
  const int64_t B = query.size(0), M = query.size(1), N = points.size(1);
  const int64_t F = features.has_value() ? features->size(2) : 0;
  const at::ScalarType ct = opmath_scalar_type(query.scalar_type());
  const at::Tensor q = query.contiguous(), p = points.contiguous();
  const at::Tensor f =
      features.has_value() ? features->contiguous() : at::empty({B, N, 0}, q.options());
  // sigma values are checked by the Python wrapper (asynchronously, no host synchronisation).
  const at::Tensor sigma = soft_project_sigma(temperature, min_sigma, B, ct);
  at::Tensor out = at::empty({B, M, 3}, q.options().dtype(ct));
  at::Tensor out_f = at::empty({B, M, F}, q.options().dtype(ct));
  at::Tensor idx = at::empty({B, M, k}, q.options().dtype(at::kLong));
  if (B > 0 && M > 0) {
    TORCH_CHECK(k <= std::numeric_limits<int>::max(), op, ": k must fit in 32 bits, got ", k);
    const at::Tensor l1 = at::full({B}, M, q.options().dtype(at::kLong));
    const at::Tensor l2 = at::full({B}, N, q.options().dtype(at::kLong));
    at::Tensor dists = at::empty({B, M, k}, q.options());
    points::knn_cuda_forward(q, p, l1, l2, k, 2, std::numeric_limits<double>::infinity(), dists,
                             idx);
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    const unsigned blocks = static_cast<unsigned>(ceil_div(B * M, kThreads));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "soft_project_cuda",
                                    [&] {
      using A = at::opmath_type<scalar_t>;
      soft_project_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
          q.const_data_ptr<scalar_t>(), p.const_data_ptr<scalar_t>(),
          f.const_data_ptr<scalar_t>(), idx.const_data_ptr<int64_t>(), sigma.const_data_ptr<A>(),
          B * M, M, N, F, static_cast<int>(k), hard, out.mutable_data_ptr<A>(),
          out_f.mutable_data_ptr<A>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {out.to(query.scalar_type()), out_f.to(query.scalar_type()), idx};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> soft_project_backward_cuda(
    const at::Tensor& grad_projected, const std::optional<at::Tensor>& grad_projected_features,
    const at::Tensor& query, const at::Tensor& points, const at::Tensor& temperature,
    const at::Tensor& idx, const std::optional<at::Tensor>& features,
    std::optional<double> min_sigma, bool hard) {
  constexpr const char* op = "_soft_project_backward";
  check_soft_project_backward_args(grad_projected, grad_projected_features, query, points,
                                   temperature, idx, features, min_sigma, op);
  const c10::cuda::CUDAGuard guard(query.device());
  const int64_t B = query.size(0), M = query.size(1), N = points.size(1);
  const int64_t F = features.has_value() ? features->size(2) : 0;
  const int64_t k = idx.size(2);
  const at::ScalarType ct = opmath_scalar_type(query.scalar_type());
  const at::Tensor q = query.contiguous(), p = points.contiguous(), ix = idx.contiguous();
  const at::Tensor f =
      features.has_value() ? features->contiguous() : at::empty({B, N, 0}, q.options());
  const at::Tensor g = grad_projected.to(ct).contiguous();
  const at::Tensor gF = grad_projected_features.has_value()
                            ? grad_projected_features->to(ct).contiguous()
                            : at::zeros({B, M, F}, q.options().dtype(ct));
  const at::Tensor sigma = soft_project_sigma(temperature, min_sigma, B, ct);
  at::Tensor gq = at::zeros({B, M, 3}, q.options().dtype(ct));
  at::Tensor gp = at::zeros({B, N, 3}, q.options().dtype(ct));
  at::Tensor gf = at::zeros({B, N, F}, q.options().dtype(ct));
  at::Tensor gsig = at::zeros({B, M}, q.options().dtype(ct));
  if (B > 0 && M > 0) {
    TORCH_CHECK(k <= std::numeric_limits<int>::max(), op, ": k must fit in 32 bits, got ", k);
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    const unsigned blocks = static_cast<unsigned>(ceil_div(B * M, kThreads));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(),
                                    "soft_project_backward_cuda", [&] {
      using A = at::opmath_type<scalar_t>;
      soft_project_backward_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
          g.const_data_ptr<A>(), gF.const_data_ptr<A>(), q.const_data_ptr<scalar_t>(),
          p.const_data_ptr<scalar_t>(), f.const_data_ptr<scalar_t>(),
          ix.const_data_ptr<int64_t>(), sigma.const_data_ptr<A>(), B * M, M, N, F,
          static_cast<int>(k), hard, gq.mutable_data_ptr<A>(), gp.mutable_data_ptr<A>(),
          gf.mutable_data_ptr<A>(), gsig.mutable_data_ptr<A>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  const at::Tensor gt = soft_project_temperature_grad(gsig, temperature, min_sigma);
  return {gq.to(query.scalar_type()), gp.to(points.scalar_type()), gt,
          gf.to(points.scalar_type())};
}

TORCH_LIBRARY_IMPL(fastvision, CUDA, m) {
  m.impl("soft_project", &soft_project_cuda);
  m.impl("_soft_project_backward", &soft_project_backward_cuda);
}

}  // namespace fastvision::sampling
