// The SGD family (IAN-SGD, NSGD, NSGDm, Clip-SGD; AdaGrad-Norm's pass): element updates in
// opmath, in the operation order of python/fusedopt/reference/sgd_family.py (ALGORITHMS.md §5):
//
//   d = d * coef                    (d the grad after a prologue; coef = 1 for the momentum)
//   p = p - scale * d               (scale = stats[SCALE], one global scalar)
//
//   g = g * coef                    NSGDm's momentum pass
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
