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
