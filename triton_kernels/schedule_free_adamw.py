"""Schedule-Free AdamW (Defazio et al. 2024) for the shared element-wise kernel
(:mod:`.elementwise`).

The same operations in the same order as :mod:`fusedopt.reference.schedule_free_adamw` (the
spec; its ``STATES``, ``HYPER`` and ``N_SCALARS`` are the ones the host uses) and
``csrc/math/schedule_free_adamw.h``. The param is y; lr (warmup included) and ``ckp1`` come
from the optimizer class's host-side schedule. ``beta2^t`` is ``exp(t * log(beta2))`` in fp64
(Triton has no pow, as in :mod:`.adam`)::

    scalars (fp64):  beta2, one_m_beta2 = 1 - beta2, bc2 = 1 - beta2^t, eps, wd, ckp1,
                     y_lr = lr * (beta1 * (1 - ckp1) - 1), lr, has_wd = 1 if wd != 0 else 0
    update (opmath): v = v * beta2 + (one_m_beta2 * g) * g
                     gn = g / (sqrt(v / bc2) + eps)              (IEEE sqrt and division)
                     gn = gn + y * wd  only where has_wd         (a select)
                     y = lerp(y, z, ckp1);  y = y + y_lr * gn;  z = z - lr * gn
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._device import bind_helpers_for_interpreter, div_rn, sqrt_rn
from .elementwise import lerp, select


@triton.jit
def scalars(t, lr, h):
    """fp64 ``(beta2, one_m_beta2, bc2, eps, wd, ckp1, y_lr, lr, has_wd)`` from
    ``h = (beta1, beta2, eps, weight_decay, ckp1, ...)``."""
    beta1 = h[0]
    beta2 = h[1]
    ckp1 = h[4]
    bc2 = 1.0 - tl.exp(t * tl.log(beta2))
    y_lr = lr * (beta1 * (1.0 - ckp1) - 1.0)
    has_wd = tl.where(h[3] != 0.0, 1.0, 0.0).to(tl.float64)
    return (beta2, 1.0 - beta2, bc2, h[2], h[3], ckp1, y_lr, lr, has_wd)


@triton.jit
def update(p, g, states, s):
    """One Schedule-Free AdamW update of y (the param) in opmath; ``states = (z, v)``."""
    z = states[0]
    v = states[1]
    y = p
    v = v * s[0] + (s[1] * g) * g
    gn = div_rn(g, sqrt_rn(div_rn(v, s[2])) + s[3])
    gn = select(s[8], gn + y * s[4], gn)
    y = lerp(y, z, s[5])
    y = y + s[6] * gn
    z = z - s[7] * gn
    return y, (z, v)


bind_helpers_for_interpreter(globals())  # Note [interpreter helper calls]
