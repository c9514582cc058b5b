"""Loads the compiled core ``fusedopt._C`` and builds the pointer tables its kernels take.

The native core knows no torch (DESIGN.md §3): it takes data pointers, sizes, dtype codes and
floats. This module turns tensor lists into those tables once and caches them.

Note [table cache]: a bucket's :class:`_C.TensorTable` lives in ``bucket.cache`` (the optimizer
keeps that dict across steps) with

* the params' and grads' ``data_ptr()`` tuples: they are compared every step, because a param's
  storage can be swapped (``p.data = ...``) and grads are re-allocated after
  ``zero_grad(set_to_none=True)``. New grad pointers only refresh the grad column
  (``set_grads``); new param pointers rebuild the table.
* strong references to the state, step and master tensors, compared by identity every step (in
  C++, ~1 ns each). Holding them means a cached pointer can never outlive its memory; the
  optimizer replaces them only in ``load_state_dict``, which clears the caches.

Grads are never held: the cache must not keep last step's grads alive.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .backends.bucket import Bucket

try:
    from . import _C  # type: ignore[attr-defined]
    LOAD_ERROR: str | None = None
except ImportError as exc:  # not built (pure-Python install) or built for another Python
    _C = None
    LOAD_ERROR = f"fusedopt._C could not be imported: {exc}"

#: Storage dtype codes of csrc/include/fusedopt/dtype.h (DType).
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}

#: State stream order per table kind (csrc/cpu/tensor_table.h, kMaxStates slots).
STATE_SLOTS = {
    "adam": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    "adagrad": ("sum",),
    "sgd": ("momentum_buffer",),
}

_data_ptr = Tensor.data_ptr


def native():
    """The compiled module; raises ImportError with the reason when it is missing."""
    if _C is None:
        raise ImportError(LOAD_ERROR)
    return _C


def num_threads() -> int:
    """Threads for a kernel call: torch's intra-op count (Note [threads], csrc/cpu/parallel.h)."""
    return torch.get_num_threads()


def _default_state_dtype(param_dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if param_dtype == torch.float64 else torch.float32


@dataclass
class _TableEntry:
    table: Any
    param_ptrs: tuple[int, ...]
    grad_ptrs: tuple[int, ...]
    owned: list[list[Tensor]]


def _owned(b: Bucket, slots: tuple[str, ...]) -> list[list[Tensor]]:
    lists = [b.steps] + [b.states.get(k, []) for k in slots]
    if b.masters is not None:
        lists.append(b.masters)
    return lists


def _build(b: Bucket, slots: tuple[str, ...], chunk_size: int | None):
    C = native()
    states = [[_data_ptr(t) for t in b.states.get(k, [])] for k in slots]
    state_dtype = b.state_dtype or _default_state_dtype(b.param_dtype)
    kwargs = {} if chunk_size is None else {"chunk_size": chunk_size}
    return C.TensorTable(
        [p.numel() for p in b.params], [_data_ptr(p) for p in b.params],
        [_data_ptr(g) for g in b.grads],
        [_data_ptr(m) for m in b.masters] if b.masters is not None else [],
        states, [_data_ptr(s) for s in b.steps], DTYPE_CODES[b.param_dtype],
        DTYPE_CODES[b.grad_dtype], DTYPE_CODES[state_dtype], **kwargs)


def bucket_table(b: Bucket, kind: str, chunk_size: int | None = None):
    """The cached :class:`_C.TensorTable` of bucket ``b`` for table kind ``kind`` (a key of
    :data:`STATE_SLOTS`), rebuilt only when its signature changes (Note [table cache])."""
    slots = STATE_SLOTS[kind]
    key = ("cpu", kind, chunk_size)
    param_ptrs = tuple(map(_data_ptr, b.params))
    grad_ptrs = tuple(map(_data_ptr, b.grads))
    entry = b.cache.get(key)
    if (entry is not None and entry.param_ptrs == param_ptrs
            and _C.same_objects(entry.owned, _owned(b, slots))):
        if entry.grad_ptrs != grad_ptrs:
            entry.table.set_grads(list(grad_ptrs))
            entry.grad_ptrs = grad_ptrs
        return entry.table
    entry = _TableEntry(_build(b, slots, chunk_size), param_ptrs, grad_ptrs, _owned(b, slots))
    b.cache[key] = entry
    return entry.table


# Grad lists of the prologue are not a bucket: they get their own small cache, keyed by the
# grads' (data_ptr, numel) signature. Two entries cover the gradient prologue and IAN-SGD's
# independent-batch prologue alternating.
_GRAD_LISTS: dict[tuple, Any] = {}
_GRAD_LISTS_MAX = 4


def grad_list(grads: list[Tensor], chunk_size: int | None = None):
    """The :class:`_C.GradList` of ``grads`` (any mix of fp32/bf16/fp16/fp64), cached."""
    ptrs = tuple(map(_data_ptr, grads))
    key = (ptrs, tuple(map(Tensor.numel, grads)), chunk_size)
    found = _GRAD_LISTS.get(key)
    if found is not None:
        return found
    kwargs = {} if chunk_size is None else {"chunk_size": chunk_size}
    found = native().GradList(list(key[1]), list(ptrs), [DTYPE_CODES[g.dtype] for g in grads],
                              **kwargs)
    if len(_GRAD_LISTS) >= _GRAD_LISTS_MAX:
        _GRAD_LISTS.pop(next(iter(_GRAD_LISTS)))
    _GRAD_LISTS[key] = found
    return found


def lr_args(lr: float | Tensor) -> tuple[float, int, int]:
    """(value, pointer, dtype code) of a float or 0-d fp32/fp64 CPU tensor lr (read in C++)."""
    if isinstance(lr, Tensor):
        return 0.0, lr.data_ptr(), DTYPE_CODES[lr.dtype]
    return float(lr), 0, 0
