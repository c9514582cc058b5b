// The CUDA execution model on the CPU, for testing the kernels where no GPU is (CI).
//
// Note [CUDA emulation]: csrc/cuda/*.cu and *.cuh are compiled unchanged by the host compiler
// with this header force-included (-include) and FUSEDOPT_CUDA_EMULATION defined
// (csrc/cuda/emulation/CMakeLists.txt). A launch runs its blocks one after the other; each
// thread of a block is a fiber (fiber_scheduler.cpp) that runs until it reaches a warp shuffle
// (where its warp's lanes meet) or __syncthreads() (where the block's threads meet). So
// barriers, shared memory (per block: blocks never overlap) and warp shuffles have their CUDA
// meaning, and between two __syncthreads() each warp runs as far as it can before the next one
// starts, in forward and then reverse order: shared memory read without a barrier after
// another warp's write is read too early or too late in one of the two orders. Memory is host
// memory; the arithmetic is the host's IEEE arithmetic without contraction (-ffp-contract=off),
// pow is glibc's.
//
// What a GPU would fault on or leave undefined fails loudly here (std::logic_error out of the
// launch, a RuntimeError in Python): a streaming (vector) load or store at an address that is
// not a multiple of its size, a warp shuffle whose mask names a lane that has exited (or does
// not exist), a launch outside a DeviceGuard or sized for another device than the guard's.
// Every launch is logged with its device and stream (launch_log, fiber_scheduler.h), so tests
// can check that kernels run on the table's device and on the stream they were given.
//
// What it cannot show: anything about nvcc's code generation, the real concurrency of blocks
// and of threads between barriers, or timing. tests/test_cuda_emulation.py uses it.
#pragma once

#if !defined(FUSEDOPT_CUDA_EMULATION) || defined(__CUDACC__)
#error "cuda_emulation.h is for the host-compiled emulation build only"
#endif

#include <cstddef>
#include <cstdint>
#include <cstring>

// ---- keywords ---------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __shared__ static  // one instance, shared by the block running now (blocks are serial)

// ---- built-in variables and vector types -------------------------------------------------------
struct dim3 {
  unsigned int x = 0, y = 0, z = 0;
};

namespace fusedopt::cuda::emulation {
extern dim3 thread_index, block_index, grid_dim, block_dim;
}  // namespace fusedopt::cuda::emulation

#define threadIdx (::fusedopt::cuda::emulation::thread_index)
#define blockIdx (::fusedopt::cuda::emulation::block_index)
#define gridDim (::fusedopt::cuda::emulation::grid_dim)
#define blockDim (::fusedopt::cuda::emulation::block_dim)

struct alignas(8) uint2 {
  unsigned int x, y;
};
struct alignas(16) uint4 {
  unsigned int x, y, z, w;
};

// ---- intrinsics ---------------------------------------------------------------------------------
namespace fusedopt::cuda::emulation {
/// Wait until every live thread of the block is here (__syncthreads).
void barrier(bool warp_only);
/// Wait at a warp shuffle until the lanes of `mask` are here; a lane of `mask` that has exited
/// or does not exist is an error (undefined behaviour on a GPU).
void shuffle_barrier(unsigned mask);
/// This thread's slot of its warp's exchange buffer (8 bytes a lane).
void* exchange_slot(unsigned lane);
/// Throws std::logic_error unless p is a multiple of `bytes` (a GPU faults on a misaligned
/// vector access: "misaligned address").
void check_aligned(const void* p, size_t bytes, const char* what);
}  // namespace fusedopt::cuda::emulation

inline void __syncthreads() { ::fusedopt::cuda::emulation::barrier(false); }

/// __shfl_down_sync over the full warp: lane i gets lane i + offset's value (its own when
/// i + offset is past the warp), all lanes exchanging at once.
template <class T>
inline T __shfl_down_sync(unsigned mask, T value, unsigned offset) {
  namespace emu = ::fusedopt::cuda::emulation;
  static_assert(sizeof(T) <= 8, "the exchange buffer holds 8 bytes a lane");
  const unsigned lane = threadIdx.x % 32;
  std::memcpy(emu::exchange_slot(lane), &value, sizeof(T));
  emu::shuffle_barrier(mask);
  T out = value;
  if (lane + offset < 32) {
    std::memcpy(&out, emu::exchange_slot(lane + offset), sizeof(T));
  }
  emu::shuffle_barrier(mask);  // nobody overwrites a slot before every lane has read
  return out;
}

/// Streaming loads and stores (Note [streaming access]): one access of sizeof(T) bytes, which
/// a GPU faults on unless the address is a multiple of sizeof(T) (16 for a uint4 vector).
template <class T>
inline T __ldcs(const T* p) {
  ::fusedopt::cuda::emulation::check_aligned(p, sizeof(T), "__ldcs (vector load)");
  return *p;
}
template <class T>
inline void __stcs(T* p, T value) {
  ::fusedopt::cuda::emulation::check_aligned(p, sizeof(T), "__stcs (vector store)");
  *p = value;
}
