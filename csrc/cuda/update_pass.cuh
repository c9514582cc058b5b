// What every update kernel reads before its chunks (the contract's common rules, api.h): the
// prologue's skip flag and coefficient, the learning rate and each tensor's step count, all on
// the device, so a step never waits for the host and can be captured in a CUDA graph.
//
// Note [tensor scalars]: scalars that depend on a tensor's step count (Adam's bias corrections,
// Adagrad's decayed lr) are fp64 powers and divisions, which CUDA compiles to calls; a call
// inside the update kernel makes ptxas save live registers to the stack (reported as spills).
// A small launch before the update therefore computes them once per tensor, with the math
// header's own function, into the table's scalars workspace; the update loads them per tensor.
#pragma once

#include <cstdint>

#include "cuda/api.h"
#include "cuda/launch_config.h"
#include "cuda/multi_tensor_apply.cuh"
#include "fusedopt/stats.h"

namespace fusedopt::cuda {

/// What an update kernel is handed besides its algorithm's hyperparameters.
struct PassArgs {
  TableView table;
  const double* stats;
  double* partials;   // per-chunk sums (Note [finish], finish.cuh)
  double* scalars;    // per-tensor scalars (Note [tensor scalars])
  bool use_prologue;  // read stats[COEF] and skip on stats[FOUND_INF]
};

/// stats[FOUND_INF] != 0 after a prologue: the whole call is skipped.
__device__ __forceinline__ bool skipped(const PassArgs& a) {
  return a.use_prologue && a.stats[kSlotFoundInf] != 0.0;
}

/// The gradient coefficient stats[COEF] (unscale x clip) after a prologue, else 1.
__device__ __forceinline__ double grad_coef(const PassArgs& a) {
  return a.use_prologue ? a.stats[kSlotCoef] : 1.0;
}

/// The learning rate now: the float, or the fp32/fp64 value behind the pointer.
__device__ __forceinline__ double read_lr(const LearningRate& lr) {
  if (lr.ptr == nullptr) {
    return lr.value;
  }
  return lr.dtype == DType::kFloat64 ? *static_cast<const double*>(lr.ptr)
                                     : double(*static_cast<const float*>(lr.ptr));
}

/// t = step + 1 of tensor k, in fp32 as the reference computes it, widened to fp64.
__device__ __forceinline__ double next_step(const TableView& t, int64_t k) {
  return double(*t.pointer<const float>(kRowStep, k) + 1.0f);
}

}  // namespace fusedopt::cuda
