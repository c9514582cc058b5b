"""ADOPT (Taniguchi et al. 2024, "ADOPT: Modified Adam Can Converge with Any beta2 with the
Optimal Rate"; docs/algorithms.md#adopt).

.. math::

    v_1 &= g_1^2 \\quad\\text{(the first step only seeds v)}\\\\
    m_t &= \\beta_1 m_{t-1} + (1-\\beta_1)\\,
        \\mathrm{clip}\\big(g_t / \\max(\\sqrt{v_{t-1}}, \\epsilon),\\ t^{1/4}\\big)\\\\
    \\theta_t &= \\theta_{t-1} - \\gamma m_t,\\quad
    v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2

The gradient is normalised by the previous second moment, before the momentum: the paper's
point is that this converges for any beta2 (default 0.9999). Two states: ``exp_avg``,
``exp_avg_sq``. The exact operation order is in :mod:`fusedopt.reference.adopt`.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

from torch import Tensor

from . import _validation as V
from ._elementwise import ElementwiseOptimizer, check_betas


class ADOPT(ElementwiseOptimizer):
    """ADOPT: Adam normalised by the previous second moment, with a clipped normalised
    gradient (see module doc); pytorch-optimizer's ``ADOPT`` defaults.

    Args:
        params: iterable of tensors, (name, tensor) pairs or param-group dicts.
        lr: learning rate (float, or a one-element fp32/fp64 device tensor).
        betas: (beta1, beta2): beta1 of the momentum of normalised grads, beta2 of v.
        eps: lower bound of ``sqrt(v)`` (a clamp, not an addition).
        weight_decay: L2 added to the gradient (``g + wd p``, which v sees too), or decoupled
            ``p (1 - lr wd)`` with ``weight_decouple=True``; both from the first step on.
        weight_decouple: decoupled instead of coupled decay (pytorch-optimizer's name).
        clip_exponent: the normalised gradient is clamped to ``[-t^e, t^e]`` at the param's
            step t (from t = 2; pytorch-optimizer's default ``clip_lambda`` is ``step ** 0.25``);
            ``None`` for no clip.
        **common: ``max_grad_norm, backend, capturable, state_dtype, master_weights, telemetry,
            maximize`` (see :class:`~fusedopt.optim._base.FusedOptimizer`).
    """

    algorithm = "adopt"

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.9999), eps: float = 1e-6,
                 weight_decay: float = 0.0, weight_decouple: bool = False,
                 clip_exponent: float | None = 0.25, **common: Any) -> None:
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, (tuple, list)) else betas,
                        eps=eps, weight_decay=weight_decay, weight_decouple=weight_decouple,
                        clip_exponent=clip_exponent)
        super().__init__(params, defaults, **common)

    def _validate_group(self, group: dict[str, Any], *, read: bool = False) -> None:
        super()._validate_group(group, read=read)
        owner = self._owner()
        check_betas(owner, group["betas"], 2)
        V.check_number(owner, "epsilon value", group["eps"])
        V.check_number(owner, "weight_decay value", group["weight_decay"])
        if not isinstance(group["weight_decouple"], bool):
            raise TypeError(f"{owner}: weight_decouple must be a bool, got "
                            f"{type(group['weight_decouple']).__name__}")
        if group["clip_exponent"] is not None:
            V.check_number(owner, "clip_exponent value", group["clip_exponent"],
                           low=-math.inf)

    def _hyper(self, group: dict[str, Any]) -> tuple[float, ...]:
        beta1, beta2 = check_betas(self._owner(), group["betas"], 2)
        clip = group["clip_exponent"]
        # fusedopt.reference.adopt.HYPER order
        return (beta1, beta2, float(group["eps"]), float(group["weight_decay"]),
                1.0 if group["weight_decouple"] else 0.0, 0.0 if clip is None else 1.0,
                0.0 if clip is None else float(clip))
