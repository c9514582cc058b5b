#include "cpu/step_common.h"

#include <stdexcept>

#include "cpu/lanes.h"
#include "dispatch/switch.h"
#include "fusedopt/stats.h"
#include "math/prologue.h"

namespace fusedopt::cpu {

PrologueInputs read_prologue(const double* stats, bool use_prologue, bool maximize) {
  if (!use_prologue) {
    return {false, math::update_coef(1.0, maximize)};
  }
  return {stats[kSlotFoundInf] != 0.0, math::update_coef(stats[kSlotCoef], maximize)};
}

double read_lr(const LearningRate& lr) {
  if (lr.ptr == nullptr) {
    return lr.value;
  }
  if (lr.dtype == DType::kFloat64) {
    return *static_cast<const double*>(lr.ptr);
  }
  if (lr.dtype == DType::kFloat32) {
    return double(*static_cast<const float*>(lr.ptr));
  }
  throw std::invalid_argument("fusedopt: a tensor lr must be fp32 or fp64");
}

bool lr_rejected(const LearningRate& lr, double value, double* stats) {
  const bool bad = lr.ptr != nullptr && (value != value || value < 0.0);
  if (bad) {
    stats[kSlotLrInvalid] = 1.0;
  }
  return bad;
}

std::vector<double> next_steps(const TensorTable& t) {
  std::vector<double> out(t.step.size());
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = double(*t.step[i] + 1.0f);
  }
  return out;
}

void advance_steps(const TensorTable& t) {
  for (float* s : t.step) {
    *s = *s + 1.0f;
  }
}

bool supports_dtypes(DType param, DType grad, DType state, bool master) {
  return dispatch::switch_dtype_set(param, grad, state, master, [](auto) {});
}

void check_dtypes(const TensorTable& t) {
  if (!supports_dtypes(t.param_dtype, t.grad_dtype, t.state_dtype, t.has_master())) {
    throw std::invalid_argument("fusedopt: no CPU kernel for this combination of param, grad "
                                "and state dtypes (see csrc/dispatch/switch.h)");
  }
}

double reduce_partials(const TensorTable& t, const std::vector<double>& partials, int stride,
                       int which) {
  const bool opmath64 = t.param_dtype == DType::kFloat64;
  const std::vector<Chunk>& chunks = t.plan.chunks();
  CompensatedSum total;
  size_t c = 0;
  while (c < chunks.size()) {
    const int64_t tensor = chunks[c].tensor;
    CompensatedSum tensor_sum;
    for (; c < chunks.size() && chunks[c].tensor == tensor; ++c) {
      tensor_sum.add(partials[c * stride + which]);
    }
    total.add(opmath64 ? tensor_sum.value() : double(float(tensor_sum.value())));
  }
  return total.value();
}

void add_telemetry(const TensorTable& t, const std::vector<double>& partials, double* stats) {
  for (int s = 0; s < kTelemetrySums; ++s) {
    stats[kSlotUpdateSq + s] += reduce_partials(t, partials, kTelemetrySums, s);
  }
}

}  // namespace fusedopt::cpu
