// launch.cuh's CUDA runtime parts for the CPU emulator (Note [CUDA emulation],
// cuda_emulation.h): the same names, so every .cu file compiles unchanged.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/device_table.h"
#include "cuda/emulation/fiber_scheduler.h"

namespace fusedopt::cuda {

/// Streaming multiprocessors of the emulated GPU: few, so that a grid of a handful of blocks
/// walks many chunks each (Note [persistent grid]), as on a GPU with many more chunks.
constexpr int kEmulatedSms = 3;

/// Makes `device` current for the scope, as on a GPU: the emulator's memory is the host's, but
/// it keeps the current device so that a launch outside a guard, or sized for another device,
/// fails (Note [CUDA emulation]), and it logs the device of every launch.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) : previous_(emulation::current_device) {
    if (device < 0) {
      throw std::invalid_argument("fusedopt CUDA emulation: DeviceGuard(" +
                                  std::to_string(device) + ")");
    }
    emulation::current_device = device;
  }
  ~DeviceGuard() { emulation::current_device = previous_; }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_;
};

template <auto kKernel, int kThreads>
int64_t grid_for(int device, int64_t n_chunks) {
  if (device != emulation::current_device) {
    throw std::logic_error("fusedopt CUDA emulation: a grid sized for device " +
                           std::to_string(device) + " while device " +
                           std::to_string(emulation::current_device) + " is current");
  }
  return persistent_grid(n_chunks, kEmulatedSms, 1);
}

/// Run kKernel(args) on every thread of `grid` blocks of kThreads threads, now (logged).
template <auto kKernel, int kThreads, class Args>
void launch_kernel(int64_t grid, uintptr_t stream, const Args& args, const char* name) {
  emulation::record_launch(name, unsigned(grid), kThreads, stream);
  emulation::run_grid(unsigned(grid), kThreads,
                      [](const void* a) { kKernel(*static_cast<const Args*>(a)); }, &args);
}

}  // namespace fusedopt::cuda
