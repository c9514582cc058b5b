"""The unit every backend works on: the tensors of one param group that share storage dtypes."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Bucket:
    """Tensors of one param group with one (device, param dtype, grad dtype, state dtype, master).

    ``states`` maps a state name (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, ``sum``,
    ``momentum_buffer``) to one tensor per param, in param order. ``steps`` holds each param's
    0-d fp32 step count on the param's device. ``masters`` holds fp32 master copies for 16-bit
    params when master weights are on (the update runs on them and rounds into ``params``).

    Two dicts belong to the backend. ``tables``: what it derives from these tensor lists
    (pointer and chunk tables); the optimizer hands over the same Bucket object, ``tables``
    included, for as long as none of its tensors changed, and builds a new Bucket with empty
    ``tables`` when one did (a new grad after ``zero_grad(set_to_none=True)``, a loaded state).
    ``cache``: kept for the same (param group, dtypes) across such rebuilds, for things worth
    reusing when the tensors change (device buffers, workspaces).

    Layout: every param is dense (Note [kernel layout] in fusedopt.optim._layout: any stride
    order, no gaps, no overlap) and its grad, states and master have the param's strides, so
    element i of every stream is element i of the same flat run of ``numel`` elements.
    """

    params: list[Tensor]
    grads: list[Tensor]
    steps: list[Tensor]
    states: dict[str, list[Tensor]]
    masters: list[Tensor] | None = None
    cache: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)
    #: Set by the optimizer's step plan (Note [step plan]): it hands this Bucket over again
    #: only while every tensor in it is unchanged (it checks their addresses and element
    #: counts each step and builds a new Bucket otherwise), so a backend may reuse the tables
    #: in ``tables`` without re-reading the tensors. A Bucket built by anyone else is checked
    #: in full on every call.
    frozen: bool = False
    #: Set by the step plan with ``frozen``: when only the grads' addresses changed since a
    #: step (fresh grads of the same dtype, shape and strides), the plan keeps this Bucket,
    #: puts the new addresses (in param order) in ``grad_ptrs`` and bumps ``grad_epoch``; a
    #: backend that stored a table under ``tables`` with an older epoch must refresh its grad
    #: column (or rebuild) before using it.
    grad_ptrs: list[int] | None = None
    grad_epoch: int = 0

    @property
    def device(self) -> torch.device:
        return self.params[0].device

    @property
    def param_dtype(self) -> torch.dtype:
        return self.params[0].dtype

    @property
    def grad_dtype(self) -> torch.dtype:
        return self.grads[0].dtype

    @property
    def state_dtype(self) -> torch.dtype | None:
        for tensors in self.states.values():
            return tensors[0].dtype
        return None

    def __len__(self) -> int:
        return len(self.params)


class PlanGrads(list):
    """This step's kernel grads as the step plan hands them to the norm pass (``grad_prologue_``):
    a list of tensors, which is all a backend has to read, that the plan has validated (kernel
    dtypes, dense, each in its param's layout) and whose addresses it tracks. ``ptrs``: the
    addresses in list order; ``epoch``: changes whenever one of them moved; ``cache``: a dict
    the plan keeps for its life, where a backend may keep what it derives from these grads
    (a table is rebuilt from ``ptrs`` only when ``epoch`` differs from the one it was built at,
    without validating again)."""

    __slots__ = ("ptrs", "epoch", "cache")

    def __init__(self, grads: list[Tensor], ptrs: list[int], epoch: int, cache: dict) -> None:
        super().__init__(grads)
        self.ptrs, self.epoch, self.cache = ptrs, epoch, cache


def is_dense(t: Tensor) -> bool:
    """Non-overlapping and dense: the elements fill ``numel`` consecutive slots in some order
    (contiguous, transposed, channels_last...). What a kernel reading ``numel`` elements from
    ``data_ptr()`` needs of a tensor."""
    if t.is_contiguous() or t.numel() <= 1:
        return True
    dims = sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1)
    expected = 1
    for st, sz in dims:
        if st != expected:
            return False
        expected *= sz
    return True


def same_layout(t: Tensor, like: Tensor) -> bool:
    """``t`` and the dense ``like`` pair their elements in memory order (same strides)."""
    return t.numel() <= 1 or tuple(t.stride()) == tuple(like.stride())
