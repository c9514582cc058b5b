// Schedule-Free AdamW (Defazio et al. 2024, "The Road Less Scheduled"): an element-wise
// algorithm (math/elementwise.h) in the operation order of
// python/fusedopt/reference/schedule_free_adamw.py (the schedulefree package's
// AdamWScheduleFree, operation for operation). The param is y, the point the gradient is taken
// at; z is the base sequence; the average x is never stored (train()/eval() move the param
// between y and x on the host). lr (warmup included) and ckp1 come from the host's schedule.
//
//   per tensor, fp64:  beta2, 1 - beta2, bc2 = 1 - beta2^t, eps, wd, ckp1,
//                      y_lr = lr * (beta1 * (1 - ckp1) - 1), lr, has_wd = (wd != 0)
//   per element:       v = v * beta2 + ((1 - beta2) * g) * g
//                      gn = g / (sqrt(v / bc2) + eps)
//                      gn = has_wd ? gn + y * wd : gn     (decay taken at y)
//                      y = lerp(y, z, ckp1)
//                      y = y + y_lr * gn
//                      z = z - lr * gn
#pragma once

#include <cmath>

#include "math/elementwise.h"
#include "math/opmath.h"

namespace fusedopt::math {

struct ScheduleFreeAdamW {
  static constexpr const char* kName = "schedule_free_adamw";
  static constexpr int kStates = 2;   // z, exp_avg_sq
  static constexpr int kHyper = 5;    // beta1, beta2, eps, weight_decay, ckp1
  static constexpr int kScalars = 9;

  FUSEDOPT_INLINE static void scalars(double t, double lr, const double* h, double* s) {
    const double beta1 = h[0], beta2 = h[1], ckp1 = h[4];
    s[0] = beta2;
    s[1] = 1.0 - beta2;
    s[2] = 1.0 - pow(beta2, t);
    s[3] = h[2];
    s[4] = h[3];
    s[5] = ckp1;
    s[6] = lr * (beta1 * (1.0 - ckp1) - 1.0);
    s[7] = lr;
    s[8] = h[3] != 0.0 ? 1.0 : 0.0;
  }

  template <class T>
  FUSEDOPT_INLINE static void update(T& y, T g, T* st, const T* s) {
    T &z = st[0], &v = st[1];
    v = v * s[0] + (s[1] * g) * g;
    T gn = g / (op_sqrt(v / s[2]) + s[3]);
    gn = op_select(s[8] != T(0), gn + y * s[4], gn);
    y = op_lerp(y, z, s[5]);
    y = y + s[6] * gn;
    z = z - s[7] * gn;
  }
};

}  // namespace fusedopt::math
