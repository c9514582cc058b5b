"""ADOPT (Taniguchi et al. 2024, "ADOPT: Modified Adam Can Converge with Any beta2 with the
Optimal Rate"), as the executable spec of an element-wise algorithm
(:mod:`fusedopt.reference.elementwise`).

Adam with two changes: the gradient is normalised by the *previous* second moment (so g_t and
the denominator are independent), and the momentum averages the normalised gradients rather
than the raw ones; the first step only seeds the second moment::

    t = 1:   v_1 = g_1^2                                   (no update of m, no move of p)
    t >= 2:  n_t = clip(g_t / max(sqrt(v_{t-1}), eps), t^(1/4))
             m_t = beta1 m_{t-1} + (1 - beta1) n_t          exp_avg
             p   <- p - lr m_t
             v_t = beta2 v_{t-1} + (1 - beta2) g_t^2        exp_avg_sq

``clip(x, c)`` clamps to ``[-c, c]``; the bound is ``t^clip_exponent`` (``t^(1/4)`` by
default) or none. Weight decay, as pytorch-optimizer's ``ADOPT``: coupled (``g + wd p``, the
decayed g feeds v too) or, with ``weight_decouple``, decoupled (``p (1 - lr wd)`` before the
update). Both apply at every step, the first included: a first step with decoupled decay moves
p by the decay alone.

Per tensor, in fp64 from the incremented step t, lr and the hyperparameters
``(beta1, beta2, eps, weight_decay, weight_decouple, clip, clip_exponent)`` (the two flags 1.0
or 0.0), then rounded to opmath::

    w1 = 1 - beta1, beta2, one_m_beta2 = 1 - beta2, eps, lr,
    clip_bound = t^clip_exponent if clip else +inf,
    decay = 1 - lr * wd if weight_decouple else 1,
    wd, coupled = 1 if (wd != 0 and not weight_decouple) else 0,
    first = 1 if t == 1 else 0

Per element, in opmath, in this order (``csrc/math/adopt.h``, ``triton_kernels/adopt.py``)::

    g = g + p * wd            only if coupled (a select, never an add of 0)
    p = p * decay             (exact when decay = 1)
    denom = maximum(sqrt(v), eps)                 (IEEE sqrt; a NaN stays NaN)
    n = g / denom
    n = minimum(maximum(n, -clip_bound), clip_bound)   (a NaN stays NaN; +inf: no clip)
    m_new = lerp(m, n, w1)
    p_new = p - lr * m_new
    v_new = v * beta2 + (one_m_beta2 * g) * g     (torch's addcmul order)
    p, m, v = (p, m, g * g) if first else (p_new, m_new, v_new)      (selects)

Every operation is computed at every step and the first step selects its three results: a
select, never a multiply by the 0/1 flag (``0 * inf`` is NaN). The clamp's two bounds are
``maximum`` then ``minimum`` with NaN propagation (torch.maximum/minimum; pytorch-optimizer's
foreach path); the C++ (which has only ``op_maximum``) writes the minimum as
``-maximum(-n, -clip_bound)``, exact negations, the same numbers (a NaN's sign bit aside).
``first`` follows the tensor's step count: a first step skipped by AMP leaves the next step
first again, so v is seeded by a gradient that was applied.

Conventions against the public implementations (tests/test_public_references.py):

* pytorch-optimizer's ``ADOPT`` (4.1.0; foreach and per-param paths): the same operations in
  the same order, ``clip_lambda = step ** 0.25`` from step 2 on, ``eps`` a clamp of
  ``sqrt(v)`` (not added to it), weight decay before the first-step return. Its
  ``clip_lambda`` is any callable of the group step; fusedopt takes a power of the tensor's own
  step (``clip_exponent``, or ``clip=False`` for none). Its ``fixed_decay`` (decay not scaled
  by lr) is not offered. torch's CPU lerp and ``add(alpha=)`` fuse a multiply-add, fusedopt's
  do not: an ulp each.
* The paper: no copy of it was at hand while this was written, so the form above is
  pytorch-optimizer's, not re-derived from the paper. Whether the paper's bound at the first
  clipped step is ``1^(1/4)`` (a step index from 0 for the seeding step) or ``2^(1/4)``
  (pytorch-optimizer's and fusedopt's) depends on its indexing, which could not be
  checked. The copy of the authors' repository available offline (iShohei220/adopt, commit
  44900fa) is another variant, without the clip (a ``beta3``-scheduled eps, ``m`` set to the
  first normalised gradient). Copies of the authors' clipped code seen elsewhere apply weight
  decay only from step 2 (v seeded with the raw ``g^2``) and default to decoupled decay;
  fusedopt follows pytorch-optimizer (decay from step 1, coupled by default).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .elementwise import lerp, select
from .prologue import ieee_sqrt

NAME = "adopt"
STATES = ("exp_avg", "exp_avg_sq")
HYPER = ("beta1", "beta2", "eps", "weight_decay", "weight_decouple", "clip", "clip_exponent")
N_SCALARS = 10


def scalars(t: Tensor, lr: Tensor, h: tuple[float, ...]) -> list[Tensor]:
    """fp64 per-tensor scalars ``(w1, beta2, one_m_beta2, eps, lr, clip_bound, decay, wd,
    coupled, first)``."""
    beta1, beta2, eps, weight_decay, weight_decouple, clip, clip_exponent = h
    one = lr * 0.0 + 1.0
    bound = torch.pow(t, clip_exponent) if clip else one * math.inf
    decay = 1.0 - lr * weight_decay if weight_decouple else one
    coupled = float(weight_decay != 0.0 and not weight_decouple)
    first = torch.where(t == 1.0, one, 0.0 * one)
    return [one - beta1, one * beta2, one - beta2, one * eps, lr, bound, decay,
            one * weight_decay, one * coupled, first]


def update(p: Tensor, g: Tensor, states: list[Tensor], s: list[Tensor]
           ) -> tuple[Tensor, list[Tensor]]:
    """One ADOPT update in opmath; returns ``(p, [m, v])``."""
    m, v = states
    w1, beta2, one_m_beta2, eps, lr, bound, decay, wd, coupled, first = s
    g = select(coupled, g + p * wd, g)
    p = p * decay
    denom = torch.maximum(ieee_sqrt(v), eps)
    n = g / denom
    n = torch.minimum(torch.maximum(n, -bound), bound)
    m_new = lerp(m, n, w1)
    p_new = p - lr * m_new
    v_new = v * beta2 + (one_m_beta2 * g) * g
    return (select(first, p, p_new),
            [select(first, m, m_new), select(first, g * g, v_new)])
