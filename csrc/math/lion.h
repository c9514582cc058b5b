// Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): an element-wise
// algorithm (math/elementwise.h) in the operation order of python/fusedopt/reference/lion.py:
//
//   per tensor, fp64:  w1 = 1 - beta1, w2 = 1 - beta2, lr, decay = 1 - lr * weight_decay
//   per element:       c = lerp(m, g, w1)        the interpolated momentum
//                      p = p * decay             decoupled decay (exact at weight_decay = 0)
//                      p = p - lr * sign(c)      a zero c leaves p alone (torch.sign)
//                      m = lerp(m, g, w2)
#pragma once

#include "math/elementwise.h"
#include "math/opmath.h"

namespace fusedopt::math {

struct Lion {
  static constexpr const char* kName = "lion";
  static constexpr int kStates = 1;   // exp_avg
  static constexpr int kHyper = 3;    // beta1, beta2, weight_decay
  static constexpr int kScalars = 4;  // w1, w2, lr, decay

  FUSEDOPT_INLINE static void scalars(double /*t*/, double lr, const double* h, double* s) {
    s[0] = 1.0 - h[0];
    s[1] = 1.0 - h[1];
    s[2] = lr;
    s[3] = 1.0 - lr * h[2];
  }

  template <class T>
  FUSEDOPT_INLINE static void update(T& p, T g, T* st, const T* s) {
    T& m = st[0];
    const T c = op_lerp(m, g, s[0]);
    p = p * s[3];
    p = p - s[2] * op_sign(c);
    m = op_lerp(m, g, s[1]);
  }
};

}  // namespace fusedopt::math
