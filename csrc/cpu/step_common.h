// What every update call does around its chunk loop (the contract's common rules, api.h):
// read the prologue's coef and skip flag, advance the step counts, reduce the chunk partials.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/api.h"
#include "cpu/kernel_args.h"

namespace fusedopt::cpu {

/// The prologue's verdict for an update call.
struct PrologueInputs {
  bool skip;    // stats[FOUND_INF] != 0 (only with use_prologue)
  double coef;  // stats[COEF], or 1; negated for maximize (math/prologue.h update_coef)
};
PrologueInputs read_prologue(const double* stats, bool use_prologue, bool maximize);

/// The learning rate's value now (a tensor lr is read here, on the host: it is a CPU tensor).
double read_lr(const LearningRate& lr);

/// A tensor lr whose value is NaN or negative: sets stats[LR_INVALID] = 1 and returns true (the
/// call is then skipped whole). A float lr is not checked (the optimizer validates it).
bool lr_rejected(const LearningRate& lr, double value, double* stats);

/// t = step + 1 per tensor, in fp32 as the reference computes it, widened to fp64.
std::vector<double> next_steps(const TensorTable& t);

/// Store t = step + 1 into every step count.
void advance_steps(const TensorTable& t);

/// Throws std::invalid_argument when the table's dtypes are not instantiated.
void check_dtypes(const TensorTable& t);

/// Sum per-chunk partials (stride sums per chunk, sum `which`) into one value per call, the way
/// the reference does: each tensor's sum is rounded to opmath (fp32 unless fp64 params, as
/// torch.sum returns it) and the tensors' sums are added in list order in fp64.
double reduce_partials(const TensorTable& t, const std::vector<double>& partials, int stride,
                       int which);

/// Add the telemetry sums of an update pass to stats[UPDATE_SQ..STEP_GRAD_SQ].
void add_telemetry(const TensorTable& t, const std::vector<double>& partials, double* stats);

}  // namespace fusedopt::cpu
