// Small opmath helpers the per-element updates share, for T = float or double, host and device.
//
// sqrt and division are the IEEE, correctly rounded ones (never a fast approximation), so every
// backend computes the same bits the reference does.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "fusedopt/macros.h"

namespace fusedopt::math {

template <class T>
FUSEDOPT_INLINE T op_sqrt(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return sqrtf(x);
  } else {
    return sqrt(x);
  }
}

/// torch.sign: -1, 0 or 1; 0 for NaN (as torch.sign on CPU, vectorized or not).
template <class T>
FUSEDOPT_INLINE T op_sign(T x) {
  return T(x > T(0)) - T(x < T(0));
}

/// torch.maximum: NaN if either operand is NaN.
template <class T>
FUSEDOPT_INLINE T op_maximum(T a, T b) {
  return (a != a || a > b) ? a : b;
}

/// cond ? a : b on values, as a bitwise blend: a plain ?: on two lvalues may become a select
/// of addresses, which stops GCC from vectorizing the loop around it (measured: the whole Adam
/// loop fell back to scalar code).
template <class T>
FUSEDOPT_INLINE T op_select(bool cond, T a, T b) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  Bits ua, ub;
  std::memcpy(&ua, &a, sizeof a);
  std::memcpy(&ub, &b, sizeof b);
  const Bits mask = Bits(0) - Bits(cond);
  const Bits out = (ua & mask) | (ub & ~mask);
  T r;
  std::memcpy(&r, &out, sizeof r);
  return r;
}

/// torch's lerp with a scalar weight w (already in opmath), in its two-branch form, exact at
/// w = 1: a + w (b - a) if |w| < 0.5, else b - (b - a) (1 - w). Both branches are computed and
/// one selected, so the loop around it stays a plain vector loop.
template <class T>
FUSEDOPT_INLINE T op_lerp(T a, T b, T w) {
  const T d = b - a;
  return op_select((w < T(0) ? -w : w) < T(0.5), a + w * d, b - d * (T(1) - w));
}

}  // namespace fusedopt::math
