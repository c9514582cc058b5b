"""Adagrad, coordinate-wise and AdaGrad-Norm (docs/algorithms.md#adagrad, P3), as the executable
spec.

Coordinate-wise (torch.optim.Adagrad semantics), in opmath, in this order
(``csrc/math/adagrad.h`` and ``triton_kernels/adagrad.py`` follow it)::

    per-step scalar, fp64:  clr = lr / (1 + (t - 1) * lr_decay)     (t already incremented)
    g = g * coef                        (only after a prologue)
    g = g + p * wd                      (coupled L2, as torch)
    s = s + g * g
    p = p - (clr * g) / (sqrt(s) + eps)

AdaGrad-Norm keeps one global scalar ``B <- B + ||coef * g||^2`` (over every tensor of the
optimizer) and steps ``p <- p - s * g`` with ``s = lr / (sqrt(B) + eps)``: the SGD-family pass of
:mod:`fusedopt.reference.sgd_family` with the scale of :func:`adagrad_norm_scale`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .prologue import ieee_sqrt


def adagrad_clr(step: Tensor, lr: float | Tensor, lr_decay: float) -> Tensor:
    """fp64 0-d ``lr / (1 + (t - 1) * lr_decay)`` for the incremented step ``t``."""
    t = step.to(torch.float64)
    lr64 = torch.as_tensor(lr, dtype=torch.float64, device=t.device)
    return lr64 / (1.0 + (t - 1.0) * lr_decay)


def adagrad_update(
    p: Tensor, g: Tensor, s: Tensor, *, clr: Tensor, eps: float, weight_decay: float,
    coef: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One coordinate-wise Adagrad update of one tensor, all in opmath. Returns (p, s)."""
    op = p.dtype
    if coef is not None:
        g = g * coef.to(op)
    if weight_decay != 0.0:
        g = g + p * weight_decay
    s = s + g * g
    p = p - (clr.to(op) * g) / (ieee_sqrt(s) + eps)
    return p, s


def adagrad_norm_scale(accumulator: Tensor, lr: float | Tensor, eps: float) -> Tensor:
    """fp64 0-d ``lr / (sqrt(B) + eps)`` for the updated accumulator B."""
    lr64 = torch.as_tensor(lr, dtype=torch.float64, device=accumulator.device)
    return lr64 / (torch.sqrt(accumulator.to(torch.float64)) + eps)
