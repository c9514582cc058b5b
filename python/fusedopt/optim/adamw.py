"""Adam and AdamW with the AFMDW variants (docs/algorithms.md#adam-family; P2).

.. math::

    g_t &= \\mathrm{coef}\\, \\nabla f(\\theta_{t-1})\\ (+\\ \\lambda \\theta_{t-1}\\ \\text{coupled})\\\\
    \\theta &\\leftarrow \\theta (1 - \\gamma \\lambda)\\quad\\text{(decoupled)}\\\\
    m_t &= \\beta_1 m_{t-1} + (1-\\beta_1) g_t,\\quad v_t = \\beta_2 v_{t-1} + (1-\\beta_2) U_t\\\\
    \\theta_t &= \\theta - \\frac{\\gamma}{1-\\beta_1^t}\\,
        \\frac{m_t}{\\sqrt{v_t}/\\sqrt{1-\\beta_2^t} + \\epsilon}

with ``U = g^2`` (adam, amsgrad with ``max(v)`` in the denominator, rmsprop with beta1 = 0 and
no bias correction), ``(g - m)^2`` plus ``eps`` stored (adabelief), ``g^2`` plus ``eps`` stored
and no outer eps (eadam), or Yogi's sign rule. The exact operation order is in
:mod:`fusedopt.reference.adam_family`.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor

from ..reference.adam_family import VARIANTS, AdamHyper
from . import _validation as V
from ._base import FusedOptimizer

#: eps defaults that differ from 1e-8 (AdaBelief's official default)
VARIANT_EPS = {"adabelief": 1e-16}


class _AdamFamily(FusedOptimizer):
    """Shared constructor, state and update call of Adam, AdamW, AdamD and AdamL."""

    _bias_correction = True

    def _validate_group(self, group: dict[str, Any], *, read: bool = False) -> None:
        super()._validate_group(group, read=read)
        owner = self._owner()
        V.check_betas(owner, group["betas"])
        V.check_number(owner, "epsilon value", group["eps"])
        V.check_number(owner, "weight_decay value", group["weight_decay"])
        if group.get("variant", "adam") not in VARIANTS:
            raise ValueError(f"{owner}: variant must be one of {VARIANTS}, got {group['variant']!r}")
        if group.get("amsgrad") and group.get("variant", "adam") not in ("adam", "amsgrad"):
            raise ValueError(f"{owner}: amsgrad=True combines only with variant='adam'")

    @staticmethod
    def _variant(group: dict[str, Any]) -> str:
        return "amsgrad" if group.get("amsgrad") else group.get("variant", "adam")

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        variant = self._variant(group)
        keys = ("exp_avg_sq",) if variant == "rmsprop" else ("exp_avg", "exp_avg_sq")
        return keys + ("max_exp_avg_sq",) if variant == "amsgrad" else keys

    def _init_param_state(self, p: Tensor, group: dict[str, Any], state_dtype: torch.dtype
                          ) -> dict[str, Tensor]:
        # zeros_like keeps a dense param's layout (Note [kernel layout], optim/_layout.py)
        return {k: torch.zeros_like(p, dtype=state_dtype) for k in self._state_keys(group)}

    def _import_param_state(self, p: Tensor, saved: Any, group_step: Any, group: dict,
                            label: str) -> dict[str, Any]:
        """torch.optim.RMSprop calls v ``square_avg``: accept it for ``variant="rmsprop"``."""
        if isinstance(saved, dict) and "square_avg" in saved:
            saved = {("exp_avg_sq" if k == "square_avg" else k): v for k, v in saved.items()}
        return super()._import_param_state(p, saved, group_step, group, label)

    def _hyper(self, group: dict[str, Any]) -> AdamHyper:
        beta1, beta2 = V.check_betas(self._owner(), group["betas"])
        return AdamHyper(beta1=beta1, beta2=beta2, eps=float(group["eps"]),
                         weight_decay=float(group["weight_decay"]), variant=self._variant(group),
                         decay="decoupled" if group["decoupled_weight_decay"] else "coupled",
                         bias_correction=self._bias_correction)

    def _run_updates(self, groups, stats, use_prologue, loss, *, use_abc: bool = False) -> None:
        for group, buckets in groups:
            hp = self._group_hyper(group)
            for b in buckets:
                self._backend.adam_step_(b, stats, lr=group["lr"], hp=hp,
                                         use_prologue=use_prologue, use_abc=use_abc,
                                         telemetry=self.telemetry, maximize=group["maximize"])


class Adam(_AdamFamily):
    """Adam (torch.optim.Adam semantics: coupled L2 decay unless ``decoupled_weight_decay``).

    Args:
        params: iterable of tensors, (name, tensor) pairs or param-group dicts.
        lr: learning rate (float, or a one-element fp32/fp64 device tensor).
        betas: (beta1, beta2); for ``variant="rmsprop"`` beta2 is RMSprop's alpha.
        eps: denominator term; None takes the variant's default (1e-8; 1e-16 for adabelief).
        weight_decay: L2 coefficient (coupled) or decoupled decay (AdamW).
        amsgrad: use the running max of v (variant "amsgrad").
        variant: "adam" | "amsgrad" | "adabelief" | "eadam" | "rmsprop" | "yogi".
        decoupled_weight_decay: True gives AdamW.
        **common: ``max_grad_norm, backend, capturable, state_dtype, master_weights, telemetry``
            (see :class:`~fusedopt.optim._base.FusedOptimizer`).
    """

    algorithm = "adam"
    _default_wd = 0.0
    _default_decoupled = False

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float | None = None,
                 weight_decay: float | None = None, amsgrad: bool = False, variant: str = "adam",
                 *, decoupled_weight_decay: bool | None = None, **common: Any) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"{self._owner()}: variant must be one of {VARIANTS}, got {variant!r}")
        defaults = dict(
            lr=lr, betas=tuple(betas) if isinstance(betas, (tuple, list)) else betas,
            eps=VARIANT_EPS.get(variant, 1e-8) if eps is None else eps,
            weight_decay=self._default_wd if weight_decay is None else weight_decay,
            amsgrad=bool(amsgrad), variant=variant,
            decoupled_weight_decay=(self._default_decoupled if decoupled_weight_decay is None
                                    else bool(decoupled_weight_decay)))
        super().__init__(params, defaults, **common)


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (torch.optim.AdamW semantics), default wd 1e-2.

    Same arguments as :class:`Adam`; ``weight_decay`` multiplies ``lr`` and shrinks the param
    before the update, ``p <- p (1 - lr wd)``.
    """

    algorithm = "adamw"
    _default_wd = 1e-2
    _default_decoupled = True
