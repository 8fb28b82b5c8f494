// Self-test of the emulator (csrc/testing/cuda_on_cpu.h): each case's `mode` runs a small kernel
// that is correct (mode 0) or breaks one rule the emulator must report.
// Inputs: mode () i8. Output: sum () f8, the kernel's result.
#include <string>
#include <vector>

#include "array_io.h"
#include "fastvision/cuda_compat.h"

enum Mode : int64_t {
  kCorrect = 0,
  kExitBeforeBarrier = 1,
  kDifferentBarriers = 2,
  kMaskWithoutSelf = 3,
  kMaskNamesExitedLane = 4,
  kShuffleOutsideMask = 5,
  kDeadlock = 6,
  kRefusedSharedMemory = 7,
  kRefusedBlockSize = 8,
  kMissingBarrier = 9,
  kOptInTooLarge = 10,
  // Cooperative launches (grid_exchange): each block publishes a value, syncs the grid, and sums
  // every block's value.
  kCooperativeCorrect = 11,
  kCooperativeMissingGridSync = 12,
  kGridSyncNotCooperative = 13,
  kCooperativeTooLarge = 14,
  kGridSyncAfterExit = 15,
  kGridSyncBesideSyncthreads = 16,
};

// Needs the grid sync: block b reads the values the other blocks wrote before it.
FV_GLOBAL void grid_exchange(int64_t mode, double* slots, double* out) {
  const int tid = threadIdx.x;
  if (tid == 0) slots[blockIdx.x] = blockIdx.x + 1.0;
  if (mode == kGridSyncAfterExit && blockIdx.x == 1 && tid == 5) return;
  if (mode == kGridSyncBesideSyncthreads && blockIdx.x == 0 && tid == 3) {
    __syncthreads();
  } else if (mode != kCooperativeMissingGridSync) {
    cooperative_groups::this_grid().sync();
  }
  if (tid == 0) {
    double s = 0;
    for (unsigned b = 0; b < gridDim.x; ++b) s += slots[b];
    atomicAdd(out, s);
  }
}

FV_GLOBAL void block_sum(const float* x, int n, int64_t mode, double* out) {
  FV_SHARED(float[32], warp_sums);
  FV_DYNAMIC_SHARED(float, staged);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  float v = 0.f;
  for (int i = tid; i < n; i += blockDim.x) v += x[i];
  staged[tid] = v;
  if (mode == kExitBeforeBarrier && tid == 3) return;
  if (mode == kDifferentBarriers && tid == 3) {
    __syncthreads();
  } else if (mode != kMissingBarrier) {
    __syncthreads();
  }
  v = staged[(tid + 1) % blockDim.x];  // a neighbour's value: needs the barrier above
  if (mode == kMaskNamesExitedLane && lane == 7) return;
  if (mode == kDeadlock && tid == 40) __syncthreads();
  const unsigned mask = mode == kMaskWithoutSelf && lane == 5 ? 0xffffffdfu : 0xffffffffu;
  for (int off = 16; off > 0; off >>= 1) {
    if (mode == kShuffleOutsideMask) {
      v += __shfl_sync(0x0000ffffu, v, 20);
      if (lane >= 16) break;
    } else {
      v += __shfl_xor_sync(mask, v, off);
    }
  }
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (tid == 0) {
    double s = 0;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) s += warp_sums[w];
    atomicAdd(out, s);
  }
}

int main(int argc, char** argv) {
  for (int c = 1; c < argc; ++c) {
    fvtest::Arrays in = fvtest::read_arrays(argv[c]);
    const int64_t mode = in.at("mode").scalar_int();
    std::vector<float> x(1000);
    for (int i = 0; i < 1000; ++i) x[i] = static_cast<float>(i % 7);
    double sum = 0;
    if (mode >= kCooperativeCorrect) {
      fastvision::cuda::LaunchConfig cfg;
      cfg.grid = dim3(mode == kCooperativeTooLarge ? 2 * fvemu::gpu().sm_count + 1 : 3);
      cfg.block = dim3(mode == kCooperativeTooLarge ? 1024 : 64);
      cfg.cooperative = mode != kGridSyncNotCooperative;
      std::vector<double> slots(cfg.grid.x, 0.0);
      fastvision::cuda::launch(grid_exchange, cfg, fastvision::cuda::Stream{}, mode, slots.data(),
                               &sum);
      FILE* out = std::fopen((std::string(argv[c]) + ".out").c_str(), "wb");
      fvtest::write_array(out, "sum", "f8", {}, &sum, 8);
      std::fclose(out);
      continue;
    }
    fastvision::cuda::LaunchConfig cfg;
    cfg.grid = dim3(3);
    cfg.block = dim3(mode == kRefusedBlockSize ? 2048 : 128);
    cfg.smem = mode == kRefusedSharedMemory ? 48 * 1024 : 128 * sizeof(float);
    if (mode == kOptInTooLarge) {
      cfg.smem = fvemu::gpu().smem_per_block_optin;  // plus the static part: too much
      cfg.opt_in_smem = true;
    }
    fastvision::cuda::launch(block_sum, cfg, fastvision::cuda::Stream{}, x.data(), 1000, mode,
                             &sum);
    FILE* out = std::fopen((std::string(argv[c]) + ".out").c_str(), "wb");
    fvtest::write_array(out, "sum", "f8", {}, &sum, 8);
    std::fclose(out);
  }
  return 0;
}
