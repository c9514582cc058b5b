"""P5's five methods and the stochastic loop they share (IAN-SGD and its baselines).

Every method is a fusedopt optimizer except plain SGD (``torch.optim.SGD``: a baseline, not a
fusedopt algorithm). IAN-SGD draws an independent batch B' each iteration, calls
``record_normalizer()`` after its backward, zeroes the grads, then steps along the gradient of
the direction batch B; its sample cost per iteration is ``|B| + |B'|``, so comparisons are made
at equal numbers of samples, not iterations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

import fusedopt

METHODS = ("IAN-SGD", "NSGD", "NSGDm", "Clip-SGD", "SGD")


@dataclass(frozen=True)
class Method:
    """One method with its hyperparameters (``kwargs`` go to the optimizer's constructor)."""

    name: str
    lr: float
    kwargs: dict[str, Any]

    @property
    def independent(self) -> bool:
        return self.name == "IAN-SGD"

    def make(self, params: list[Tensor], backend: str) -> torch.optim.Optimizer:
        if self.name == "SGD":
            return torch.optim.SGD(params, lr=self.lr)
        cls = {"IAN-SGD": fusedopt.IANSGD, "IAN-SGD same-batch": fusedopt.IANSGD,
               "NSGD": fusedopt.NSGD, "NSGDm": fusedopt.NSGDm,
               "Clip-SGD": fusedopt.ClipSGD}[self.name]
        return cls(params, lr=self.lr, backend=backend, **self.kwargs)

    def describe(self) -> str:
        kw = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in self.kwargs.items())
        return f"{self.name}: lr={self.lr:g}" + (f", {kw}" if kw else "")


def run_stochastic(method: Method, params: list[Tensor], batch_loss: Callable[[Tensor], Tensor],
                   *, n: int, batch: int, ind_batch: int, budget: int, gen: torch.Generator,
                   evaluate: Callable[[], float], eval_every: int, backend: str
                   ) -> tuple[np.ndarray, np.ndarray, str]:
    """Run ``method`` until ``budget`` samples are used; evaluate at the start, every
    ``eval_every`` iterations and after the last one.

    ``batch_loss(idx)`` is the loss of the samples ``idx`` at the current params. Batches are
    drawn without replacement within a batch (B' independently of B, as in the authors' code).
    Returns (samples used at each evaluation, values, backend name).
    """
    opt = method.make(params, backend)
    used, k = 0, 0
    samples, values = [0], [evaluate()]
    while used + batch + (ind_batch if method.independent else 0) <= budget:
        if method.independent:
            batch_loss(torch.randperm(n, generator=gen)[:ind_batch]).backward()
            opt.record_normalizer()
            opt.zero_grad()
            used += ind_batch
        batch_loss(torch.randperm(n, generator=gen)[:batch]).backward()
        opt.step()
        opt.zero_grad()
        used += batch
        k += 1
        if k % eval_every == 0:
            samples.append(used)
            values.append(evaluate())
    if samples[-1] != used:
        samples.append(used)
        values.append(evaluate())
    return np.array(samples), np.array(values), getattr(opt, "backend", "torch")


def samples_to_reach(samples: np.ndarray, values: np.ndarray, threshold: float) -> float:
    """Samples used when ``values`` first drops to ``threshold`` (inf if never)."""
    hit = np.nonzero(values <= threshold)[0]
    return float(samples[hit[0]]) if len(hit) else float("inf")
