// ADOPT (Taniguchi et al. 2024, "ADOPT: Modified Adam Can Converge with Any beta2 with the
// Optimal Rate"): an element-wise algorithm (math/elementwise.h) in the operation order of
// python/fusedopt/reference/adopt.py (pytorch-optimizer's ADOPT, operation for operation, with
// its first step, which only seeds v, as selects on a per-tensor flag):
//
//   per tensor, fp64:  w1 = 1 - beta1, beta2, 1 - beta2, eps, lr,
//                      clip_bound = t^clip_exponent (clip on) or +inf,
//                      decay = 1 - lr * wd (weight_decouple) or 1, wd,
//                      coupled = (wd != 0 && !weight_decouple), first = (t == 1)
//   per element:       g = coupled ? g + p * wd : g
//                      p = p * decay
//                      denom = maximum(sqrt(v), eps)
//                      n = g / denom
//                      n = minimum(maximum(n, -clip_bound), clip_bound)
//                      m_new = lerp(m, n, w1)
//                      p_new = p - lr * m_new
//                      v_new = v * beta2 + ((1 - beta2) * g) * g
//                      p, m, v = first ? (p, m, g * g) : (p_new, m_new, v_new)
//
// minimum(x, c) is written -maximum(-x, -c) (op_maximum propagates a NaN of either operand, as
// torch.maximum/minimum do; negation is exact), so no helper beyond opmath.h's is needed. With
// the clip off the bound is +inf and the clamp returns n unchanged, NaN included.
#pragma once

#include <cmath>

#include "math/elementwise.h"
#include "math/opmath.h"

namespace fusedopt::math {

struct Adopt {
  static constexpr const char* kName = "adopt";
  static constexpr int kStates = 2;    // exp_avg, exp_avg_sq
  static constexpr int kHyper = 7;     // beta1, beta2, eps, weight_decay, weight_decouple,
                                       // clip, clip_exponent
  static constexpr int kScalars = 10;

  FUSEDOPT_INLINE static void scalars(double t, double lr, const double* h, double* s) {
    const double beta1 = h[0], beta2 = h[1], eps = h[2], wd = h[3];
    const bool decouple = h[4] != 0.0, clip = h[5] != 0.0;
    s[0] = 1.0 - beta1;
    s[1] = beta2;
    s[2] = 1.0 - beta2;
    s[3] = eps;
    s[4] = lr;
    s[5] = clip ? pow(t, h[6]) : HUGE_VAL;
    s[6] = decouple ? 1.0 - lr * wd : 1.0;
    s[7] = wd;
    s[8] = (wd != 0.0 && !decouple) ? 1.0 : 0.0;
    s[9] = t == 1.0 ? 1.0 : 0.0;
  }

  template <class T>
  FUSEDOPT_INLINE static void update(T& p, T g, T* st, const T* s) {
    T &m = st[0], &v = st[1];
    g = op_select(s[8] != T(0), g + p * s[7], g);
    p = p * s[6];
    const T denom = op_maximum(op_sqrt(v), s[3]);
    T n = g / denom;
    n = -op_maximum(-op_maximum(n, -s[5]), -s[5]);
    const T m_new = op_lerp(m, n, s[0]);
    const T p_new = p - s[4] * m_new;
    const T v_new = v * s[1] + (s[2] * g) * g;
    const bool first = s[9] != T(0);
    p = op_select(first, p, p_new);
    m = op_select(first, m, m_new);
    v = op_select(first, g * g, v_new);
  }
};

}  // namespace fusedopt::math
