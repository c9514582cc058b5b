"""Layout of the per-optimizer device scalar buffer ("stats").

Every optimizer owns one float64 tensor of ``NUM_SLOTS`` elements on its device. The global
per-step scalars live there so that no backend ever reads a value on the host inside ``step()``:
the prologue (norm pass) writes the grad norm, the non-finite flag and the gradient coefficient;
the update passes read them through a pointer and add their telemetry sums; the optimizers
write the AdamL and SGD-family scalars, computed on the device with
:mod:`fusedopt.reference.adaml` and :mod:`fusedopt.reference.sgd_family`.

The same numbers are spelled in ``csrc/include/fusedopt/stats.h`` (``kSlot*``) and in
``triton_kernels/_common.py``; ``tests/test_cpu_backend.py``, ``tests/test_triton_backend.py``
and ``tests/test_cuda_build.py`` check that they agree.

Note [prologue region]: a prologue writes five consecutive slots starting at its ``region``
(``GRAD`` for the gradient prologue, ``AUX`` for IAN-SGD's independent-batch normalizer):
``region + 0`` sum of squares, ``+1`` norm, ``+2`` found_inf, ``+3`` clip coefficient,
``+4`` coefficient applied to every gradient (``inv_scale * clip_coef``).
"""
from __future__ import annotations

NUM_SLOTS = 32

# Gradient prologue region (Note [prologue region]).
GRAD = 0
GRAD_SQ = GRAD + 0      # sum over all grads of (g * inv_scale)^2, before clipping
GRAD_NORM = GRAD + 1    # sqrt(GRAD_SQ): the pre-clip norm of the unscaled grads (telemetry)
FOUND_INF = GRAD + 2    # 1.0 when any grad element is inf/nan (or the GradScaler said so)
CLIP_COEF = GRAD + 3    # min(1, max_norm / (norm + 1e-6)); 1 without clipping
COEF = GRAD + 4         # inv_scale * CLIP_COEF: multiplies every grad inside the update pass

# Telemetry sums, accumulated by every update pass of a step (zeroed at the start of the step).
UPDATE_SQ = 5           # sum of (p_new - p_old)^2
PARAM_SQ = 6            # sum of p_new^2
STEP_GRAD_SQ = 7        # sum of (COEF * g)^2 as seen by the update passes

# Second prologue region: IAN-SGD's record_normalizer() (norm of the independent batch B').
AUX = 8                 # slots 8..12
AUX_SQ = AUX + 0
AUX_NORM = AUX + 1

SCALE = 13              # SGD family: the global step scale s in p <- p - s * d
ABC = 14                # AdamL: a (added to v), b (denominator eps), c (lr multiplier): 14, 15, 16
MOMENTUM_SQ = 17        # NSGDm: sum of m_new^2 written by momentum_step_
PREV_PARAM_SQ = 18      # PARAM_SQ of the last step, reported by last_stats when a step is skipped
#: 1.0 when an update call read a tensor lr (through its pointer, no host sync) that was NaN or
#: negative: that call was skipped whole (params, states, step counts unchanged). The kernels
#: only ever set it; the optimizer zeroes it at the start of a step.
LR_INVALID = 19

SLOT_NAMES = {
    "GRAD_SQ": GRAD_SQ, "GRAD_NORM": GRAD_NORM, "FOUND_INF": FOUND_INF, "CLIP_COEF": CLIP_COEF,
    "COEF": COEF, "UPDATE_SQ": UPDATE_SQ, "PARAM_SQ": PARAM_SQ, "STEP_GRAD_SQ": STEP_GRAD_SQ,
    "AUX": AUX, "SCALE": SCALE, "ABC": ABC, "MOMENTUM_SQ": MOMENTUM_SQ, "PREV_PARAM_SQ": PREV_PARAM_SQ,
    "LR_INVALID": LR_INVALID,
    "NUM_SLOTS": NUM_SLOTS,
}
