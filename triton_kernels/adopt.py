"""ADOPT (Taniguchi et al. 2024) for the shared element-wise kernel (:mod:`.elementwise`).

The same operations in the same order as :mod:`fusedopt.reference.adopt` (the spec; its
``STATES``, ``HYPER`` and ``N_SCALARS`` are the ones the host uses) and ``csrc/math/adopt.h``.
``t^clip_exponent`` is ``exp(clip_exponent * log(t))`` in fp64 (Triton has no pow; a few fp64
ulps from it, as ``beta^t`` in :mod:`.adam`)::

    scalars (fp64):  w1 = 1 - beta1, beta2, one_m_beta2 = 1 - beta2, eps, lr,
                     clip_bound = t^clip_exponent if clip else +inf,
                     decay = 1 - lr * wd if weight_decouple else 1, wd,
                     coupled = 1 if wd != 0 and not weight_decouple else 0,
                     first = 1 if t == 1 else 0
    update (opmath): g = g + p * wd if coupled;  p = p * decay       (a select)
                     denom = maximum(sqrt(v), eps);  n = g / denom   (IEEE sqrt and division)
                     n = minimum(maximum(n, -clip_bound), clip_bound)     (NaN propagated)
                     m_new = lerp(m, n, w1);  p_new = p - lr * m_new
                     v_new = v * beta2 + (one_m_beta2 * g) * g
                     p, m, v = (p, m, g * g) if first else (p_new, m_new, v_new)   (selects)
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._device import bind_helpers_for_interpreter, div_rn, sqrt_rn
from .elementwise import lerp, select


@triton.jit
def scalars(t, lr, h):
    """fp64 ``(w1, beta2, one_m_beta2, eps, lr, clip_bound, decay, wd, coupled, first)`` from
    ``h = (beta1, beta2, eps, weight_decay, weight_decouple, clip, clip_exponent, ...)``."""
    beta2 = h[1]
    wd = h[3]
    decouple = h[4] != 0.0
    bound = tl.where(h[5] != 0.0, tl.exp(h[6] * tl.log(t)), float("inf")).to(tl.float64)
    decay = tl.where(decouple, 1.0 - lr * wd, 1.0).to(tl.float64)
    coupled = tl.where((wd != 0.0) & (h[4] == 0.0), 1.0, 0.0).to(tl.float64)
    first = tl.where(t == 1.0, 1.0, 0.0).to(tl.float64)
    return (1.0 - h[0], beta2, 1.0 - beta2, h[2], lr, bound, decay, wd, coupled, first)


@triton.jit
def update(p, g, states, s):
    """One ADOPT update in opmath; ``states = (m, v)``, ``s`` as :func:`scalars`."""
    m = states[0]
    v = states[1]
    g = select(s[8], g + p * s[7], g)
    p = p * s[6]
    denom = tl.maximum(sqrt_rn(v), s[3], propagate_nan=tl.PropagateNan.ALL)
    n = div_rn(g, denom)
    n = tl.maximum(n, -s[5], propagate_nan=tl.PropagateNan.ALL)
    n = tl.minimum(n, s[5], propagate_nan=tl.PropagateNan.ALL)
    m_new = lerp(m, n, s[0])
    p_new = p - s[4] * m_new
    v_new = v * s[1] + (s[2] * g) * g
    return select(s[9], p, p_new), (select(s[9], m, m_new), select(s[9], g * g, v_new))


bind_helpers_for_interpreter(globals())  # Note [interpreter helper calls]
