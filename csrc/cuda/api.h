// The CUDA core's entry points: one call per kernel-contract function
// (python/fusedopt/backends/__init__.py), on raw device pointers, sizes, dtype codes, scalars and
// a stream handle. csrc/cuda/binding_cuda.cpp exposes them to Python; nothing here knows torch,
// Python or even the CUDA headers (the stream is a uintptr_t holding a cudaStream_t).
//
// Every update call follows the contract's common rules, decided on the device (no value is
// ever read on the host, so a step can be captured in a CUDA graph):
//   * use_prologue: coef = stats[COEF] multiplies each grad, and stats[FOUND_INF] != 0 skips the
//     whole call (params, states, steps and stats unchanged); otherwise coef = 1, no skip.
//   * maximize: coef is negated (math/prologue.h update_coef): every grad negated first.
//   * a tensor lr (read on the device) that is NaN or negative skips the whole call too, and
//     the finish kernel sets stats[LR_INVALID] = 1 (update_pass.cuh lr_rejected).
//   * master weights: each element starts from its master, re-seeded from the param where the
//     param was written since the last step (Note [master re-seed], math/master.h).
//   * per tensor, t = step + 1 (fp32, as the reference) is used and stored back.
//   * telemetry: the sums of (p_new - p_old)^2, p_new^2 and (coef g)^2 are added to
//     stats[UPDATE_SQ], stats[PARAM_SQ], stats[STEP_GRAD_SQ] (Note [finish], finish.cuh).
#pragma once

#include <cstdint>
#include <string>

#include "fusedopt/calls.h"
#include "fusedopt/dtype.h"

namespace fusedopt::cuda {

/// One uploaded table (Note [device table], device_table.h) and the per-chunk workspace of the
/// passes over it, both device memory owned by the caller (python/fusedopt/_native_cuda.py).
struct Table {
  const int64_t* table;
  int64_t n_tensors;
  int64_t n_chunks;
  int64_t chunk_size;
  double* partials;  // kMaxSumsPerChunk doubles per chunk
  double* scalars;   // kMaxScalarsPerTensor doubles per tensor (Note [tensor scalars])
  DType param_dtype, grad_dtype, state_dtype;
  bool master;  // the master row holds fp32 copies the update runs on
  int device;
};

/// Workspace doubles per chunk a table must provide: the three telemetry sums of an update
/// pass, or the sum of squares and the non-finite flag of the norm pass.
constexpr int kMaxSumsPerChunk = 3;

/// Workspace doubles per tensor a table must provide: the per-tensor scalars of an update pass
/// (Adam: step size, sqrt(bc2), decay; an element-wise algorithm such as Adagrad: up to
/// math::kMaxScalars, math/elementwise.h).
constexpr int kMaxScalarsPerTensor = math::kMaxScalars;

/// What the CUDA runtime of this module sees: versions as CUDA encodes them (13000 = 13.0;
/// driver 0: none) and the device count, or the runtime's error (e.g. a driver older than the
/// runtime) with no device. Never throws.
struct RuntimeStatus {
  int runtime_version;
  int driver_version;
  int device_count;
  std::string error;  // empty when the runtime works
};
RuntimeStatus runtime_status();

/// Whether the kernels are instantiated for this storage combination (csrc/dispatch/switch.h).
bool supports_dtypes(DType param, DType grad, DType state, bool master);

// All of these enqueue work on `stream` and return; they throw std::invalid_argument on an
// unsupported dtype combination and std::runtime_error when CUDA reports a launch error.
void adam_step(const Table& t, double* stats, const AdamCall& call, uintptr_t stream);
void elementwise_step(const Table& t, double* stats, const ElementwiseCall& call,
                      uintptr_t stream);
void sgd_step(const Table& t, double* stats, const SgdCall& call, uintptr_t stream);
void momentum_step(const Table& t, double* stats, double rho, bool use_prologue, bool maximize,
                   uintptr_t stream);
/// `grads`: a table with the grad and dtype rows; its n_chunks may be 0 (compute_norm false).
/// opmath64: some grad is fp64, so the whole sum runs in fp64 (as the reference).
void grad_prologue(const Table& grads, double* stats, const PrologueCall& call, bool opmath64,
                   uintptr_t stream);

}  // namespace fusedopt::cuda
