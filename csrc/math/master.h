// Note [master re-seed]: with master weights (16-bit params, fp32 masters) every update call
// stores param = master rounded to the param dtype (round to nearest even). So between two
// steps, a param whose bits differ from its master rounded that way was written by someone
// else (model.load_state_dict, p.clamp_(), a re-initialisation). The update then starts from
// that param, widened to fp32 (exact), and the master is re-seeded with it by the update's own
// store; otherwise it starts from the master as before:
//
//   start = bits(round(master)) == bits(param) ? master : widen(param)
//
// Per element, in the update pass (one more 16-bit read; no host sync, no extra pass), before
// anything else. A param nobody wrote always equals its rounded master, so normal steps are
// unchanged bit for bit (and writing the very bits a param already holds is no write: its
// master keeps its extra bits). A skipped call (found_inf, invalid lr) stores nothing, master included.
// The comparison is on the bits: a written -0 or a NaN payload counts as a write too.
// The reference: python/fusedopt/backends/reference_backend.py reseed_master.
#pragma once

#include "fusedopt/dtype.h"
#include "fusedopt/macros.h"
#include "math/opmath.h"

namespace fusedopt::math {

/// The fp32 value the update of one element starts from (see the note above); P is the 16-bit
/// param storage type (bf16_t or fp16_t).
template <class P>
FUSEDOPT_INLINE float reseed_master(float master, P param) {
  return op_select(narrow<P>(master).bits == param.bits, master, widen(param));
}

}  // namespace fusedopt::math
