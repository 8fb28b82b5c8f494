// cuda_on_cpu.h: runs the project's CUDA device code on the CPU, for tests (`pytest -m emulated`).
//
// g++ compiles a kernel header (csrc/ops/<family>/<op>_kernels.cuh, through cuda_compat.h with
// FV_CUDA_EMULATION defined) as C++20; a launch runs the grid here, one block after another, each
// CUDA thread a fiber (ucontext) on the calling OS thread. What it checks:
//   - __syncthreads is a real barrier. It reports divergence: threads of the block that exited or
//     that wait at another __syncthreads (a different source line) while others wait.
//   - __shfl_sync, __shfl_up/down/xor_sync, __ballot_sync, __any_sync, __all_sync and __syncwarp
//     are meeting points of the lanes named in the mask. It reports masks that leave out the
//     calling lane, name lanes that do not exist or have exited, differ between the lanes, or a
//     shuffle that reads a lane outside the mask.
//   - Deadlock: no thread can run and no barrier or warp meeting can complete (reported with where
//     every thread waits). A thread that spins without reaching a sync point for FVEMU_TIMEOUT
//     seconds (default 600) is reported too.
//   - Shared memory: FV_SHARED(T, name) (static) and FV_DYNAMIC_SHARED(T, name) (dynamic) are
//     allocated per block at exactly their size and filled with the byte 0xA5 before the block
//     runs, so AddressSanitizer sees an overrun by one element and a read of an unwritten element
//     gives a wrong value. A plain `__shared__` declaration does not compile here (use FV_SHARED).
//   - Launch validation against a table of real GPUs (FVEMU_GPU: A100 sm_80, H100 / H200 sm_90,
//     L4 sm_89, T4 sm_75; default H100): block size <= 1024 threads and per-dimension limits, grid
//     dimensions, static + dynamic shared memory <= 48 KiB without the opt-in attribute and <= the
//     GPU's opt-in maximum with it. A refused launch is reported like a real GPU's refusal.
//     Static shared memory is known only once a block declares it, so that part of the check runs
//     at the first FV_SHARED of the launch (before any thread passes it).
//   - Atomics go through std::atomic_ref, so ThreadSanitizer sees them as atomic.
//   - Cooperative launches (LaunchConfig::cooperative, cudaLaunchCooperativeKernel on a GPU): every
//     block of the grid is resident at once (all their threads are fibers of one schedule), and
//     cooperative_groups::this_grid().sync() is a real barrier of the whole grid. The grid must fit
//     the emulated GPU's co-resident blocks (threads, blocks and shared memory per SM; registers
//     are not modelled), or the launch is refused like cudaErrorCooperativeLaunchTooLarge. A grid
//     sync that not every thread of the grid reaches (one exited, or waits at __syncthreads) is
//     reported, and so is a grid sync in a kernel launched without the cooperative flag. Under
//     TSan, blocks of a cooperative launch are fibers of one schedule, so races *between* its
//     blocks that no grid sync orders are reported too.
// Thread schedules (FVEMU_SCHEDULE): within each barrier interval the runnable threads run one
// after another in `forward` (0, 1, ...), `reverse` or `random:SEED` order (reshuffled every
// round), each until it reaches a sync point. Block order (FVEMU_BLOCK_ORDER): `forward`,
// `reverse` or `shuffle:SEED`.
// Builds: plain; -fsanitize=address,undefined (fiber stacks announced with
// __sanitizer_start/finish_switch_fiber); -fsanitize=thread (every CUDA thread a TSan fiber,
// switched without implied synchronisation, so TSan reports races between the threads of a block
// that no barrier, warp meeting or atomic orders).
// Every report goes to stderr as one paragraph starting "fvemu error:" and ends the process with
// exit status 86 (the test harness turns it into a test failure).
//
// Limits: g++ is not nvcc: no PTX, no occupancy, registers or timing; no inline PTX, tensor-core
// intrinsics, cp.async, cooperative groups other than this_grid().sync(), __activemask or independent thread scheduling inside
// a barrier interval (a thread runs until its next sync point). __launch_bounds__ is not checked.
// Races between blocks are not detected outside cooperative launches (blocks run one after another). Floating point equals the
// GPU's where the code uses the _rn intrinsics or plain + - * / on x86-64 SSE with
// -ffp-contract=off (the test build sets it; `#pragma STDC FP_CONTRACT` is ignored by g++); it may
// differ where nvcc contracts a * b + c into an FMA, and for the fast math library functions.
#pragma once

#include <ucontext.h>
#include <sys/mman.h>
#include <csignal>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <source_location>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SANITIZE_THREAD__)
#define FVEMU_TSAN 1
extern "C" {
void* __tsan_get_current_fiber(void);
void* __tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void* fiber);
void __tsan_switch_to_fiber(void* fiber, unsigned flags);
void __tsan_set_fiber_name(void* fiber, const char* name);
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
}
#endif
// The emulator's own bookkeeping (thread states, the current thread, poisoning) is shared between
// the fibers and the scheduler on purpose; TSan must see only the kernel's accesses.
#if defined(FVEMU_TSAN)
#define FVEMU_RUNTIME __attribute__((no_sanitize("thread"), noinline))
#else
#define FVEMU_RUNTIME
#endif
#if defined(__SANITIZE_ADDRESS__)
#define FVEMU_ASAN 1
extern "C" {
void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, size_t size);
void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old,
                                     size_t* size_old);
}
#endif

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};

#define FV_GLOBAL
#define FV_DEVICE inline
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static_assert(false, "emulated CUDA: declare static shared memory with FV_SHARED(T, name)");

namespace fvemu {

// ---- the GPUs whose limits a launch is validated against --------------------------------------
struct Gpu {
  const char* name;
  int sm;  // compute capability * 10
  int sm_count;
  std::size_t smem_per_block_default;  // without the opt-in attribute
  std::size_t smem_per_block_optin;    // cudaDevAttrMaxSharedMemoryPerBlockOptin
  int max_threads_per_block;
  unsigned max_block[3];
  unsigned max_grid[3];
  // Per-SM limits: what decides how many blocks a cooperative launch may have.
  int max_threads_per_sm;
  int max_blocks_per_sm;
  std::size_t smem_per_sm;  // shared memory per SM (each block also reserves 1 KiB on sm_80+)
};

inline const std::vector<Gpu>& gpu_table() {
  static const std::vector<Gpu> table = {
      {"A100", 80, 108, 48 * 1024, 163 * 1024, 1024, {1024, 1024, 64}, {2147483647u, 65535, 65535},
       2048, 32, 164 * 1024},
      {"H100", 90, 132, 48 * 1024, 227 * 1024, 1024, {1024, 1024, 64}, {2147483647u, 65535, 65535},
       2048, 32, 228 * 1024},
      {"H200", 90, 132, 48 * 1024, 227 * 1024, 1024, {1024, 1024, 64}, {2147483647u, 65535, 65535},
       2048, 32, 228 * 1024},
      {"L4", 89, 58, 48 * 1024, 99 * 1024, 1024, {1024, 1024, 64}, {2147483647u, 65535, 65535},
       1536, 24, 100 * 1024},
      {"T4", 75, 40, 48 * 1024, 64 * 1024, 1024, {1024, 1024, 64}, {2147483647u, 65535, 65535},
       1024, 16, 64 * 1024},
  };
  return table;
}

[[noreturn]] inline void fail(const std::string& text) {
  std::fprintf(stderr, "fvemu error: %s\n", text.c_str());
  std::fflush(stderr);
  std::_Exit(86);
}

inline std::string where(const std::source_location& loc) {
  std::ostringstream s;
  s << loc.file_name() << ":" << loc.line();
  return s.str();
}

// ---- configuration (environment, or set by a driver before launching) ------------------------
struct Config {
  const Gpu* gpu = nullptr;
  std::string schedule = "forward";  // forward | reverse | random:SEED
  std::string block_order = "forward";  // forward | reverse | shuffle:SEED
  unsigned timeout_s = 600;
};

inline const Gpu& find_gpu(const std::string& name) {
  for (const Gpu& g : gpu_table()) {
    if (name == g.name) {
      return g;
    }
  }
  std::string known;
  for (const Gpu& g : gpu_table()) {
    known += std::string(" ") + g.name;
  }
  fail("unknown GPU '" + name + "' (FVEMU_GPU); known:" + known);
}

inline std::uint64_t parse_seed(const std::string& spec, const char* what) {
  const auto colon = spec.find(':');
  if (colon == std::string::npos || colon + 1 == spec.size()) {
    fail(std::string(what) + " '" + spec + "' needs a seed, e.g. '" +
         spec.substr(0, colon) + ":1'");
  }
  return std::strtoull(spec.c_str() + colon + 1, nullptr, 10);
}

inline Config& config() {
  static Config c = [] {
    Config d;
    const char* gpu = std::getenv("FVEMU_GPU");
    d.gpu = &find_gpu(gpu ? gpu : "H100");
    if (const char* s = std::getenv("FVEMU_SCHEDULE")) d.schedule = s;
    if (const char* s = std::getenv("FVEMU_BLOCK_ORDER")) d.block_order = s;
    if (const char* s = std::getenv("FVEMU_TIMEOUT")) d.timeout_s = static_cast<unsigned>(std::atoi(s));
    const std::string& sc = d.schedule;
    if (!(sc == "forward" || sc == "reverse" || sc.rfind("random", 0) == 0)) {
      fail("FVEMU_SCHEDULE must be forward, reverse or random:SEED, got '" + sc + "'");
    }
    if (sc.rfind("random", 0) == 0) parse_seed(sc, "FVEMU_SCHEDULE");
    const std::string& bo = d.block_order;
    if (!(bo == "forward" || bo == "reverse" || bo.rfind("shuffle", 0) == 0)) {
      fail("FVEMU_BLOCK_ORDER must be forward, reverse or shuffle:SEED, got '" + bo + "'");
    }
    if (bo.rfind("shuffle", 0) == 0) parse_seed(bo, "FVEMU_BLOCK_ORDER");
    return d;
  }();
  return c;
}

inline const Gpu& gpu() { return *config().gpu; }

// An opaque stream handle; launches run synchronously.
struct Stream {};
using Error = int;
constexpr Error kSuccess = 0;

// ---- the running block -------------------------------------------------------------------------
enum class Wait { kRunnable, kBarrier, kGridBarrier, kWarp, kExited };
enum class WarpOp { kShfl, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll, kSyncwarp };

inline const char* warp_op_name(WarpOp op) {
  switch (op) {
    case WarpOp::kShfl: return "__shfl_sync";
    case WarpOp::kShflUp: return "__shfl_up_sync";
    case WarpOp::kShflDown: return "__shfl_down_sync";
    case WarpOp::kShflXor: return "__shfl_xor_sync";
    case WarpOp::kBallot: return "__ballot_sync";
    case WarpOp::kAny: return "__any_sync";
    case WarpOp::kAll: return "__all_sync";
    case WarpOp::kSyncwarp: return "__syncwarp";
  }
  return "?";
}

struct Thread {
  ucontext_t ctx{};
  void* stack = nullptr;
  uint3 idx;
  int tid = 0;    // within its block
  int block = 0;  // its block: an index into Launch::resident
  Wait wait = Wait::kRunnable;
  std::source_location at;
  // The pending warp operation.
  WarpOp op = WarpOp::kSyncwarp;
  unsigned mask = 0;
  std::uint64_t value = 0;  // the lane's value (bits), or its predicate
  int arg = 0;              // source lane, delta or lane mask
  int width = 32;
  std::uint64_t result = 0;
#if defined(FVEMU_TSAN)
  void* tsan_fiber = nullptr;
#endif
};

struct SharedBuffer {
  const void* site = nullptr;  // the declaration
  unsigned char* data = nullptr;
};
// A plain array, not a std::map: the runtime's own accesses must stay uninstrumented under TSan.
inline constexpr int kMaxSharedDeclarations = 64;

// A block resident in the emulator: one at a time, or every block of a cooperative launch.
struct ResidentBlock {
  uint3 idx;
  unsigned char* dyn = nullptr;
  SharedBuffer statics[kMaxSharedDeclarations];
  int static_count = 0;
  std::size_t static_bytes = 0;
#if defined(FVEMU_TSAN)
  char barrier_sync = 0;  // the address TSan's acquire/release of its __syncthreads pair on
#endif
};

struct Launch {
  dim3 grid, block;
  std::size_t dyn_bytes = 0;
  bool opt_in = false;
  std::size_t opt_in_limit = 0;  // the dynamic limit the opt-in attribute sets (>= dyn_bytes)
  bool cooperative = false;
  std::function<void()> body;
  int block_threads = 0;            // threads per block
  std::vector<ResidentBlock> resident;
  std::vector<Thread> threads;      // resident.size() * block_threads, block after block
  Thread* current = nullptr;
  ucontext_t scheduler{};
  std::size_t stack_bytes = 0;
#if defined(FVEMU_TSAN)
  void* scheduler_fiber = nullptr;
  char grid_sync = 0;  // addresses that TSan's acquire/release pair on
  char launch_sync = 0;
  char block_end_sync = 0;
  std::vector<char> warp_sync;
#endif
#if defined(FVEMU_ASAN)
  const void* main_bottom = nullptr;
  std::size_t main_size = 0;
#endif
};

inline Launch*& active() {
  static Launch* l = nullptr;
  return l;
}

FVEMU_RUNTIME inline Thread& self() {
  Launch* l = active();
  if (l == nullptr || l->current == nullptr) {
    fail("a device function (threadIdx, __syncthreads, a warp intrinsic or shared memory) was "
         "called outside a kernel launch");
  }
  return *l->current;
}

inline constexpr unsigned char kPoison = 0xA5;
inline constexpr std::size_t kSharedAlign = 16;

// A byte loop rather than memset: TSan must not see the poisoning as a write by one thread.
FVEMU_RUNTIME inline void poison(unsigned char* p, std::size_t n) {
  volatile unsigned char* v = p;
  for (std::size_t i = 0; i < n; ++i) v[i] = kPoison;
}

inline std::size_t align_up(std::size_t n, std::size_t a) { return (n + a - 1) / a * a; }

inline std::string smem_limit_text(const Launch& l, std::size_t static_bytes) {
  const Gpu& g = gpu();
  std::ostringstream s;
  // With the opt-in, a GPU refuses the attribute itself when it leaves no room for the static
  // part: attribute + static must fit the opt-in maximum.
  const std::size_t dynamic = l.opt_in ? l.opt_in_limit : l.dyn_bytes;
  const std::size_t total = static_bytes + dynamic;
  const std::size_t limit = l.opt_in ? g.smem_per_block_optin : g.smem_per_block_default;
  if (total > limit) {
    s << "launch refused on the emulated " << g.name << " (sm_" << g.sm << "): " << static_bytes
      << " B static + " << dynamic << " B dynamic shared memory = " << total << " B > "
      << limit << " B " << (l.opt_in ? "(the opt-in maximum)" : "(48 KiB: the kernel did not opt in)");
  }
  return s.str();
}

// How many blocks of this launch fit on one SM of the emulated GPU (threads, blocks and shared
// memory; registers are not modelled), for the co-residency check of cooperative launches.
inline std::size_t blocks_per_sm(const Launch& l, std::size_t static_bytes) {
  const Gpu& g = gpu();
  const std::size_t warps = (static_cast<std::size_t>(l.block_threads) + 31) / 32;
  std::size_t fit = static_cast<std::size_t>(g.max_blocks_per_sm);
  fit = std::min(fit, static_cast<std::size_t>(g.max_threads_per_sm) / (warps * 32));
  const std::size_t reserved = g.sm >= 80 ? 1024 : 0;  // per block, by the driver
  fit = std::min(fit, g.smem_per_sm / (static_bytes + l.dyn_bytes + reserved));
  return fit;
}

inline std::string coresidency_text(const Launch& l, std::size_t static_bytes) {
  if (!l.cooperative) return "";
  const Gpu& g = gpu();
  const std::uint64_t blocks = std::uint64_t{l.grid.x} * l.grid.y * l.grid.z;
  const std::size_t per_sm = blocks_per_sm(l, static_bytes);
  if (blocks <= per_sm * static_cast<std::size_t>(g.sm_count)) return "";
  std::ostringstream s;
  s << "cooperative launch refused on the emulated " << g.name << " (sm_" << g.sm << "): " << blocks
    << " blocks > " << per_sm * static_cast<std::size_t>(g.sm_count) << " co-resident ("
    << per_sm << " per SM of " << l.block_threads << " threads, " << static_bytes << " B static + "
    << l.dyn_bytes << " B dynamic shared memory, x " << g.sm_count
    << " SMs): cudaErrorCooperativeLaunchTooLarge";
  return s.str();
}

// FV_SHARED: the block's instance of a static shared variable, allocated and poisoned by the
// first thread that reaches the declaration.
template <typename T>
FVEMU_RUNTIME T& static_shared(const void* site, const std::source_location& loc) {
  Launch& l = *active();
  ResidentBlock& blk = l.resident[static_cast<std::size_t>(self().block)];
  for (int k = 0; k < blk.static_count; ++k) {
    if (blk.statics[k].site == site) {
#if defined(FVEMU_TSAN)
      // The allocation by the first thread (which TSan sees as its write) precedes every use,
      // as a real block's shared memory exists before its threads start.
      __tsan_acquire(blk.statics[k].data);
#endif
      return *reinterpret_cast<T*>(blk.statics[k].data);
    }
  }
  {
    const std::size_t bytes = sizeof(T);
    const std::size_t total_static = blk.static_bytes + align_up(bytes, kSharedAlign);
    std::string refused = smem_limit_text(l, total_static);
    if (refused.empty()) refused = coresidency_text(l, total_static);
    if (!refused.empty()) {
      fail(refused + "; at the static shared declaration " + where(loc));
    }
    blk.static_bytes = total_static;
    auto* data = static_cast<unsigned char*>(std::aligned_alloc(kSharedAlign, align_up(bytes, kSharedAlign)));
    poison(data, bytes);
    if (blk.static_count == kMaxSharedDeclarations) {
      fail("more than " + std::to_string(kMaxSharedDeclarations) + " FV_SHARED declarations in a kernel");
    }
    blk.statics[blk.static_count++] = SharedBuffer{site, data};
#if defined(FVEMU_TSAN)
    __tsan_release(data);
#endif
    return *reinterpret_cast<T*>(data);
  }
}

FVEMU_RUNTIME inline unsigned char* dynamic_shared() {
  return active()->resident[static_cast<std::size_t>(self().block)].dyn;
}

// ---- fiber switching ------------------------------------------------------------------------------
FVEMU_RUNTIME inline void switch_to_thread(Launch& l, Thread& t) {
  l.current = &t;
#if defined(FVEMU_TSAN)
  __tsan_switch_to_fiber(t.tsan_fiber, 1 /* __tsan_switch_to_fiber_no_sync */);
#endif
#if defined(FVEMU_ASAN)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, t.stack, l.stack_bytes);
#endif
  swapcontext(&l.scheduler, &t.ctx);
#if defined(FVEMU_ASAN)
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  l.current = nullptr;
}

FVEMU_RUNTIME inline void switch_to_scheduler(Launch& l, Thread& t, bool exiting) {
#if defined(FVEMU_TSAN)
  __tsan_switch_to_fiber(l.scheduler_fiber, 1);
#endif
#if defined(FVEMU_ASAN)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(exiting ? nullptr : &fake, l.main_bottom, l.main_size);
#else
  (void)exiting;
#endif
  swapcontext(&t.ctx, &l.scheduler);
#if defined(FVEMU_ASAN)
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

FVEMU_RUNTIME inline void fiber_entry() {
  Launch& l = *active();
  Thread& t = *l.current;
#if defined(FVEMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &l.main_bottom, &l.main_size);
#endif
#if defined(FVEMU_TSAN)
  __tsan_acquire(&l.launch_sync);
#endif
  l.body();
#if defined(FVEMU_TSAN)
  __tsan_release(&l.block_end_sync);
#endif
  t.wait = Wait::kExited;
  t.at = std::source_location::current();
  switch_to_scheduler(l, t, true);
  fail("an exited emulated thread was resumed");
}

// ---- sync points ----------------------------------------------------------------------------------
inline void block_until_released(Thread& t) {
  switch_to_scheduler(*active(), t, false);
}

inline std::string thread_name(const Launch& l, const Thread& t) {
  std::ostringstream s;
  const uint3& b = l.resident[static_cast<std::size_t>(t.block)].idx;
  s << "thread (" << t.idx.x << "," << t.idx.y << "," << t.idx.z << ") of block (" << b.x << ","
    << b.y << "," << b.z << ")";
  return s.str();
}

inline std::string state_of(const Thread& t) {
  switch (t.wait) {
    case Wait::kRunnable: return "runnable";
    case Wait::kExited: return "exited";
    case Wait::kBarrier: return "at __syncthreads " + where(t.at);
    case Wait::kGridBarrier: return "at the grid sync " + where(t.at);
    case Wait::kWarp: {
      std::ostringstream s;
      s << "at " << warp_op_name(t.op) << " (mask 0x" << std::hex << t.mask << ") " << where(t.at);
      return s.str();
    }
  }
  return "?";
}

// Where the threads wait: one line per run of consecutive threads of a block in the same state
// (the message stays short enough to read whole, however many blocks are resident).
inline std::string block_states(const Launch& l) {
  std::ostringstream s;
  int shown = 0;
  for (std::size_t i = 0; i < l.threads.size();) {
    const Thread& t = l.threads[i];
    const std::string state = state_of(t);
    std::size_t j = i + 1;
    while (j < l.threads.size() && l.threads[j].block == t.block && state_of(l.threads[j]) == state) {
      ++j;
    }
    if (shown++ == 64) {
      s << "\n  ...";
      break;
    }
    const Thread& last = l.threads[j - 1];
    s << "\n  " << thread_name(l, t);
    if (j - i > 1) {
      s << " to (" << last.idx.x << "," << last.idx.y << "," << last.idx.z << ")";
    }
    s << ": " << state;
    i = j;
  }
  return s.str();
}

FVEMU_RUNTIME inline void syncthreads_at(const std::source_location& loc) {
  Thread& t = self();
#if defined(FVEMU_TSAN)
  __tsan_release(&active()->resident[static_cast<std::size_t>(t.block)].barrier_sync);
#endif
  t.wait = Wait::kBarrier;
  t.at = loc;
  block_until_released(t);
#if defined(FVEMU_TSAN)
  __tsan_acquire(&active()->resident[static_cast<std::size_t>(t.block)].barrier_sync);
#endif
}

// cooperative_groups::this_grid().sync(): a barrier of every thread of a cooperative launch.
FVEMU_RUNTIME inline void grid_sync_at(const std::source_location& loc) {
  Thread& t = self();
  Launch& l = *active();
  if (!l.cooperative) {
    fail("grid sync (cooperative_groups::this_grid().sync()) at " + where(loc) + " in a kernel "
         "that was not launched cooperatively (LaunchConfig::cooperative / "
         "cudaLaunchCooperativeKernel): undefined on a GPU");
  }
#if defined(FVEMU_TSAN)
  __tsan_release(&l.grid_sync);
#endif
  t.wait = Wait::kGridBarrier;
  t.at = loc;
  block_until_released(t);
#if defined(FVEMU_TSAN)
  __tsan_acquire(&l.grid_sync);
#endif
}

// The thread's warp, numbered across the resident blocks (TSan's per-warp sync addresses).
inline std::size_t warp_slot(const Launch& l, const Thread& t) {
  const std::size_t warps_per_block = (static_cast<std::size_t>(l.block_threads) + 31) / 32;
  return static_cast<std::size_t>(t.block) * warps_per_block + static_cast<std::size_t>(t.tid / 32);
}

// Index in Launch::threads of lane 0 of thread t's warp.
inline std::size_t warp_base_index(const Launch& l, const Thread& t) {
  return static_cast<std::size_t>(t.block) * static_cast<std::size_t>(l.block_threads) +
         static_cast<std::size_t>(t.tid - t.tid % 32);
}

template <typename V>
std::uint64_t to_bits(V v) {
  static_assert(std::is_trivially_copyable_v<V> && sizeof(V) <= 8, "warp value of up to 8 bytes");
  std::uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(V));
  return bits;
}

template <typename V>
V from_bits(std::uint64_t bits) {
  V v;
  std::memcpy(&v, &bits, sizeof(V));
  return v;
}

FVEMU_RUNTIME inline std::uint64_t warp_meet(WarpOp op, unsigned mask, std::uint64_t value, int arg, int width,
                               const std::source_location& loc) {
  Launch& l = *active();
  Thread& t = self();
  const int lane = t.tid % 32;
  const int warp_base = t.tid - lane;
  const int nthreads = l.block_threads;
  std::ostringstream err;
  if ((mask >> lane & 1u) == 0) {
    err << warp_op_name(op) << " at " << where(loc) << ": " << thread_name(l, t) << " (lane "
        << lane << ") calls it with mask 0x" << std::hex << mask << ", which leaves out its own lane";
    fail(err.str());
  }
  for (int k = 0; k < 32; ++k) {
    if ((mask >> k & 1u) != 0 && warp_base + k >= nthreads) {
      err << warp_op_name(op) << " at " << where(loc) << ": mask 0x" << std::hex << mask
          << " names lane " << std::dec << k << ", which does not exist (the block has "
          << nthreads << " threads)";
      fail(err.str());
    }
  }
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    err << warp_op_name(op) << " at " << where(loc) << ": width " << width
        << " is not a power of two in [1, 32]";
    fail(err.str());
  }
#if defined(FVEMU_TSAN)
  __tsan_release(&l.warp_sync[warp_slot(l, t)]);
#endif
  t.wait = Wait::kWarp;
  t.op = op;
  t.mask = mask;
  t.value = value;
  t.arg = arg;
  t.width = width;
  t.at = loc;
  block_until_released(t);
#if defined(FVEMU_TSAN)
  __tsan_acquire(&l.warp_sync[warp_slot(l, t)]);
#endif
  return t.result;
}

// Completes the warp meeting of thread t if every lane of its mask has arrived; reports lanes that
// exited or disagree. Returns whether the lanes were released.
FVEMU_RUNTIME inline bool try_complete_warp(Launch& l, Thread& t) {
  const int lane = t.tid % 32;
  const std::size_t base = warp_base_index(l, t);
  Thread* lanes[32] = {};
  for (int k = 0; k < 32; ++k) {
    if ((t.mask >> k & 1u) == 0) continue;
    Thread& o = l.threads[base + static_cast<std::size_t>(k)];
    if (o.wait == Wait::kExited) {
      std::ostringstream e;
      e << warp_op_name(t.op) << " at " << where(t.at) << ": " << thread_name(l, t)
        << " waits for lane " << k << " (mask 0x" << std::hex << t.mask << "), which has exited";
      fail(e.str());
    }
    if (o.wait != Wait::kWarp) return false;
    lanes[k] = &o;
  }
  for (int k = 0; k < 32; ++k) {
    if (lanes[k] == nullptr) continue;
    if (lanes[k]->mask != t.mask || lanes[k]->op != t.op) {
      std::ostringstream e;
      e << "warp lanes disagree: lane " << lane << " is at " << state_of(t) << ", lane " << k
        << " is at " << state_of(*lanes[k]) << " (every lane of a mask must call the same "
        << "intrinsic with the same mask)";
      fail(e.str());
    }
  }
  std::uint64_t ballot = 0;
  bool any = false, all = true;
  for (int k = 0; k < 32; ++k) {
    if (lanes[k] == nullptr) continue;
    const bool pred = lanes[k]->value != 0;
    ballot |= static_cast<std::uint64_t>(pred) << k;
    any = any || pred;
    all = all && pred;
  }
  for (int k = 0; k < 32; ++k) {
    Thread* me = lanes[k];
    if (me == nullptr) continue;
    const int w = me->width;
    const int seg = k & ~(w - 1);
    int src = k;
    switch (me->op) {
      case WarpOp::kShfl: src = seg + (me->arg & (w - 1)); break;
      case WarpOp::kShflUp: src = (k - seg) >= me->arg ? k - me->arg : k; break;
      case WarpOp::kShflDown: src = (k - seg) + me->arg < w ? k + me->arg : k; break;
      case WarpOp::kShflXor: {
        const int x = k ^ me->arg;
        src = (x & ~(w - 1)) == seg && x < 32 ? x : k;
        break;
      }
      default: break;
    }
    switch (me->op) {
      case WarpOp::kBallot: me->result = ballot; break;
      case WarpOp::kAny: me->result = any; break;
      case WarpOp::kAll: me->result = all; break;
      case WarpOp::kSyncwarp: me->result = 0; break;
      default:
        if (lanes[src] == nullptr) {
          std::ostringstream e;
          e << warp_op_name(me->op) << " at " << where(me->at) << ": lane " << k
            << " reads lane " << src << ", which is not in the mask 0x" << std::hex << me->mask
            << " (an undefined value on a GPU)";
          fail(e.str());
        }
        me->result = lanes[src]->value;
    }
  }
  for (Thread* me : lanes) {
    if (me != nullptr) me->wait = Wait::kRunnable;
  }
  return true;
}

// ---- running a grid -----------------------------------------------------------------------------
inline std::vector<std::size_t> order(std::size_t n, const std::string& spec, std::mt19937_64* rng) {
  std::vector<std::size_t> o(n);
  for (std::size_t i = 0; i < n; ++i) o[i] = i;
  if (spec == "reverse") {
    std::reverse(o.begin(), o.end());
  } else if (rng != nullptr) {
    std::shuffle(o.begin(), o.end(), *rng);
  }
  return o;
}

// Runs the resident blocks (one, or every block of a cooperative launch) to completion.
// turn_order: the resident blocks in the order their threads take turns within a round.
FVEMU_RUNTIME inline void run_resident(Launch& l, std::mt19937_64* thread_rng,
                                       const std::vector<std::size_t>& turn_order) {
  const Config& cfg = config();
  const std::size_t n = l.threads.size();
  const std::size_t per_block = static_cast<std::size_t>(l.block_threads);
  for (std::size_t i = 0; i < n; ++i) {
    Thread& t = l.threads[i];
    t.wait = Wait::kRunnable;
    getcontext(&t.ctx);
    t.ctx.uc_stack.ss_sp = t.stack;
    t.ctx.uc_stack.ss_size = l.stack_bytes;
    t.ctx.uc_link = nullptr;
    makecontext(&t.ctx, fiber_entry, 0);
  }
  // Threads of the resident blocks in block order (forward / reverse / shuffled), each block's
  // threads in the schedule's order; a random schedule shuffles all of them every round.
  auto round_order = [&] {
    std::vector<std::size_t> o;
    o.reserve(n);
    if (thread_rng != nullptr) {
      o = order(n, cfg.schedule, thread_rng);
      return o;
    }
    const std::vector<std::size_t> within = order(per_block, cfg.schedule, nullptr);
    for (std::size_t b : turn_order) {
      for (std::size_t i : within) o.push_back(b * per_block + i);
    }
    return o;
  };
  for (;;) {
    bool ran = false;
    for (std::size_t i : round_order()) {
      Thread& t = l.threads[i];
      if (t.wait != Wait::kRunnable) continue;
      ran = true;
      switch_to_thread(l, t);
      if (t.wait == Wait::kWarp) try_complete_warp(l, t);
    }
    if (ran) continue;
    std::size_t exited_total = 0, at_grid_total = 0;
    for (const Thread& t : l.threads) {
      exited_total += t.wait == Wait::kExited;
      at_grid_total += t.wait == Wait::kGridBarrier;
    }
    if (exited_total == n) return;
    // A block whose threads all wait at __syncthreads (or exited) is released, block by block.
    bool released = false;
    for (std::size_t b = 0; b < l.resident.size(); ++b) {
      std::size_t exited = 0, at_barrier = 0, at_grid = 0;
      for (std::size_t i = b * per_block; i < (b + 1) * per_block; ++i) {
        const Thread& t = l.threads[i];
        exited += t.wait == Wait::kExited;
        at_grid += t.wait == Wait::kGridBarrier;
        at_barrier += t.wait == Wait::kBarrier;
      }
      if (at_barrier == 0 || at_barrier + exited + at_grid != per_block) continue;
      const Thread* first = nullptr;
      for (std::size_t i = b * per_block; i < (b + 1) * per_block; ++i) {
        const Thread& t = l.threads[i];
        if (t.wait != Wait::kBarrier) continue;
        if (first == nullptr) first = &t;
        if (t.at.line() != first->at.line() ||
            std::strcmp(t.at.file_name(), first->at.file_name()) != 0) {
          fail("divergent __syncthreads: threads wait at different barriers" + block_states(l));
        }
      }
      if (at_grid > 0) {
        fail("divergent sync: threads of a block wait at __syncthreads " + where(first->at) +
             " while others of the block wait at the grid sync" + block_states(l));
      }
      if (exited > 0) {
        fail("divergent __syncthreads: " + std::to_string(exited) + " of " +
             std::to_string(per_block) + " threads exited while the others wait at " +
             where(first->at) + block_states(l));
      }
      for (std::size_t i = b * per_block; i < (b + 1) * per_block; ++i) {
        l.threads[i].wait = Wait::kRunnable;
      }
      released = true;
    }
    if (released) continue;
    // The grid sync completes when every thread of the grid waits at it.
    if (at_grid_total > 0 && at_grid_total + exited_total == n) {
      const Thread* first = nullptr;
      for (const Thread& t : l.threads) {
        if (t.wait != Wait::kGridBarrier) continue;
        if (first == nullptr) first = &t;
        if (t.at.line() != first->at.line() ||
            std::strcmp(t.at.file_name(), first->at.file_name()) != 0) {
          fail("divergent grid sync: threads wait at different grid syncs" + block_states(l));
        }
      }
      if (exited_total > 0) {
        fail("divergent grid sync: " + std::to_string(exited_total) + " of " + std::to_string(n) +
             " threads of the grid exited while the others wait at the grid sync " +
             where(first->at) + block_states(l));
      }
      for (Thread& t : l.threads) t.wait = Wait::kRunnable;
      continue;
    }
    fail("deadlock: no thread can run and no barrier or warp meeting can complete" +
         block_states(l));
  }
}

inline void check_launch(const Launch& l) {
  const Gpu& g = gpu();
  std::ostringstream s;
  s << "launch refused on the emulated " << g.name << " (sm_" << g.sm << "): ";
  const unsigned b[3] = {l.block.x, l.block.y, l.block.z};
  const unsigned gr[3] = {l.grid.x, l.grid.y, l.grid.z};
  const std::uint64_t threads = std::uint64_t{b[0]} * b[1] * b[2];
  for (int d = 0; d < 3; ++d) {
    if (b[d] == 0 || b[d] > g.max_block[d]) {
      s << "block dimension " << "xyz"[d] << " = " << b[d] << " is outside [1, " << g.max_block[d] << "]";
      fail(s.str());
    }
    if (gr[d] == 0 || gr[d] > g.max_grid[d]) {
      s << "grid dimension " << "xyz"[d] << " = " << gr[d] << " is outside [1, " << g.max_grid[d] << "]";
      fail(s.str());
    }
  }
  if (threads > static_cast<std::uint64_t>(g.max_threads_per_block)) {
    s << threads << " threads per block > " << g.max_threads_per_block;
    fail(s.str());
  }
  const std::string smem = smem_limit_text(l, 0);
  if (!smem.empty()) fail(smem);
  const std::string coresident = coresidency_text(l, 0);
  if (!coresident.empty()) fail(coresident);
}

[[noreturn]] inline void on_timeout(int) {
  static const char msg[] =
      "fvemu error: an emulated thread has not reached a sync point within FVEMU_TIMEOUT seconds "
      "(an endless loop, or a spin-wait on another thread: threads only switch at sync points)\n";
  (void)!write(2, msg, sizeof(msg) - 1);
  std::_Exit(86);
}

// The most fibers one cooperative launch may have here (each has its own stack).
inline constexpr std::size_t kMaxCooperativeThreads = 16384;

template <typename... KArgs, typename... Args>
FVEMU_RUNTIME Error launch_kernel(void (*kernel)(KArgs...), dim3 grid, dim3 block, std::size_t smem, bool opt_in,
                    std::size_t opt_in_limit, bool cooperative, Args&&... args) {
  if (active() != nullptr) {
    fail("a kernel launched another kernel (dynamic parallelism is not emulated)");
  }
  const Config& cfg = config();
  Launch l;
  l.grid = grid;
  l.block = block;
  l.dyn_bytes = smem;
  l.opt_in = opt_in;
  l.opt_in_limit = opt_in_limit > smem ? opt_in_limit : smem;
  l.cooperative = cooperative;
  const std::size_t n = std::size_t{block.x} * block.y * block.z;
  l.block_threads = static_cast<int>(std::min<std::size_t>(n, 1u << 30));
  check_launch(l);
  auto packed = std::make_tuple(static_cast<KArgs>(std::forward<Args>(args))...);
  l.body = [&packed, kernel] { std::apply(kernel, packed); };
  const std::uint64_t total_blocks = std::uint64_t{grid.x} * grid.y * grid.z;
  // A cooperative launch has every block resident at once; otherwise one block at a time.
  const std::size_t resident = cooperative ? static_cast<std::size_t>(total_blocks) : 1;
  if (resident * n > kMaxCooperativeThreads && cooperative) {
    fail("cooperative launch of " + std::to_string(resident * n) + " threads: more than the "
         "emulator's " + std::to_string(kMaxCooperativeThreads) + " fibers; test a smaller grid");
  }
  l.stack_bytes = 256 * 1024;
  l.resident.resize(resident);
  l.threads.resize(resident * n);
  const std::size_t guard = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  for (std::size_t i = 0; i < l.threads.size(); ++i) {
    Thread& t = l.threads[i];
    const std::size_t local = i % n;
    t.tid = static_cast<int>(local);
    t.block = static_cast<int>(i / n);
    t.idx.x = static_cast<unsigned>(local % block.x);
    t.idx.y = static_cast<unsigned>(local / block.x % block.y);
    t.idx.z = static_cast<unsigned>(local / (std::size_t{block.x} * block.y));
    // A guard page under every stack turns a stack overflow into a crash, not corruption.
    void* mem = mmap(nullptr, l.stack_bytes + guard, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) fail("could not allocate fiber stacks");
    mprotect(mem, guard, PROT_NONE);
    t.stack = static_cast<unsigned char*>(mem) + guard;
  }
#if defined(FVEMU_TSAN)
  l.scheduler_fiber = __tsan_get_current_fiber();
  l.warp_sync.assign(resident * ((n + 31) / 32), 0);
  for (Thread& t : l.threads) {
    t.tsan_fiber = __tsan_create_fiber(0);
  }
#endif
  std::vector<std::uint64_t> blocks(total_blocks);
  for (std::uint64_t i = 0; i < total_blocks; ++i) blocks[i] = i;
  if (cfg.block_order == "reverse") {
    std::reverse(blocks.begin(), blocks.end());
  } else if (cfg.block_order != "forward") {
    std::mt19937_64 rng(parse_seed(cfg.block_order, "FVEMU_BLOCK_ORDER"));
    std::shuffle(blocks.begin(), blocks.end(), rng);
  }
  std::mt19937_64 thread_rng(cfg.schedule.rfind("random", 0) == 0
                                 ? parse_seed(cfg.schedule, "FVEMU_SCHEDULE") : 0);
  std::mt19937_64* rng = cfg.schedule.rfind("random", 0) == 0 ? &thread_rng : nullptr;
  active() = &l;
  std::signal(SIGALRM, on_timeout);
  alarm(cfg.timeout_s);
  auto block_index = [&](std::uint64_t bi) {
    uint3 idx;
    idx.x = static_cast<unsigned>(bi % grid.x);
    idx.y = static_cast<unsigned>(bi / grid.x % grid.y);
    idx.z = static_cast<unsigned>(bi / (std::uint64_t{grid.x} * grid.y));
    return idx;
  };
  // Batches of resident blocks: all of them at once (cooperative) or one after another.
  for (std::size_t first = 0; first < blocks.size(); first += resident) {
    std::vector<std::size_t> turns(resident);
    for (std::size_t r = 0; r < resident; ++r) {
      ResidentBlock& blk = l.resident[r];
      // Resident slot r holds block blocks[first + r] (for a cooperative launch, slot r is
      // block r, and the block order decides the order in which the slots take turns).
      const std::uint64_t bi = cooperative ? r : blocks[first + r];
      turns[r] = cooperative ? static_cast<std::size_t>(blocks[r]) : r;
      blk.idx = block_index(bi);
      // Exactly the requested size (malloc(0) still gives a unique pointer ASan guards).
      blk.dyn = static_cast<unsigned char*>(std::malloc(smem));
      if (blk.dyn == nullptr && smem > 0) fail("could not allocate dynamic shared memory");
      poison(blk.dyn, smem);
    }
#if defined(FVEMU_TSAN)
    __tsan_release(&l.launch_sync);  // the host's writes and the poison, before the block
#endif
    run_resident(l, rng, turns);
#if defined(FVEMU_TSAN)
    __tsan_acquire(&l.block_end_sync);  // the block's writes, before the host frees or reads
#endif
    for (ResidentBlock& blk : l.resident) {
      std::free(blk.dyn);
      blk.dyn = nullptr;
      for (int k = 0; k < blk.static_count; ++k) std::free(blk.statics[k].data);
      blk.static_count = 0;
      blk.static_bytes = 0;
    }
  }
  alarm(0);
  active() = nullptr;
#if defined(FVEMU_TSAN)
  for (Thread& t : l.threads) __tsan_destroy_fiber(t.tsan_fiber);
#endif
  for (Thread& t : l.threads) {
    munmap(static_cast<unsigned char*>(t.stack) - guard, l.stack_bytes + guard);
  }
  return kSuccess;
}

// The launcher behind fastvision::cuda::launch (cuda_compat.h): LaunchConfig has grid, block,
// smem, opt_in_smem, opt_in_limit and cooperative.
template <typename Config, typename... KArgs, typename... Args>
Error launch(void (*kernel)(KArgs...), const Config& cfg, Stream, Args&&... args) {
  return launch_kernel(kernel, cfg.grid, cfg.block, cfg.smem, cfg.opt_in_smem, cfg.opt_in_limit,
                       cfg.cooperative, std::forward<Args>(args)...);
}

// ---- device-side built-ins --------------------------------------------------------------------
FVEMU_RUNTIME inline uint3 thread_idx() { return self().idx; }
FVEMU_RUNTIME inline uint3 block_idx() {
  return active()->resident[static_cast<std::size_t>(self().block)].idx;
}
FVEMU_RUNTIME inline dim3 block_dim() { self(); return active()->block; }
FVEMU_RUNTIME inline dim3 grid_dim() { self(); return active()->grid; }

}  // namespace fvemu

#define threadIdx (::fvemu::thread_idx())
#define blockIdx (::fvemu::block_idx())
#define blockDim (::fvemu::block_dim())
#define gridDim (::fvemu::grid_dim())

#define FV_EMU_CONCAT_(a, b) a##b
#define FV_EMU_CONCAT(a, b) FV_EMU_CONCAT_(a, b)
// Static shared memory: `FV_SHARED(float[2][32], red)` declares `red` as the block's array.
#define FV_SHARED(T, name)                                            \
  static const char FV_EMU_CONCAT(fv_shared_site_, __LINE__) = 0;     \
  std::type_identity_t<T>& name = ::fvemu::static_shared<std::type_identity_t<T>>( \
      &FV_EMU_CONCAT(fv_shared_site_, __LINE__), std::source_location::current())
#define FV_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::fvemu::dynamic_shared())

inline void __syncthreads(std::source_location loc = std::source_location::current()) {
  ::fvemu::syncthreads_at(loc);
}
// The subset of cooperative groups the kernels use: this_grid().sync() under a cooperative launch.
namespace cooperative_groups {
struct grid_group {
  void sync(std::source_location loc = std::source_location::current()) const {
    ::fvemu::grid_sync_at(loc);
  }
};
inline grid_group this_grid() { return {}; }
}  // namespace cooperative_groups

inline void __syncwarp(unsigned mask = 0xffffffffu,
                       std::source_location loc = std::source_location::current()) {
  ::fvemu::warp_meet(::fvemu::WarpOp::kSyncwarp, mask, 0, 0, 32, loc);
}
template <typename V>
V __shfl_sync(unsigned mask, V v, int src, int width = 32,
              std::source_location loc = std::source_location::current()) {
  return ::fvemu::from_bits<V>(
      ::fvemu::warp_meet(::fvemu::WarpOp::kShfl, mask, ::fvemu::to_bits(v), src, width, loc));
}
template <typename V>
V __shfl_up_sync(unsigned mask, V v, unsigned delta, int width = 32,
                 std::source_location loc = std::source_location::current()) {
  return ::fvemu::from_bits<V>(::fvemu::warp_meet(::fvemu::WarpOp::kShflUp, mask,
                                                  ::fvemu::to_bits(v), static_cast<int>(delta),
                                                  width, loc));
}
template <typename V>
V __shfl_down_sync(unsigned mask, V v, unsigned delta, int width = 32,
                   std::source_location loc = std::source_location::current()) {
  return ::fvemu::from_bits<V>(::fvemu::warp_meet(::fvemu::WarpOp::kShflDown, mask,
                                                  ::fvemu::to_bits(v), static_cast<int>(delta),
                                                  width, loc));
}
template <typename V>
V __shfl_xor_sync(unsigned mask, V v, int lane_mask, int width = 32,
                  std::source_location loc = std::source_location::current()) {
  return ::fvemu::from_bits<V>(
      ::fvemu::warp_meet(::fvemu::WarpOp::kShflXor, mask, ::fvemu::to_bits(v), lane_mask, width, loc));
}
inline unsigned __ballot_sync(unsigned mask, int pred,
                              std::source_location loc = std::source_location::current()) {
  return static_cast<unsigned>(
      ::fvemu::warp_meet(::fvemu::WarpOp::kBallot, mask, pred != 0, 0, 32, loc));
}
inline int __any_sync(unsigned mask, int pred,
                      std::source_location loc = std::source_location::current()) {
  return static_cast<int>(::fvemu::warp_meet(::fvemu::WarpOp::kAny, mask, pred != 0, 0, 32, loc));
}
inline int __all_sync(unsigned mask, int pred,
                      std::source_location loc = std::source_location::current()) {
  return static_cast<int>(::fvemu::warp_meet(::fvemu::WarpOp::kAll, mask, pred != 0, 0, 32, loc));
}

// Atomics: std::atomic_ref, so that ThreadSanitizer sees atomic accesses. Each returns the old value.
template <typename V>
V atomicAdd(V* address, V value) {
  static_assert(std::is_same_v<V, float> || std::is_same_v<V, double> || std::is_same_v<V, int> ||
                    std::is_same_v<V, unsigned> || std::is_same_v<V, unsigned long long>,
                "atomicAdd: float, double, int, unsigned or unsigned long long");
  return std::atomic_ref<V>(*address).fetch_add(value);
}
template <typename V>
V atomicSub(V* address, V value) {
  static_assert(std::is_same_v<V, int> || std::is_same_v<V, unsigned>, "atomicSub: int or unsigned");
  return std::atomic_ref<V>(*address).fetch_sub(value);
}
template <typename V>
V atomicExch(V* address, V value) {
  return std::atomic_ref<V>(*address).exchange(value);
}
template <typename V>
V atomicCAS(V* address, V compare, V value) {
  static_assert(std::is_integral_v<V>, "atomicCAS: an integer type");
  std::atomic_ref<V>(*address).compare_exchange_strong(compare, value);
  return compare;  // the old value, whether or not it was swapped
}
template <typename V>
V atomicMax(V* address, V value) {
  static_assert(std::is_integral_v<V>, "atomicMax: an integer type");
  std::atomic_ref<V> a(*address);
  V old = a.load();
  while (old < value && !a.compare_exchange_weak(old, value)) {
  }
  return old;
}
template <typename V>
V atomicMin(V* address, V value) {
  static_assert(std::is_integral_v<V>, "atomicMin: an integer type");
  std::atomic_ref<V> a(*address);
  V old = a.load();
  while (value < old && !a.compare_exchange_weak(old, value)) {
  }
  return old;
}

// Round-to-nearest intrinsics: IEEE operations of the same width (x86-64 SSE, no contraction).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __drcp_rn(double a) { return 1.0 / a; }
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
// Position of the least significant set bit, from 1; 0 for 0.
inline int __ffs(int x) { return x == 0 ? 0 : std::countr_zero(static_cast<unsigned>(x)) + 1; }
inline int __float_as_int(float f) { return std::bit_cast<int>(f); }
inline float __int_as_float(int i) { return std::bit_cast<float>(i); }
inline long long __double_as_longlong(double d) { return std::bit_cast<long long>(d); }
inline double __longlong_as_double(long long i) { return std::bit_cast<double>(i); }
