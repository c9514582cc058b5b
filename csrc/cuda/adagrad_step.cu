// adagrad_step: coordinate-wise Adagrad's update call (contract: adagrad_step_): the per-tensor
// decayed lr (Note [tensor scalars]), one launch over every chunk, the finish (Note [finish]).
#include "cuda/adagrad_step.cuh"
#include "cuda/dtype_check.h"
#include "cuda/finish.cuh"

namespace fusedopt::cuda {

// Instantiated in the generated adagrad_step_<dtype>.cu files (csrc/cuda/CMakeLists.txt).
extern template bool launch_adagrad_for_param<float>(const AdagradLaunch&);
extern template bool launch_adagrad_for_param<double>(const AdagradLaunch&);
extern template bool launch_adagrad_for_param<bf16_t>(const AdagradLaunch&);
extern template bool launch_adagrad_for_param<fp16_t>(const AdagradLaunch&);

namespace {

/// clr = lr / (1 + (t - 1) lr_decay) of every tensor, in fp64 (as csrc/cpu/adagrad_step.cpp).
__global__ void __launch_bounds__(kFinishBlockSize)
    adagrad_scalars_kernel(const __grid_constant__ AdagradArgs a) {
  const double lr = read_lr(a.pass.lr);
  const TableView& t = a.pass.table;
  for (int64_t k = blockIdx.x * int64_t(kFinishBlockSize) + threadIdx.x; k < t.n_tensors();
       k += int64_t(gridDim.x) * kFinishBlockSize) {
    a.pass.scalars[k] = math::adagrad_clr(next_step(t, k), lr, a.lr_decay);
  }
}

}  // namespace

void adagrad_step(const Table& t, double* stats, const AdagradCall& call, uintptr_t stream) {
  check_dtypes(t);
  AdagradLaunch l{};
  l.args.pass = {view_of(t), stats, t.partials, t.scalars, call.use_prologue, call.maximize,
                 call.lr};
  l.args.lr_decay = call.lr_decay;
  l.args.eps = call.eps;
  l.args.weight_decay = call.weight_decay;
  l.l2 = call.weight_decay != 0.0;
  l.telemetry = call.telemetry;
  l.grad_dtype = t.grad_dtype;
  l.state_dtype = t.state_dtype;
  l.master = t.master;
  l.device = t.device;
  l.stream = stream;

  if (t.n_chunks > 0) {
    DeviceGuard guard(t.device);
    launch_kernel<&adagrad_scalars_kernel, kFinishBlockSize>(scalar_grid(t.n_tensors), stream,
                                                             l.args, "adagrad_scalars_kernel");
    dispatch::switch_dtype(t.param_dtype, [&](auto tag) {
      launch_adagrad_for_param<typename decltype(tag)::type>(l);
    });
  }
  launch_finish({view_of(t), stats, t.partials, call.telemetry ? 3 : 0, int(kSlotUpdateSq),
                 /*advance_steps=*/true, call.use_prologue, t.param_dtype == DType::kFloat64,
                 call.lr},
                t.device, stream);
}

}  // namespace fusedopt::cuda
