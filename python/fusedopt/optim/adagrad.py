"""Adagrad, coordinate-wise and AdaGrad-Norm (docs/algorithms.md#adagrad; P3).

.. math::

    s_t = s_{t-1} + g_t^2,\\qquad
    \\theta_t = \\theta_{t-1} - \\frac{\\gamma}{1 + (t-1)\\eta}\\,\\frac{g_t}{\\sqrt{s_t} + \\epsilon}

(torch.optim.Adagrad semantics: coupled L2 decay, ``lr_decay`` eta, ``initial_accumulator_value``).
With ``norm=True`` (AdaGrad-Norm) one global scalar ``B_t = B_{t-1} + ||g_t||^2`` over every
tensor replaces ``s``: ``theta <- theta - lr g / (sqrt(B) + eps)``; B is taken from the fused
norm pass, so the step is still two passes over memory.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor

from .. import _stats as S
from ..reference.adagrad import adagrad_norm_scale
from . import _validation as V
from ._base import FusedOptimizer

_NORM_KEY = "norm_sum"  # AdaGrad-Norm's B, in every param's state (Note [global state])


class Adagrad(FusedOptimizer):
    """Adagrad (coordinate-wise, torch.optim semantics) or AdaGrad-Norm (``norm=True``).

    Args:
        params: iterable of tensors, (name, tensor) pairs or param-group dicts.
        lr: learning rate (float or one-element device tensor). lr_decay: eta above.
        weight_decay: coupled L2 coefficient. initial_accumulator_value: initial s (or B).
        eps: denominator term (1e-10 as torch).
        norm: AdaGrad-Norm (one global accumulator B; state key ``norm_sum``).
        **common: ``max_grad_norm, backend, capturable, state_dtype, master_weights, telemetry``.
    """

    algorithm = "adagrad"

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, norm: bool = False, **common: Any) -> None:
        self.norm = bool(norm)
        self._needs_grad_norm = self.norm
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, eps=eps)
        super().__init__(params, defaults, **common)

    def _validate_group(self, group: dict[str, Any], *, read: bool = False) -> None:
        super()._validate_group(group, read=read)
        owner = self._owner()
        V.check_number(owner, "lr_decay value", group["lr_decay"])
        V.check_number(owner, "weight_decay value", group["weight_decay"])
        V.check_number(owner, "initial_accumulator_value value",
                       group["initial_accumulator_value"])
        V.check_number(owner, "epsilon value", group["eps"])
        if getattr(self, "norm", False) and (group["lr_decay"] or group["weight_decay"]):
            raise ValueError(f"{owner}: norm=True (AdaGrad-Norm) has no lr_decay or weight_decay")

    def _init_global_state(self) -> dict[str, Tensor]:
        if not self.norm:
            return {}
        # shape (1,), not 0-d: torch 2.13's inductor drops in-place updates of 0-d fp64 tensors
        return {_NORM_KEY: torch.full((1,), float(self.defaults["initial_accumulator_value"]),
                                      dtype=torch.float64, device=self._device)}

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        return () if self.norm else ("sum",)

    def _init_param_state(self, p: Tensor, group: dict[str, Any], state_dtype: torch.dtype
                          ) -> dict[str, Tensor]:
        if self.norm:
            return {}
        # full_like keeps a dense param's layout (Note [kernel layout], optim/_layout.py)
        return {"sum": torch.full_like(p, float(group["initial_accumulator_value"]),
                                       dtype=state_dtype)}

    def _run_updates(self, groups, stats, use_prologue, loss) -> None:
        if not self.norm:
            for group, buckets in groups:
                for b in buckets:
                    # fusedopt.reference.adagrad.HYPER order: lr_decay, eps, weight_decay
                    self._backend.elementwise_step_(
                        b, stats, algo="adagrad", lr=group["lr"],
                        hyper=(float(group["lr_decay"]), float(group["eps"]),
                               float(group["weight_decay"])),
                        use_prologue=use_prologue, telemetry=self.telemetry,
                        maximize=group["maximize"])
            return
        acc = self._globals[_NORM_KEY]
        skip = stats[S.FOUND_INF] != 0
        # ||coef * g||^2 = clip^2 * sum((g * inv)^2): the norm pass already has it.
        acc.copy_(torch.where(skip, acc, acc + stats[S.CLIP_COEF] ** 2 * stats[S.GRAD_SQ]))
        for group, buckets in groups:
            scale = adagrad_norm_scale(acc, group["lr"], float(group["eps"]))
            stats[S.SCALE] = scale.reshape(())
            for b in buckets:
                self._backend.sgd_step_(b, stats, direction="grad", use_prologue=use_prologue,
                                        telemetry=self.telemetry, maximize=group["maximize"])
