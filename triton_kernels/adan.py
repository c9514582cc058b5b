"""Adan (Xie et al. 2022/2024) for the shared element-wise kernel (:mod:`.elementwise`).

The same operations in the same order as :mod:`fusedopt.reference.adan` (the spec; its
``STATES``, ``HYPER`` and ``N_SCALARS`` are the ones the host uses) and ``csrc/math/adan.h``.
``beta^t`` is ``exp(t * log(beta))`` in fp64 (Triton has no pow; a few fp64 ulps from it, as in
:mod:`.adam`)::

    scalars (fp64):  w1 = 1 - beta1, w2 = 1 - beta2, beta2, beta3, one_m_beta3 = 1 - beta3,
                     bc3_sqrt = sqrt(1 - beta3^t), eps, step_size = lr / (1 - beta1^t),
                     diff_step_size = (lr * beta2) / (1 - beta2^t),
                     decay = 1 - lr * wd if no_prox else 1, prox = 1 + lr * wd if not no_prox
                     else 1, first = 1 if t == 1 else 0
    update (opmath): diff = 0 if first else g - prev_grad      (a select)
                     m = lerp(m, g, w1);  d = lerp(d, diff, w2);  u = diff * beta2 + g
                     n = n * beta3 + (one_m_beta3 * u) * u
                     denom = sqrt(n) / bc3_sqrt + eps             (IEEE sqrt and division)
                     p = p * decay;  p = p - step_size * (m / denom)
                     p = p - diff_step_size * (d / denom);  p = p / prox;  prev_grad = g
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._device import bind_helpers_for_interpreter, div_rn, sqrt_rn
from .elementwise import lerp, select


@triton.jit
def scalars(t, lr, h):
    """fp64 ``(w1, w2, beta2, beta3, one_m_beta3, bc3_sqrt, eps, step_size, diff_step_size,
    decay, prox, first)`` from ``h = (beta1, beta2, beta3, eps, weight_decay, no_prox, ...)``."""
    beta1 = h[0]
    beta2 = h[1]
    beta3 = h[2]
    lr_wd = lr * h[4]
    bc1 = 1.0 - tl.exp(t * tl.log(beta1))
    bc2 = 1.0 - tl.exp(t * tl.log(beta2))
    bc3 = 1.0 - tl.exp(t * tl.log(beta3))
    no_prox = h[5] != 0.0
    decay = tl.where(no_prox, 1.0 - lr_wd, 1.0)
    prox = tl.where(no_prox, 1.0, 1.0 + lr_wd)
    first = tl.where(t == 1.0, 1.0, 0.0).to(tl.float64)
    return (1.0 - beta1, 1.0 - beta2, beta2, beta3, 1.0 - beta3, sqrt_rn(bc3), h[3],
            div_rn(lr, bc1), div_rn(lr * beta2, bc2), decay, prox, first)


@triton.jit
def update(p, g, states, s):
    """One Adan update in opmath; ``states = (m, d, n, prev_grad)``, ``s`` as :func:`scalars`."""
    m = states[0]
    d = states[1]
    n = states[2]
    prev = states[3]
    diff = select(s[11], 0.0, g - prev)
    m = lerp(m, g, s[0])
    d = lerp(d, diff, s[1])
    u = diff * s[2] + g
    n = n * s[3] + (s[4] * u) * u
    denom = div_rn(sqrt_rn(n), s[5]) + s[6]
    p = p * s[9]
    p = p - s[7] * div_rn(m, denom)
    p = p - s[8] * div_rn(d, denom)
    p = div_rn(p, s[10])
    return p, (m, d, n, g)


bind_helpers_for_interpreter(globals())  # Note [interpreter helper calls]
