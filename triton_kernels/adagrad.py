"""Coordinate-wise Adagrad (torch.optim semantics) for the shared element-wise kernel
(:mod:`.elementwise`).

The same operations in the same order as :mod:`fusedopt.reference.adagrad` (the spec; its
``STATES``, ``HYPER`` and ``N_SCALARS`` are the ones the host uses) and ``csrc/math/adagrad.h``::

    scalars (fp64):  clr = lr / (1 + (t - 1) * lr_decay), wd, eps, has_wd = 1 if wd != 0 else 0
    update (opmath): g = g + p * wd  only where has_wd           (coupled L2, a select)
                     s = s + g * g
                     p = p - (clr * g) / (sqrt(s) + eps)          (IEEE sqrt and division)

AdaGrad-Norm is not here: it is the scaled-SGD pass of :mod:`.sgd`.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._device import bind_helpers_for_interpreter, div_rn, sqrt_rn
from .elementwise import select


@triton.jit
def scalars(t, lr, h):
    """fp64 ``(clr, wd, eps, has_wd)`` from ``h = (lr_decay, eps, weight_decay, ...)``."""
    clr = div_rn(lr, 1.0 + (t - 1.0) * h[0])
    has_wd = tl.where(h[2] != 0.0, 1.0, 0.0).to(tl.float64)
    return (clr, h[2], h[1], has_wd)


@triton.jit
def update(p, g, states, s):
    """One coordinate-wise Adagrad update in opmath; ``states = (sum,)``."""
    acc = states[0]
    g = select(s[3], g + p * s[1], g)
    acc = acc + g * g
    p = p - div_rn(s[0] * g, sqrt_rn(acc) + s[2])
    return p, (acc,)


bind_helpers_for_interpreter(globals())  # Note [interpreter helper calls]
