"""The plan of a step: what the kernels will touch, validated once and re-checked cheaply.

Note [step plan]: a step runs the backend over buckets (optim/_base.py builds them): lists of
kernel tensors — params (or their staging copies), grads, states, masters, step counts —
whose addresses the backends turn into pointer tables. Building and validating the buckets
costs Python work per param, so the plan is kept and reused while its *signature* holds:

* the same param objects in the same group lists, and the same per-group state keys (a group
  switched to ``amsgrad=True`` needs another state);
* the optimizer state not edited since the plan was built (Note [state version]);
* the groups holding the very hyperparameter objects they held when last validated (a
  scheduler writing ``group["lr"]`` puts a new object there: the groups are validated again
  and the subclass's per-group scalars recomputed; containers and tensors other than the lr
  can change in place, so a group holding one is validated every step);
* every tensor a kernel reads or writes besides the grads — params, states, masters, step
  counts — at the same address with the same dtype, sizes, strides and device (a ``.data``
  swap keeps the object and changes any of these);
* every grad of the same dtype, sizes, strides, device and layout as the planned one, found
  on the same params (the plan holds no grad between steps).

The check runs in one native call (Note [step signature], csrc/step_signature.cpp) reading
each tensor's TensorImpl through torch's C shim. When the grads only moved (fresh grads of the
same kind, what ``zero_grad()`` + ``backward()`` gives every step), the plan and its Buckets
are kept: the buckets get the new addresses (``Bucket.grad_ptrs``, ``grad_epoch``) and the
backends refresh the grad column of their tables. When grads differ in anything else they are
validated and the buckets rebuilt around the same validated params and states; when anything
else differs, everything is validated again.

Without the native module (a pure-Python install, or a torch whose shim does not pass the
probe in fusedopt._shim) the same check runs in Python on addresses and element counts, with
grads compared by identity through weak references. It does not see a ``.data`` swap to a
view of the same memory with the same element count but another dtype of the same size or
other strides (``p.data = p.data.view(torch.float16)`` for a bf16 param): tests/
test_step_signature.py shows the native check seeing both.
"""
from __future__ import annotations

import operator
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from ..backends import Bucket, PlanGrads

_data_ptr = Tensor.data_ptr


def _dead() -> None:
    """The weak reference of a param that had no grad: never equal to a grad."""
    return None


def grad_ref(g: Tensor | None) -> Callable[[], Tensor | None]:
    return _dead if g is None else weakref.ref(g)


def pick(seq: list | tuple, idx: list[int]) -> list:
    """``[seq[i] for i in idx]`` at C speed."""
    if not idx:
        return []
    if len(idx) == 1:
        return [seq[idx[0]]]
    return list(operator.itemgetter(*idx)(seq))


@dataclass
class ParamInfo:
    """One validated param with its state, as the kernels see it (built once per plan)."""

    group_index: int
    param_index: int         # position in its group's params
    param: Tensor            # the param object (a DTensor for sharded params)
    local: Tensor            # its local tensor (the param itself unless sharded)
    kernel: Tensor           # what the kernels update: ``local``, or a contiguous staging copy
    staged: bool             # kernel is a staging copy of a non-dense param
    strides: tuple[int, ...]  # the kernel layout every stream must have
    shape: torch.Size
    device: torch.device
    dtype: torch.dtype
    state_dtype: torch.dtype
    step: Tensor
    states: tuple[Tensor, ...]  # in the order of the optimizer's _state_keys
    master: Tensor | None


@dataclass
class Plan:
    """A validated step (Note [step plan])."""

    params: list[Tensor]                     # every param of every group, in order
    group_keys: list[tuple]                  # per group: ids, length, state keys
    state: Any                               # the StateDict it was built from
    version: int                             # its version then
    infos: list[ParamInfo | None]            # per param (None: frozen, nothing to read)
    watched: list[Tensor]                    # params, states, masters, steps (by address)
    watched_ptrs: list[int]
    kernel_params: list[Tensor]              # local params, for their element counts
    param_numels: list[int]
    groups: list[tuple[dict, list[Bucket]]] = field(default_factory=list)
    fills: list[tuple[Bucket, list[int]]] = field(default_factory=list)  # bucket <- kernel grads
    staged: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # (param, staging copy)
    with_grad: list[int] = field(default_factory=list)  # positions in params with a grad
    grad_refs: list = field(default_factory=list)  # per param: weak reference to its grad
    grad_ptrs: list[int] = field(default_factory=list)  # kernel grads' addresses at build
    grad_numels: list[int] = field(default_factory=list)
    staged_grads: bool = False               # some grad is copied into its param's layout
    all_grads: list[Tensor] = field(default_factory=list)  # this step's kernel grads
    hyper: list[tuple] = field(default_factory=list)  # per group: what _same_hyper compares
    native: Any = None                       # the StepSignature (Note [step signature]) or None
    kernel_grad_ptrs: list[int] = field(default_factory=list)  # as last seen, kernel order
    grad_epoch: int = 0                      # bumped when a kernel grad moved (PlanGrads)
    grad_cache: dict = field(default_factory=dict)  # the backends' PlanGrads.cache

    def hand_grads(self, kgrads: list[Tensor]) -> None:
        """This step's kernel grads, to ``all_grads`` (for the norm pass) and each bucket."""
        self.all_grads = PlanGrads(kgrads, self.kernel_grad_ptrs, self.grad_epoch,
                                   self.grad_cache)
        for b, idx in self.fills:
            b.grads = pick(kgrads, idx)

    def release(self) -> None:
        """Drop this step's grads (Note [step plan]: no grad is held between steps)."""
        self.all_grads = []
        for b, _ in self.fills:
            b.grads = []
