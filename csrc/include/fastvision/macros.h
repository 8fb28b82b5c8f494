// Portability macros shared by the CPU (.cpp) and CUDA (.cu) translation units.
#pragma once

#if defined(__CUDACC__)
#define FV_HOST_DEVICE __host__ __device__
#define FV_INLINE __forceinline__
#else
#define FV_HOST_DEVICE
#define FV_INLINE inline __attribute__((always_inline))
#endif
