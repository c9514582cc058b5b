"""Adam family with coupled or decoupled weight decay (docs/algorithms.md#adam-family, P2's
AFMDW), AdamD and the AdamL contract (docs/algorithms.md#adaml), as the executable specification.

One element update, in opmath (fp32; fp64 for fp64 params), in exactly this operation order
(``csrc/math/adam.h`` and ``triton_kernels/adam.py`` follow it line by line)::

    per-step scalars, in fp64 from the tensor's step t (already incremented) and lr:
        bc1 = 1 - beta1^t, bc2 = 1 - beta2^t        (both 1 when bias_correction is off)
        step_size = lr * c / bc1                    (c = 1 unless AdamL)
        bc2_sqrt  = sqrt(bc2)
        decay     = 1 - lr * weight_decay           (decoupled decay only)
    element (every scalar cast to opmath first):
        g = g * coef                                (AMP unscale and clip; only after a prologue)
        g = g + p * wd                              (coupled L2, Adam)       | p = p * decay (AdamW)
        m = lerp(m, g, w), w = 1 - beta1:           (rmsprop: no m; the direction is g)
              m + w * (g - m)          if |w| < 0.5
              g - (g - m) * (1 - w)    otherwise    (torch's lerp; = beta1 m + (1 - beta1) g)
        v = v * beta2 + ((1 - beta2) * g) * g       adam, amsgrad, eadam, rmsprop
          = v * beta2 + ((1 - beta2) * d) * d, d = g - m (new m)      adabelief
          = v - ((1 - beta2) * sign(v - g*g)) * (g*g)                 yogi
        v = v + eps                                 adabelief, eadam (stored in the state)
        v = v + a                                   AdamL only
        vmax = max(vmax, v); use vmax below         amsgrad
        denom = sqrt(v) / bc2_sqrt + b              (b = eps; 0 for eadam; AdamL's b)
        p = p - (step_size * m) / denom

torch.optim's order (``FusedAdamKernel.cpp``, ``_single_tensor_adam``: ``exp_avg.lerp_``,
``exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)``, ``addcdiv_``) is followed where
torch has the algorithm, so Adam/AdamW (incl. amsgrad) and RMSprop match torch.optim to
rounding. All of it is written without fused multiply-adds (torch's vectorized lerp uses one;
kernels are compiled with FMA contraction off so that every backend rounds the same way).

EAdam's published step ``lr * sqrt(bc2) / bc1 * m / sqrt(v)`` is written here as
``(lr / bc1) * m / (sqrt(v) / sqrt(bc2))``: the same number in exact arithmetic.
AdamD (P2) is this update with ``bias_correction=False`` and decoupled decay, i.e.
``p <- p - lr * (m / (sqrt(v) + eps) + wd * p)`` in exact arithmetic (fusedopt's reading of P2).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .prologue import ieee_sqrt

VARIANTS = ("adam", "amsgrad", "adabelief", "eadam", "rmsprop", "yogi")
DECAY_MODES = ("decoupled", "coupled")


@dataclass(frozen=True)
class AdamHyper:
    """Hyperparameters of one param group of the Adam family (runtime values, not modes)."""

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    variant: str = "adam"
    decay: str = "decoupled"
    bias_correction: bool = True


def adam_step_scalars(step: Tensor, lr: float | Tensor, hp: AdamHyper, c: Tensor | None = None):
    """fp64 0-d tensors ``(step_size, bc2_sqrt, decay)`` for a tensor whose step is ``step``.

    ``step`` is the already-incremented step count t (0-d tensor). rmsprop has no bias correction.
    """
    t = step.to(torch.float64)
    lr64 = torch.as_tensor(lr, dtype=torch.float64, device=t.device)
    if hp.bias_correction and hp.variant != "rmsprop":
        bc1 = 1.0 - torch.pow(torch.tensor(hp.beta1, dtype=torch.float64, device=t.device), t)
        bc2 = 1.0 - torch.pow(torch.tensor(hp.beta2, dtype=torch.float64, device=t.device), t)
    else:
        bc1 = torch.ones((), dtype=torch.float64, device=t.device)
        bc2 = torch.ones((), dtype=torch.float64, device=t.device)
    cc = c.to(torch.float64) if c is not None else 1.0
    step_size = lr64 * cc / bc1
    bc2_sqrt = torch.sqrt(bc2)
    decay = 1.0 - lr64 * hp.weight_decay
    return step_size, bc2_sqrt, decay


def lerp(m: Tensor, g: Tensor, w: float) -> Tensor:
    """``m + w (g - m)``, in torch's two-branch form (exact at w = 1, accurate for large w).

    ``w`` is rounded to opmath once, as the kernels do (on the host: no tensor is read)."""
    wt = float(np.float32(w)) if m.dtype == torch.float32 else float(w)
    if abs(wt) < 0.5:
        return m + wt * (g - m)
    return g - (g - m) * (1.0 - wt)  # 1 - wt is exact in fp32 for wt in [0.5, 1]


def adam_family_update(
    p: Tensor,
    g: Tensor,
    m: Tensor | None,
    v: Tensor,
    vmax: Tensor | None,
    *,
    step_size: Tensor,
    bc2_sqrt: Tensor,
    decay: Tensor,
    hp: AdamHyper,
    coef: Tensor | None = None,
    a: Tensor | None = None,
    b: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
    """One update of one tensor; every tensor argument is already in opmath. Returns new values.

    ``a``/``b`` are AdamL's scalars (``c`` is folded into ``step_size``); None means Adam's
    ``a = 0, b = eps``.
    """
    op = p.dtype
    if coef is not None:
        g = g * coef.to(op)
    wd = hp.weight_decay
    if wd != 0.0:
        if hp.decay == "coupled":
            g = g + p * wd
        else:
            p = p * decay.to(op)
    one_m_b2 = 1.0 - hp.beta2
    if hp.variant == "rmsprop":
        direction = g
    else:
        m = lerp(m, g, 1.0 - hp.beta1)
        direction = m
    if hp.variant == "adabelief":
        d = g - m
        v = v * hp.beta2 + (one_m_b2 * d) * d
    elif hp.variant == "yogi":
        g2 = g * g
        v = v - (one_m_b2 * torch.sign(v - g2)) * g2
    else:
        v = v * hp.beta2 + (one_m_b2 * g) * g
    if hp.variant in ("adabelief", "eadam"):
        v = v + hp.eps
    if a is not None:
        v = v + a.to(op)
    if hp.variant == "amsgrad":
        vmax = torch.maximum(vmax, v)
        vd = vmax
    else:
        vd = v
    if b is not None:
        denom = ieee_sqrt(vd) / bc2_sqrt.to(op) + b.to(op)
    elif hp.variant == "eadam":
        denom = ieee_sqrt(vd) / bc2_sqrt.to(op)
    else:
        denom = ieee_sqrt(vd) / bc2_sqrt.to(op) + hp.eps
    p = p - (step_size.to(op) * direction) / denom
    return p, m, v, vmax
