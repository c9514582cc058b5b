// Slots of the per-optimizer float64 "stats" buffer (python/fusedopt/_stats.py holds the same
// numbers and says what each slot means; tests/test_cpu_backend.py checks that they agree).
//
// Note [prologue region] (python/fusedopt/_stats.py): a prologue writes five consecutive slots
// from its region: +0 sum of squares, +1 norm, +2 found_inf, +3 clip coefficient, +4 coef.
#pragma once

#include <cstdint>

namespace fusedopt {

constexpr int64_t kNumSlots = 32;

constexpr int64_t kSlotGrad = 0;        // gradient prologue region, slots 0..4
constexpr int64_t kSlotGradSq = 0;
constexpr int64_t kSlotGradNorm = 1;
constexpr int64_t kSlotFoundInf = 2;
constexpr int64_t kSlotClipCoef = 3;
constexpr int64_t kSlotCoef = 4;

constexpr int64_t kSlotUpdateSq = 5;    // telemetry: sum (p_new - p_old)^2
constexpr int64_t kSlotParamSq = 6;     // telemetry: sum p_new^2
constexpr int64_t kSlotStepGradSq = 7;  // telemetry: sum (coef g)^2

constexpr int64_t kSlotAux = 8;         // IAN-SGD's independent-batch prologue region, 8..12
constexpr int64_t kSlotScale = 13;      // SGD family: the global step scale s
constexpr int64_t kSlotAbc = 14;        // AdamL a, b, c: 14, 15, 16
constexpr int64_t kSlotMomentumSq = 17; // NSGDm: sum m_new^2
constexpr int64_t kSlotPrevParamSq = 18; // last step's PARAM_SQ (the optimizer's; no kernel writes it)
constexpr int64_t kSlotLrInvalid = 19;  // 1.0: a tensor lr was NaN or negative, the call skipped

// Offsets inside a prologue region.
constexpr int64_t kRegionSq = 0;
constexpr int64_t kRegionNorm = 1;
constexpr int64_t kRegionFoundInf = 2;
constexpr int64_t kRegionClipCoef = 3;
constexpr int64_t kRegionCoef = 4;

}  // namespace fusedopt
