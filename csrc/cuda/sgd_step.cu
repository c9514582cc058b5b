// sgd_step and momentum_step: the SGD family's update calls (contract: sgd_step_,
// momentum_step_). The global scale stats[SCALE] was written by the optimizer on the device.
#include "cuda/dtype_check.h"
#include "cuda/finish.cuh"
#include "cuda/sgd_step.cuh"

namespace fusedopt::cuda {

// Instantiated in the generated sgd_step_<dtype>.cu files (csrc/cuda/CMakeLists.txt).
extern template bool launch_sgd_for_param<float>(const SgdLaunch&);
extern template bool launch_sgd_for_param<double>(const SgdLaunch&);
extern template bool launch_sgd_for_param<bf16_t>(const SgdLaunch&);
extern template bool launch_sgd_for_param<fp16_t>(const SgdLaunch&);

namespace {

SgdLaunch launch_of(const Table& t, double* stats, bool use_prologue, bool maximize,
                    uintptr_t stream) {
  SgdLaunch l{};
  l.args.pass = {view_of(t), stats, t.partials, t.scalars, use_prologue, maximize,
                 LearningRate{0.0, nullptr, DType::kFloat64}};
  l.grad_dtype = t.grad_dtype;
  l.state_dtype = t.state_dtype;
  l.master = t.master;
  l.device = t.device;
  l.stream = stream;
  return l;
}

void launch(const Table& t, const SgdLaunch& l) {
  if (t.n_chunks == 0) {
    return;
  }
  DeviceGuard guard(t.device);
  dispatch::switch_dtype(t.param_dtype, [&](auto tag) {
    launch_sgd_for_param<typename decltype(tag)::type>(l);
  });
}

}  // namespace

void sgd_step(const Table& t, double* stats, const SgdCall& call, uintptr_t stream) {
  check_dtypes(t);
  SgdLaunch l = launch_of(t, stats, call.use_prologue, call.maximize, stream);
  l.momentum_direction = call.momentum_direction;
  l.telemetry = call.telemetry;
  launch(t, l);
  launch_finish({view_of(t), stats, t.partials, call.telemetry ? 3 : 0, int(kSlotUpdateSq),
                 /*advance_steps=*/true, call.use_prologue, t.param_dtype == DType::kFloat64,
                 LearningRate{0.0, nullptr, DType::kFloat64}},
                t.device, stream);
}

void momentum_step(const Table& t, double* stats, double rho, bool use_prologue, bool maximize,
                   uintptr_t stream) {
  check_dtypes(t);
  SgdLaunch l = launch_of(t, stats, use_prologue, maximize, stream);
  l.args.rho = rho;
  l.momentum_pass = true;
  launch(t, l);
  launch_finish({view_of(t), stats, t.partials, 1, int(kSlotMomentumSq),
                 /*advance_steps=*/false, use_prologue, t.param_dtype == DType::kFloat64,
                 LearningRate{0.0, nullptr, DType::kFloat64}},
                t.device, stream);
}

}  // namespace fusedopt::cuda
