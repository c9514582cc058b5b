// Loops over one chunk: plain vectorized element loops, and fixed-lane reductions.
//
// Note [fixed lanes]: a reduction over a chunk keeps kLanes = 16 independent fp64 compensated
// sums (LaneSums); element i of the chunk adds to lane i % 16, in element order, and the lanes
// are then added in lane order. That is a vector loop for every ISA (16 lanes = two zmm, four
// ymm or eight xmm of fp64), needs no reassociation (so no -ffast-math and no
// `omp simd reduction`, whose order would follow the vector width), and gives the same bits on
// every ISA. With the chunk boundaries fixed (Note [chunk plan]) and the chunk partials summed
// in chunk order by the step code, a reduced value is bitwise the same run to run, for any
// thread count, on any ISA.
//
// Terms computed in fp32 (fp32/bf16/fp16 storage) are summed in plain fp64: a lane adds at most
// chunk/16 = 4,096 terms, an error below 4,096 * 2^-53 ~ 5e-13 relative, far under the half ulp
// of the fp32 result the step code rounds each per-tensor sum to (as the reference's fp32
// torch.sum returns it). Terms computed in fp64 are Neumaier-compensated (error O(eps)): a plain
// fp64 lane was measured to move an fp64 grad norm by ~2 ulp against torch's cascade sum, which
// moved the clip coefficient and every fp64 update with it. Compensation costs: with it on fp32
// terms the AVX-512 norm pass ran at 8.6 GB/s (compute bound) on 2 threads.
#pragma once

#include <cmath>
#include <cstdint>

#include "fusedopt/macros.h"

namespace fusedopt::cpu {

constexpr int kLanes = 16;

/// body(i) for i in [0, n), vectorized (#pragma omp simd: iterations are independent).
template <class Body>
FUSEDOPT_INLINE void for_each_element(int64_t n, Body&& body) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    body(i);
  }
}

/// body(i, lane) for i in [0, n) with lane = i % kLanes (Note [fixed lanes]).
template <class Body>
FUSEDOPT_INLINE void for_each_lane(int64_t n, Body&& body) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
    for (int lane = 0; lane < kLanes; ++lane) {
      body(i + lane, lane);
    }
  }
  for (int lane = 0; i + lane < n; ++lane) {
    body(i + lane, lane);
  }
}

FUSEDOPT_INLINE bool is_finite(double x) { return x - x == 0.0; }

/// One step of Neumaier's compensated sum. Once the sum is inf or NaN the compensation stops,
/// so that inf and NaN propagate as in a plain sum (the reference's inf norm must stay inf).
FUSEDOPT_INLINE void compensated_add(double& sum, double& comp, double x) {
  const double t = sum + x;
  const double lost = std::fabs(sum) >= std::fabs(x) ? (sum - t) + x : (x - t) + sum;
  comp += is_finite(t) ? lost : 0.0;
  sum = t;
}

/// A compensated fp64 sum, added to in a fixed order.
struct CompensatedSum {
  double sum = 0.0, comp = 0.0;
  FUSEDOPT_INLINE void add(double x) { compensated_add(sum, comp, x); }
  FUSEDOPT_INLINE double value() const { return is_finite(sum) ? sum + comp : sum; }
};

/// kLanes fp64 sums, one per lane, compensated or plain (Note [fixed lanes]); total() adds them
/// in lane order.
template <bool kCompensated>
struct LaneSums {
  double sum[kLanes] = {};
  double comp[kLanes] = {};
  FUSEDOPT_INLINE void add(int lane, double x) {
    if constexpr (kCompensated) {
      compensated_add(sum[lane], comp[lane], x);
    } else {
      sum[lane] += x;
    }
  }
  /// Adds x[0 .. m) with x[j] to lane j % kLanes, in element order: the same additions in the
  /// same order as add(j % kLanes, x[j]) for j = 0, 1, ... (a vector loop over the lanes).
  FUSEDOPT_INLINE void add_block(const double* x, int64_t m) {
    int64_t j = 0;
    for (; j + kLanes <= m; j += kLanes) {
#pragma omp simd
      for (int lane = 0; lane < kLanes; ++lane) {
        add(lane, x[j + lane]);
      }
    }
    for (int lane = 0; j + lane < m; ++lane) {
      add(lane, x[j + lane]);
    }
  }
  FUSEDOPT_INLINE double total() const {
    CompensatedSum s;
    for (int lane = 0; lane < kLanes; ++lane) {
      s.add(sum[lane]);
    }
    for (int lane = 0; lane < kLanes; ++lane) {
      s.add(is_finite(sum[lane]) ? comp[lane] : 0.0);
    }
    return s.value();
  }
};

FUSEDOPT_INLINE bool any_lane(const uint32_t (&lanes)[kLanes]) {
  uint32_t acc = 0;
  for (int lane = 0; lane < kLanes; ++lane) {
    acc |= lanes[lane];
  }
  return acc != 0;
}

}  // namespace fusedopt::cpu
