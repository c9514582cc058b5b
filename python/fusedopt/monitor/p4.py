"""P4's quadratic as a monitored run: the noise floor the monitor is built to flag.

Dereich, Graeber & Jentzen (arXiv 2407.08100; docs/algorithms.md#papers): d = 1, X ~ N(1, 1),
loss (theta - X)^2 with one sample per step. The minimiser is theta* = 1, but Adam or RMSprop at
a constant lr never converge: theta keeps wandering around 1 with a spread that scales like
sqrt(lr). With a learning rate that goes to zero the spread keeps shrinking.

:func:`run_p4_quadratic` drives a fusedopt optimizer (tensor lr, ``capturable=True``: the
graph-safe path) on that problem under a named lr policy, with a
:class:`~fusedopt.monitor.ConvergenceMonitor` attached. It is used by the tests (where the
monitor must fire, and where it must not) and by ``python -m fusedopt.monitor demo``.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Union

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ..optim import Adam
from ..schedules import InverseSqrtLR, WarmupCosineLR, scale_lr_
from .convergence import ConvergenceMonitor

#: lr policies: a constant lr; a constant lr halved every time the monitor fires; cosine decay
#: to 1% over the run; inverse square root.
POLICIES = ("constant", "monitor_decay", "cosine", "inverse_sqrt")

#: a policy name, or a factory of any scheduler (stepped once per optimizer step)
Policy = Union[str, Callable[[Optimizer], LRScheduler]]


def run_p4_quadratic(policy: Policy = "constant", *, steps: int = 20_000, lr: float = 1e-2,
                     theta0: float = 3.0, seed: int = 0, variant: str = "adam",
                     backend: str = "auto", csv: str | os.PathLike | None = None,
                     **monitor_options: Any) -> ConvergenceMonitor:
    """Run ``steps`` steps of P4's quadratic and return the (closed) monitor.

    Args:
        policy: one of :data:`POLICIES`, or ``make(optimizer) -> LRScheduler``.
        steps: optimizer steps (one sample each).
        lr: the initial (peak) learning rate.
        theta0: the starting point (3.0: a visible descent before the noise floor).
        seed: seed of the sample stream X_1, X_2, ... (the same for every policy).
        variant: ``"adam"`` or ``"rmsprop"`` (the two optimizers P4 covers).
        backend: fusedopt backend.
        csv: where the monitor writes its log, or None.
        **monitor_options: forwarded to :class:`ConvergenceMonitor` (window, patience, ...).
    """
    if not callable(policy) and policy not in POLICIES:
        raise ValueError(f"run_p4_quadratic: policy must be one of {POLICIES}, got {policy!r}")
    gen = torch.Generator().manual_seed(seed)
    samples = torch.randn(steps, generator=gen, dtype=torch.float32) + 1.0
    theta = torch.nn.Parameter(torch.full((1,), theta0, dtype=torch.float32))
    opt = Adam([theta], lr=torch.tensor(lr, dtype=torch.float32), variant=variant,
               capturable=True, telemetry=True, backend=backend)
    if callable(policy):
        scheduler = policy(opt)
    elif policy == "cosine":
        scheduler = WarmupCosineLR(opt, warmup_steps=0, total_steps=steps, min_lr_ratio=0.01)
    elif policy == "inverse_sqrt":
        scheduler = InverseSqrtLR(opt, warmup_steps=0, timescale=100)
    else:
        scheduler = None
    on_plateau = (lambda event: scale_lr_(opt, 0.5)) if policy == "monitor_decay" else None
    monitor = ConvergenceMonitor(opt, csv=csv, on_plateau=on_plateau, **monitor_options)
    with torch.no_grad():
        for x in samples:
            diff = theta - x
            loss = (diff * diff).sum()     # the loss at the point the step starts from
            theta.grad = 2.0 * diff        # its exact gradient (no autograd needed)
            opt.step()
            monitor.step(loss)
            if scheduler is not None:
                scheduler.step()
    monitor.close()
    return monitor


__all__ = ["POLICIES", "run_p4_quadratic"]
