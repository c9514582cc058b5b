// What the step code hands to a per-ISA kernel: plain structs of pointers and fp64 scalars.
//
// The step code (csrc/cpu/*_step.cpp, compiled once) reads the stats, decides the skip, computes
// the per-tensor scalars in fp64 and reduces the per-chunk partials; the kernels
// (csrc/cpu/kernels/*.cpp, compiled once per ISA) only run the chunk loops. Nothing here owns
// memory or has code, so the structs mean the same in every ISA's translation unit.
#pragma once

#include <cstdint>

#include "cpu/chunk_plan.h"
#include "cpu/tensor_table.h"
#include "fusedopt/dtype.h"
#include "math/adam.h"

namespace fusedopt::cpu {

/// Number of fp64 partial sums per chunk written by an update pass with telemetry:
/// sum (p_new - p_old)^2, sum p_new^2, sum (coef g)^2 (the stats slots UPDATE_SQ..STEP_GRAD_SQ).
constexpr int kTelemetrySums = 3;

struct TableView {
  void* const* param;
  const void* const* grad;
  void* const* master;  // nullptr without master weights
  void* const* state[kMaxStates];
  DType param_dtype, grad_dtype, state_dtype;
  ChunkView chunks;
};

inline TableView view_of(const TensorTable& t) {
  TableView v{};
  v.param = t.param.data();
  v.grad = const_cast<const void* const*>(t.grad.data());
  v.master = t.has_master() ? t.master.data() : nullptr;
  for (int s = 0; s < kMaxStates; ++s) {
    v.state[s] = t.state[s].empty() ? nullptr : t.state[s].data();
  }
  v.param_dtype = t.param_dtype;
  v.grad_dtype = t.grad_dtype;
  v.state_dtype = t.state_dtype;
  v.chunks = t.plan.view();
  return v;
}

struct AdamLoop {
  TableView table;
  math::AdamKind kind;
  math::Decay decay;
  bool telemetry;
  math::AdamCallInputs call;
  const math::AdamTensorScalars<double>* per_tensor;
  double* partials;  // kTelemetrySums per chunk, when telemetry
  int nthreads;
};

struct ElementwiseLoop {
  TableView table;
  int algorithm;  // index in FUSEDOPT_ELEMENTWISE_ALGORITHMS (math/algorithms.h)
  bool telemetry;
  double coef;            // the gradient coefficient (stats[COEF] or 1, negated for maximize)
  const double* scalars;  // math::kMaxScalars fp64 scalars per tensor
  double* partials;       // kTelemetrySums per chunk, when telemetry
  int nthreads;
};

struct SgdLoop {
  TableView table;
  bool momentum_direction;  // step along state 0 (NSGDm) instead of the grad
  bool telemetry;
  double coef;   // multiplies the grad (1 for the momentum direction)
  double grad_coef;  // stats[COEF] (or 1): the telemetry's coef g
  double scale;  // stats[SCALE]
  double* partials;
  int nthreads;
};

struct MomentumLoop {
  TableView table;
  double coef, one_minus_rho, rho;
  double* partials;  // sum m_new^2 per chunk
  int nthreads;
};

struct PrologueLoop {
  const void* const* grad;
  const DType* dtype;
  ChunkView chunks;
  bool opmath64;
  double inv;             // 1 / grad_scale
  double* partial_sq;     // per chunk
  uint8_t* partial_bad;   // per chunk: some element is inf or NaN
  int nthreads;
};

}  // namespace fusedopt::cpu
