// The CPU core's entry points: one call per kernel-contract function
// (python/fusedopt/backends/__init__.py), on raw pointers, sizes, dtype codes and scalars.
// csrc/binding.cpp exposes them to Python; nothing here knows torch or Python.
//
// Every update call follows the contract's common rules:
//   * use_prologue: coef = stats[COEF] multiplies each grad, and stats[FOUND_INF] != 0 skips the
//     whole call (params, states, steps and stats unchanged); otherwise coef = 1, no skip.
//   * maximize: coef is negated (math/prologue.h update_coef): every grad negated first.
//   * a tensor lr (read here, on the host) that is NaN or negative skips the whole call too and
//     sets stats[LR_INVALID] = 1 (step_common.h lr_rejected).
//   * master weights: each element starts from its master, re-seeded from the param where the
//     param was written since the last step (Note [master re-seed], math/master.h).
//   * per tensor, t = step + 1 (fp32, as the reference) is used and stored back.
//   * telemetry: the fp64 sums of (p_new - p_old)^2, p_new^2 and (coef g)^2 are added to
//     stats[UPDATE_SQ], stats[PARAM_SQ], stats[STEP_GRAD_SQ].
#pragma once

#include <cstdint>

#include "cpu/tensor_table.h"
#include "fusedopt/calls.h"
#include "fusedopt/dtype.h"

namespace fusedopt::cpu {

/// Whether the kernels are instantiated for this storage combination (dispatch/switch.h).
bool supports_dtypes(DType param, DType grad, DType state, bool master);

void adam_step(const TensorTable& t, double* stats, const AdamCall& call, int nthreads);
void elementwise_step(const TensorTable& t, double* stats, const ElementwiseCall& call,
                      int nthreads);
void sgd_step(const TensorTable& t, double* stats, const SgdCall& call, int nthreads);
void momentum_step(const TensorTable& t, double* stats, double rho, bool use_prologue,
                   bool maximize, int nthreads);
void grad_prologue(const GradList& grads, double* stats, const PrologueCall& call, int nthreads);

}  // namespace fusedopt::cpu
