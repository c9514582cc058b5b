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
// The sums are Neumaier-compensated fp64 (error O(eps), independent of the element count): a
// plain fp64 lane that adds 4,096 values was measured to move an fp64 grad norm by ~2 ulp
// against torch's cascade sum, which moved the clip coefficient and, through it, every fp64
// update. fp32 terms (the reference sums them in fp32) are summed exactly enough that the
// step code can round each per-tensor sum to opmath, as the reference's torch.sum returns it.
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

/// kLanes compensated sums, one per lane (Note [fixed lanes]); total() adds them in lane order.
struct LaneSums {
  double sum[kLanes] = {};
  double comp[kLanes] = {};
  FUSEDOPT_INLINE void add(int lane, double x) { compensated_add(sum[lane], comp[lane], x); }
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
