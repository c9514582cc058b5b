// adam_step: the Adam family's update call (contract: adam_step_, backends/__init__.py).
#include <vector>

#include "cpu/isa.h"
#include "cpu/step_common.h"
#include "fusedopt/stats.h"

namespace fusedopt::cpu {

void adam_step(const TensorTable& t, double* stats, const AdamCall& call, int nthreads) {
  check_dtypes(t);
  const double lr = read_lr(call.lr);
  const bool bad_lr = lr_rejected(call.lr, lr, stats);
  const PrologueInputs pro = read_prologue(stats, call.use_prologue, call.maximize);
  if (pro.skip || bad_lr) {
    return;
  }
  const bool eadam = call.variant == AdamVariant::kEadam;
  const bool shifts_v = eadam || call.variant == AdamVariant::kAdabelief;
  // AdamL (use_abc): v += a, denominator + b, step size * c (csrc/math/adam.h).
  const double a = call.use_abc ? stats[kSlotAbc] : 0.0;
  const double b = call.use_abc ? stats[kSlotAbc + 1] : (eadam ? 0.0 : call.eps);
  const double c = call.use_abc ? stats[kSlotAbc + 2] : 1.0;
  const bool coupled = call.coupled_decay && call.weight_decay != 0.0;
  const bool decoupled = !call.coupled_decay && call.weight_decay != 0.0;

  AdamLoop loop{};
  loop.table = view_of(t);
  loop.kind = adam_kind(call.variant);
  loop.decay = coupled ? math::Decay::kCoupled : math::Decay::kDecoupled;
  loop.telemetry = call.telemetry;
  loop.call = {pro.coef, call.weight_decay, call.beta1, call.beta2, shifts_v ? call.eps : a, b};

  const bool bias_correction = call.bias_correction && call.variant != AdamVariant::kRmsprop;
  const std::vector<double> steps = next_steps(t);
  std::vector<math::AdamTensorScalars<double>> per_tensor(steps.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    per_tensor[i] = math::adam_step_scalars(steps[i], lr, c, call.beta1, call.beta2,
                                            bias_correction, decoupled ? call.weight_decay : 0.0);
  }
  loop.per_tensor = per_tensor.data();
  std::vector<double> partials(call.telemetry ? kTelemetrySums * t.plan.num_chunks() : 0);
  loop.partials = partials.data();
  loop.nthreads = nthreads;

  kernels().adam(loop);
  if (call.telemetry) {
    add_telemetry(t, partials, stats);
  }
  advance_steps(t);
}

}  // namespace fusedopt::cpu
