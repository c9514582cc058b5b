"""The prologue's norm pass (docs/algorithms.md#prologue): unscale, inf/nan check, global-norm clip.

Same conventions as :mod:`fusedopt.reference.prologue`, as a deterministic two-stage reduction:

1. ``_norm_partials_kernel``, one program per chunk of the grads (one launch per grad dtype,
   usually one): ``sum((g * inv)^2)`` accumulated in opmath (fp32; fp64 when any grad is fp64)
   and a per-element non-finite flag of ``g``, written to fixed per-chunk slots.
2. ``_norm_finalize_kernel``, one program: the fixed-order fp64 sum of the partials, then
   ``norm = sqrt(sq)``, ``found_inf`` (OR the GradScaler's), ``clip = min(1, max_norm /
   (norm + 1e-6))`` and ``coef = inv * clip`` in fp64, into the five slots of the region
   (Note [prologue region] in :mod:`fusedopt._stats`).

With ``compute_norm=False`` only stage 2 runs: ``sq = norm = 0``, ``clip = 1``, ``coef = inv``.
The chunks' partials are summed in fp64 where the reference sums the tensors' fp32 sums in
fp32, so this pass is at least as accurate as the reference in the storage precision.
"""
from __future__ import annotations

import weakref

import torch
import triton
import triton.language as tl

from . import _common as C
from ._device import (CLIP_EPS, ROW_GRAD, bind_helpers_for_interpreter, block_offsets,
                      chunk_bounds, div_rn, f64, fixed_order_sum, load_op, masked_square, row_ptr,
                      sqrt_rn)
from ._launch import Launcher, chunk_size


@triton.jit
def _norm_block(offs, mask, g_ptr, inv, acc_sq, acc_bad, OP: tl.constexpr,
                HAS_SCALE: tl.constexpr, MASKED: tl.constexpr):
    """Add one block's ``(g * inv)^2`` and non-finite flags to the accumulators."""
    g = load_op(g_ptr, offs, mask, OP, MASKED)
    acc_bad = acc_bad | ~(tl.abs(g) < float("inf"))  # inf or nan (a masked lane reads 0)
    if HAS_SCALE:
        g = g * inv
    return acc_sq + masked_square(g, mask, MASKED), acc_bad


@triton.jit(do_not_specialize=["n_tensors", "n_chunks", "partials_stride", "chunk_base"])
def _norm_partials_kernel(ptrs, numels, chunks, n_tensors, n_chunks, scale_ptr, partials,
                          partials_stride, chunk_base, GRAD: tl.constexpr, OP: tl.constexpr,
                          HAS_SCALE: tl.constexpr, ALIGNED: tl.constexpr, CHUNK: tl.constexpr,
                          BLOCK: tl.constexpr):
    """Stage 1: one chunk's partial sum of squares and non-finite flag, in its fixed slot."""
    tid, start, count = chunk_bounds(chunks, numels, n_chunks, CHUNK)
    g_ptr = row_ptr(ptrs, ROW_GRAD, n_tensors, tid, start, GRAD, ALIGNED)
    inv = f64(1.0)
    if HAS_SCALE:
        inv = div_rn(f64(1.0), tl.load(scale_ptr).to(tl.float64))
    s_inv = inv.to(OP)
    acc_sq = tl.zeros([BLOCK], dtype=OP)
    acc_bad = tl.zeros([BLOCK], dtype=tl.int1)
    full_end = (count // BLOCK) * BLOCK
    off = 0
    while off < full_end:  # a while loop: Note [interpreter loops]
        offs = block_offsets(off, BLOCK)
        acc_sq, acc_bad = _norm_block(offs, offs < count, g_ptr, s_inv, acc_sq, acc_bad, OP,
                                      HAS_SCALE, False)
        off += BLOCK
    if full_end < count:
        offs = block_offsets(full_end, BLOCK)
        acc_sq, acc_bad = _norm_block(offs, offs < count, g_ptr, s_inv, acc_sq, acc_bad, OP,
                                      HAS_SCALE, True)
    slot = chunk_base + tl.program_id(0)
    tl.store(partials + slot, tl.sum(acc_sq, axis=0).to(tl.float64))
    tl.store(partials + partials_stride + slot, tl.max(acc_bad.to(tl.float64), axis=0))


@triton.jit(do_not_specialize=["region", "partials_stride", "n_partials"])
def _norm_finalize_kernel(stats, region, partials, partials_stride, n_partials, scale_ptr,
                          found_inf_ptr, max_norm: tl.float64, COMPUTE_NORM: tl.constexpr,
                          HAS_SCALE: tl.constexpr, HAS_FOUND_INF: tl.constexpr,
                          HAS_CLIP: tl.constexpr, BLOCK: tl.constexpr):
    """Stage 2 (one program): fixed-order sums, then the five slots of the region."""
    inv = f64(1.0)
    if HAS_SCALE:
        inv = div_rn(f64(1.0), tl.load(scale_ptr).to(tl.float64))
    sq = f64(0.0)
    bad = tl.full((), 0, tl.int1)
    if COMPUTE_NORM:
        sq = fixed_order_sum(partials, n_partials, BLOCK)
        bad = fixed_order_sum(partials + partials_stride, n_partials, BLOCK) != 0
    if HAS_FOUND_INF:
        bad = bad | (tl.load(found_inf_ptr) != 0)
    norm = sqrt_rn(sq)
    clip = f64(1.0)
    if COMPUTE_NORM and HAS_CLIP:  # clip_grad_norm_: min(1, max_norm / (norm + 1e-6))
        clip = tl.minimum(div_rn(f64(max_norm), norm + f64(CLIP_EPS)), 1.0,
                          propagate_nan=tl.PropagateNan.ALL)
    out = stats + region
    tl.store(out, sq)
    tl.store(out + 1, norm)
    tl.store(out + 2, bad.to(tl.float64))
    tl.store(out + 3, clip)
    tl.store(out + 4, inv * clip)


_PARTIALS = Launcher(_norm_partials_kernel, ["GRAD", "OP", "HAS_SCALE", "ALIGNED", "CHUNK"])

#: id(stats buffer) (one per optimizer) -> its norm tables and partials; dropped with the buffer
#: (a WeakKeyDictionary would compare tensors with ``==`` on a hash match)
_CACHES: dict[int, dict] = {}


def _cache_of(stats: torch.Tensor) -> dict:
    key = id(stats)
    cache = _CACHES.get(key)
    if cache is None:
        cache = _CACHES[key] = {}
        weakref.finalize(stats, _CACHES.pop, key, None)
    return cache


def grad_prologue_(grads: list[torch.Tensor], stats: torch.Tensor, *, region: int, grad_scale,
                   found_inf, max_norm: float | None, compute_norm: bool) -> None:
    """The kernel contract's ``grad_prologue_`` (:mod:`fusedopt.backends`)."""
    cache = _cache_of(stats)
    device = stats.device
    scale = C.on_device(grad_scale, device) if grad_scale is not None else stats  # else unread
    found = C.on_device(found_inf, device) if found_inf is not None else stats
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    if compute_norm:
        for g in grads:  # one launch per grad dtype, in order of first appearance
            groups.setdefault(g.dtype, []).append(g)
    op = C.torch_to_triton_dtype(
        torch.float64 if torch.float64 in groups else torch.float32)
    tables = {dt: C.grad_list_tables(cache, f"norm{region}:{dt}", gs, chunk_size())
              for dt, gs in groups.items()}
    n_partials = sum(t.n_chunks for t in tables.values())
    partials = cache.get(("partials", region))
    if partials is None or partials.shape[1] < max(n_partials, 1):
        partials = cache[("partials", region)] = torch.zeros(
            2, max(n_partials, 1), dtype=torch.float64, device=device)
    base = 0
    for dt, t in tables.items():
        modes = dict(GRAD=C.torch_to_triton_dtype(dt), OP=op, HAS_SCALE=grad_scale is not None,
                     ALIGNED=t.aligned, CHUNK=t.chunk)

        def args_for(tt: C.Tables, s: torch.Tensor, base=base) -> dict:
            return dict(ptrs=tt.ptrs, numels=tt.numels, chunks=tt.chunks,
                        n_tensors=tt.n_tensors, n_chunks=tt.n_chunks, scale_ptr=scale,
                        partials=partials, partials_stride=partials.stride(0), chunk_base=base)

        _PARTIALS(t, stats, args_for, modes, reduces=True)
        base += t.n_chunks
    _norm_finalize_kernel[(1,)](
        stats, region, partials, partials.stride(0), n_partials, scale,
        found, 0.0 if max_norm is None else max_norm,
        COMPUTE_NORM=compute_norm, HAS_SCALE=grad_scale is not None,
        HAS_FOUND_INF=found_inf is not None, HAS_CLIP=max_norm is not None,
        BLOCK=C.FINISH_BLOCK, enable_fp_fusion=False)


bind_helpers_for_interpreter(globals())  # Note [interpreter helper calls]
