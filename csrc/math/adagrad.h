// Coordinate-wise Adagrad (torch.optim.Adagrad semantics): one element update, in opmath, in the
// operation order of python/fusedopt/reference/adagrad.py (docs/algorithms.md#adagrad):
//
//   clr = lr / (1 + (t - 1) * lr_decay)     per tensor, fp64, then cast to opmath
//   g = g * coef                            (1 without a prologue; negated for maximize,
//                                            prologue.h update_coef)
//   g = g + p * wd                          (kL2: only when wd != 0, as the reference)
//   s = s + g * g
//   p = p - (clr * g) / (sqrt(s) + eps)
//
// AdaGrad-Norm has no element update of its own: it is the SGD-family pass (math/sgd.h) with a
// global scale computed from the prologue's sum of squares.
#pragma once

#include "fusedopt/macros.h"
#include "math/opmath.h"

namespace fusedopt::math {

template <class T>
struct AdagradCallScalars {
  T coef;  // stats[COEF] after a prologue, else 1; negated for maximize
  T wd;    // coupled L2 coefficient (kL2)
  T eps;
};

/// fp64 ``lr / (1 + (t - 1) * lr_decay)`` for the incremented step t.
FUSEDOPT_HD inline double adagrad_clr(double t, double lr, double lr_decay) {
  return lr / (1.0 + (t - 1.0) * lr_decay);
}

template <bool kL2, class T>
FUSEDOPT_INLINE void adagrad_update(T& p, T g, T& s, const AdagradCallScalars<T>& c, T clr) {
  g = g * c.coef;
  if constexpr (kL2) {
    g = g + p * c.wd;
  }
  s = s + g * g;
  p = p - (clr * g) / (op_sqrt(s) + c.eps);
}

}  // namespace fusedopt::math
