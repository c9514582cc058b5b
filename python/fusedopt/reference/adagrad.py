"""Adagrad, coordinate-wise and AdaGrad-Norm (docs/algorithms.md#adagrad, P3), as the executable
spec.

Coordinate-wise (torch.optim.Adagrad semantics) is an element-wise algorithm
(:mod:`fusedopt.reference.elementwise`), in opmath, in this order (``csrc/math/adagrad.h`` and
``triton_kernels/adagrad.py`` follow it)::

    per-tensor scalars, fp64:  clr = lr / (1 + (t - 1) * lr_decay)   (t already incremented),
                               wd, eps, has_wd = (wd != 0)
    g = g * coef                        (the contract's loop: after a prologue, or maximize)
    g = g + p * wd                      (coupled L2, as torch; only when wd != 0)
    s = s + g * g
    p = p - (clr * g) / (sqrt(s) + eps)

AdaGrad-Norm keeps one global scalar ``B <- B + ||coef * g||^2`` (over every tensor of the
optimizer) and steps ``p <- p - s * g`` with ``s = lr / (sqrt(B) + eps)``: the SGD-family pass of
:mod:`fusedopt.reference.sgd_family` with the scale of :func:`adagrad_norm_scale`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .elementwise import select
from .prologue import ieee_sqrt


NAME = "adagrad"
STATES = ("sum",)
HYPER = ("lr_decay", "eps", "weight_decay")
N_SCALARS = 4


def scalars(t: Tensor, lr: Tensor, h: tuple[float, ...]) -> list[Tensor]:
    """fp64 per-tensor scalars ``(clr, wd, eps, has_wd)``, ``clr = lr / (1 + (t - 1) lr_decay)``
    for the incremented step ``t``."""
    lr_decay, eps, weight_decay = h
    one = lr * 0.0 + 1.0
    return [lr / (1.0 + (t - 1.0) * lr_decay), one * weight_decay, one * eps,
            one * float(weight_decay != 0.0)]


def update(p: Tensor, g: Tensor, states: list[Tensor], s: list[Tensor]
           ) -> tuple[Tensor, list[Tensor]]:
    """One coordinate-wise Adagrad update in opmath; returns ``(p, [sum])``."""
    (acc,) = states
    clr, wd, eps, has_wd = s
    g = select(has_wd, g + p * wd, g)
    acc = acc + g * g
    p = p - (clr * g) / (ieee_sqrt(acc) + eps)
    return p, [acc]


def adagrad_norm_scale(accumulator: Tensor, lr: float | Tensor, eps: float) -> Tensor:
    """fp64 0-d ``lr / (sqrt(B) + eps)`` for the updated accumulator B."""
    lr64 = torch.as_tensor(lr, dtype=torch.float64, device=accumulator.device)
    return lr64 / (torch.sqrt(accumulator.to(torch.float64)) + eps)
