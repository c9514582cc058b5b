// What every update kernel reads before its chunks (the contract's common rules, api.h): the
// prologue's skip flag and coefficient, the learning rate and each tensor's step count, all on
// the device, so a step never waits for the host and can be captured in a CUDA graph.
//
// Note [tensor scalars]: scalars that depend on a tensor's step count (Adam's bias corrections,
// an element-wise algorithm's) are fp64 powers and divisions, which CUDA compiles to calls; a call
// inside the update kernel makes ptxas save live registers to the stack (reported as spills).
// A small launch before the update therefore computes them once per tensor, with the math
// header's own function, into the table's scalars workspace; the update loads them per tensor.
#pragma once

#include <cstdint>

#include "cuda/api.h"
#include "cuda/launch_config.h"
#include "cuda/multi_tensor_apply.cuh"
#include "fusedopt/stats.h"
#include "math/master.h"
#include "math/prologue.h"

namespace fusedopt::cuda {

/// What an update kernel is handed besides its algorithm's hyperparameters.
struct PassArgs {
  TableView table;
  const double* stats;
  double* partials;   // per-chunk sums (Note [finish], finish.cuh)
  double* scalars;    // per-tensor scalars (Note [tensor scalars])
  bool use_prologue;  // read stats[COEF] and skip on stats[FOUND_INF]
  bool maximize;      // negate the gradient coefficient (math/prologue.h update_coef)
  LearningRate lr;    // Adam, element-wise: a tensor lr that is NaN or negative skips the call
};

/// The learning rate now: the float, or the fp32/fp64 value behind the pointer.
__device__ __forceinline__ double read_lr(const LearningRate& lr) {
  if (lr.ptr == nullptr) {
    return lr.value;
  }
  return lr.dtype == DType::kFloat64 ? *static_cast<const double*>(lr.ptr)
                                     : double(*static_cast<const float*>(lr.ptr));
}

/// A tensor lr (read through its pointer) that is NaN or negative: the whole call is skipped
/// and the finish kernel sets stats[LR_INVALID] (a float lr is the optimizer's to validate).
__device__ __forceinline__ bool lr_rejected(const LearningRate& lr) {
  if (lr.ptr == nullptr) {
    return false;
  }
  const double v = read_lr(lr);
  return v != v || v < 0.0;
}

/// stats[FOUND_INF] != 0 after a prologue, or a rejected tensor lr: the whole call is skipped.
__device__ __forceinline__ bool skipped(const PassArgs& a) {
  return (a.use_prologue && a.stats[kSlotFoundInf] != 0.0) || lr_rejected(a.lr);
}

/// The gradient coefficient stats[COEF] (unscale x clip) after a prologue, else 1; negated
/// for maximize.
__device__ __forceinline__ double grad_coef(const PassArgs& a) {
  return math::update_coef(a.use_prologue ? a.stats[kSlotCoef] : 1.0, a.maximize);
}

/// Note [master re-seed] (math/master.h) for W elements: pv holds their fp32 masters; where the
/// 16-bit param at `param` no longer equals its master rounded, the param (widened) replaces it.
/// `param` is aligned like the masters (begin_chunk checked both for the vector path).
template <int W, class P>
__device__ __forceinline__ void reseed_masters(float (&pv)[W], const P* param) {
  P raw[W];
  load_words<int(sizeof(P)) * W>(raw, param);
#pragma unroll
  for (int j = 0; j < W; ++j) {
    pv[j] = math::reseed_master(pv[j], raw[j]);
  }
}

/// t = step + 1 of tensor k, in fp32 as the reference computes it, widened to fp64.
__device__ __forceinline__ double next_step(const TableView& t, int64_t k) {
  return double(*t.pointer<const float>(kRowStep, k) + 1.0f);
}

}  // namespace fusedopt::cuda
