"""The small launch that ends every update: step counts and the fixed-order sums of partials.

The update kernels run one program per chunk, so the programs of one tensor cannot both read
its step count and advance it; and their partial sums (telemetry, ``sum(m^2)``) are written one
per chunk, never atomically. This one-program kernel does both after the update, in order:
``step <- step + 1`` for every tensor, then ``stats[first_slot + k] += sum_c partials[k, c]``
summed in a fixed order — both skipped (the sums add 0) when the prologue found an inf/nan or
the update read a tensor lr that is NaN or negative (then ``stats[LR_INVALID]`` is set to 1).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common as C
from ._device import (ROW_STEP, SLOT_FOUND_INF, SLOT_LR_INVALID, bind_helpers_for_interpreter,
                      fixed_order_sum, lr_rejected)


@triton.jit(do_not_specialize=["n_tensors", "partials_stride", "first_slot", "n_chunks"])
def _finish_kernel(ptrs, n_tensors, stats, partials, partials_stride, first_slot,
                   n_chunks, lr_ptr, USE_PROLOGUE: tl.constexpr, ADVANCE_STEPS: tl.constexpr,
                   N_SUMS: tl.constexpr, LR_FROM_PTR: tl.constexpr, BLOCK: tl.constexpr):
    """One program: advance every step count, then add N_SUMS rows of partials to stats."""
    keep = tl.full((), 1, tl.int1)
    if USE_PROLOGUE:
        keep = tl.load(stats + SLOT_FOUND_INF) == 0
    if LR_FROM_PTR:
        bad = lr_rejected(tl.load(lr_ptr).to(tl.float64))
        keep = keep & (bad == 0)
        flag = stats + SLOT_LR_INVALID
        tl.store(flag, tl.where(bad, 1.0, tl.load(flag)))
    if ADVANCE_STEPS:
        i = 0
        while i < n_tensors:  # not range(): Note [interpreter loops] in _device
            idx = i + tl.arange(0, BLOCK)
            live = idx < n_tensors
            step_ptrs = tl.load(ptrs + ROW_STEP * n_tensors + idx, mask=live, other=0)
            step_ptrs = step_ptrs.to(tl.pointer_type(tl.float32))
            steps = tl.load(step_ptrs, mask=live, other=0.0)
            tl.store(step_ptrs, tl.where(keep, steps + 1.0, steps), mask=live)
            i += BLOCK
    for k in tl.static_range(N_SUMS):
        total = fixed_order_sum(partials + k * partials_stride, n_chunks, BLOCK)
        slot = stats + first_slot + k
        tl.store(slot, tl.load(slot) + tl.where(keep, total, 0.0))


def lr_rejected_on_host(lr, lr_value: float, lr_from_ptr: bool, stats: torch.Tensor) -> bool:
    """A tensor lr read on the host (a CPU lr with GPU params: ``C.lr_arguments``) that is NaN
    or negative: the rule the kernels apply to a tensor lr they read (skip the whole call, set
    ``stats[LR_INVALID]``), applied here by a device fill (no sync). True: launch nothing."""
    if not isinstance(lr, torch.Tensor) or lr_from_ptr:
        return False
    if lr_value == lr_value and lr_value >= 0.0:
        return False
    stats[C.LR_INVALID] = 1.0
    return True


def finish_(tables: C.Tables, stats: torch.Tensor, *, use_prologue: bool, advance_steps: bool,
            n_sums: int, first_slot: int = C.UPDATE_SQ,
            lr_ptr: torch.Tensor | None = None) -> None:
    """Advance the step counts and/or add ``n_sums`` rows of partials to ``stats[first_slot:]``;
    ``lr_ptr``: the update's tensor lr, checked as the update did (None: a float lr)."""
    if not advance_steps and n_sums == 0:
        return
    partials = tables.partial_sums()
    _finish_kernel[(1,)](tables.ptrs, tables.n_tensors, stats, partials, partials.stride(0),
                         first_slot, tables.n_chunks, stats if lr_ptr is None else lr_ptr,
                         USE_PROLOGUE=use_prologue, ADVANCE_STEPS=advance_steps, N_SUMS=n_sums,
                         LR_FROM_PTR=lr_ptr is not None, BLOCK=C.FINISH_BLOCK,
                         enable_fp_fusion=False)


bind_helpers_for_interpreter(globals())  # Note [interpreter helper calls]
