"""Pure-PyTorch executable specification of every fusedopt algorithm (the test oracle).

Float64-capable, written for clarity: each module states its exact conventions (where eps
sits, how bias correction is computed, the order of operations the kernels follow).

* :mod:`.prologue` — unscale, inf/nan check, global-norm clip (ALGORITHMS.md §1)
* :mod:`.adam_family` — adam, amsgrad, adabelief, eadam, rmsprop, yogi; AdamD; AdamL's contract
* :mod:`.adaml` — AdamL's loss-gap scalars (fusedopt's reading of P1)
* :mod:`.adagrad` — Adagrad and AdaGrad-Norm
* :mod:`.sgd_family` — IAN-SGD, NSGD, NSGDm, Clip-SGD
* :mod:`.telemetry` — grad / update / param norms
* :mod:`.recipes` — whole-step functions over tensor lists, composed from the above
"""
from .adam_family import VARIANTS, AdamHyper, adam_family_update, adam_step_scalars
from .adagrad import adagrad_clr, adagrad_norm_scale, adagrad_update
from .adaml import adaml_abc, advance_adaml_state, init_adaml_state
from .prologue import PrologueResult, clip_coefficient, opmath_dtype, prologue
from .sgd_family import momentum_update, normalized_scale, scaled_sgd_update

__all__ = [
    "VARIANTS", "AdamHyper", "adam_family_update", "adam_step_scalars", "adagrad_clr",
    "adagrad_norm_scale", "adagrad_update", "adaml_abc", "advance_adaml_state",
    "init_adaml_state",
    "PrologueResult", "clip_coefficient", "opmath_dtype", "prologue", "momentum_update",
    "normalized_scale", "scaled_sgd_update",
]
