"""Lion (Chen et al. 2023) for the shared element-wise kernel (:mod:`.elementwise`).

The same operations in the same order as :mod:`fusedopt.reference.lion` (the spec; its
``STATES``, ``HYPER`` and ``N_SCALARS`` are the ones the host uses) and ``csrc/math/lion.h``::

    scalars (fp64):  w1 = 1 - beta1,  w2 = 1 - beta2,  lr,  decay = 1 - lr * weight_decay
    update (opmath): c = lerp(m, g, w1);  p = p * decay;  p = p - lr * sign(c);
                     m = lerp(m, g, w2)
"""
from __future__ import annotations

import triton

from ._device import bind_helpers_for_interpreter
from .elementwise import lerp, sign


@triton.jit
def scalars(t, lr, h):
    """fp64 ``(w1, w2, lr, decay)`` from ``h = (beta1, beta2, weight_decay, ...)``."""
    return (1.0 - h[0], 1.0 - h[1], lr, 1.0 - lr * h[2])


@triton.jit
def update(p, g, states, s):
    """One Lion update in opmath; ``states = (m,)``, ``s = (w1, w2, lr, decay)``."""
    m = states[0]
    c = lerp(m, g, s[0])
    p = p * s[3]
    p = p - s[2] * sign(c)
    m = lerp(m, g, s[1])
    return p, (m,)


bind_helpers_for_interpreter(globals())  # Note [interpreter helper calls]
