"""P5's phase retrieval problem, as specified in docs/algorithms.md#papers and the authors' code.

``m = 3000`` measurements ``y_i = (a_i^T z*)^2 + N(0, 16)`` of ``z* in R^100``, with ``a_i`` and
``z*`` drawn N(0, 1/2), objective ``f(z) = 1/(2m) sum_i ((a_i^T z)^2 - y_i)^2``: a quartic, so
the gradient norm grows with ``||z||^3`` (generalized smoothness). The noise floor is
``f(z*) ~ 16/2 = 8``.

The instance is the authors': numpy's RandomState(2024) draws ``z*``, ``A``, the noise and the
start ``z_0 ~ N(0, 6) + 1`` in that order. Like the authors, the stochastic methods start from
one full-batch ``2/3``-normalized gradient step from ``z_0`` (lr 0.1), and the direction of
every method is the authors' ``A_B^T ((A_B z) * r_B) / |B|`` with ``r = (A z)^2 - y``: half of
``grad f``, i.e. the gradient of ``mean(r^2)/4``. So their step sizes apply unchanged, and
IAN-SGD's ``h = max(2 ||g'|| + 15, 45^2)`` is ``norm_scale=2, delta=15, floor=2025``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

import fusedopt

from ._p5_methods import Method

M, D = 3000, 100
NOISE_STD = 4.0
SEED = 2024
BATCH, IND_BATCH = 64, 4
ITERS = 501

#: the authors' hyperparameters for this problem (their script's "hyps" for the stochastic runs)
METHODS = (
    Method("IAN-SGD", 0.3, dict(beta=2 / 3, delta=15.0, floor=2025.0, norm_scale=2.0)),
    Method("NSGD", 0.2, dict(delta=1e-2)),
    Method("NSGDm", 0.2, dict(momentum=0.8, delta=1e-2)),
    Method("Clip-SGD", 0.6, dict(delta=15.0, floor=2025.0)),
    Method("SGD", 5e-5, {}),
)
#: ablation (not one of the paper's methods): IAN-SGD normalized by ||g|| of the direction batch
#: itself, to show how much of IAN-SGD's lead the independent batch B' carries on this problem
ABLATION = Method("IAN-SGD same-batch", 0.3,
                  dict(beta=2 / 3, delta=15.0, floor=2025.0, norm_scale=2.0, normalizer="same"))


@dataclass
class PhaseRetrieval:
    """The problem instance (fp64) and the warm start of the stochastic methods."""

    a: Tensor
    y: Tensor
    z_true: Tensor
    z_start: Tensor

    def objective(self, z: Tensor) -> float:
        """f(z) = 1/(2m) sum ((a^T z)^2 - y)^2 on all m measurements."""
        with torch.no_grad():
            return float(0.5 * (((self.a @ z) ** 2 - self.y) ** 2).mean())

    def batch_loss(self, z: Tensor, idx: Tensor) -> Tensor:
        """mean(r^2)/4 over the batch: its gradient is the authors' direction (module doc)."""
        r = (self.a[idx] @ z) ** 2 - self.y[idx]
        return 0.25 * (r * r).mean()


def make_problem(backend: str) -> PhaseRetrieval:
    """The authors' instance (seed 2024) and its one-step normalized-GD warm start."""
    rs = np.random.RandomState(SEED)
    z_true = rs.normal(scale=np.sqrt(0.5), size=D)
    a = rs.normal(scale=np.sqrt(0.5), size=(M, D))
    y = (a @ z_true) ** 2 + rs.normal(scale=NOISE_STD, size=M)
    z0 = rs.normal(scale=np.sqrt(6.0), size=D) + 1.0
    prob = PhaseRetrieval(torch.from_numpy(a), torch.from_numpy(y), torch.from_numpy(z_true),
                          torch.from_numpy(z0))
    # Warm start: z_1 = z_0 - 0.1 g / ||g||^(2/3), g the full-batch direction (no clipping);
    # delta 1e-12 only satisfies h > 0 (||g|| ~ 1e5 here).
    z = prob.z_start.clone().requires_grad_(True)
    opt = fusedopt.IANSGD([z], lr=0.1, beta=2 / 3, delta=1e-12, floor=0.0, normalizer="same",
                          backend=backend)
    prob.batch_loss(z, torch.arange(M)).backward()
    opt.step()
    prob.z_start = z.detach().clone()
    return prob
