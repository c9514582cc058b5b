// Stochastic rounding of an fp32 result into a 16-bit param, exactly as
// python/fusedopt/reference/rounding.py, given the element's random word r (math/philox.h).
// Branch-free, integer and IEEE float operations only (dtype.h's rule), so a loop over it
// vectorizes. Non-finite values convert as round to nearest (dtype.h's narrow).
//
// bf16: a bf16 is the upper half of an fp32, so adding 16 random bits below it and truncating
//       rounds away from zero with probability (|x| - |lo|) / ulp: unbiased. The sign bit is
//       never touched (a finite magnitude plus < 2^16 stays below 2^32 and at most reaches
//       +inf's pattern: the top finite interval rounds up to inf with that probability).
// fp16: not a truncated fp32, so the neighbours of a = |x| are found explicitly:
//       lo = a rounded toward zero to fp16 (clamped to 65504), hi = the next pattern (inf's
//       pattern read as 65536); round up when u < (a - lo) / (hi - lo), u = (r >> 8) 2^-24.
//       Every term is exact in fp32: a - lo by Sterbenz (lo >= a / 2, or lo = 0), the quotient
//       by a power of two, u on 24 bits; so the decision is the reference's (computed in fp64).
#pragma once

#include <cstdint>

#include "fusedopt/dtype.h"
#include "fusedopt/macros.h"

namespace fusedopt::math {

FUSEDOPT_INLINE uint16_t float_to_bf16_bits_sr(float x, uint32_t r) {
  const uint32_t u = float_bits(x);
  const bool finite = (u & 0x7F800000u) != 0x7F800000u;
  const uint16_t rounded = uint16_t((u + (r & 0xFFFFu)) >> 16);
  return finite ? rounded : float_to_bf16_bits(x);
}

/// The value of a non-negative fp16 pattern in [0, 0x7C00], 0x7C00 (inf) read as 2^16.
FUSEDOPT_INLINE float fp16_magnitude(uint32_t bits) {
  return bits >= 0x7C00u ? 65536.0f : fp16_bits_to_float(uint16_t(bits));
}

FUSEDOPT_INLINE uint16_t float_to_fp16_bits_sr(float x, uint32_t r) {
  const uint32_t u = float_bits(x);
  const bool finite = (u & 0x7F800000u) != 0x7F800000u;
  const float a = bits_float(u & 0x7FFFFFFFu);
  const uint32_t nearest = float_to_fp16_bits(a);  // round to nearest even, 0x7C00 from 65520
  uint32_t lo = nearest - (fp16_magnitude(nearest) > a ? 1u : 0u);
  lo = lo > 0x7BFFu ? 0x7BFFu : lo;
  const float flo = fp16_magnitude(lo);
  const float frac = (a - flo) / (fp16_magnitude(lo + 1) - flo);
  const float draw = float(r >> 8) * 0x1p-24f;
  const uint32_t magnitude = draw < frac ? lo + 1 : lo;
  const uint16_t rounded = uint16_t(magnitude | ((u >> 16) & 0x8000u));
  return finite ? rounded : float_to_fp16_bits(x);
}

}  // namespace fusedopt::math
