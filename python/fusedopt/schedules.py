"""Learning-rate schedules that large-model training uses and ``torch.optim.lr_scheduler`` lacks.

Why schedules at all (P4, docs/algorithms.md#schedules): Adam and RMSprop with a learning rate
bounded away from zero never settle, even on a one-dimensional quadratic; the parameters keep moving
in a noise ball whose size grows like sqrt(lr). A schedule that takes the lr towards zero is the
cure.

Every class here is a ``torch.optim.lr_scheduler.LRScheduler`` (so HF Trainer and Lightning
accept it) with a closed form ``lr_t = base_lr * factor(t)``, where ``t`` is the number of
``scheduler.step()`` calls so far (``last_epoch``). Nothing is recursive, so ``step(epoch)``,
``state_dict`` and resuming mid-run give exactly the same values.

Graph safety: when ``group["lr"]`` is a tensor (``capturable=True`` training with a CUDA graph),
``LRScheduler`` writes the new value into that same tensor with ``fill_`` (torch 2.13,
``torch/optim/lr_scheduler.py::_update_param_group_val``); the tensor object and its storage never
change, so a captured graph that reads the lr through its pointer sees every new value: no
recompile, no re-capture. Our ``get_lr`` returns ``base_lr * factor`` computed on the lr's device
in float64 (no host sync), and ``fill_`` rounds it once into the lr's dtype: an fp64 lr tensor
gets exactly the float the Python-float path computes; an fp32 one that float rounded to fp32.
:func:`scale_lr_` does the same for a one-off decay (e.g. from a monitor callback).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

DECAY_SHAPES = ("linear", "cosine", "1-sqrt")


def _check_int(owner: str, name: str, value: Any, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{owner}: {name} must be an int >= {low}, got {value!r}")
    return value


def _check_fraction(owner: str, name: str, value: Any) -> float:
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not 0.0 <= float(value) <= 1.0):
        raise ValueError(f"{owner}: {name} must be a float in [0, 1], got {value!r}")
    return float(value)


def _warmup(t: int, warmup_steps: int, start_factor: float) -> float:
    """Linear warmup factor at ``t < warmup_steps``: ``start_factor`` at 0, reaching 1 at W."""
    return start_factor + (1.0 - start_factor) * t / warmup_steps


def _scaled(base_lr: float | Tensor, factor: float) -> float | Tensor:
    """``base_lr * factor``; a tensor lr stays on its device (fp64 math, no host sync)."""
    if isinstance(base_lr, Tensor):
        return base_lr.to(torch.float64) * factor
    return base_lr * factor


class ClosedFormLR(LRScheduler):
    """Base of the schedules here: ``lr_t = base_lr * factor(t)`` for every param group.

    Subclasses implement :meth:`factor`; ``t = last_epoch`` counts ``scheduler.step()`` calls
    (0 right after construction, which already sets ``lr_0``).
    """

    def factor(self, t: int) -> float:
        """Multiplier of the base lr after ``t`` scheduler steps."""
        raise NotImplementedError

    def get_lr(self) -> list[float | Tensor]:
        """The lr of every group at ``last_epoch`` (same types as the groups' ``lr``)."""
        f = self.factor(self.last_epoch)
        return [_scaled(base, f) for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float | Tensor]:
        """Used by ``step(epoch)``: the same closed form."""
        return self.get_lr()


class WarmupCosineLR(ClosedFormLR):
    """Linear warmup, then cosine decay to ``min_lr_ratio * base_lr`` at ``total_steps``.

    .. math::

        f(t) = \\begin{cases}
            s + (1 - s)\\,t / W & t < W \\\\
            r + (1 - r)\\,\\tfrac12\\bigl(1 + \\cos(\\pi\\,\\tfrac{t - W}{T - W})\\bigr)
                & W \\le t \\le T \\\\
            r & t > T
        \\end{cases}

    with ``W = warmup_steps``, ``T = total_steps``, ``s = warmup_start_factor`` (0 as in HF's
    ``get_cosine_schedule_with_warmup``: the first step has lr 0) and ``r = min_lr_ratio``.

    Args:
        optimizer: the optimizer whose groups' ``lr`` are scheduled (their initial lr is the
            peak ``base_lr``).
        warmup_steps: W >= 0.
        total_steps: T > W; the lr stays at ``r * base_lr`` after it.
        min_lr_ratio: r in [0, 1].
        warmup_start_factor: s in [0, 1].
        last_epoch: -1 for a new run (torch's convention for resuming otherwise).
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int,
                 min_lr_ratio: float = 0.0, warmup_start_factor: float = 0.0,
                 last_epoch: int = -1) -> None:
        owner = type(self).__name__
        self.warmup_steps = _check_int(owner, "warmup_steps", warmup_steps, 0)
        self.total_steps = _check_int(owner, "total_steps", total_steps, warmup_steps + 1)
        self.min_lr_ratio = _check_fraction(owner, "min_lr_ratio", min_lr_ratio)
        self.warmup_start_factor = _check_fraction(owner, "warmup_start_factor",
                                                   warmup_start_factor)
        super().__init__(optimizer, last_epoch)

    def factor(self, t: int) -> float:
        w, r = self.warmup_steps, self.min_lr_ratio
        if t < w:
            return _warmup(t, w, self.warmup_start_factor)
        if t > self.total_steps:
            return r
        progress = (t - w) / (self.total_steps - w)
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupStableDecayLR(ClosedFormLR):
    """Warmup-stable-decay ("WSD", trapezoidal): warmup, a long constant phase, a short decay.

    .. math::

        f(t) = \\begin{cases}
            s + (1 - s)\\,t / W & t < W \\\\
            1 & W \\le t < W + S \\\\
            r + (1 - r)\\,d\\bigl((t - W - S)/D\\bigr) & W + S \\le t \\le W + S + D \\\\
            r & \\text{after}
        \\end{cases}

    with the decay shape ``d(p)`` going from 1 at p = 0 to 0 at p = 1: ``"linear"`` 1 - p,
    ``"cosine"`` (1 + cos(pi p)) / 2, ``"1-sqrt"`` 1 - sqrt(p). The stable phase can be extended
    and the decay started from any checkpoint, which is why it is popular for runs whose
    length is not known in advance; a constant phase is also exactly the regime in which P4's
    noise floor appears, so pair it with :class:`fusedopt.monitor.ConvergenceMonitor`.

    Args:
        optimizer: the optimizer (its groups' initial lr is the stable ``base_lr``).
        warmup_steps: W >= 0. stable_steps: S >= 0. decay_steps: D >= 1.
        min_lr_ratio: r in [0, 1], the final lr as a fraction of ``base_lr``.
        decay_shape: one of ``"linear"``, ``"cosine"``, ``"1-sqrt"``.
        warmup_start_factor: s in [0, 1].
        last_epoch: -1 for a new run.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, stable_steps: int,
                 decay_steps: int, min_lr_ratio: float = 0.0, decay_shape: str = "linear",
                 warmup_start_factor: float = 0.0, last_epoch: int = -1) -> None:
        owner = type(self).__name__
        self.warmup_steps = _check_int(owner, "warmup_steps", warmup_steps, 0)
        self.stable_steps = _check_int(owner, "stable_steps", stable_steps, 0)
        self.decay_steps = _check_int(owner, "decay_steps", decay_steps, 1)
        self.min_lr_ratio = _check_fraction(owner, "min_lr_ratio", min_lr_ratio)
        if decay_shape not in DECAY_SHAPES:
            raise ValueError(f"{owner}: decay_shape must be one of {DECAY_SHAPES}, "
                             f"got {decay_shape!r}")
        self.decay_shape = decay_shape
        self.warmup_start_factor = _check_fraction(owner, "warmup_start_factor",
                                                   warmup_start_factor)
        super().__init__(optimizer, last_epoch)

    def factor(self, t: int) -> float:
        w, r = self.warmup_steps, self.min_lr_ratio
        if t < w:
            return _warmup(t, w, self.warmup_start_factor)
        decay_start = w + self.stable_steps
        if t < decay_start:
            return 1.0
        p = min(1.0, (t - decay_start) / self.decay_steps)
        if self.decay_shape == "linear":
            d = 1.0 - p
        elif self.decay_shape == "cosine":
            d = 0.5 * (1.0 + math.cos(math.pi * p))
        else:
            d = 1.0 - math.sqrt(p)
        return r + (1.0 - r) * d


class InverseSqrtLR(ClosedFormLR):
    """Linear warmup, then ``base_lr * sqrt(tau / t)`` (Transformer "Noam", fairseq, T5).

    .. math::

        f(t) = \\begin{cases}
            s + (1 - s)\\,t / W & t < W \\\\
            \\sqrt{\\tau / \\max(t, \\tau)} & t \\ge W
        \\end{cases}

    ``tau = timescale`` defaults to ``max(W, 1)``, so the lr peaks at ``base_lr`` when the warmup
    ends (fairseq's ``inverse_sqrt``); ``warmup_steps=0, timescale=10_000`` is T5's
    ``1 / sqrt(max(t, 10^4))`` up to the constant. The lr vanishes, but slowly: sum(lr) and
    sum(lr^2) both diverge.

    Args:
        optimizer: the optimizer (its groups' initial lr is the peak ``base_lr``).
        warmup_steps: W >= 0.
        timescale: tau >= max(W, 1) (a smaller tau would make the lr jump down at W).
        warmup_start_factor: s in [0, 1].
        last_epoch: -1 for a new run.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 0, timescale: int | None = None,
                 warmup_start_factor: float = 0.0, last_epoch: int = -1) -> None:
        owner = type(self).__name__
        self.warmup_steps = _check_int(owner, "warmup_steps", warmup_steps, 0)
        tau_min = max(warmup_steps, 1)
        self.timescale = _check_int(owner, "timescale",
                                    tau_min if timescale is None else timescale, tau_min)
        self.warmup_start_factor = _check_fraction(owner, "warmup_start_factor",
                                                   warmup_start_factor)
        super().__init__(optimizer, last_epoch)

    def factor(self, t: int) -> float:
        if t < self.warmup_steps:
            return _warmup(t, self.warmup_steps, self.warmup_start_factor)
        return math.sqrt(self.timescale / max(t, self.timescale))


@torch.no_grad()
def scale_lr_(optimizer: Optimizer, factor: float) -> None:
    """Multiply every group's lr by ``factor`` in place (a tensor lr keeps its storage).

    Graph-safe like the schedulers: a tensor lr is updated with ``mul_`` on its device, no host
    sync. Meant for one-off decays, e.g. from a :class:`fusedopt.monitor.ConvergenceMonitor`
    callback; a scheduler attached to the same optimizer overwrites the lr on its next
    ``step()`` (closed-form schedulers recompute from their ``base_lrs``).
    """
    if (not isinstance(factor, (int, float)) or isinstance(factor, bool)
            or not (0.0 < factor < math.inf)):
        raise ValueError(f"scale_lr_: factor must be a positive float, got {factor!r}")
    for group in optimizer.param_groups:
        if isinstance(group["lr"], Tensor):
            group["lr"].mul_(factor)
        else:
            group["lr"] = group["lr"] * factor


__all__ = ["ClosedFormLR", "WarmupCosineLR", "WarmupStableDecayLR", "InverseSqrtLR",
           "scale_lr_", "DECAY_SHAPES"]
