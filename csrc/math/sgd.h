// The SGD family (IAN-SGD, NSGD, NSGDm, Clip-SGD; AdaGrad-Norm's pass): element updates in
// opmath, in the operation order of python/fusedopt/reference/sgd_family.py
// (docs/algorithms.md#iansgd):
//
//   d = d * coef                    (d the grad: coef = stats[COEF] or 1, negated for maximize
//                                    (prologue.h update_coef); d the momentum: coef = 1, the
//                                    momentum pass already used the negated grads)
//   p = p - scale * d               (scale = stats[SCALE], one global scalar)
//
//   g = g * coef                    NSGDm's momentum pass (coef negated for maximize)
//   m = m * (1 - rho) + g * rho
#pragma once

#include "fusedopt/macros.h"

namespace fusedopt::math {

template <class T>
FUSEDOPT_INLINE T scaled_sgd_update(T p, T d, T coef, T scale) {
  d = d * coef;
  return p - scale * d;
}

template <class T>
FUSEDOPT_INLINE T momentum_update(T m, T g, T coef, T one_minus_rho, T rho) {
  g = g * coef;
  return m * one_minus_rho + g * rho;
}

}  // namespace fusedopt::math
