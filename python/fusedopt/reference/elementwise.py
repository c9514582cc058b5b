"""The element-wise algorithms: one contract call (``elementwise_step_``) for all of them.

An element-wise algorithm (docs/adding-an-algorithm.md) is a module
``fusedopt.reference.<name>`` that defines

* ``NAME``: the algorithm's name, the same in every layer (``csrc/math/<name>.h``,
  ``triton_kernels/<name>.py``, the optimizer class's ``algorithm``);
* ``STATES``: its per-element state streams in kernel order (at most :data:`MAX_STATES`);
* ``HYPER``: the names of its fp64 hyperparameters in kernel order (at most :data:`MAX_HYPER`);
* ``N_SCALARS`` and ``scalars(t, lr, h) -> list[Tensor]``: the per-tensor scalars, 0-d fp64
  tensors computed from the incremented step ``t`` (fp64), the learning rate (fp64) and the
  hyperparameter tuple ``h`` (at most :data:`MAX_SCALARS`);
* ``update(p, g, states, s) -> (p, states)``: the element update in opmath, ``g`` already
  multiplied by the gradient coefficient and ``s`` the scalars rounded to opmath.

Every backend computes the scalars in fp64 and rounds them once to opmath (fp32; fp64 for fp64
params) before the element loop, as :func:`update_tensor` does; the loop around ``update`` (skip
rules, master weights, telemetry, step counts) is the contract's, shared by every algorithm.
The limits are the native core's (``csrc/math/elementwise.h``): a larger algorithm needs those
raised in the same change.
"""
from __future__ import annotations

import importlib
from types import ModuleType

import torch
from torch import Tensor

#: state streams, hyperparameters and per-tensor scalars an element-wise algorithm may have
MAX_STATES = 4
MAX_HYPER = 8
MAX_SCALARS = 12


def spec(name: str) -> ModuleType:
    """The reference module of element-wise algorithm ``name`` (checked against the limits)."""
    if not name.isidentifier():
        raise ValueError(f"fusedopt: {name!r} is not an element-wise algorithm name")
    try:
        mod = importlib.import_module(f"{__package__}.{name}")
    except ModuleNotFoundError as exc:
        raise ValueError(f"fusedopt: no element-wise algorithm {name!r}") from exc
    if getattr(mod, "NAME", None) != name:
        raise ValueError(f"fusedopt: fusedopt.reference.{name} is not an element-wise algorithm")
    if (len(mod.STATES) > MAX_STATES or len(mod.HYPER) > MAX_HYPER
            or mod.N_SCALARS > MAX_SCALARS):
        raise ValueError(f"fusedopt: {name} exceeds the element-wise limits ({MAX_STATES} "
                         f"states, {MAX_HYPER} hyperparameters, {MAX_SCALARS} scalars)")
    return mod


def check_hyper(mod: ModuleType, hyper: tuple[float, ...]) -> tuple[float, ...]:
    """``hyper`` as a tuple of floats of the algorithm's length (TypeError/ValueError else)."""
    if len(hyper) != len(mod.HYPER):
        raise ValueError(f"fusedopt: {mod.NAME} takes {len(mod.HYPER)} hyperparameters "
                         f"{mod.HYPER}, got {len(hyper)}")
    return tuple(float(h) for h in hyper)


def tensor_scalars(mod: ModuleType, step: Tensor, lr: float | Tensor, hyper: tuple[float, ...],
                   op: torch.dtype) -> list[Tensor]:
    """The per-tensor scalars of ``mod`` for the incremented step ``step``, computed in fp64
    and rounded once to ``op``."""
    t = step.to(torch.float64)
    lr64 = torch.as_tensor(lr, dtype=torch.float64, device=t.device).reshape(())
    s = mod.scalars(t, lr64, hyper)
    if len(s) != mod.N_SCALARS:
        raise AssertionError(f"{mod.NAME}.scalars returned {len(s)} values, not {mod.N_SCALARS}")
    return [torch.as_tensor(x, dtype=torch.float64, device=t.device).to(op) for x in s]


# ------------------------------------------------------------------ shared element operations
def lerp(a: Tensor, b: Tensor, w: Tensor) -> Tensor:
    """torch's lerp with a scalar weight, two branches (exact at w = 1), without an FMA:
    ``a + w (b - a)`` if ``|w| < 0.5``, else ``b - (b - a) (1 - w)``; ``w`` is an opmath 0-d
    tensor (``csrc/math/opmath.h`` op_lerp, ``triton_kernels/_device.py`` lerp)."""
    d = b - a
    return torch.where(torch.abs(w) < 0.5, a + w * d, b - d * (1.0 - w))


def sign(x: Tensor) -> Tensor:
    """torch.sign: -1, 0 or 1, and 0 for NaN (as the C++ op_sign)."""
    one = torch.ones((), dtype=x.dtype, device=x.device)
    return torch.where(x > 0, one, torch.where(x < 0, -one, 0.0 * one))


def select(cond: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``a`` where the 0-d flag ``cond`` is non-zero, else ``b`` (a select, not arithmetic)."""
    return torch.where(cond != 0, a, b)
