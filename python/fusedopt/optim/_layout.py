"""Memory layouts the kernels accept, and the overlap check between the tensors they write.

Note [kernel layout]: every update kernel walks the memory of a tensor as one flat run of
``numel`` elements from ``data_ptr()``, pairing element i of the param with element i of its
grad, states and master. That is right for any *dense* (non-overlapping, no gaps) layout — a
transposed view, a channels_last conv weight — as long as every stream of the param has the
same strides. So:

* a dense param is updated in place; its states and master are created with the param's
  strides (``torch.zeros_like(p)`` preserves a dense layout) and a grad with other strides is
  staged through a copy in the param's layout;
* a non-dense param (a view with gaps) is staged: the kernels run on a contiguous copy that is
  written back after the step;
* a param whose elements overlap in memory (``expand``) cannot be updated element-wise at all
  and is refused, as are two params (or their states and masters) that share memory: two
  threads would write the same bytes and the result would depend on their order.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..backends.bucket import is_dense

__all__ = ["is_dense", "self_overlaps", "byte_span", "first_overlap"]


def self_overlaps(t: Tensor) -> bool:
    """Do two elements of ``t`` share memory (a stride-0 ``expand``, an overlapping view)?"""
    if t.numel() <= 1 or t.is_contiguous():
        return False
    # Sorted by stride, each dim must step past everything the smaller dims span; a layout
    # that fails this (rare, and never made by slicing) is treated as overlapping.
    reach = 0
    for st, sz in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if st <= reach:
            return True
        reach += (sz - 1) * st
    return False


def byte_span(t: Tensor) -> tuple[int, int]:
    """[first byte, one past the last byte) that ``t``'s elements occupy (empty: (p, p))."""
    start = t.data_ptr()
    if t.numel() == 0:
        return start, start
    last = sum((sz - 1) * st for sz, st in zip(t.shape, t.stride()))
    return start, start + (last + 1) * t.element_size()


def first_overlap(spans: list[tuple[int, int, str]]) -> tuple[str, str] | None:
    """Labels of two spans that share a byte, or None. ``spans``: (start, end, label)."""
    live = sorted((s for s in spans if s[1] > s[0]), key=lambda s: s[0])
    reach, owner = 0, ""  # the furthest end so far, and whose it is
    for s, e, label in live:
        if s < reach:
            return owner, label
        if e > reach:
            reach, owner = e, label
    return None
