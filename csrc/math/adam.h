// The Adam family: one element update, in opmath, in exactly the operation order of
// python/fusedopt/reference/adam_family.py (docs/algorithms.md#adam-family, #adaml):
//
//   g = g * coef                                  (AMP unscale and clip; 1 without a prologue;
//                                                  negated for maximize: prologue.h update_coef)
//   g = g + p * wd                                (Decay::kCoupled, Adam's L2)
//   p = p * decay                                 (Decay::kDecoupled; decay = 1 without decay)
//   m = lerp(m, g, w), w = 1 - beta1              (kRmsprop: no m, the direction is g)
//         m + w * (g - m)          if |w| < 0.5   (torch's two-branch lerp; the branch is
//         g - (g - m) * (1 - w)    otherwise       chosen once per call: adam_call_scalars)
//   v = v * beta2 + ((1 - beta2) * g) * g         kAdam, kAmsgrad, kRmsprop (torch's addcmul)
//     = v * beta2 + ((1 - beta2) * d) * d, d = g - m (the new m)          kAdabelief
//     = v - ((1 - beta2) * sign(v - g * g)) * (g * g)                     kYogi
//   v = v + v_shift                               (stored: eps for adabelief/eadam, AdamL's a)
//   vmax = max(vmax, v), used below               (kAmsgrad)
//   denom = sqrt(v) / bc2_sqrt + denom_eps        (eps; 0 for eadam; AdamL's b)
//   p = p - (step_size * direction) / denom
//
// Every scalar is computed once per step in fp64 (adam_step_scalars: the reference does the
// same in fp64 tensors) and cast to opmath T before the loop, as the reference's `.to(op)`.
//
// Modes that change the code are template parameters (AdamKind, Decay); the reference's
// optional terms that are additions of zero (v_shift = 0, denom_eps = 0 for eadam) or
// multiplications by one (coef = 1, decay = 1) are runtime values: x + 0 and x * 1 are exact
// in IEEE arithmetic for the values they meet (v >= +0, sqrt(v) / bc2_sqrt >= +0), so the result
// is bitwise the reference's and the variants share one instantiation. EAdam is kAdam with
// v_shift = eps, denom_eps = 0; AdamL is kAdam with v_shift = a, denom_eps = b, c in step_size.
#pragma once

#include <cmath>

#include "fusedopt/macros.h"
#include "math/opmath.h"

namespace fusedopt::math {

/// What the element update computes besides Adam (variants sharing code share a kind).
enum class AdamKind : int { kAdam = 0, kAmsgrad = 1, kAdabelief = 2, kRmsprop = 3, kYogi = 4 };

/// How weight decay enters: decoupled (p *= 1 - lr wd, AdamW; also "no decay", decay = 1) or
/// coupled (g += wd p, Adam's L2; only when wd != 0, as the reference skips it at wd = 0).
enum class Decay : int { kDecoupled = 0, kCoupled = 1 };

/// Scalars shared by every tensor of one call, in fp64, as the step code gathers them.
struct AdamCallInputs {
  double coef;       // stats[COEF] after a prologue, else 1; negated for maximize
  double wd;         // coupled L2 coefficient (Decay::kCoupled)
  double beta1, beta2;
  double v_shift;    // added to v and stored: eps (adabelief, eadam), a (AdamL), else 0
  double denom_eps;  // added to the denominator: eps, 0 (eadam), b (AdamL)
};

/// The same, in opmath, ready for the element update.
template <class T>
struct AdamCallScalars {
  T coef, wd;
  T lerp_coef;       // w (|w| < 0.5) or -(1 - w), w = 1 - beta1 rounded to opmath
  bool lerp_from_m;  // |w| < 0.5: m + w (g - m); else g - (g - m) (1 - w) = g + (-(1 - w)) (g - m)
  T beta2, one_minus_beta2;
  T v_shift, denom_eps;
};

/// Every scalar cast to opmath as the reference's `.to(op)`; torch's lerp branch picked once.
/// g - d * (1 - w) is computed as g + (-(1 - w)) * d: negation and IEEE subtraction make them
/// the same bits, so both branches are one expression, base + lerp_coef * (g - m).
template <class T>
FUSEDOPT_HD inline AdamCallScalars<T> adam_call_scalars(const AdamCallInputs& in) {
  const T w = T(1.0 - in.beta1);
  const bool from_m = (w < T(0) ? -w : w) < T(0.5);
  return {T(in.coef), T(in.wd), from_m ? w : -(T(1) - w), from_m, T(in.beta2),
          T(1.0 - in.beta2), T(in.v_shift), T(in.denom_eps)};
}

/// Scalars of one tensor (they depend on its step count t), in opmath.
template <class T>
struct AdamTensorScalars {
  T step_size;  // lr * c / bc1
  T bc2_sqrt;   // sqrt(bc2)
  T decay;      // 1 - lr * wd (Decay::kDecoupled), or 1
};

/// fp64 per-tensor scalars for the incremented step t, as reference.adam_step_scalars:
/// bc1 = 1 - beta1^t, bc2 = 1 - beta2^t (1 without bias correction), step_size = lr * c / bc1,
/// bc2_sqrt = sqrt(bc2), decay = 1 - lr * wd (1 when wd is 0 or the decay is coupled).
FUSEDOPT_HD inline AdamTensorScalars<double> adam_step_scalars(double t, double lr, double c,
                                                             double beta1, double beta2,
                                                             bool bias_correction,
                                                             double decoupled_wd) {
  const double bc1 = bias_correction ? 1.0 - pow(beta1, t) : 1.0;
  const double bc2 = bias_correction ? 1.0 - pow(beta2, t) : 1.0;
  return {lr * c / bc1, sqrt(bc2), 1.0 - lr * decoupled_wd};
}

/// One element of the Adam family (see the header comment for the order). p, m, v, vmax are
/// updated in place; m is untouched for kRmsprop, vmax for everything but kAmsgrad.
template <AdamKind K, Decay D, class T>
FUSEDOPT_INLINE void adam_update(T& p, T g, T& m, T& v, T& vmax, const AdamCallScalars<T>& s,
                                 const AdamTensorScalars<T>& ts) {
  g = g * s.coef;
  if constexpr (D == Decay::kCoupled) {
    g = g + p * s.wd;
  } else {
    p = p * ts.decay;
  }
  T direction = g;
  if constexpr (K != AdamKind::kRmsprop) {
    const T d = g - m;
    m = op_select(s.lerp_from_m, m, g) + s.lerp_coef * d;
    direction = m;
  }
  if constexpr (K == AdamKind::kAdabelief) {
    const T d = g - m;
    v = v * s.beta2 + (s.one_minus_beta2 * d) * d;
  } else if constexpr (K == AdamKind::kYogi) {
    const T g2 = g * g;
    v = v - (s.one_minus_beta2 * op_sign(v - g2)) * g2;
  } else {
    v = v * s.beta2 + (s.one_minus_beta2 * g) * g;
  }
  v = v + s.v_shift;
  T vd = v;
  if constexpr (K == AdamKind::kAmsgrad) {
    vmax = op_maximum(vmax, v);
    vd = vmax;
  }
  const T denom = op_sqrt(vd) / ts.bc2_sqrt + s.denom_eps;
  p = p - (ts.step_size * direction) / denom;
}

}  // namespace fusedopt::math
