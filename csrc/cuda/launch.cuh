// Host-side launch helpers shared by the .cu files: the device guard, the persistent grid size
// and the one launch function every kernel goes through. Nothing here synchronizes with the
// device. The emulation build (Note [CUDA emulation]) swaps the CUDA runtime parts for the
// CPU emulator's.
#pragma once

#include <cstdint>

#include "cuda/api.h"
#include "cuda/device_table.h"
#include "cuda/launch_config.h"
#include "cuda/multi_tensor_apply.cuh"

#ifdef FUSEDOPT_CUDA_EMULATION
#include "cuda/emulation/launch_emulated.h"
#else
#include <cuda_runtime.h>

#include <atomic>
#include <stdexcept>
#include <string>

namespace fusedopt::cuda {

/// Throws std::runtime_error naming `what` when a CUDA runtime call failed.
inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("fusedopt CUDA: ") + what + ": " +
                             cudaGetErrorString(err));
  }
}

/// Makes `device` current for the scope (torch and this module each link their own CUDA
/// runtime; the current device is the driver's, per thread, and restored on exit).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) {
      check_cuda(cudaSetDevice(device), "cudaSetDevice");
    }
    device_ = device;
  }
  ~DeviceGuard() {
    if (previous_ != device_) {
      cudaSetDevice(previous_);
    }
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  int device_ = 0;
};

/// Blocks of the persistent grid for kernel kKernel launched with kThreads threads on `device`
/// (Note [persistent grid]). The occupancy query runs once per kernel (all devices of a process
/// are assumed to share an architecture); the SM count is read per call (a cached attribute).
template <auto kKernel, int kThreads>
int64_t grid_for(int device, int64_t n_chunks) {
  static std::atomic<int> blocks_per_sm{0};  // one per kernel: kKernel is a template argument
  int per_sm = blocks_per_sm.load(std::memory_order_relaxed);
  if (per_sm == 0) {
    check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kKernel, kThreads, 0),
               "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
    blocks_per_sm.store(per_sm, std::memory_order_relaxed);
  }
  int sms = 0;
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device),
             "cudaDeviceGetAttribute(MultiProcessorCount)");
  return persistent_grid(n_chunks, sms, per_sm);
}

/// Enqueue kKernel<<<grid, kThreads, 0, stream>>>(args) and throw if the launch failed (a
/// configuration error, reported without a sync).
template <auto kKernel, int kThreads, class Args>
void launch_kernel(int64_t grid, uintptr_t stream, const Args& args, const char* name) {
  kKernel<<<unsigned(grid), kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(args);
  check_cuda(cudaGetLastError(), name);
}

}  // namespace fusedopt::cuda
#endif  // FUSEDOPT_CUDA_EMULATION

namespace fusedopt::cuda {

inline TableView view_of(const Table& t) {
  return {t.table, TableLayout{t.n_tensors, t.n_chunks, t.chunk_size}};
}

/// Blocks of kFinishBlockSize threads for a one-thread-per-tensor launch (at least one).
inline int64_t scalar_grid(int64_t n_tensors) {
  return n_tensors / kFinishBlockSize + 1;
}

}  // namespace fusedopt::cuda
