"""Adan (Xie et al. 2022/2024, "Adan: Adaptive Nesterov Momentum Algorithm for Faster
Optimizing Deep Models"), as the executable spec of an element-wise algorithm
(:mod:`fusedopt.reference.elementwise`).

Three moments and the previous gradient (four state streams)::

    diff_t = g_t - g_{t-1}               (0 at the first step)
    m_t = beta1 m + (1 - beta1) g_t                      exp_avg
    d_t = beta2 d + (1 - beta2) diff_t                   exp_avg_diff
    n_t = beta3 n + (1 - beta3) (g_t + beta2 diff_t)^2   exp_avg_sq
    eta = lr / (sqrt(n_t / (1 - beta3^t)) + eps)
    p  <- (p - eta (m_t / (1 - beta1^t) + beta2 d_t / (1 - beta2^t))) / (1 + lr wd)

``betas`` follow the official code's convention (the paper's betas are ``1 -`` these):
defaults (0.98, 0.92, 0.99). ``no_prox=True`` replaces the proximal decay (the division by
``1 + lr wd`` after the update) by a decoupled one (``p * (1 - lr wd)`` before it).

Per tensor, in fp64 from the incremented step t, lr and the hyperparameters
``(beta1, beta2, beta3, eps, weight_decay, no_prox)`` (no_prox 1.0 or 0.0), then rounded to
opmath::

    w1 = 1 - beta1, w2 = 1 - beta2, beta2, beta3, one_m_beta3 = 1 - beta3,
    bc3_sqrt = sqrt(1 - beta3^t), eps, step_size = lr / (1 - beta1^t),
    diff_step_size = (lr * beta2) / (1 - beta2^t),
    decay = 1 - lr * wd if no_prox else 1,   prox = 1 + lr * wd if not no_prox else 1,
    first = 1 if t == 1 else 0

Per element, in opmath, in this order (``csrc/math/adan.h``, ``triton_kernels/adan.py``)::

    diff = 0 if first else g - prev_grad      (a select)
    m = lerp(m, g, w1)
    d = lerp(d, diff, w2)
    u = diff * beta2 + g
    n = n * beta3 + (one_m_beta3 * u) * u     (torch's addcmul order)
    denom = sqrt(n) / bc3_sqrt + eps          (IEEE sqrt)
    p = p * decay                             (exact when decay = 1)
    p = p - step_size * (m / denom)
    p = p - diff_step_size * (d / denom)
    p = p / prox                              (exact when prox = 1)
    prev_grad = g                             (the effective grad: AMP unscale, clip, maximize)

Conventions against the public implementations (tests/test_public_references.py):

* pytorch-optimizer's ``Adan`` (its foreach path) does this order operation for operation, but
  stores ``previous_grad`` negated (``-g``) and seeds it with ``-g`` of the first step so that
  the first difference is 0; fusedopt stores ``+g`` (state ``prev_grad``) and selects 0 with
  ``first``: ``g + (-g_prev)`` and ``g - g_prev`` are the same IEEE operation. Its
  ``weight_decouple=True`` is ``no_prox=True`` here. Its own ``max_grad_norm`` divides by the
  norm plus Adan's ``eps``; fusedopt's ``max_grad_norm`` is ``clip_grad_norm_``'s (norm plus
  1e-6), shared by every algorithm.
  torch's CPU lerp uses a fused multiply-add, fusedopt's lerp does not: an ulp per lerp.
* The official sail-sg code computes ``(m / bc1 + beta2 d / bc2) / denom`` and then
  ``p -= lr * that``: the same number in exact arithmetic, other roundings.
* ``first`` follows the step count: a first step skipped by AMP (the count not advanced)
  leaves the next step first again, so the difference is never taken against a grad that
  was not applied.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .elementwise import lerp, select
from .prologue import ieee_sqrt

NAME = "adan"
STATES = ("exp_avg", "exp_avg_diff", "exp_avg_sq", "prev_grad")
HYPER = ("beta1", "beta2", "beta3", "eps", "weight_decay", "no_prox")
N_SCALARS = 12


def scalars(t: Tensor, lr: Tensor, h: tuple[float, ...]) -> list[Tensor]:
    """fp64 per-tensor scalars ``(w1, w2, beta2, beta3, one_m_beta3, bc3_sqrt, eps,
    step_size, diff_step_size, decay, prox, first)``."""
    beta1, beta2, beta3, eps, weight_decay, no_prox = h
    one = lr * 0.0 + 1.0
    bc1 = 1.0 - torch.pow(one * beta1, t)
    bc2 = 1.0 - torch.pow(one * beta2, t)
    bc3 = 1.0 - torch.pow(one * beta3, t)
    lr_wd = lr * weight_decay
    decay = 1.0 - lr_wd if no_prox else one
    prox = one if no_prox else 1.0 + lr_wd
    first = torch.where(t == 1.0, one, 0.0 * one)
    return [one - beta1, one - beta2, one * beta2, one * beta3, one - beta3, torch.sqrt(bc3),
            one * eps, lr / bc1, (lr * beta2) / bc2, decay, prox, first]


def update(p: Tensor, g: Tensor, states: list[Tensor], s: list[Tensor]
           ) -> tuple[Tensor, list[Tensor]]:
    """One Adan update in opmath; returns ``(p, [m, d, n, prev_grad])``."""
    m, d, n, prev = states
    w1, w2, beta2, beta3, one_m_beta3, bc3_sqrt, eps, step_size, diff_step_size, decay, prox, \
        first = s
    diff = select(first, torch.zeros_like(g), g - prev)
    m = lerp(m, g, w1)
    d = lerp(d, diff, w2)
    u = diff * beta2 + g
    n = n * beta3 + (one_m_beta3 * u) * u
    denom = ieee_sqrt(n) / bc3_sqrt + eps
    p = p * decay
    p = p - step_size * (m / denom)
    p = p - diff_step_size * (d / denom)
    p = p / prox
    return p, [m, d, n, g]
