"""AdamD (P2: Ding, Xiao & Toh 2023, "Adam-family methods with decoupled weight decay").

.. math::

    m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t,\\quad
    v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2,\\quad
    \\theta_t = \\theta_{t-1} - \\gamma_t \\Big(\\frac{m_t}{\\sqrt{v_t}+\\epsilon}
                + \\lambda\\,\\theta_{t-1}\\Big)

**fusedopt's reading of P2, not its verified algorithm box** (the box could not be read here):
the moments are driven by the loss gradient only (the decay never enters m or v), the decay is
applied to the parameter separately, there is no bias correction and the step size need not
vanish. It runs as the Adam-family update with ``bias_correction=False`` and decoupled decay,
which is the formula above in exact arithmetic. Optional ``tie_betas=(c1, c2)`` sets
``beta_i = 1 - c_i * lr`` each step (the paper's coupling of the moment coefficients to the step
size); it needs a float lr.
"""
from __future__ import annotations

from typing import Any, Iterable

from torch import Tensor

from . import _validation as V
from .adamw import _AdamFamily


class AdamD(_AdamFamily):
    """AdamD: Adam without bias correction, decay decoupled from the moments (see module doc).

    Args:
        params, lr, betas, eps, weight_decay: as :class:`~fusedopt.AdamW`.
        tie_betas: None, or ``(c1, c2)`` for ``beta_i = 1 - c_i * lr`` (float lr only).
        **common: ``max_grad_norm, backend, capturable, state_dtype, master_weights, telemetry``.
    """

    algorithm = "adamd"
    _bias_correction = False

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, *, tie_betas: tuple[float, float] | None = None,
                 **common: Any) -> None:
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=False, variant="adam", decoupled_weight_decay=True,
                        tie_betas=None if tie_betas is None else tuple(tie_betas))
        super().__init__(params, defaults, **common)

    def _validate_group(self, group: dict[str, Any], *, read: bool = False) -> None:
        super()._validate_group(group, read=read)
        tie = group.get("tie_betas")
        if tie is not None:
            owner = self._owner()
            if isinstance(group["lr"], Tensor):
                raise ValueError(f"{owner}: tie_betas needs a float lr (beta = 1 - c * lr)")
            if len(tie) != 2:
                raise ValueError(f"{owner}: tie_betas must be a pair (c1, c2), got {tie!r}")
            for i, c in enumerate(tie):
                V.check_number(owner, f"tie_betas[{i}]", c)
                V.check_number(owner, f"tied beta{i + 1} = 1 - c * lr", 1.0 - c * group["lr"],
                               high=1.0, high_open=True)

    def _hyper(self, group):
        hp = super()._hyper(group)
        tie = group.get("tie_betas")
        if tie is None:
            return hp
        lr = float(group["lr"])
        return type(hp)(beta1=1.0 - tie[0] * lr, beta2=1.0 - tie[1] * lr, eps=hp.eps,
                        weight_decay=hp.weight_decay, variant=hp.variant, decay=hp.decay,
                        bias_correction=False)
