"""The optimizer-class side of the element-wise algorithms (Lion, Adan, Schedule-Free AdamW):
one ``elementwise_step_`` call per bucket (:mod:`fusedopt.reference.elementwise`).

A subclass names its algorithm (``algorithm``, the reference module's ``NAME``), validates
its hyperparameters and maps a param group to the HYPER tuple, in the reference module's
order (``_hyper``). The state streams are the module's ``STATES``, zeros unless
``_init_param_state`` says otherwise.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..reference import elementwise
from . import _validation as V
from ._base import FusedOptimizer


def check_betas(owner: str, betas: Any, n: int) -> tuple[float, ...]:
    """``n`` betas, each in [0, 1), as floats (numbers or one-element CPU tensors); torch's
    message for a bad one (``Invalid beta parameter at index 1: 1.0``)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != n:
        raise ValueError(f"{owner}: betas must be a tuple of {n} floats, got {betas!r}")
    return tuple(V.beta_value(owner, i, b) for i, b in enumerate(betas))


class ElementwiseOptimizer(FusedOptimizer):
    """A :class:`FusedOptimizer` whose update is one element-wise algorithm."""

    def _hyper(self, group: dict[str, Any]) -> tuple[float, ...]:
        """The group's hyperparameters as floats, in the reference module's HYPER order."""
        raise NotImplementedError

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        return tuple(elementwise.spec(self.algorithm).STATES)

    def _init_param_state(self, p: Tensor, group: dict[str, Any], state_dtype: torch.dtype
                          ) -> dict[str, Tensor]:
        # zeros_like keeps a dense param's layout (Note [kernel layout], optim/_layout.py)
        return {k: torch.zeros_like(p, dtype=state_dtype) for k in self._state_keys(group)}

    def _group_lr(self, group: dict[str, Any]) -> float | Tensor:
        """The lr of this step's call (the group's; Schedule-Free scales it)."""
        return group["lr"]

    def _run_updates(self, groups, stats, use_prologue, loss) -> None:
        for group, buckets in groups:
            hyper = self._group_hyper(group)
            lr = self._group_lr(group)
            for b in buckets:
                self._backend.elementwise_step_(
                    b, stats, algo=self.algorithm, lr=lr, hyper=hyper,
                    use_prologue=use_prologue, telemetry=self.telemetry,
                    maximize=group["maximize"])
