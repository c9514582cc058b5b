"""IAN-SGD and its baselines NSGD, NSGDm, Clip-SGD (docs/algorithms.md#iansgd; P5: Yang, Tripp, Sun,
Zou & Zhou, "Independently-normalized SGD for generalized-smooth nonconvex optimization", TMLR
2025).

.. math::

    h_t = \\max(c\\,\\|\\nabla f_{B'}(x_t)\\| + \\delta,\\ \\Gamma),\\qquad
    x_{t+1} = x_t - \\frac{\\gamma}{h_t^{\\beta}}\\,\\nabla f_{B}(x_t)

with B' an independent batch (``record_normalizer()`` after its backward), B the direction
batch (``step()`` after its backward). ``normalizer="same"`` uses ``||grad f_B||`` (NSGD with
beta = 1; Clip-SGD with a floor), ``"momentum"`` uses the norm of the momentum
``m <- (1 - rho) m + rho g`` and steps along m (NSGDm). Defaults follow the authors' code:
beta = 2/3, delta = 1e-2, floor Gamma = 0.2, c (``norm_scale``) = 1.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor

from .. import _stats as S
from ..reference.sgd_family import normalized_scale
from . import _distributed as D
from . import _validation as V
from ._base import FusedOptimizer

NORMALIZERS = ("independent", "same", "momentum")


class IANSGD(FusedOptimizer):
    """Independently normalized SGD with clipping (see module doc).

    Usage with ``normalizer="independent"``::

        loss_fn(model(x_b2)).backward(); opt.record_normalizer(); opt.zero_grad()
        loss_fn(model(x_b)).backward();  opt.step();              opt.zero_grad()

    Args:
        params: iterable of tensors, (name, tensor) pairs or param-group dicts.
        lr: gamma (float or one-element device tensor).
        beta: exponent of the normalizer (2/3). delta: added to the norm. floor: Gamma.
        norm_scale: c in ``c * ||g'|| + delta``.
        normalizer: "independent" | "same" | "momentum".
        momentum: rho of NSGDm (``normalizer="momentum"``).
        **common: ``max_grad_norm, backend, capturable, state_dtype, master_weights, telemetry``.
    """

    algorithm = "iansgd"

    def __init__(self, params: Iterable, lr: float | Tensor = 0.1, beta: float = 2.0 / 3.0,
                 delta: float = 1e-2, floor: float = 0.2, norm_scale: float = 1.0,
                 normalizer: str = "independent", momentum: float = 0.1, **common: Any) -> None:
        if normalizer not in NORMALIZERS:
            raise ValueError(f"{self._owner()}: normalizer must be one of {NORMALIZERS}, "
                             f"got {normalizer!r}")
        self.normalizer = normalizer
        self._needs_grad_norm = normalizer == "same"
        self._recorded = False
        defaults = dict(lr=lr, beta=beta, delta=delta, floor=floor, norm_scale=norm_scale,
                        momentum=momentum)
        super().__init__(params, defaults, **common)

    def _validate_group(self, group: dict[str, Any], *, read: bool = False) -> None:
        super()._validate_group(group, read=read)
        owner = self._owner()
        V.check_number(owner, "beta", group["beta"])
        V.check_number(owner, "delta", group["delta"])
        V.check_number(owner, "floor", group["floor"])
        V.check_number(owner, "norm_scale", group["norm_scale"])
        V.check_number(owner, "momentum", group["momentum"], high=1.0, low_open=True)
        if group["delta"] == 0 and group["floor"] == 0:
            raise ValueError(f"{owner}: delta and floor are both 0, so the normalizer "
                             "h = max(c * ||g|| + delta, floor) can be 0; set delta > 0 or floor > 0")

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.normalizer == "momentum" else ()

    def _init_param_state(self, p: Tensor, group: dict[str, Any], state_dtype: torch.dtype
                          ) -> dict[str, Tensor]:
        # zeros_like keeps a dense param's layout (Note [kernel layout], optim/_layout.py)
        return {k: torch.zeros_like(p, dtype=state_dtype) for k in self._state_keys(group)}

    @torch.no_grad()
    def record_normalizer(self, grad_scale: Tensor | None = None) -> None:
        """Store ``||g'||`` of the grads now in ``.grad`` (the independent batch B') on the
        device: one fused norm pass. Under AMP pass the loss scale the B' loss was multiplied
        by (``grad_scale=scaler.scale_tensor`` or ``GradScaler.get_scale`` as a tensor) so the
        norm is of the unscaled grads; a non-finite B' grad then skips the next step."""
        plan = self._plan()  # validates the grads, as a step would
        try:
            if not plan.all_grads:
                raise ValueError(f"{self._owner()}.record_normalizer: no param has a grad")
            self._prologue(plan.all_grads, S.AUX, grad_scale, None, None, True)
        finally:
            plan.release()
        self._recorded = True

    def _prepare_step(self, loss) -> None:
        if self.normalizer == "independent" and not self._recorded:
            raise ValueError(f"{self._owner()}.step: normalizer='independent' needs "
                             "record_normalizer() after the backward of the independent batch")

    def _scale(self, group: dict[str, Any], norm: Tensor) -> Tensor:
        return normalized_scale(norm, group["lr"], beta=float(group["beta"]),
                                delta=float(group["delta"]), floor=float(group["floor"]),
                                norm_scale=float(group["norm_scale"]))

    def _run_updates(self, groups, stats, use_prologue, loss) -> None:
        direction = "grad"
        if self.normalizer == "independent":
            if use_prologue:  # under AMP a non-finite independent batch skips the step too
                stats[S.FOUND_INF] = torch.maximum(stats[S.FOUND_INF], stats[S.AUX + 2])
            norm = stats[S.AUX_NORM]
            self._recorded = False
        elif self.normalizer == "same":
            # ||g|| of the grads the step uses: after unscale and clip (docs/algorithms.md notation)
            norm = stats[S.GRAD_NORM] * stats[S.CLIP_COEF]
        else:
            stats[S.MOMENTUM_SQ].zero_()
            for group, buckets in groups:
                for b in buckets:
                    self._backend.momentum_step_(b, stats, rho=float(group["momentum"]),
                                                 use_prologue=use_prologue,
                                                 maximize=group["maximize"])
            if self._dist_groups:
                D.all_reduce_(stats[S.MOMENTUM_SQ:S.MOMENTUM_SQ + 1], self._dist_groups)
            norm = torch.sqrt(stats[S.MOMENTUM_SQ])
            direction = "momentum"
        for group, buckets in groups:
            stats[S.SCALE] = self._scale(group, norm)
            for b in buckets:
                self._backend.sgd_step_(b, stats, direction=direction,
                                        use_prologue=use_prologue, telemetry=self.telemetry,
                                        maximize=group["maximize"])


class NSGD(IANSGD):
    """Normalized SGD: ``h = ||g|| + delta`` of the same batch, beta = 1 (P5's baseline)."""

    algorithm = "nsgd"

    def __init__(self, params: Iterable, lr: float | Tensor = 0.1, delta: float = 1e-2,
                 **common: Any) -> None:
        super().__init__(params, lr=lr, beta=1.0, delta=delta, floor=0.0, normalizer="same",
                         **common)


class NSGDm(IANSGD):
    """Normalized SGD with momentum: steps along m, ``h = ||m|| + delta``, beta = 1."""

    algorithm = "nsgdm"

    def __init__(self, params: Iterable, lr: float | Tensor = 0.1, momentum: float = 0.1,
                 delta: float = 1e-2, **common: Any) -> None:
        super().__init__(params, lr=lr, beta=1.0, delta=delta, floor=0.0, normalizer="momentum",
                         momentum=momentum, **common)


class ClipSGD(IANSGD):
    """Clipped SGD: ``h = max(||g|| + delta, floor)`` of the same batch, beta = 1."""

    algorithm = "clip_sgd"

    def __init__(self, params: Iterable, lr: float | Tensor = 0.1, delta: float = 1e-2,
                 floor: float = 0.2, **common: Any) -> None:
        super().__init__(params, lr=lr, beta=1.0, delta=delta, floor=floor, normalizer="same",
                         **common)
