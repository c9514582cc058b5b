// Deterministic block-wide sums: the same bits on every run, no atomics.
//
// Note [fixed tree]: each warp folds its 32 values by a shuffle-down tree (lane i adds lane
// i + 16, then i + 8, ... 1), lane 0 of every warp writes its sum to shared memory, and warp 0
// folds those warp sums by the same tree. The shape of the tree depends only on the block size,
// so a sum is a fixed function of the per-thread values; the per-thread values are fixed by
// the traversal (Note [vector path], multi_tensor_apply.cuh). Sums run in fp64.
#pragma once

#include "cuda/launch_config.h"

namespace fusedopt::cuda {

/// N running fp64 sums of one thread (N = 0: nothing is summed, nothing is stored).
template <int N>
struct Partials {
  double v[N] = {};
};
template <>
struct Partials<0> {};

__device__ __forceinline__ double warp_sum(double x) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    x += __shfl_down_sync(0xffffffffu, x, offset);
  }
  return x;
}

/// The block's sums of `acc` (Note [fixed tree]), valid in thread 0. Every thread of the block
/// must call it (it synchronizes). kThreads is the block size the kernel is launched with.
template <int kThreads, int N>
__device__ __forceinline__ Partials<N> block_sum(const Partials<N>& acc) {
  static_assert(kThreads % kWarpSize == 0 && kThreads / kWarpSize <= kWarpSize,
                "warp sums must fit one warp");
  constexpr int kWarps = kThreads / kWarpSize;
  __shared__ double warp_sums[N][kWarps];
  const int lane = int(threadIdx.x) % kWarpSize;
  const int warp = int(threadIdx.x) / kWarpSize;
  __syncthreads();  // warp 0 has read the scratch of the previous call
  for (int s = 0; s < N; ++s) {
    const double w = warp_sum(acc.v[s]);
    if (lane == 0) {
      warp_sums[s][warp] = w;
    }
  }
  __syncthreads();
  Partials<N> out;
  if (warp == 0) {
    for (int s = 0; s < N; ++s) {
      out.v[s] = warp_sum(lane < kWarps ? warp_sums[s][lane] : 0.0);
    }
  }
  return out;
}

}  // namespace fusedopt::cuda
