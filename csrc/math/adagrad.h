// Coordinate-wise Adagrad (torch.optim.Adagrad semantics): an element-wise algorithm
// (math/elementwise.h) in the operation order of python/fusedopt/reference/adagrad.py
// (docs/algorithms.md#adagrad):
//
//   per tensor, fp64:  clr = lr / (1 + (t - 1) * lr_decay), wd, eps, has_wd = (wd != 0)
//   per element:       g = has_wd ? g + p * wd : g      (coupled L2, only when wd != 0, as torch)
//                      s = s + g * g
//                      p = p - (clr * g) / (sqrt(s) + eps)
//
// AdaGrad-Norm has no element update of its own: it is the SGD-family pass (math/sgd.h) with a
// global scale computed from the prologue's sum of squares.
#pragma once

#include "math/elementwise.h"
#include "math/opmath.h"

namespace fusedopt::math {

struct Adagrad {
  static constexpr const char* kName = "adagrad";
  static constexpr int kStates = 1;   // sum
  static constexpr int kHyper = 3;    // lr_decay, eps, weight_decay
  static constexpr int kScalars = 4;  // clr, wd, eps, has_wd

  FUSEDOPT_INLINE static void scalars(double t, double lr, const double* h, double* s) {
    s[0] = lr / (1.0 + (t - 1.0) * h[0]);
    s[1] = h[2];
    s[2] = h[1];
    s[3] = h[2] != 0.0 ? 1.0 : 0.0;
  }

  template <class T>
  FUSEDOPT_INLINE static void update(T& p, T g, T* st, const T* s) {
    T& sum = st[0];
    g = op_select(s[3] != T(0), g + p * s[1], g);
    sum = sum + g * g;
    p = p - (s[0] * g) / (op_sqrt(sum) + s[2]);
  }
};

}  // namespace fusedopt::math
