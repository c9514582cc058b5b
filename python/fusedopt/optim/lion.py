"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"; docs/algorithms.md#lion).

.. math::

    c_t &= \\beta_1 m_{t-1} + (1-\\beta_1) g_t\\\\
    \\theta_t &= \\theta_{t-1} (1 - \\gamma\\lambda) - \\gamma\\,\\mathrm{sign}(c_t)\\\\
    m_t &= \\beta_2 m_{t-1} + (1-\\beta_2) g_t

One state (``exp_avg``), decoupled weight decay, the update a sign: every element moves by
exactly lr (or not at all where ``c`` is 0). The exact operation order is in
:mod:`fusedopt.reference.lion`.
"""
from __future__ import annotations

from typing import Any, Iterable

from torch import Tensor

from . import _validation as V
from ._elementwise import ElementwiseOptimizer, check_betas


class Lion(ElementwiseOptimizer):
    """Lion: the sign of an interpolated momentum, with decoupled weight decay.

    Args:
        params: iterable of tensors, (name, tensor) pairs or param-group dicts.
        lr: learning rate (float, or a one-element fp32/fp64 device tensor). Lion's steps are
            sign-sized: the paper advises an lr 3-10x smaller than AdamW's.
        betas: (beta1, beta2): beta1 interpolates the update, beta2 the momentum.
        weight_decay: decoupled decay, ``p <- p (1 - lr wd)`` before the update (the paper
            advises a wd 3-10x larger than AdamW's).
        **common: ``max_grad_norm, backend, capturable, state_dtype, master_weights, telemetry,
            maximize`` (see :class:`~fusedopt.optim._base.FusedOptimizer`).
    """

    algorithm = "lion"

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0,
                 **common: Any) -> None:
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, (tuple, list)) else betas,
                        weight_decay=weight_decay)
        super().__init__(params, defaults, **common)

    def _validate_group(self, group: dict[str, Any], *, read: bool = False) -> None:
        super()._validate_group(group, read=read)
        owner = self._owner()
        check_betas(owner, group["betas"], 2)
        V.check_number(owner, "weight_decay value", group["weight_decay"])

    def _hyper(self, group: dict[str, Any]) -> tuple[float, ...]:
        beta1, beta2 = check_betas(self._owner(), group["betas"], 2)
        return (beta1, beta2, float(group["weight_decay"]))
