// What the CUDA runtime linked into this module sees (cudart is static: it may be newer than
// torch's, and needs a driver at least as new; CUDA 13 needs R580+).
#include <string>

#include "cuda/api.h"

#ifndef FUSEDOPT_CUDA_EMULATION
#include <cuda_runtime.h>
#endif

namespace fusedopt::cuda {

RuntimeStatus runtime_status() {
#ifdef FUSEDOPT_CUDA_EMULATION
  return {0, 0, 1, ""};
#else
  RuntimeStatus s{};
  cudaRuntimeGetVersion(&s.runtime_version);
  cudaDriverGetVersion(&s.driver_version);  // 0 without a driver
  const cudaError_t err = cudaGetDeviceCount(&s.device_count);
  if (err != cudaSuccess) {
    s.device_count = 0;
    s.error = cudaGetErrorString(err);
    cudaGetLastError();  // clear it: a later launch reports its own error
  }
  return s;
#endif
}

}  // namespace fusedopt::cuda
