"""Schedule-Free AdamW (Defazio et al. 2024, "The Road Less Scheduled"), as the executable
spec of an element-wise algorithm (:mod:`fusedopt.reference.elementwise`); the update of
``schedulefree`` 1.4.1's ``AdamWScheduleFree``.

Three sequences: ``z`` (the base iterate, the optimizer's SGD-like sequence), ``x`` (the
weighted average of the z's, the point to evaluate) and ``y`` (the interpolation the gradient
is taken at, what the param holds in train mode)::

    y_t = (1 - beta1) z_t + beta1 x_t
    z_{t+1} = z_t - lr_t g(y_t) / (sqrt(v_t / (1 - beta2^t)) + eps) - lr_t wd y_t
    x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1},   c_{t+1} = w_t / sum_{i<=t} w_i

with ``w_t = t^r lr_max^weight_lr_power``. x is never stored: the update moves ``y`` in
place (``y <- lerp(y, z, c) + lr (beta1 (1 - c) - 1) g_hat``), and the optimizer class's
``eval()``/``train()`` turn the param into x and back (``x = lerp(y, z, 1 - 1/beta1)``,
``y = lerp(x, z, 1 - beta1)``). The schedule (warmup, ``c``) is computed on the host by the
optimizer class per param group and step, exactly as schedulefree does, and reaches the kernel
as the call's lr (``group lr * warmup factor``) and the hyperparameter ``ckp1``.

Per tensor, in fp64 from the incremented step t, lr and the hyperparameters
``(beta1, beta2, eps, weight_decay, ckp1)``, then rounded to opmath::

    beta2, one_m_beta2 = 1 - beta2, bc2 = 1 - beta2^t, eps, wd, ckp1,
    y_lr = lr * (beta1 * (1 - ckp1) - 1), lr, has_wd = 1 if wd != 0 else 0

Per element, in opmath, in this order (``csrc/math/schedule_free_adamw.h``,
``triton_kernels/schedule_free_adamw.py``); ``p`` is y::

    v = v * beta2 + (one_m_beta2 * g) * g     (torch's addcmul order)
    denom = sqrt(v / bc2) + eps               (IEEE sqrt)
    gn = g / denom
    gn = gn + y * wd          only where has_wd (a select, never an add of 0)
    y = lerp(y, z, ckp1)
    y = y + y_lr * gn
    z = z - lr * gn

Conventions against ``schedulefree.AdamWScheduleFree`` (tests/test_public_references.py):

* the operations are its foreach path's, in its order; torch's CPU ``lerp`` and ``add(...,
  alpha=)`` use fused multiply-adds, fusedopt does not (an ulp per operation);
* its bias correction uses the group's step counter ``k``; fusedopt uses each tensor's own
  step count (the same while every param steps every step; a step skipped by AMP does not
  advance it, while the host-side schedule ``k`` does advance, see the optimizer class);
* ``z`` is created at construction as a clone of the param (schedulefree creates it at the
  param's first step) and set to the param again at the group's first step, so the two agree.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .elementwise import lerp, select
from .prologue import ieee_sqrt

NAME = "schedule_free_adamw"
STATES = ("z", "exp_avg_sq")
HYPER = ("beta1", "beta2", "eps", "weight_decay", "ckp1")
N_SCALARS = 9


def scalars(t: Tensor, lr: Tensor, h: tuple[float, ...]) -> list[Tensor]:
    """fp64 per-tensor scalars ``(beta2, one_m_beta2, bc2, eps, wd, ckp1, y_lr, lr,
    has_wd)``."""
    beta1, beta2, eps, weight_decay, ckp1 = h
    one = lr * 0.0 + 1.0
    bc2 = 1.0 - torch.pow(one * beta2, t)
    y_lr = lr * (beta1 * (1.0 - ckp1) - 1.0)
    return [one * beta2, one - beta2, bc2, one * eps, one * weight_decay, one * ckp1, y_lr, lr,
            one * (1.0 if weight_decay != 0.0 else 0.0)]


def update(p: Tensor, g: Tensor, states: list[Tensor], s: list[Tensor]
           ) -> tuple[Tensor, list[Tensor]]:
    """One Schedule-Free AdamW update of y (the param) in opmath; returns ``(y, [z, v])``."""
    z, v = states
    beta2, one_m_beta2, bc2, eps, wd, ckp1, y_lr, lr, has_wd = s
    y = p
    v = v * beta2 + (one_m_beta2 * g) * g
    denom = ieee_sqrt(v / bc2) + eps
    gn = g / denom
    gn = select(has_wd, gn + y * wd, gn)
    y = lerp(y, z, ckp1)
    y = y + y_lr * gn
    z = z - lr * gn
    return y, [z, v]
