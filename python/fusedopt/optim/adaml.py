"""AdamL (P1: Xia & Massei 2023, "AdamL: a fast adaptive gradient method incorporating loss").

.. math::

    m_t = \\beta_1 m + (1-\\beta_1) g,\\quad v_t = \\beta_2 v + (1-\\beta_2) g^2 + a_t,\\quad
    \\theta_t = \\theta - \\frac{\\gamma\\, c_t}{1-\\beta_1^t}\\,\\frac{m_t}{\\sqrt{v_t/(1-\\beta_2^t)} + b_t}

with ``(a, b, c)`` computed on the device from the loss gap ``l = f(x_t) - f*``. Adam is
``(0, eps, 1)``, EAdam ``(eps, 0, 1)``.

**The scaling is fusedopt's reading of the paper, not its verified formula** (only the abstract
could be read): see :mod:`fusedopt.reference.adaml` for the two shipped strategies ("gap", the
default: ``c = clamp((l_t / l_1)^gamma, c_min, 1)``; "additive": ``a = eps * l_t^gamma``) and the
f* estimate. Call ``step(loss=...)`` with the (unscaled) loss of the batch the grads came from;
under torch.distributed the loss is averaged over the default process group first, so that
every rank computes the same scalars.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from .. import _stats as S
from ..reference.adaml import SCALINGS, adaml_abc, advance_adaml_state, init_adaml_state
from . import _distributed as D
from . import _validation as V
from ._step_hooks import hooked_step
from .adamw import _AdamFamily

_PREFIX = "adaml_"  # the global loss statistics, in every param's state (Note [global state])


class AdamL(_AdamFamily):
    """Loss-aware Adam (see module doc). ``step(loss=...)`` is required.

    Args:
        params, lr, betas, eps, weight_decay: as :class:`~fusedopt.AdamW` (decay decoupled).
        f_star: the optimal loss if known (e.g. 0.0 for a non-negative loss), or "auto".
        scaling: "gap" (default) or "additive".
        gamma: exponent of the gap (0.5).
        c_min: floor of the "gap" step multiplier (1e-3).
        **common: ``max_grad_norm, backend, capturable, state_dtype, master_weights, telemetry``.
    """

    algorithm = "adaml"
    _needs_prologue = True

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, f_star: float | str = "auto",
                 scaling: str = "gap", gamma: float = 0.5, c_min: float = 1e-3,
                 **common: Any) -> None:
        owner = self._owner()
        if scaling not in SCALINGS:
            raise ValueError(f"{owner}: scaling must be one of {SCALINGS}, got {scaling!r}")
        if f_star != "auto":
            V.check_number(owner, "f_star", f_star, low=-float("inf"))
        V.check_number(owner, "gamma", gamma)
        V.check_number(owner, "c_min", c_min, high=1.0, low_open=True)
        self.f_star = None if f_star == "auto" else float(f_star)
        self.scaling, self.gamma, self.c_min = scaling, float(gamma), float(c_min)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=False, variant="adam", decoupled_weight_decay=True)
        super().__init__(params, defaults, **common)

    @hooked_step
    def step(self, closure: Callable[[], Any] | None = None, *,
             loss: Tensor | float | None = None) -> Any:
        """One step. ``loss``: the loss of the batch (0-d tensor or float, before AMP scaling);
        with a ``closure`` its return value is used."""
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._fused_step(loss)
        return loss

    def _init_global_state(self) -> dict[str, Tensor]:
        device = self._device if self._device is not None else torch.device("cpu")
        return {_PREFIX + k: v for k, v in init_adaml_state(device).items()}

    def _prepare_step(self, loss) -> None:
        owner = self._owner()
        if loss is None:
            raise ValueError(f"{owner}.step needs the loss: call step(loss=loss) (or pass a "
                             "closure that returns it); AdamL scales its step by the loss gap")
        if isinstance(loss, Tensor):
            if loss.numel() != 1:
                raise ValueError(f"{owner}.step: loss must be a scalar, got shape "
                                 f"{tuple(loss.shape)}")
        elif not isinstance(loss, (int, float)) or isinstance(loss, bool):
            raise TypeError(f"{owner}.step: loss must be a tensor or a float, got {type(loss)}")

    def _run_updates(self, groups, stats, use_prologue, loss, *, use_abc: bool = True) -> None:
        state = {k[len(_PREFIX):]: v for k, v in self._globals.items()}
        loss_t = D.mean_loss(torch.as_tensor(loss, device=self._device))
        gap, gap0, ok = advance_adaml_state(state, loss_t, f_star=self.f_star,
                                            found_inf=stats[S.FOUND_INF])
        bad_loss = (~ok).to(torch.float64).reshape(())
        stats[S.FOUND_INF] = torch.maximum(stats[S.FOUND_INF], bad_loss)
        for group, buckets in groups:
            stats[S.ABC:S.ABC + 3] = adaml_abc(gap, gap0, scaling=self.scaling, gamma=self.gamma,
                                               eps=float(group["eps"]), c_min=self.c_min)
            super()._run_updates([(group, buckets)], stats, use_prologue, loss, use_abc=True)
