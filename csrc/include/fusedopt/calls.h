// The call structs of the kernel contract (python/fusedopt/backends/__init__.py), one
// definition for the CPU core (csrc/cpu/api.h) and the CUDA core (csrc/cuda/api.h): what a
// binding fills from Python's arguments and an update call reads, and the two checks both cores
// make of a call before anything runs. Plain data, no torch.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "fusedopt/dtype.h"
#include "math/adam.h"
#include "math/algorithms.h"
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

/// The element update an Adam variant runs (EAdam is Adam with its eps moved into v).
inline math::AdamKind adam_kind(AdamVariant v) {
  switch (v) {
    case AdamVariant::kAdam:
    case AdamVariant::kEadam: return math::AdamKind::kAdam;
    case AdamVariant::kAmsgrad: return math::AdamKind::kAmsgrad;
    case AdamVariant::kAdabelief: return math::AdamKind::kAdabelief;
    case AdamVariant::kRmsprop: return math::AdamKind::kRmsprop;
    case AdamVariant::kYogi: return math::AdamKind::kYogi;
  }
  throw std::invalid_argument("fusedopt: unknown Adam variant code");
}

/// The algorithm of an element-wise call, after checking its code and hyperparameter count
/// (std::invalid_argument otherwise, before anything is read or written).
inline const math::ElementwiseInfo& elementwise_info(const ElementwiseCall& call) {
  if (call.algorithm < 0 || call.algorithm >= math::kNumElementwiseAlgorithms) {
    throw std::invalid_argument("fusedopt: unknown element-wise algorithm code");
  }
  const math::ElementwiseInfo& info = math::kElementwiseAlgorithms[call.algorithm];
  if (call.n_hyper != info.hyper) {
    throw std::invalid_argument(std::string("fusedopt: ") + info.name + " takes " +
                                std::to_string(info.hyper) + " hyperparameters");
  }
  return info;
}

}  // namespace fusedopt
