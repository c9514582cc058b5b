// The CPU emulator's runtime (Note [CUDA emulation], cuda_emulation.h): blocks one after the
// other, the threads of a block as fibers that switch at barriers.
#pragma once

namespace fusedopt::cuda::emulation {

/// Run body(args) once on every thread of `grid` blocks of `threads` threads (at most
/// kMaxThreads), setting threadIdx, blockIdx, gridDim and blockDim. Throws std::logic_error
/// when some lanes of a warp wait at a shuffle the others never reach (a hang on a GPU).
void run_grid(unsigned grid, unsigned threads, void (*body)(const void*), const void* args);

constexpr unsigned kMaxThreads = 1024;

}  // namespace fusedopt::cuda::emulation
