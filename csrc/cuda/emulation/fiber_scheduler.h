// The CPU emulator's runtime (Note [CUDA emulation], cuda_emulation.h): blocks one after the
// other, the threads of a block as fibers that switch at barriers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fusedopt::cuda::emulation {

/// Run body(args) once on every thread of `grid` blocks of `threads` threads (at most
/// kMaxThreads), setting threadIdx, blockIdx, gridDim and blockDim. Throws std::logic_error
/// when some lanes of a warp wait at a shuffle the others never reach (a hang on a GPU), when
/// a shuffle's mask names an exited lane, or when a thread throws (a misaligned access): the
/// launch stops there, as a faulting kernel would.
void run_grid(unsigned grid, unsigned threads, void (*body)(const void*), const void* args);

constexpr unsigned kMaxThreads = 1024;

/// The device a DeviceGuard made current (-1: none), as the driver's per-thread current device.
extern int current_device;

/// One launch, as the emulator saw it.
struct Launch {
  std::string name;
  int device;       // the DeviceGuard's device at the launch
  uintptr_t stream;  // the stream handle the launch was given
  unsigned grid, threads;
};

/// Log a launch (throws std::logic_error outside a DeviceGuard: on a GPU it would run on
/// whatever device happens to be current). The log keeps the last kMaxLogged launches.
void record_launch(const char* name, unsigned grid, unsigned threads, uintptr_t stream);
const std::vector<Launch>& launch_log();
void clear_launch_log();
constexpr size_t kMaxLogged = size_t(1) << 16;

}  // namespace fusedopt::cuda::emulation
