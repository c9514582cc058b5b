// Philox4x32-10 (Salmon et al. 2011, "Parallel Random Numbers: As Easy as 1, 2, 3"), the
// counter-based generator of stochastic rounding, exactly as python/fusedopt/reference/philox.py
// (which is bitwise Triton's triton.language.random.philox with 32-bit counters): a pure
// function of (key, counter), so any element's random word is computed by whichever thread
// handles it, on any backend, in any order.
//
//   per round:  (hi_a, lo_a) = 0xD2511F53 * c0,  (hi_b, lo_b) = 0xCD9E8D57 * c2   (64-bit)
//               (c0, c1, c2, c3) = (hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a)
//               k0 += 0x9E3779B9, k1 += 0xBB67AE85                              (mod 2^32)
//   10 rounds; key (k0, k1) = (seed & 0xFFFFFFFF, seed >> 32).
//
// Counter layout of a rounding (reference/philox.py, element_randoms): element i of the param
// with optimizer-wide index pid at step `step` (after the increment) draws the first output of
// the counter (i & 0xFFFFFFFF, i >> 32, pid, step).
#pragma once

#include <cstdint>

#include "fusedopt/macros.h"

namespace fusedopt::math {

struct PhiloxOut {
  uint32_t x0, x1, x2, x3;
};

FUSEDOPT_INLINE PhiloxOut philox4x32(uint64_t seed, uint32_t c0, uint32_t c1, uint32_t c2,
                                     uint32_t c3) {
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t a = uint64_t(0xD2511F53u) * c0;
    const uint64_t b = uint64_t(0xCD9E8D57u) * c2;
    const uint32_t n0 = uint32_t(b >> 32) ^ c1 ^ k0;
    const uint32_t n2 = uint32_t(a >> 32) ^ c3 ^ k1;
    c1 = uint32_t(b);
    c3 = uint32_t(a);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {c0, c1, c2, c3};
}

/// The random word of element `i` of param `pid` at step `step` (the counter layout above).
FUSEDOPT_INLINE uint32_t element_random(uint64_t seed, uint64_t i, uint32_t pid,
                                        uint32_t step) {
  return philox4x32(seed, uint32_t(i), uint32_t(i >> 32), pid, step).x0;
}

}  // namespace fusedopt::math
