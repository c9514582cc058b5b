// grad_prologue: the norm pass of docs/algorithms.md#prologue (contract: grad_prologue_),
// writing the five slots of a prologue region (Note [prologue region]).
#include <cstdint>
#include <vector>

#include "cpu/isa.h"
#include "cpu/lanes.h"
#include "cpu/step_common.h"
#include "fusedopt/stats.h"
#include "math/prologue.h"

namespace fusedopt::cpu {

void grad_prologue(const GradList& grads, double* stats, const PrologueCall& call, int nthreads) {
  const double inv = call.grad_scale != nullptr ? 1.0 / double(*call.grad_scale) : 1.0;
  bool found_inf = call.found_inf != nullptr && *call.found_inf != 0.0f;
  double sq = 0.0;
  if (call.compute_norm) {
    const int64_t nchunks = grads.plan.num_chunks();
    std::vector<double> partial_sq(nchunks);
    std::vector<uint8_t> partial_bad(nchunks);
    PrologueLoop loop{};
    loop.grad = grads.ptr.data();
    loop.dtype = grads.dtype.data();
    loop.chunks = grads.plan.view();
    loop.opmath64 = grads.opmath64;
    loop.inv = inv;
    loop.partial_sq = partial_sq.data();
    loop.partial_bad = partial_bad.data();
    loop.nthreads = nthreads;
    kernels().prologue(loop);
    // Chunk order is list order (Note [fixed lanes]); the reference's sum is an opmath value.
    CompensatedSum total;
    for (int64_t c = 0; c < nchunks; ++c) {
      total.add(partial_sq[c]);
      found_inf = found_inf || partial_bad[c] != 0;
    }
    sq = grads.opmath64 ? total.value() : double(float(total.value()));
  }
  const math::PrologueScalars r =
      math::finish_prologue(sq, found_inf, inv, call.compute_norm ? call.max_norm : -1.0);
  double* region = stats + call.region;
  region[kRegionSq] = r.sq;
  region[kRegionNorm] = r.norm;
  region[kRegionFoundInf] = r.found_inf;
  region[kRegionClipCoef] = r.clip_coef;
  region[kRegionCoef] = r.coef;
}

}  // namespace fusedopt::cpu
