// The list of element-wise algorithms (math/elementwise.h): the one place the CPU kernels, the
// CUDA kernels and both bindings learn which exist. X(struct) per algorithm; adding one is a
// header under csrc/math/ and one line here (docs/adding-an-algorithm.md).
#pragma once

#include "math/adagrad.h"
#include "math/adan.h"
#include "math/adopt.h"
#include "math/lion.h"
#include "math/schedule_free_adamw.h"

#define FUSEDOPT_ELEMENTWISE_ALGORITHMS(X) \
  X(Lion)                                  \
  X(Adan)                                  \
  X(ScheduleFreeAdamW)                     \
  X(Adagrad)                               \
  X(Adopt)

namespace fusedopt::math {

/// What the bindings and the step code need to know of an element-wise algorithm.
struct ElementwiseInfo {
  const char* name;
  int states, hyper, scalars;
};

#define FUSEDOPT_INFO(A) ElementwiseInfo{A::kName, A::kStates, A::kHyper, A::kScalars},
/// Every element-wise algorithm, in list order: an algorithm's index here is its code.
inline constexpr ElementwiseInfo kElementwiseAlgorithms[] = {
    FUSEDOPT_ELEMENTWISE_ALGORITHMS(FUSEDOPT_INFO)};
#undef FUSEDOPT_INFO
inline constexpr int kNumElementwiseAlgorithms =
    int(sizeof(kElementwiseAlgorithms) / sizeof(kElementwiseAlgorithms[0]));

/// The per-tensor scalars of algorithm number `algorithm` (host and device).
FUSEDOPT_INLINE void elementwise_scalars(int algorithm, double t, double lr, const double* h,
                                         double* s) {
  int index = 0;
#define FUSEDOPT_SCALARS(A)        \
  if (algorithm == index++) {      \
    A::scalars(t, lr, h, s);       \
  }
  FUSEDOPT_ELEMENTWISE_ALGORITHMS(FUSEDOPT_SCALARS)
#undef FUSEDOPT_SCALARS
}

}  // namespace fusedopt::math
