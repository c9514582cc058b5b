// The element-wise algorithms (Lion, Adan, Schedule-Free AdamW, ...): what one of them is, and
// the limits every layer sizes its tables by (docs/adding-an-algorithm.md).
//
// An element-wise algorithm is a struct in csrc/math/<name>.h, listed once in
// csrc/math/algorithms.h, with
//
//   static constexpr const char* kName;     its name in every layer (python/fusedopt/reference/
//                                           <name>.py, triton_kernels/<name>.py, the optimizer)
//   static constexpr int kStates;           per-element state streams, <= kMaxStates
//   static constexpr int kHyper;            fp64 hyperparameters per call, <= kMaxHyper
//   static constexpr int kScalars;          per-tensor scalars, <= kMaxScalars
//   static void scalars(double t, double lr, const double* h, double* s);
//       the per-tensor scalars in fp64 from the tensor's incremented step t, the learning rate
//       and the hyperparameters (host code on the CPU, a small launch on CUDA: Note [tensor
//       scalars], csrc/cuda/update_pass.cuh)
//   template <class T> static void update(T& p, T g, T* st, const T* s);
//       one element in opmath T: g already times the gradient coefficient, s the scalars
//       rounded to T once, st the kStates states, updated in place with p.
//
// Everything else a step does (skip rules, master weights, telemetry, step counts, loads and
// stores of each storage dtype) is the traversal's, written once per backend for every
// element-wise algorithm (csrc/cpu/kernels/elementwise.cpp, csrc/cuda/elementwise_step.cuh).
// The operation order of scalars() and update() is python/fusedopt/reference/<name>.py's.
#pragma once

#include "fusedopt/macros.h"

namespace fusedopt::math {

/// State streams of one param (Adan: exp_avg, exp_avg_diff, exp_avg_sq, prev_grad). The CPU
/// table, the CUDA device table rows and the Triton rows all hold this many state streams.
constexpr int kMaxStates = 4;
/// fp64 hyperparameters of one element-wise call.
constexpr int kMaxHyper = 8;
/// Per-tensor scalars of one element-wise call (the CUDA scalars workspace is sized by it).
constexpr int kMaxScalars = 12;

}  // namespace fusedopt::math
