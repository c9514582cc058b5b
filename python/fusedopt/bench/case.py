"""The tensors one benchmark case steps, shared by all its contenders.

Every contender of a case updates the same params with the same grads: it halves the memory a
case needs and guarantees that all of them see the same data. Each contender keeps its own
optimizer states. The grads are never rewritten: torch's in-place ``GradScaler.unscale_`` runs
with a scale of 1.0 (:data:`~fusedopt.bench.modes.LOSS_SCALE`), and ``clip_grad_norm_``'s
in-place scaling only shrinks them once towards norm ``max_norm`` (then multiplies by ~1), so
values stay normal floats (no denormal slow paths) however many steps are taken.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .. import registry
from ..registry import AlgoInfo
from .modes import Mode
from .workloads import Workload

#: Init scales: params like a trained transformer's (std 0.02), grads std 1e-2.
PARAM_STD = 0.02
GRAD_STD = 1e-2


@dataclass
class Case:
    """One (workload, algorithm, mode) on one device, with its tensors."""

    workload: Workload
    algorithm: str
    mode: Mode
    device: torch.device
    params: list[Tensor] = field(default_factory=list)
    #: the loss handed to ``step(loss=...)`` by algorithms that need one (AdamL)
    loss: Tensor | None = None
    #: buffers contenders of this case share (the roofline's), freed with the case
    scratch: dict = field(default_factory=dict)

    @property
    def info(self) -> AlgoInfo:
        return registry.get(self.algorithm)

    @property
    def label(self) -> str:
        return f"{self.workload.name} {self.algorithm} {self.mode.name}"

    def allocate(self, seed: int = 0) -> None:
        """Create the params (``nn.Parameter``) and their grads in the mode's dtype."""
        gen = torch.Generator(device=self.device).manual_seed(seed)
        dtype = self.mode.param_dtype
        params = []
        for shape in self.workload.shapes:
            p = torch.nn.Parameter(_randn(shape, PARAM_STD, gen, dtype, self.device))
            p.grad = _randn(shape, GRAD_STD, gen, dtype, self.device)
            params.append(p)
        self.params = params
        self.loss = torch.ones((), dtype=torch.float32, device=self.device)

    def release(self) -> None:
        """Drop the tensors (the contenders' optimizers must be dropped by their owner)."""
        self.params = []
        self.loss = None
        self.scratch.clear()


def _randn(shape: tuple[int, ...], std: float, gen: torch.Generator, dtype: torch.dtype,
           device: torch.device) -> Tensor:
    x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32).mul_(std)
    return x.to(dtype)
