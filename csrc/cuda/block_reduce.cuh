// Deterministic block-wide sums: the same bits on every run, no atomics.
//
// Note [fixed tree]: each warp folds its 32 values by a shuffle-down tree (lane i adds lane
// i + 16, then i + 8, ... 1), lane 0 of every warp writes its sum to shared memory, and warp 0
// folds those warp sums by the same tree. The shape of the tree depends only on the block size,
// so a sum is a fixed function of the per-thread values; the per-thread values are fixed by
// the traversal (Note [vector path], multi_tensor_apply.cuh). Sums run in fp64: plain where the
// result is rounded to fp32 or only reported (telemetry), compensated where an fp64 result
// feeds an update (the fp64 grad norm, NSGDm's fp64 momentum norm), as the CPU core's lanes.
#pragma once

#include <cmath>

#include "cuda/launch_config.h"

namespace fusedopt::cuda {

/// A plain running fp64 sum.
struct PlainSum {
  double sum;

  __device__ __forceinline__ void add(double x) { sum += x; }
  __device__ __forceinline__ void merge(const PlainSum& o) { sum += o.sum; }
  __device__ __forceinline__ double value() const { return sum; }
  __device__ __forceinline__ PlainSum shuffled_down(int offset) const {
    return {__shfl_down_sync(0xffffffffu, sum, offset)};
  }
};

/// A Neumaier-compensated fp64 sum: its error is O(eps) whatever the number of terms. Once the
/// sum is inf or NaN the compensation stops, so inf and NaN propagate as in a plain sum (as
/// csrc/cpu/lanes.h compensated_add).
struct CompensatedSum {
  double sum, comp;

  __device__ __forceinline__ void add(double x) {
    const double t = sum + x;
    const double lost = fabs(sum) >= fabs(x) ? (sum - t) + x : (x - t) + sum;
    comp += t - t == 0.0 ? lost : 0.0;
    sum = t;
  }
  __device__ __forceinline__ void merge(const CompensatedSum& o) {
    add(o.sum);
    comp += o.comp;
  }
  __device__ __forceinline__ double value() const { return sum - sum == 0.0 ? sum + comp : sum; }
  __device__ __forceinline__ CompensatedSum shuffled_down(int offset) const {
    return {__shfl_down_sync(0xffffffffu, sum, offset),
            __shfl_down_sync(0xffffffffu, comp, offset)};
  }
};

/// N running sums of one thread (N = 0: nothing is summed, nothing is stored).
template <int N, class Acc = PlainSum>
struct Partials {
  Acc v[N] = {};
};
template <class Acc>
struct Partials<0, Acc> {};

template <class Acc>
__device__ __forceinline__ Acc warp_sum(Acc x) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    x.merge(x.shuffled_down(offset));
  }
  return x;
}

/// The block's sums of `acc` (Note [fixed tree]), valid in thread 0. Every thread of the block
/// must call it (it synchronizes). kThreads is the block size the kernel is launched with.
template <int kThreads, int N, class Acc>
__device__ __forceinline__ Partials<N, Acc> block_sum(const Partials<N, Acc>& acc) {
  static_assert(kThreads % kWarpSize == 0 && kThreads / kWarpSize <= kWarpSize,
                "warp sums must fit one warp");
  constexpr int kWarps = kThreads / kWarpSize;
  __shared__ Acc warp_sums[N][kWarps];
  const int lane = int(threadIdx.x) % kWarpSize;
  const int warp = int(threadIdx.x) / kWarpSize;
  __syncthreads();  // warp 0 has read the scratch of the previous call
  for (int s = 0; s < N; ++s) {
    const Acc w = warp_sum(acc.v[s]);
    if (lane == 0) {
      warp_sums[s][warp] = w;
    }
  }
  __syncthreads();
  Partials<N, Acc> out;
  if (warp == 0) {
    for (int s = 0; s < N; ++s) {
      out.v[s] = warp_sum(lane < kWarps ? warp_sums[s][lane] : Acc{});
    }
  }
  return out;
}

}  // namespace fusedopt::cuda
