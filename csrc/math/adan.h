// Adan (Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep
// Models"): an element-wise algorithm (math/elementwise.h) in the operation order of
// python/fusedopt/reference/adan.py (pytorch-optimizer's foreach Adan, operation for operation,
// with the previous grad stored as +g and a first-step flag instead of a seeded -g):
//
//   per tensor, fp64:  w1 = 1 - beta1, w2 = 1 - beta2, beta2, beta3, 1 - beta3,
//                      bc3_sqrt = sqrt(1 - beta3^t), eps, step_size = lr / (1 - beta1^t),
//                      diff_step_size = (lr * beta2) / (1 - beta2^t),
//                      decay = 1 - lr * wd (no_prox) or 1, prox = 1 + lr * wd (else) or 1,
//                      first = (t == 1)
//   per element:       diff = first ? 0 : g - prev_grad
//                      m = lerp(m, g, w1)
//                      d = lerp(d, diff, w2)
//                      u = diff * beta2 + g
//                      n = n * beta3 + ((1 - beta3) * u) * u
//                      denom = sqrt(n) / bc3_sqrt + eps
//                      p = p * decay
//                      p = p - step_size * (m / denom)
//                      p = p - diff_step_size * (d / denom)
//                      p = p / prox
//                      prev_grad = g
#pragma once

#include <cmath>

#include "math/elementwise.h"
#include "math/opmath.h"

namespace fusedopt::math {

struct Adan {
  static constexpr const char* kName = "adan";
  static constexpr int kStates = 4;    // exp_avg, exp_avg_diff, exp_avg_sq, prev_grad
  static constexpr int kHyper = 6;     // beta1, beta2, beta3, eps, weight_decay, no_prox
  static constexpr int kScalars = 12;

  FUSEDOPT_INLINE static void scalars(double t, double lr, const double* h, double* s) {
    const double beta1 = h[0], beta2 = h[1], beta3 = h[2], eps = h[3], wd = h[4];
    const bool no_prox = h[5] != 0.0;
    s[0] = 1.0 - beta1;
    s[1] = 1.0 - beta2;
    s[2] = beta2;
    s[3] = beta3;
    s[4] = 1.0 - beta3;
    s[5] = sqrt(1.0 - pow(beta3, t));
    s[6] = eps;
    s[7] = lr / (1.0 - pow(beta1, t));
    s[8] = (lr * beta2) / (1.0 - pow(beta2, t));
    s[9] = no_prox ? 1.0 - lr * wd : 1.0;
    s[10] = no_prox ? 1.0 : 1.0 + lr * wd;
    s[11] = t == 1.0 ? 1.0 : 0.0;
  }

  template <class T>
  FUSEDOPT_INLINE static void update(T& p, T g, T* st, const T* s) {
    T &m = st[0], &d = st[1], &n = st[2], &prev = st[3];
    const T diff = op_select(s[11] != T(0), T(0), g - prev);
    m = op_lerp(m, g, s[0]);
    d = op_lerp(d, diff, s[1]);
    const T u = diff * s[2] + g;
    n = n * s[3] + (s[4] * u) * u;
    const T denom = op_sqrt(n) / s[5] + s[6];
    p = p * s[9];
    p = p - s[7] * (m / denom);
    p = p - s[8] * (d / denom);
    p = p / s[10];
    prev = g;
  }
};

}  // namespace fusedopt::math
