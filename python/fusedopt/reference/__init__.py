"""Pure-PyTorch executable specification of every fusedopt algorithm (the test oracle).

Float64-capable, written for clarity: each module states its exact conventions (where eps
sits, how bias correction is computed, the order of operations the kernels follow).

* :mod:`.prologue` — unscale, inf/nan check, global-norm clip (docs/algorithms.md#prologue)
* :mod:`.adam_family` — adam, amsgrad, adabelief, eadam, rmsprop, yogi; AdamD; AdamL's contract
* :mod:`.adaml` — AdamL's loss-gap scalars (fusedopt's reading of P1)
* :mod:`.adagrad` — Adagrad and AdaGrad-Norm
* :mod:`.sgd_family` — IAN-SGD, NSGD, NSGDm, Clip-SGD
* :mod:`.elementwise` — the element-wise algorithms' protocol (one ``elementwise_step_``
  contract call), and one module each: :mod:`.lion`, :mod:`.adan`,
  :mod:`.schedule_free_adamw` (loaded by name, :func:`.elementwise.spec`)
* whole steps over tensor lists (prologue, global scalars, updates, telemetry norms), composed
  from the above: the reference backend, :mod:`fusedopt.backends.reference_backend`
"""
from .adam_family import VARIANTS, AdamHyper, adam_family_update, adam_step_scalars
from .adagrad import adagrad_norm_scale
from .adaml import adaml_abc, advance_adaml_state, init_adaml_state
from .prologue import PrologueResult, clip_coefficient, opmath_dtype, prologue
from .sgd_family import momentum_update, normalized_scale, scaled_sgd_update

__all__ = [
    "VARIANTS", "AdamHyper", "adam_family_update", "adam_step_scalars", "adagrad_norm_scale",
    "adaml_abc", "advance_adaml_state", "init_adaml_state",
    "PrologueResult", "clip_coefficient", "opmath_dtype", "prologue", "momentum_update",
    "normalized_scale", "scaled_sgd_update",
]
