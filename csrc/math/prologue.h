// The shared prologue of every fused step (docs/algorithms.md#prologue;
// python/fusedopt/reference/prologue.py):
//
//   inv = 1 / grad_scale (fp64; 1 without AMP), cast to opmath for the element work
//   sq  = sum over the grads of (g * inv)^2, each square in opmath
//   found_inf = any g is inf or NaN (tested on the raw value), or the GradScaler said so
//   norm = sqrt(sq); clip = min(1, max_norm / (norm + 1e-6)) (1 without clipping)
//   coef = inv * clip                                  (norm, clip, coef in fp64)
//
// The element part is unscaled_square; the sum's order is the traversal's business
// (Note [fixed lanes], csrc/cpu/lanes.h); finish_prologue turns the sum into the five slots.
#pragma once

#include <cmath>

#include "fusedopt/macros.h"

namespace fusedopt::math {

constexpr double kClipEps = 1e-6;  // torch.nn.utils.clip_grad_norm_ adds this to the norm

template <class T>
FUSEDOPT_INLINE T unscaled_square(T g, T inv) {
  const T x = g * inv;
  return x * x;
}

/// The coefficient an update call multiplies every grad by: stats[COEF] after a prologue (else
/// 1), negated for maximize (torch.optim's maximize: ascend, the grad negated before anything
/// else). IEEE negation is exact and rounding is symmetric, so g * (-coef) is bitwise
/// -(g * coef) at every precision it is cast to: maximizing is exactly descending on -g, and
/// every square of the telemetry is unchanged.
FUSEDOPT_HD inline double update_coef(double coef, bool maximize) {
  return maximize ? -coef : coef;
}

/// The five slots of a prologue region (Note [prologue region]), in fp64.
struct PrologueScalars {
  double sq, norm, found_inf, clip_coef, coef;
};

/// From the sum of squares and the non-finite flag; max_norm < 0 means no clipping.
/// clamp(max_norm / (norm + 1e-6), max=1) keeps a NaN (as torch.clamp).
FUSEDOPT_HD inline PrologueScalars finish_prologue(double sq, bool found_inf, double inv,
                                                   double max_norm) {
  const double norm = sqrt(sq);
  double clip = 1.0;
  if (max_norm >= 0.0) {
    const double x = max_norm / (norm + kClipEps);
    clip = x > 1.0 ? 1.0 : x;
  }
  return {sq, norm, found_inf ? 1.0 : 0.0, clip, inv * clip};
}

}  // namespace fusedopt::math
