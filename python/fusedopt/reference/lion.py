"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), as the executable
spec of an element-wise algorithm (:mod:`fusedopt.reference.elementwise`).

Per tensor, in fp64 from the incremented step t (unused: Lion has no bias correction), lr and
the hyperparameters, then rounded to opmath::

    w1 = 1 - beta1,  w2 = 1 - beta2,  lr,  decay = 1 - lr * weight_decay

Per element, in opmath, in this order (``csrc/math/lion.h``, ``triton_kernels/lion.py``)::

    c = lerp(m, g, w1)            the interpolated momentum (torch's two-branch lerp)
    p = p * decay                 decoupled weight decay (exact when weight_decay = 0)
    p = p - lr * sign(c)          torch.sign: a zero c leaves p alone
    m = lerp(m, g, w2)

This is pytorch-optimizer's Lion operation for operation. lion-pytorch writes the two
interpolations as ``m * beta1 + g * (1 - beta1)``: the same numbers in exact arithmetic, other
roundings (tests/test_public_references.py compares both in fp64).
"""
from __future__ import annotations

from torch import Tensor

from .elementwise import lerp, sign

NAME = "lion"
STATES = ("exp_avg",)
HYPER = ("beta1", "beta2", "weight_decay")
N_SCALARS = 4


def scalars(t: Tensor, lr: Tensor, h: tuple[float, ...]) -> list[Tensor]:
    """fp64 per-tensor scalars ``(w1, w2, lr, decay)``."""
    beta1, beta2, weight_decay = h
    one = lr * 0.0 + 1.0
    return [one - beta1, one - beta2, lr, 1.0 - lr * weight_decay]


def update(p: Tensor, g: Tensor, states: list[Tensor], s: list[Tensor]
           ) -> tuple[Tensor, list[Tensor]]:
    """One Lion update in opmath; returns ``(p, [m])``."""
    (m,) = states
    w1, w2, lr, decay = s
    c = lerp(m, g, w1)
    p = p * decay
    p = p - lr * sign(c)
    m = lerp(m, g, w2)
    return p, [m]
