// The element loop of an update pass over one chunk, shared by every algorithm's kernels.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cpu/kernel_args.h"
#include "cpu/lanes.h"
#include "fusedopt/macros.h"

namespace fusedopt::cpu {

/// update(i, p_old, p_new, g_eff) updates element i of the chunk and returns, in opmath T, the
/// param before and after and the grad the update used (coef * g). Without telemetry the loop
/// is a plain vector loop (the unused outputs compile away). With it, the chunk's in-pass
/// telemetry sums sum(dp^2), sum(p_new^2), sum(g_eff^2) are kept in fixed lanes (Note [fixed
/// lanes]) and written to partials[0 .. kTelemetrySums).
///
/// Note [telemetry blocks]: with telemetry the update runs as the same plain vector loop, over
/// blocks of kTelemetryBlock elements, writing each element's three squares to an L1-resident
/// buffer that LaneSums::add_block then adds lane by lane in element order: the sums are, bit
/// for bit, those of add(i % kLanes, ...) per element. Calling the update from inside the
/// 16-lane loop of for_each_lane instead kept 16-bit params at 3x the plain step's time
/// (AdamW, 8M bf16 params, 1 thread: 22 ms vs 7.5 ms; 7.8 ms with blocks).
///
/// Note [scalars by value]: the update lambdas capture their per-call scalars (lr terms, betas,
/// clip coef, ...) by value. Captured by reference, they are loads through a pointer that GCC
/// cannot prove the param/state stores leave alone, so it re-loads them every element, turns
/// the reloads into a loop-carried phi and gives up vectorizing the telemetry loop
/// ("unsupported use in stmt"): an AdamW step with telemetry ran 3.5x slower than without
/// (16M fp32 params, 1 thread: 71 ms vs 19 ms). Check with -fopt-info-vec-missed.
template <bool kTelemetry, class T, class Update>
FUSEDOPT_INLINE void update_elements(int64_t n, double* partials, Update&& update) {
  if constexpr (kTelemetry) {
    constexpr int64_t kTelemetryBlock = 16 * kLanes;  // 3 x 2 KiB of squares
    LaneSums<std::is_same_v<T, double>> du, dp, dg;
    alignas(64) double du_sq[kTelemetryBlock], dp_sq[kTelemetryBlock], dg_sq[kTelemetryBlock];
    for (int64_t b = 0; b < n; b += kTelemetryBlock) {
      const int64_t m = n - b < kTelemetryBlock ? n - b : kTelemetryBlock;
#pragma omp simd
      for (int64_t j = 0; j < m; ++j) {
        T p_old, p_new, g_eff;
        update(b + j, p_old, p_new, g_eff);
        const T d = p_new - p_old;
        du_sq[j] = double(d * d);
        dp_sq[j] = double(p_new * p_new);
        dg_sq[j] = double(g_eff * g_eff);
      }
      // b is a multiple of kLanes, so element b + j belongs to lane j % kLanes
      du.add_block(du_sq, m);
      dp.add_block(dp_sq, m);
      dg.add_block(dg_sq, m);
    }
    partials[0] = du.total();
    partials[1] = dp.total();
    partials[2] = dg.total();
    static_assert(kTelemetrySums == 3, "the three telemetry sums of a chunk");
  } else {
    for_each_element(n, [&](int64_t i) FUSEDOPT_INLINE_LAMBDA {
      T p_old, p_new, g_eff;
      update(i, p_old, p_new, g_eff);
    });
  }
}

}  // namespace fusedopt::cpu
