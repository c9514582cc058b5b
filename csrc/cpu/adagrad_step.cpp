// adagrad_step: coordinate-wise Adagrad's update call (contract: adagrad_step_).
#include <vector>

#include "cpu/isa.h"
#include "cpu/step_common.h"

namespace fusedopt::cpu {

void adagrad_step(const TensorTable& t, double* stats, const AdagradCall& call, int nthreads) {
  check_dtypes(t);
  const double lr = read_lr(call.lr);
  const bool bad_lr = lr_rejected(call.lr, lr, stats);
  const PrologueInputs pro = read_prologue(stats, call.use_prologue, call.maximize);
  if (pro.skip || bad_lr) {
    return;
  }
  const std::vector<double> steps = next_steps(t);
  std::vector<double> clr(steps.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    clr[i] = math::adagrad_clr(steps[i], lr, call.lr_decay);
  }
  std::vector<double> partials(call.telemetry ? kTelemetrySums * t.plan.num_chunks() : 0);

  AdagradLoop loop{};
  loop.table = view_of(t);
  loop.l2 = call.weight_decay != 0.0;
  loop.telemetry = call.telemetry;
  loop.call = {pro.coef, call.weight_decay, call.eps};
  loop.clr = clr.data();
  loop.partials = partials.data();
  loop.nthreads = nthreads;

  kernels().adagrad(loop);
  if (call.telemetry) {
    add_telemetry(t, partials, stats);
  }
  advance_steps(t);
}

}  // namespace fusedopt::cpu
