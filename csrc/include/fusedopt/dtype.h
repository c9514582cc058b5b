// Storage dtypes: their codes, their opmath type and exact conversions to and from opmath.
//
// Codes are shared with python/fusedopt/_native.py (DTYPE_CODES). 16-bit storage is a plain
// 16-bit word wrapped in a struct (so bf16 and fp16 are distinct types for overloads) and is
// converted with integer and IEEE float operations only, branch-free, so that a loop over it
// still vectorizes (no F16C/AVX512-BF16 intrinsics, no libgcc soft-float calls):
//
//   bf16 -> fp32: the 16 bits are the high half of the fp32 word (exact).
//   fp32 -> bf16: round to nearest even on bit 16; NaN -> 0x7FC0 (as c10::BFloat16).
//   fp16 -> fp32: rebias the exponent (exact); subnormals as mantissa * 2^-24 (exact in fp32).
//   fp32 -> fp16: round to nearest even, overflow to inf from 65520 on, subnormals rounded by
//                 one fp32 addition (see float_to_fp16_bits), NaN -> quiet 0x7E00 with the sign.
//
// All of them match torch's own conversions bit for bit on non-NaN values
// (tests/test_cpu_backend.py::test_16bit_round_trip_is_torchs checks every fp16 and bf16 word).
#pragma once

#include <cstdint>
#include <cstring>

#include "fusedopt/macros.h"

namespace fusedopt {

/// Storage dtype codes (python/fusedopt/_native.py DTYPE_CODES holds the same numbers).
enum class DType : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

struct bf16_t {
  uint16_t bits;
};
struct fp16_t {
  uint16_t bits;
};

/// The type the math runs in for a storage type: fp32 for fp32/bf16/fp16, fp64 for fp64.
template <class S>
struct Opmath {
  using type = float;
};
template <>
struct Opmath<double> {
  using type = double;
};
template <class S>
using opmath_t = typename Opmath<S>::type;

FUSEDOPT_INLINE uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

FUSEDOPT_INLINE float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

FUSEDOPT_INLINE float bf16_bits_to_float(uint16_t h) { return bits_float(uint32_t(h) << 16); }

FUSEDOPT_INLINE uint16_t float_to_bf16_bits(float f) {
  const uint32_t u = float_bits(f);
  // Adding 0x7FFF plus the lowest kept bit carries into bit 16 exactly when the dropped half is
  // above one half, or equal to it with an odd kept part: round to nearest, ties to even.
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const bool is_nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  return is_nan ? uint16_t(0x7FC0) : uint16_t(rounded);
}

FUSEDOPT_INLINE float fp16_bits_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7FFFu;  // exponent and mantissa
  // Normal numbers: move the 15 bits into place and add (127 - 15) to the exponent. Inf/NaN
  // (exponent 31) need the exponent all ones: another (128 - 16).
  uint32_t normal = (em << 13) + ((127u - 15u) << 23);
  normal = em >= 0x7C00u ? normal + ((128u - 16u) << 23) : normal;
  // Subnormals and zero: the value is mantissa * 2^-24, exact in fp32.
  const float subnormal = float(int32_t(em)) * 0x1p-24f;
  const uint32_t magnitude = em < 0x0400u ? float_bits(subnormal) : normal;
  return bits_float(magnitude | sign);
}

FUSEDOPT_INLINE uint16_t float_to_fp16_bits(float f) {
  const uint32_t u = float_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7FFFFFFFu;
  // Normal range: rebias the exponent by (15 - 127) and round the 13 dropped mantissa bits to
  // nearest even (add 0xFFF plus the lowest kept bit; a carry may bump the exponent, correctly).
  const uint32_t normal = (a - ((127u - 15u) << 23) + 0x0FFFu + ((a >> 13) & 1u)) >> 13;
  // Below 2^-14 the result is subnormal, a multiple of 2^-24: adding 0.5 puts |f| where one fp32
  // ulp is 2^-24, so the fp32 addition itself rounds to nearest even; the mantissa bits are the
  // fp16 word (0x400 when it rounds up to the smallest normal, also correct).
  const uint32_t subnormal = float_bits(bits_float(a) + 0.5f) - 0x3F000000u;
  uint32_t h = a < 0x38800000u ? subnormal : normal;
  h = a >= 0x477FF000u ? 0x7C00u : h;  // |f| >= 65520 rounds to inf (65504 is odd: ties up)
  h = a > 0x7F800000u ? 0x7E00u : h;   // NaN: a quiet NaN
  return uint16_t(h | sign);
}

// ---- storage <-> opmath --------------------------------------------------------------------

FUSEDOPT_INLINE float widen(float x) { return x; }
FUSEDOPT_INLINE double widen(double x) { return x; }
FUSEDOPT_INLINE float widen(bf16_t x) { return bf16_bits_to_float(x.bits); }
FUSEDOPT_INLINE float widen(fp16_t x) { return fp16_bits_to_float(x.bits); }

/// Load a storage value as opmath T (an fp32 grad of an fp64 param widens to fp64).
template <class T, class S>
FUSEDOPT_INLINE T load(S x) {
  return static_cast<T>(widen(x));
}

/// Round an opmath value to storage type S (round to nearest even, as torch's .to(dtype)).
template <class S, class T>
FUSEDOPT_INLINE S narrow(T x);

template <>
FUSEDOPT_INLINE float narrow<float, float>(float x) {
  return x;
}
template <>
FUSEDOPT_INLINE double narrow<double, double>(double x) {
  return x;
}
template <>
FUSEDOPT_INLINE bf16_t narrow<bf16_t, float>(float x) {
  return bf16_t{float_to_bf16_bits(x)};
}
template <>
FUSEDOPT_INLINE fp16_t narrow<fp16_t, float>(float x) {
  return fp16_t{float_to_fp16_bits(x)};
}

// ---- non-finite test on the raw storage bits (inf or NaN: exponent all ones) --------------

FUSEDOPT_INLINE bool is_nonfinite(float x) { return (float_bits(x) & 0x7F800000u) == 0x7F800000u; }
FUSEDOPT_INLINE bool is_nonfinite(double x) {
  uint64_t u;
  std::memcpy(&u, &x, sizeof u);
  return (u & 0x7FF0000000000000ull) == 0x7FF0000000000000ull;
}
FUSEDOPT_INLINE bool is_nonfinite(bf16_t x) { return (x.bits & 0x7F80u) == 0x7F80u; }
FUSEDOPT_INLINE bool is_nonfinite(fp16_t x) { return (x.bits & 0x7C00u) == 0x7C00u; }

}  // namespace fusedopt
