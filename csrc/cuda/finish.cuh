// The one-block launch that ends every update pass.
//
// Note [finish]: the chunks of one tensor run in different blocks, so no block of the update
// kernel may advance that tensor's step count (another block may not have read it yet), and
// the blocks' sums are stored per chunk, never added atomically. A second, one-block kernel on
// the same stream therefore does both once the update is done, unless stats[FOUND_INF] or a
// rejected tensor lr skips the call (the latter also sets stats[LR_INVALID] = 1): step <- step + 1 for every tensor (empty ones too, as the reference), and for each
// of n_sums sums stats[first_slot + s] += the sum of the chunk partials, computed like the CPU
// core's reduce_partials (csrc/cpu/step_common.cpp), in compensated fp64: each tensor's chunk
// partials are added in chunk order and rounded to fp32 (the reference's torch.sum of an fp32
// tensor; fp64 params keep fp64), then the tensors' sums are added in the fixed order of
// Note [fixed tree].
#pragma once

#include <cstdint>

#include "cuda/api.h"
#include "cuda/multi_tensor_apply.cuh"

namespace fusedopt::cuda {

struct FinishArgs {
  TableView table;
  double* stats;
  const double* partials;  // n_sums per chunk
  int n_sums;              // 0, 1 (NSGDm's sum m^2) or 3 (telemetry)
  int first_slot;          // stats slot of the first sum
  bool advance_steps;
  bool use_prologue;       // skip everything when stats[FOUND_INF] != 0
  bool opmath64;           // per-tensor sums stay fp64 (fp64 params)
  LearningRate lr;         // the update's lr: a rejected tensor lr skips everything and sets
                           // stats[LR_INVALID] (update_pass.cuh lr_rejected)
};

/// Enqueue the finish kernel (Note [finish]); nothing is launched when there is nothing to do.
void launch_finish(const FinishArgs& args, int device, uintptr_t stream);

}  // namespace fusedopt::cuda
