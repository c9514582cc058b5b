"""IAN-SGD and its baselines NSGD, NSGDm, Clip-SGD (docs/algorithms.md#iansgd, P5), as the
executable spec.

All of them step ``p <- p - s * d`` with one global scale ``s`` (a 0-d device tensor) and a
direction ``d``: the (unscaled, clipped) grad, or the momentum for NSGDm. Element order
(``csrc/math/sgd.h``, ``triton_kernels/sgd.py``)::

    g = g * coef                          (only after a prologue)
    m = m * (1 - rho) + g * rho           (NSGDm, its own pass that also sums m^2)
    p = p - s * d

The normalizer, global::

    h = max(c * n + delta, floor)         n = ||g'|| of an independent batch B'  (IAN-SGD)
                                            = ||g|| of the same batch           (NSGD, Clip-SGD)
                                            = ||m|| of the new momentum         (NSGDm)
    s = lr * exp(-beta * log(h))          (lr / h^beta, computed on the device)

NSGD is ``normalizer="same", beta=1``; Clip-SGD is ``normalizer="same", beta=1`` with a floor;
AdaGrad-Norm uses the same pass with ``s = lr / (sqrt(B) + eps)``.
"""
from __future__ import annotations

import torch
from torch import Tensor


def normalized_scale(
    norm: Tensor, lr: float | Tensor, *, beta: float, delta: float, floor: float, norm_scale: float
) -> Tensor:
    """fp64 0-d ``lr / max(norm_scale * norm + delta, floor)^beta``."""
    n = norm.to(torch.float64)
    h = torch.clamp(norm_scale * n + delta, min=floor)
    lr64 = torch.as_tensor(lr, dtype=torch.float64, device=n.device)
    return lr64 * torch.exp(-beta * torch.log(h))


def momentum_update(m: Tensor, g: Tensor, *, rho: float, coef: Tensor | None = None) -> Tensor:
    """NSGDm's momentum ``m <- m * (1 - rho) + g * rho`` in opmath."""
    if coef is not None:
        g = g * coef.to(g.dtype)
    return m * (1.0 - rho) + g * rho


def scaled_sgd_update(p: Tensor, d: Tensor, *, scale: Tensor, coef: Tensor | None = None) -> Tensor:
    """``p <- p - s * (coef * d)`` in opmath (coef only when d is a grad after a prologue)."""
    if coef is not None:
        d = d * coef.to(d.dtype)
    return p - scale.to(p.dtype) * d
