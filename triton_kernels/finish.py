"""The small launch that ends every update: step counts and the fixed-order sums of partials.

The update kernels run one program per chunk, so the programs of one tensor cannot both read
its step count and advance it; and their partial sums (telemetry, ``sum(m^2)``) are written one
per chunk, never atomically. This one-program kernel does both after the update, in order:
``step <- step + 1`` for every tensor, then ``stats[first_slot + k] += sum_c partials[k, c]``
summed in a fixed order — both skipped (the sums add 0) when the prologue found an inf/nan.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common as C
from ._device import ROW_STEP, SLOT_FOUND_INF, bind_helpers_for_interpreter, fixed_order_sum


@triton.jit(do_not_specialize=["n_tensors", "partials_stride", "first_slot", "n_chunks"])
def _finish_kernel(ptrs, n_tensors, stats, partials, partials_stride, first_slot,
                   n_chunks, USE_PROLOGUE: tl.constexpr, ADVANCE_STEPS: tl.constexpr,
                   N_SUMS: tl.constexpr, BLOCK: tl.constexpr):
    """One program: advance every step count, then add N_SUMS rows of partials to stats."""
    keep = tl.full((), 1, tl.int1)
    if USE_PROLOGUE:
        keep = tl.load(stats + SLOT_FOUND_INF) == 0
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


def finish_(tables: C.Tables, stats: torch.Tensor, *, use_prologue: bool, advance_steps: bool,
            n_sums: int, first_slot: int = C.UPDATE_SQ) -> None:
    """Advance the step counts and/or add ``n_sums`` rows of partials to ``stats[first_slot:]``."""
    if not advance_steps and n_sums == 0:
        return
    partials = tables.partial_sums()
    _finish_kernel[(1,)](tables.ptrs, tables.n_tensors, stats, partials, partials.stride(0),
                         first_slot, tables.n_chunks, USE_PROLOGUE=use_prologue,
                         ADVANCE_STEPS=advance_steps, N_SUMS=n_sums, BLOCK=C.FINISH_BLOCK,
                         enable_fp_fusion=False)


bind_helpers_for_interpreter(globals())  # Note [interpreter helper calls]
