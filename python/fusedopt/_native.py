"""Loads the compiled core ``fusedopt._C`` and builds the pointer tables its kernels take.

The native core knows no torch (docs/architecture.md#layers): it takes data pointers, sizes, dtype
codes and floats. This module turns tensor lists into those tables once and caches them.

Note [table cache]: a bucket's :class:`_C.TensorTable` lives in ``bucket.cache`` (the optimizer
keeps that dict across steps) with what decides whether it still describes the tensors:

* the params' and grads' signatures (:func:`signature`: address, element count, dtype and
  contiguity of every tensor, everything a kernel that reads ``numel`` contiguous elements at
  ``data_ptr()`` depends on), compared every step: a param's storage can be swapped
  (``p.data = ...``, also with a view of the same address and another size), grads are
  re-allocated after ``zero_grad(set_to_none=True)``, and ``p.grad.data = ...`` can put a grad
  of another dtype or size at a recycled address. New grad addresses alone only refresh the
  grad column (``set_grads``); anything else rebuilds the table, after
  :func:`check_bucket` has checked what the kernel will touch.
* strong references to the state, step and master tensors, compared by identity every step (in
  C++, ~1 ns each). Holding them means a cached pointer can never outlive its memory; the
  optimizer replaces them only in ``load_state_dict``, which clears the caches.

Grads are never held: the cache must not keep last step's grads alive. The norm pass's grad
lists (:func:`grad_list`) are cached the same way, by the grads' signature, at most
``_GRAD_LISTS_MAX`` of them.

Note [threads after fork]: an OpenMP runtime (libgomp) whose thread pool ran in a process
hangs in a child forked from it at the child's first parallel region, and whether the parent
(fusedopt, torch or any other library sharing the runtime) ever started that pool cannot be
asked. :func:`num_threads` therefore returns 1 in every forked child, warning once: the C++
loops then run serially without entering an OpenMP region (csrc/cpu/parallel.h), so the
child's results are the one-thread results.
"""
from __future__ import annotations

import operator
import os
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from . import _shim
from .backends.bucket import Bucket, PlanGrads, is_dense, same_layout
from .reference import elementwise

try:
    from . import _C  # type: ignore[attr-defined]
    LOAD_ERROR: str | None = None
except ImportError as exc:  # not built (pure-Python install) or built for another Python
    _C = None
    LOAD_ERROR = f"fusedopt._C could not be imported: {exc}"

#: Storage dtype codes of csrc/include/fusedopt/dtype.h (DType).
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}

#: State stream order per table kind (csrc/cpu/tensor_table.h, kMaxStates slots); an
#: element-wise algorithm's kind is its name and its slots its STATES (:func:`state_slots`).
STATE_SLOTS = {
    "adam": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    "adagrad": ("sum",),
    "sgd": ("momentum_buffer",),
}


def state_slots(kind: str) -> tuple[str, ...]:
    """The state streams of table kind ``kind``, in slot order."""
    slots = STATE_SLOTS.get(kind)
    return slots if slots is not None else elementwise.spec(kind).STATES

_data_ptr = Tensor.data_ptr
_numel = Tensor.numel
_dtype = operator.attrgetter("dtype")
_stride = Tensor.stride


def native():
    """The compiled module; raises ImportError with the reason when it is missing."""
    if _C is None:
        raise ImportError(LOAD_ERROR)
    return _C


#: Note [threads after fork]: True in a process forked from the one that imported fusedopt
_FORKED = False
_FORK_WARNED = False


def _after_fork_in_child() -> None:
    global _FORKED
    _FORKED = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def num_threads() -> int:
    """Threads for a kernel call: torch's intra-op count (Note [threads], csrc/cpu/parallel.h),
    or 1 in a forked child (Note [threads after fork])."""
    global _FORK_WARNED
    n = torch.get_num_threads()
    if _FORKED and n > 1:
        if not _FORK_WARNED:
            _FORK_WARNED = True
            warnings.warn(
                "fusedopt: this process is a fork of one that may have run OpenMP threads, "
                "whose thread pool does not survive a fork (a parallel region would hang); the "
                "cpu backend runs on one thread here. torch's own parallel ops hang here too "
                "unless torch.set_num_threads(1) is called; start workers with the 'spawn' or "
                "'forkserver' method to keep threads.", RuntimeWarning, stacklevel=2)
        return 1
    return n


def signature(tensors: Sequence[Tensor]) -> tuple:
    """What a kernel reads of each tensor, given only a pointer and an element count: the
    addresses, element counts, dtypes and strides (Note [table cache]), as four tuples. Read
    in one native call through torch's C shim where it loaded (fusedopt._shim), else (or for a
    tensor it cannot read, e.g. a subclass without storage) through Python."""
    shim = _shim.native()
    if shim is not None:
        try:
            return shim.signature(tensors)
        except ValueError:
            pass
    return (tuple(map(_data_ptr, tensors)), tuple(map(_numel, tensors)),
            tuple(map(_dtype, tensors)), tuple(map(_stride, tensors)))


def _default_state_dtype(param_dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if param_dtype == torch.float64 else torch.float32


@dataclass
class _TableEntry:
    table: Any
    param_sig: tuple
    grad_sig: tuple
    dtypes: tuple
    owned: list[list[Tensor]]
    grad_epoch: int = 0  # the Bucket.grad_epoch whose grad addresses the table holds


def _owned(b: Bucket, slots: tuple[str, ...]) -> list[list[Tensor]]:
    lists = [b.steps] + [b.states.get(k, []) for k in slots]
    if b.masters is not None:
        lists.append(b.masters)
    return lists


def check_bucket(b: Bucket, slots: tuple[str, ...], backend: str) -> None:
    """Everything a kernel will touch through a table of ``b``, checked before it is built: a
    kernel reads ``numel`` elements of one dtype per stream at each address, in memory order, so
    every param must be dense and every grad, state and master must have its param's element
    count and strides and the bucket's dtype of its stream (Bucket's layout rule; the optimizer
    validates this first, a table never trusts it)."""
    n = len(b.params)
    numel = [p.numel() for p in b.params]
    state_dtype = b.state_dtype
    streams = [("param", b.params, b.param_dtype), ("grad", b.grads, b.grad_dtype)]
    streams += [(k, b.states[k], state_dtype) for k in slots if k in b.states]
    if b.masters is not None:
        streams.append(("master", b.masters, torch.float32))
    for name, tensors, dtype in streams:
        if len(tensors) != n:
            raise ValueError(f"fusedopt {backend} backend: {len(tensors)} {name} tensors for "
                             f"{n} params")
        for i, t in enumerate(tensors):
            p = b.params[i]
            if (t.numel() != numel[i] or t.dtype != dtype or not is_dense(p)
                    or not same_layout(t, p)):
                raise ValueError(
                    f"fusedopt {backend} backend: the {name} tensor of param {i} of a bucket "
                    f"is {t.dtype}, {t.numel()} elements, strides {tuple(t.stride())}; the "
                    f"kernel needs {dtype}, {numel[i]} elements, the dense strides of its "
                    f"param {tuple(p.stride())}")
    if len(b.steps) != n or any(s.numel() != 1 or s.dtype != torch.float32 for s in b.steps):
        raise ValueError(f"fusedopt {backend} backend: every param needs a one-element fp32 "
                         "step count")


def _build(b: Bucket, slots: tuple[str, ...], chunk_size: int | None):
    C = native()
    check_bucket(b, slots, "cpu")
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
    :data:`STATE_SLOTS` or an element-wise algorithm's name), rebuilt only when its signature
    changes (Note [table cache])."""
    slots = state_slots(kind)
    key = ("cpu", kind, chunk_size)
    entry = b.tables.get(key) if b.frozen else None
    if entry is not None:
        # a frozen Bucket handed over again: none of its tensors changed (Bucket.frozen) but
        # perhaps the grads' addresses, which the plan hands over (Bucket.grad_epoch)
        if entry.grad_epoch != b.grad_epoch:
            entry.table.set_grads(b.grad_ptrs)
            entry.grad_sig = (tuple(b.grad_ptrs),) + entry.grad_sig[1:]
            entry.grad_epoch = b.grad_epoch
        return entry.table
    param_sig = signature(b.params)
    grad_sig = signature(b.grads)
    dtypes = (b.state_dtype, b.masters is not None)
    entry = b.cache.get(key)
    if (entry is not None and entry.param_sig == param_sig and entry.dtypes == dtypes
            and entry.grad_sig[1:] == grad_sig[1:]
            and _C.same_objects(entry.owned, _owned(b, slots))):
        if entry.grad_sig[0] != grad_sig[0]:
            entry.table.set_grads(list(grad_sig[0]))
            entry.grad_sig = grad_sig
    else:
        entry = _TableEntry(_build(b, slots, chunk_size), param_sig, grad_sig, dtypes,
                            _owned(b, slots))
        b.cache[key] = entry
    entry.grad_epoch = b.grad_epoch
    b.tables[key] = entry
    return entry.table


# Grad lists of the prologue are not a bucket: they get their own small cache, keyed by the
# grads' signature (Note [table cache]); the entries hold raw pointers, never the grads. Two
# entries cover the gradient prologue and IAN-SGD's independent-batch prologue alternating;
# the bound keeps a process with several optimizers (or changing grads) from growing it.
_GRAD_LISTS: dict[tuple, Any] = {}
_GRAD_LISTS_MAX = 4


def check_grad_list(grads: list[Tensor], dtypes: tuple, backend: str) -> None:
    """The grads of a norm pass: each of a kernel dtype and dense (any stride order: the sum of
    squares reads ``numel`` elements in memory order)."""
    for i, dtype in enumerate(dtypes):
        if dtype not in DTYPE_CODES or not is_dense(grads[i]):
            raise ValueError(f"fusedopt {backend} backend: grad {i} of the norm pass is "
                             f"{dtype}, strides {tuple(grads[i].stride())}; the kernel reads "
                             "dense fp32/bf16/fp16/fp64 grads")


@dataclass
class _PlanGradList:
    table: Any
    numel: list[int]
    codes: list[int]
    epoch: int


def _checked_grad_list(grads: list[Tensor], sig: tuple, chunk_size: int | None
                       ) -> tuple[Any, list[int], list[int]]:
    """A new :class:`_C.GradList` of ``grads`` (their :func:`signature` ``sig``) after
    :func:`check_grad_list`, with the element counts and dtype codes it was built from."""
    ptrs, numel, dtypes, _ = sig
    check_grad_list(grads, dtypes, "cpu")
    codes = [DTYPE_CODES[d] for d in dtypes]
    return _new_grad_list(list(numel), list(ptrs), codes, chunk_size), list(numel), codes


def _new_grad_list(numel: list[int], ptrs: list[int], codes: list[int],
                   chunk_size: int | None) -> Any:
    kwargs = {} if chunk_size is None else {"chunk_size": chunk_size}
    return native().GradList(numel, ptrs, codes, **kwargs)


def grad_list(grads: list[Tensor], chunk_size: int | None = None):
    """The :class:`_C.GradList` of ``grads`` (any mix of fp32/bf16/fp16/fp64), cached by the
    grads' :func:`signature`; for the step plan's :class:`PlanGrads`, in their ``cache`` and
    rebuilt from their tracked addresses when those moved (the plan validated the grads)."""
    if isinstance(grads, PlanGrads):
        key = ("cpu", chunk_size)
        entry = grads.cache.get(key)
        if entry is None:
            table, numel, codes = _checked_grad_list(grads, signature(grads), chunk_size)
            entry = grads.cache[key] = _PlanGradList(table, numel, codes, grads.epoch)
        elif entry.epoch != grads.epoch:
            entry.table = _new_grad_list(entry.numel, grads.ptrs, entry.codes, chunk_size)
            entry.epoch = grads.epoch
        return entry.table
    key = (signature(grads), chunk_size)
    found = _GRAD_LISTS.get(key)
    if found is not None:
        return found
    found, _, _ = _checked_grad_list(grads, key[0], chunk_size)
    if len(_GRAD_LISTS) >= _GRAD_LISTS_MAX:
        _GRAD_LISTS.pop(next(iter(_GRAD_LISTS)))
    _GRAD_LISTS[key] = found
    return found


def lr_args(lr: float | Tensor) -> tuple[float, int, int]:
    """(value, pointer, dtype code) of a float or 0-d fp32/fp64 CPU tensor lr (read in C++)."""
    if isinstance(lr, Tensor):
        return 0.0, lr.data_ptr(), DTYPE_CODES[lr.dtype]
    return float(lr), 0, 0
