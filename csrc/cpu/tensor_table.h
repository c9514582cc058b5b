// Raw-pointer tables of tensor lists: what the Python side builds once per (data_ptr, numel)
// signature and hands to every step (python/fusedopt/_native.py caches them in bucket.cache).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "cpu/chunk_plan.h"
#include "fusedopt/dtype.h"
#include "math/elementwise.h"

namespace fusedopt::cpu {

/// Per-algorithm state streams, in slot order (at most math::kMaxStates, math/elementwise.h):
///   Adam family: 0 exp_avg (absent for rmsprop), 1 exp_avg_sq, 2 max_exp_avg_sq (amsgrad)
///   SGD family:  0 momentum_buffer (NSGDm)
///   element-wise algorithms: their STATES in order (Adagrad: sum; Adan: exp_avg,
///                exp_avg_diff, exp_avg_sq, prev_grad)
using math::kMaxStates;

/// One bucket: tensors of one (param, grad, state dtype, master) combination, in list order.
struct TensorTable {
  TensorTable(std::vector<int64_t> numel, std::vector<void*> param, std::vector<void*> grad,
              std::vector<void*> master, std::array<std::vector<void*>, kMaxStates> state,
              std::vector<float*> step, DType param_dtype, DType grad_dtype, DType state_dtype,
              int64_t chunk_size);

  int64_t size() const { return int64_t(numel.size()); }
  bool has_master() const { return !master.empty(); }

  std::vector<int64_t> numel;
  std::vector<void*> param, grad, master;          // master: fp32 copies, or empty
  std::array<std::vector<void*>, kMaxStates> state;  // an unused slot is empty
  std::vector<float*> step;                         // 0-d fp32 step counts
  DType param_dtype, grad_dtype, state_dtype;
  ChunkPlan plan;
};

/// A list of grads of any mix of dtypes (the prologue's input), in list order.
struct GradList {
  GradList(std::vector<int64_t> numel, std::vector<const void*> ptr, std::vector<DType> dtype,
           int64_t chunk_size);

  std::vector<int64_t> numel;
  std::vector<const void*> ptr;
  std::vector<DType> dtype;
  bool opmath64;  // some grad is fp64: the whole sum runs in fp64, as the reference
  ChunkPlan plan;
};

}  // namespace fusedopt::cpu
