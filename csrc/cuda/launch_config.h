// Every size the CUDA engine is tuned by, in one place (docs/architecture.md#layers), plain C++
// so that the host planning code and its unit test (csrc/cuda/tests/) see the same numbers as
// the kernels.
#pragma once

#include <cstdint>

namespace fusedopt::cuda {

/// Elements per chunk, the unit of work and of every partial sum (Note [device table]). The
/// same 2^16 as the CPU engine (csrc/cpu/chunk_plan.h), so both cut tensors at the same places.
/// A chunk is one block's job: 2^16 / (kBlockSize * kILP) = 64 vector iterations per thread.
constexpr int64_t kChunkSize = int64_t(1) << 16;

/// Threads per block of the update and norm kernels. 256 = 8 warps: small enough that the
/// occupancy follows the register count in fine steps (a kernel at 80 registers still fits
/// three blocks, 768 threads, per SM; at 512 threads it would fit one), and a block reduction
/// of only 8 warp sums.
constexpr int kBlockSize = 256;

/// Bytes of the widest access a thread makes to one stream (ld.global.v4.u32).
constexpr int kVectorBytes = 16;

/// Elements per thread per vector iteration: one 16-byte access of an fp32 stream (8 bytes of
/// a bf16/fp16 stream). Operations with an fp64 stream take kVectorBytes / 8 = 2 (vector_width):
/// four fp64 elements of five streams with fp64 division and sqrt need more registers than
/// Note [occupancy] allows. A chunk takes the vector path when every stream's chunk start is
/// aligned to the vector width (Note [vector path]).
constexpr int kILP = 4;

/// The vector width of an operation over streams of these storage (and opmath) types.
template <class... Types>
constexpr int vector_width() {
  int widest = 1;
  ((widest = int(sizeof(Types)) > widest ? int(sizeof(Types)) : widest), ...);
  return kVectorBytes / widest < kILP ? kVectorBytes / widest : kILP;
}

/// Note [occupancy]: an update kernel in fp32 opmath without reductions is compiled for at
/// least kMinBlocksPerSm resident blocks (1,024 threads per SM, so at most 64 registers a thread,
/// which every such kernel fits without spilling: ptxas -v, tests/test_cuda_build.py); with
/// per-chunk sums (telemetry: six more fp64 registers and the block reduction) or fp64 opmath
/// (fp64 division and sqrt) for kMinBlocksPerSmHeavy (at most 128 registers). Each thread keeps
/// 4-5 streams x 16 bytes in flight, so 1,024 threads hold 64-80 KiB per SM, several times what
/// HBM latency needs; 512 threads still hold 32-40 KiB. An operation over more than
/// kMaxLightStreams streams (Adan: param, grad and four states, plus a master) is heavy too: its
/// vectors alone take 24-28 registers, and ptxas spilled Adan's fp32 kernel at 64 registers;
/// at 512 threads its 6-7 streams x 16 bytes still keep 48-56 KiB in flight per SM.
constexpr int kMinBlocksPerSm = 4;
constexpr int kMinBlocksPerSmHeavy = 2;
constexpr int kMaxLightStreams = 5;

/// The __launch_bounds__ minimum of an update kernel in opmath T over kStreams streams
/// (Note [occupancy]).
template <class T, bool kReduces, int kStreams = kMaxLightStreams>
constexpr int min_blocks_per_sm() {
  return kReduces || sizeof(T) > 4 || kStreams > kMaxLightStreams ? kMinBlocksPerSmHeavy
                                                                   : kMinBlocksPerSm;
}

/// Upper bound of resident blocks per SM the persistent grid asks for; the actual number is the
/// occupancy the compiled kernel allows (cudaOccupancyMaxActiveBlocksPerMultiprocessor).
constexpr int kMaxBlocksPerSm = 8;

/// Threads of the one-block kernels that finish a pass (step counts, fixed-order sums).
constexpr int kFinishBlockSize = 256;

constexpr int kWarpSize = 32;

static_assert(kChunkSize % kILP == 0, "a chunk must hold whole vectors");
static_assert(kBlockSize % kWarpSize == 0 && kFinishBlockSize % kWarpSize == 0,
              "blocks are whole warps");

}  // namespace fusedopt::cuda
