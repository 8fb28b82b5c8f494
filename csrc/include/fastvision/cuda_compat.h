// One kernel source for two compilers: nvcc (the real CUDA build) and g++ with the project's
// CUDA-on-CPU emulator (csrc/testing/cuda_on_cpu.h, used by `pytest -m emulated`).
//
// Every csrc/ops/<family>/<op>_kernels.cuh includes this header and nothing from torch/ATen, so
// that its kernels *and* its launch planning compile and run under both. It provides:
//   FV_GLOBAL                         a kernel (__global__)
//   FV_DEVICE                         a device function (__device__ __forceinline__)
//   FV_HOST_DEVICE                    from macros.h
//   FV_DYNAMIC_SHARED(T, name)        `T* name` pointing at the block's dynamic shared memory
//   FV_SHARED(T, name)                static shared memory: `FV_SHARED(float[2][32], red);`
//                                     declares the block's `red` (`__shared__ float red[2][32]`
//                                     under nvcc; allocated per block, poisoned and counted
//                                     against the launch's shared-memory limit when emulated)
//   fastvision::opmath_t<T>, ceil_div from common.h (shared with the CPU kernels)
//   fastvision::cuda::Stream          cudaStream_t under nvcc, an opaque handle when emulated
//   fastvision::cuda::DeviceLimits    what launch planning may ask of the device
//   fastvision::cuda::Error, kSuccess  cudaError_t / cudaSuccess under nvcc
//   fastvision::cuda::launch(kernel, LaunchConfig, stream, args...) -> Error
//       under nvcc: opts in to more than 48 KiB of shared memory when config.opt_in_smem (to
//       max(smem, opt_in_limit)), then
//       kernel<<<grid, block, smem, stream>>>(args...) (cudaLaunchCooperativeKernel when
//       config.cooperative) and the launch check; when emulated: runs the grid on the CPU,
//       validating the launch against the emulated GPU's limits (for a cooperative launch: all
//       blocks resident at once, cooperative_groups::this_grid().sync() a real grid barrier).
// __syncthreads, __shfl_*_sync, __ballot_sync, atomics, __fmul_rn-style intrinsics, threadIdx
// and friends keep their CUDA names: native under nvcc, provided by the emulator otherwise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <tuple>
#include <type_traits>

#include "fastvision/common.h"
#include "fastvision/macros.h"

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cooperative_groups.h>
#elif defined(FV_CUDA_EMULATION)
#include "cuda_on_cpu.h"  // csrc/testing, on the include path of the emulated test builds only
#endif

#if defined(__CUDACC__)
#define FV_GLOBAL __global__
#define FV_DEVICE __device__ __forceinline__
#define FV_DYNAMIC_SHARED(T, name)                               \
  extern __shared__ __align__(16) unsigned char fv_dyn_smem_[]; \
  T* name = reinterpret_cast<T*>(fv_dyn_smem_)
#define FV_SHARED(T, name) __shared__ std::type_identity_t<T> name
#elif !defined(FV_CUDA_EMULATION)
#error "cuda_compat.h is for nvcc or the CUDA-on-CPU emulator (define FV_CUDA_EMULATION)"
#endif

namespace fastvision {

namespace cuda {

// The limits that a launch plan may depend on, queried from the device by the ATen glue (or
// taken from the emulator's table of real GPUs in tests).
struct DeviceLimits {
  int sm_count = 132;
  std::size_t smem_per_block_default = 48 * 1024;  // without the opt-in attribute
  std::size_t smem_per_block_optin = 227 * 1024;   // cudaDevAttrMaxSharedMemoryPerBlockOptin
  int max_threads_per_block = 1024;
  bool cooperative_launch = true;  // cudaDevAttrCooperativeLaunch
};

struct LaunchConfig {
  dim3 grid;
  dim3 block;
  std::size_t smem = 0;       // dynamic shared memory in bytes
  bool opt_in_smem = false;   // raise the kernel's dynamic shared-memory limit
  // The limit the opt-in sets, when larger than `smem`. The attribute is per kernel, not per
  // launch: planning that always sets the device's whole budget keeps concurrent launches of one
  // kernel with different sizes from lowering each other's limit.
  std::size_t opt_in_limit = 0;
  // Launch with cudaLaunchCooperativeKernel: every block co-resident, so that the kernel may call
  // cooperative_groups::this_grid().sync(). The plan must keep the grid within the co-resident
  // blocks (the launch fails with cudaErrorCooperativeLaunchTooLarge otherwise).
  bool cooperative = false;
};

#if defined(__CUDACC__)
using Stream = cudaStream_t;
using Error = cudaError_t;
constexpr Error kSuccess = cudaSuccess;

// Raises the kernel's dynamic shared memory limit when asked, launches, and reports a launch
// error as a C++ exception via the glue's check (the glue calls C10_CUDA_KERNEL_LAUNCH_CHECK()).
template <typename... KArgs, typename... Args>
inline cudaError_t launch(void (*kernel)(KArgs...), const LaunchConfig& cfg, Stream stream,
                          Args&&... args) {
  if (cfg.opt_in_smem) {
    const std::size_t limit = cfg.opt_in_limit > cfg.smem ? cfg.opt_in_limit : cfg.smem;
    const cudaError_t err = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(limit));
    if (err != cudaSuccess) {
      return err;
    }
  }
  if (cfg.cooperative) {
    // The arguments converted to the kernel's parameter types, and their addresses.
    std::tuple<KArgs...> packed(static_cast<KArgs>(args)...);
    return std::apply(
        [&](auto&... a) {
          void* pointers[] = {static_cast<void*>(&a)...};
          return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), cfg.grid,
                                             cfg.block, pointers, cfg.smem, stream);
        },
        packed);
  }
  kernel<<<cfg.grid, cfg.block, cfg.smem, stream>>>(static_cast<KArgs>(args)...);
  return cudaGetLastError();
}
#else
using Stream = ::fvemu::Stream;
using Error = ::fvemu::Error;
constexpr Error kSuccess = ::fvemu::kSuccess;
using ::fvemu::launch;
#endif

}  // namespace cuda
}  // namespace fastvision
