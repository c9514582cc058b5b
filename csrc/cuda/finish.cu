// The finish kernel of every update pass (Note [finish], finish.cuh).
#include "cuda/block_reduce.cuh"
#include "cuda/finish.cuh"
#include "cuda/launch.cuh"
#include "cuda/update_pass.cuh"
#include "fusedopt/stats.h"

namespace fusedopt::cuda {
namespace {

__global__ void __launch_bounds__(kFinishBlockSize)
    finish_kernel(const __grid_constant__ FinishArgs a) {
  if (lr_rejected(a.lr)) {
    if (threadIdx.x == 0) {
      a.stats[kSlotLrInvalid] = 1.0;
    }
    return;  // the update was skipped: steps and sums stay as they were
  }
  if (a.use_prologue && a.stats[kSlotFoundInf] != 0.0) {
    return;  // the update was skipped: steps and sums stay as they were
  }
  const TableView& t = a.table;
  if (a.advance_steps) {
    for (int64_t k = threadIdx.x; k < t.n_tensors(); k += kFinishBlockSize) {
      float* step = t.pointer<float>(kRowStep, k);
      *step = *step + 1.0f;
    }
  }
  for (int s = 0; s < a.n_sums; ++s) {
    Partials<1, CompensatedSum> acc;
    for (int64_t k = threadIdx.x; k < t.n_tensors(); k += kFinishBlockSize) {
      CompensatedSum tensor_sum{};
      for (int64_t c = t.first_chunk(k), end = t.first_chunk(k + 1); c < end; ++c) {
        tensor_sum.add(a.partials[c * a.n_sums + s]);
      }
      acc.v[0].add(a.opmath64 ? tensor_sum.value() : double(float(tensor_sum.value())));
    }
    const Partials<1, CompensatedSum> total = block_sum<kFinishBlockSize>(acc);
    if (threadIdx.x == 0) {
      a.stats[a.first_slot + s] += total.v[0].value();
    }
  }
}

}  // namespace

void launch_finish(const FinishArgs& args, int device, uintptr_t stream) {
  if (args.table.n_tensors() == 0 || (!args.advance_steps && args.n_sums == 0)) {
    return;
  }
  DeviceGuard guard(device);
  launch_kernel<&finish_kernel, kFinishBlockSize>(1, stream, args, "finish_kernel");
}

}  // namespace fusedopt::cuda
