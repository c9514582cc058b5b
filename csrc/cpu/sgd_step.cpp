// sgd_step and momentum_step: the SGD family's update calls (contract: sgd_step_,
// momentum_step_). The global scale stats[SCALE] was written by the optimizer on the device.
#include <vector>

#include "cpu/isa.h"
#include "cpu/step_common.h"
#include "fusedopt/stats.h"

namespace fusedopt::cpu {

void sgd_step(const TensorTable& t, double* stats, const SgdCall& call, int nthreads) {
  check_dtypes(t);
  const PrologueInputs pro = read_prologue(stats, call.use_prologue, call.maximize);
  if (pro.skip) {
    return;
  }
  std::vector<double> partials(call.telemetry ? kTelemetrySums * t.plan.num_chunks() : 0);

  SgdLoop loop{};
  loop.table = view_of(t);
  loop.momentum_direction = call.momentum_direction;
  loop.telemetry = call.telemetry;
  loop.coef = call.momentum_direction ? 1.0 : pro.coef;  // the momentum: already signed
  loop.grad_coef = pro.coef;
  loop.scale = stats[kSlotScale];
  loop.partials = partials.data();
  loop.nthreads = nthreads;

  kernels().sgd(loop);
  if (call.telemetry) {
    add_telemetry(t, partials, stats);
  }
  advance_steps(t);
}

void momentum_step(const TensorTable& t, double* stats, double rho, bool use_prologue,
                   bool maximize, int nthreads) {
  check_dtypes(t);
  const PrologueInputs pro = read_prologue(stats, use_prologue, maximize);
  if (pro.skip) {
    return;
  }
  std::vector<double> partials(t.plan.num_chunks());

  MomentumLoop loop{};
  loop.table = view_of(t);
  loop.coef = pro.coef;
  loop.one_minus_rho = 1.0 - rho;
  loop.rho = rho;
  loop.partials = partials.data();
  loop.nthreads = nthreads;

  kernels().momentum(loop);
  stats[kSlotMomentumSq] += reduce_partials(t, partials, 1, 0);
}

}  // namespace fusedopt::cpu
