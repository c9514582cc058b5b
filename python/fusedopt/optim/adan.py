"""Adan (Xie et al. 2022/2024, "Adan: Adaptive Nesterov Momentum Algorithm for Faster
Optimizing Deep Models"; docs/algorithms.md#adan).

.. math::

    \\Delta_t &= g_t - g_{t-1}\\ (0\\ \\text{at}\\ t = 1),\\quad
    m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t,\\quad
    d_t = \\beta_2 d_{t-1} + (1-\\beta_2) \\Delta_t\\\\
    n_t &= \\beta_3 n_{t-1} + (1-\\beta_3) (g_t + \\beta_2 \\Delta_t)^2,\\quad
    \\eta_t = \\gamma / (\\sqrt{n_t / (1-\\beta_3^t)} + \\epsilon)\\\\
    \\theta_t &= \\Big(\\theta_{t-1} - \\eta_t \\big(\\tfrac{m_t}{1-\\beta_1^t}
        + \\beta_2 \\tfrac{d_t}{1-\\beta_2^t}\\big)\\Big) / (1 + \\gamma\\lambda)

(``no_prox=True``: ``theta_{t-1} (1 - gamma lambda)`` before the update instead of the
division after it). Betas in the official code's convention (``1 -`` the paper's). Four
states: ``exp_avg``, ``exp_avg_diff``, ``exp_avg_sq``, ``prev_grad``. The exact operation
order is in :mod:`fusedopt.reference.adan`.
"""
from __future__ import annotations

from typing import Any, Iterable

from torch import Tensor

from . import _validation as V
from ._elementwise import ElementwiseOptimizer, check_betas


class Adan(ElementwiseOptimizer):
    """Adan: Nesterov momentum estimated from the gradient difference (see module doc).

    Args:
        params: iterable of tensors, (name, tensor) pairs or param-group dicts.
        lr: learning rate (float, or a one-element fp32/fp64 device tensor).
        betas: (beta1, beta2, beta3) of m, of the gradient-difference moment d and of n.
        eps: added to the bias-corrected ``sqrt(n)``.
        weight_decay: proximal decay ``p / (1 + lr wd)`` after the update, or decoupled
            ``p (1 - lr wd)`` before it with ``no_prox=True``.
        no_prox: decoupled instead of proximal decay (pytorch-optimizer's
            ``weight_decouple=True``).
        **common: ``max_grad_norm, backend, capturable, state_dtype, master_weights, telemetry,
            maximize`` (see :class:`~fusedopt.optim._base.FusedOptimizer`).
    """

    algorithm = "adan"

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float, float] = (0.98, 0.92, 0.99), eps: float = 1e-8,
                 weight_decay: float = 0.0, no_prox: bool = False, **common: Any) -> None:
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, (tuple, list)) else betas,
                        eps=eps, weight_decay=weight_decay, no_prox=no_prox)
        super().__init__(params, defaults, **common)

    def _validate_group(self, group: dict[str, Any], *, read: bool = False) -> None:
        super()._validate_group(group, read=read)
        owner = self._owner()
        check_betas(owner, group["betas"], 3)
        V.check_number(owner, "epsilon value", group["eps"])
        V.check_number(owner, "weight_decay value", group["weight_decay"])
        if not isinstance(group["no_prox"], bool):
            raise TypeError(f"{owner}: no_prox must be a bool, got "
                            f"{type(group['no_prox']).__name__}")

    def _hyper(self, group: dict[str, Any]) -> tuple[float, ...]:
        beta1, beta2, beta3 = check_betas(self._owner(), group["betas"], 3)
        return (beta1, beta2, beta3, float(group["eps"]), float(group["weight_decay"]),
                1.0 if group["no_prox"] else 0.0)
