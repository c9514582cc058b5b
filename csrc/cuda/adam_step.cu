// adam_step: the Adam family's update call (contract: adam_step_, backends/__init__.py): one
// launch over every chunk of the bucket, then the finish launch (Note [finish]).
#include <stdexcept>

#include "cuda/adam_step.cuh"
#include "cuda/finish.cuh"
#include "cuda/dtype_check.h"

namespace fusedopt::cuda {

// Instantiated in the generated adam_step_<dtype>.cu files (csrc/cuda/CMakeLists.txt).
extern template bool launch_adam_for_param<float>(const AdamLaunch&);
extern template bool launch_adam_for_param<double>(const AdamLaunch&);
extern template bool launch_adam_for_param<bf16_t>(const AdamLaunch&);
extern template bool launch_adam_for_param<fp16_t>(const AdamLaunch&);

namespace {

/// Note [tensor scalars]: adam_step_scalars of every tensor, in fp64, as the CPU core computes
/// them on the host (csrc/cpu/adam_step.cpp), from the device's lr, step counts and AdamL's c.
__global__ void __launch_bounds__(kFinishBlockSize)
    adam_scalars_kernel(const __grid_constant__ AdamArgs a) {
  const double lr = read_lr(a.pass.lr);
  const double c = a.use_abc ? a.pass.stats[kSlotAbc + 2] : 1.0;
  const TableView& t = a.pass.table;
  for (int64_t k = blockIdx.x * int64_t(kFinishBlockSize) + threadIdx.x; k < t.n_tensors();
       k += int64_t(gridDim.x) * kFinishBlockSize) {
    const math::AdamTensorScalars<double> s =
        math::adam_step_scalars(next_step(t, k), lr, c, a.beta1, a.beta2, a.bias_correction,
                                a.decoupled ? a.weight_decay : 0.0);
    double* out = a.pass.scalars + k * kAdamScalars;
    out[0] = s.step_size;
    out[1] = s.bc2_sqrt;
    out[2] = s.decay;
  }
}

}  // namespace

void adam_step(const Table& t, double* stats, const AdamCall& call, uintptr_t stream) {
  check_dtypes(t);
  const bool eadam = call.variant == AdamVariant::kEadam;
  const bool coupled = call.coupled_decay && call.weight_decay != 0.0;

  AdamLaunch l{};
  l.args.pass = {view_of(t), stats, t.partials, t.scalars, call.use_prologue, call.maximize,
                 call.lr};
  l.args.beta1 = call.beta1;
  l.args.beta2 = call.beta2;
  l.args.eps = call.eps;
  l.args.weight_decay = call.weight_decay;
  l.args.use_abc = call.use_abc;
  l.args.eadam = eadam;
  l.args.shifts_v = eadam || call.variant == AdamVariant::kAdabelief;
  l.args.bias_correction = call.bias_correction && call.variant != AdamVariant::kRmsprop;
  l.args.decoupled = !call.coupled_decay && call.weight_decay != 0.0;
  l.kind = adam_kind(call.variant);
  l.decay = coupled ? math::Decay::kCoupled : math::Decay::kDecoupled;
  l.telemetry = call.telemetry;
  l.grad_dtype = t.grad_dtype;
  l.state_dtype = t.state_dtype;
  l.master = t.master;
  l.device = t.device;
  l.stream = stream;

  if (t.n_chunks > 0) {
    DeviceGuard guard(t.device);
    launch_kernel<&adam_scalars_kernel, kFinishBlockSize>(scalar_grid(t.n_tensors), stream,
                                                          l.args, "adam_scalars_kernel");
    dispatch::switch_dtype(t.param_dtype, [&](auto tag) {
      launch_adam_for_param<typename decltype(tag)::type>(l);
    });
  }
  launch_finish({view_of(t), stats, t.partials, call.telemetry ? 3 : 0, int(kSlotUpdateSq),
                 /*advance_steps=*/true, call.use_prologue, t.param_dtype == DType::kFloat64,
                 call.lr},
                t.device, stream);
}

}  // namespace fusedopt::cuda
