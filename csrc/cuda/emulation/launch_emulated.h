// launch.cuh's CUDA runtime parts for the CPU emulator (Note [CUDA emulation],
// cuda_emulation.h): the same names, so every .cu file compiles unchanged.
#pragma once

#include <cstdint>

#include "cuda/device_table.h"
#include "cuda/emulation/fiber_scheduler.h"

namespace fusedopt::cuda {

/// Streaming multiprocessors of the emulated GPU: few, so that a grid of a handful of blocks
/// walks many chunks each (Note [persistent grid]), as on a GPU with many more chunks.
constexpr int kEmulatedSms = 3;

/// The emulator has one device and no current-device state.
class DeviceGuard {
 public:
  explicit DeviceGuard(int) {}
};

template <auto kKernel, int kThreads>
int64_t grid_for(int, int64_t n_chunks) {
  return persistent_grid(n_chunks, kEmulatedSms, 1);
}

/// Run kKernel(args) on every thread of `grid` blocks of kThreads threads, now.
template <auto kKernel, int kThreads, class Args>
void launch_kernel(int64_t grid, uintptr_t, const Args& args, const char*) {
  emulation::run_grid(unsigned(grid), kThreads,
                      [](const void* a) { kKernel(*static_cast<const Args*>(a)); }, &args);
}

}  // namespace fusedopt::cuda
