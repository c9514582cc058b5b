// elementwise_step: the update call of every element-wise algorithm (contract:
// elementwise_step_, backends/__init__.py; math/elementwise.h).
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/isa.h"
#include "cpu/step_common.h"
#include "math/algorithms.h"

namespace fusedopt::cpu {

void elementwise_step(const TensorTable& t, double* stats, const ElementwiseCall& call,
                      int nthreads) {
  const math::ElementwiseInfo& info = elementwise_info(call);
  for (int s = 0; s < kMaxStates; ++s) {
    const size_t want = s < info.states ? t.param.size() : 0;
    if (t.state[s].size() != want) {
      throw std::invalid_argument(std::string("fusedopt: ") + info.name + " needs " +
                                  std::to_string(info.states) + " state streams, one tensor "
                                  "per param each");
    }
  }
  check_dtypes(t);
  const double lr = read_lr(call.lr);
  const bool bad_lr = lr_rejected(call.lr, lr, stats);
  const PrologueInputs pro = read_prologue(stats, call.use_prologue, call.maximize);
  if (pro.skip || bad_lr) {
    return;
  }
  // Per-tensor scalars in fp64 on the host (the kernels round them to opmath).
  const std::vector<double> steps = next_steps(t);
  std::vector<double> scalars(steps.size() * math::kMaxScalars, 0.0);
  for (size_t i = 0; i < steps.size(); ++i) {
    math::elementwise_scalars(call.algorithm, steps[i], lr, call.hyper,
                              scalars.data() + i * math::kMaxScalars);
  }
  std::vector<double> partials(call.telemetry ? kTelemetrySums * t.plan.num_chunks() : 0);

  ElementwiseLoop loop{};
  loop.table = view_of(t);
  loop.algorithm = call.algorithm;
  loop.telemetry = call.telemetry;
  loop.coef = pro.coef;
  loop.scalars = scalars.data();
  loop.partials = partials.data();
  loop.nthreads = nthreads;
  kernels().elementwise(loop);
  if (call.telemetry) {
    add_telemetry(t, partials, stats);
  }
  advance_steps(t);
}

}  // namespace fusedopt::cpu
