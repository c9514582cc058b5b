// The call structs of the kernel contract (python/fusedopt/backends/__init__.py), one
// definition for the CPU core (csrc/cpu/api.h) and the CUDA core (csrc/cuda/api.h): what a
// binding fills from Python's arguments and an update call reads. Plain data, no torch.
#pragma once

#include <cstdint>

#include "fusedopt/dtype.h"
#include "math/elementwise.h"

namespace fusedopt {

/// A learning rate: a float, or a 0-d fp32/fp64 tensor read when the step runs (on the host by
/// the CPU core, on the device by the CUDA core).
struct LearningRate {
  double value;
  const void* ptr;  // nullptr: use value
  DType dtype;
};

/// Variant codes, in the order of python/fusedopt/reference/adam_family.py VARIANTS.
enum class AdamVariant : int { kAdam = 0, kAmsgrad, kAdabelief, kEadam, kRmsprop, kYogi };

struct AdamCall {
  LearningRate lr;
  double beta1, beta2, eps, weight_decay;
  AdamVariant variant;
  bool coupled_decay;    // Adam's L2 (else decoupled, AdamW)
  bool bias_correction;  // false for AdamD (and ignored by rmsprop, which has none)
  bool use_prologue, use_abc, telemetry;
  bool maximize;         // ascend: the grad negated first
};

struct SgdCall {
  bool momentum_direction;  // step along the momentum_buffer state instead of the grad
  bool use_prologue, telemetry;
  bool maximize;            // negates the grad direction (never the momentum direction)
};

/// An element-wise algorithm's update (math/elementwise.h): its index in
/// FUSEDOPT_ELEMENTWISE_ALGORITHMS (math/algorithms.h) and its hyperparameters.
struct ElementwiseCall {
  int algorithm;
  LearningRate lr;
  double hyper[math::kMaxHyper];
  int n_hyper;
  bool use_prologue, telemetry;
  bool maximize;  // ascend: the grad negated first
};

struct PrologueCall {
  int64_t region;            // first stats slot written (Note [prologue region])
  const float* grad_scale;   // 0-d fp32 loss scale, or nullptr
  const float* found_inf;    // 0-d fp32 flag from a GradScaler, or nullptr
  double max_norm;           // < 0: no clipping
  bool compute_norm;         // false: no pass over memory, coef = 1 / grad_scale
};

}  // namespace fusedopt
