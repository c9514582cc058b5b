"""Coordinate-wise Adagrad (torch.optim semantics) in one Triton launch.

:func:`adagrad_update` is :func:`fusedopt.reference.adagrad.adagrad_update` in the same order
(``csrc/math/adagrad.h`` too), in opmath::

    g = g * coef                          (after a prologue, or maximize: coef negated)
    g = g + p * wd                        (coupled L2, only when wd != 0)
    s = s + g * g
    p = p - (clr * g) / (sqrt(s) + eps)

with the per-tensor scalar ``clr = lr / (1 + (t - 1) * lr_decay)`` in fp64 (``adagrad_clr``).
AdaGrad-Norm is not here: it is the scaled-SGD pass of :mod:`.sgd`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common as C
from ._device import (ROW_GRAD, ROW_MASTER, ROW_PARAM, ROW_STATE0, ROW_STEP, SLOT_COEF,
                      SLOT_FOUND_INF, bind_helpers_for_interpreter, block_offsets, chunk_bounds,
                      div_rn, f64, load_master, load_op, lr_rejected, masked_square, row_ptr,
                      sqrt_rn, store_as)
from ._launch import Launcher, chunk_size
from .finish import finish_, lr_rejected_on_host


@triton.jit
def adagrad_update(p, g, s, coef, wd, clr, eps, USE_COEF: tl.constexpr,
                   HAS_WD: tl.constexpr):
    """One element update in opmath; every scalar is already opmath. Returns (p, s)."""
    if USE_COEF:
        g = g * coef
    if HAS_WD:
        g = g + p * wd
    s = s + g * g
    p = p - div_rn(clr * g, sqrt_rn(s) + eps)
    return p, s


@triton.jit
def _adagrad_block(offs, mask, p_ptr, g_ptr, s_ptr, master_ptr, coef, wd, clr, eps, acc_update,
                   acc_param, acc_grad, OP: tl.constexpr, USE_COEF: tl.constexpr,
                   HAS_WD: tl.constexpr, HAS_MASTER: tl.constexpr, TELEMETRY: tl.constexpr,
                   MASKED: tl.constexpr):
    """Load, update and store one block; add its telemetry squares to the accumulators."""
    if HAS_MASTER:
        p = load_master(master_ptr, p_ptr, offs, mask, MASKED)  # Note [master re-seed]
    else:
        p = load_op(p_ptr, offs, mask, OP, MASKED)
    g = load_op(g_ptr, offs, mask, OP, MASKED)
    s = load_op(s_ptr, offs, mask, OP, MASKED)
    new_p, s = adagrad_update(p, g, s, coef, wd, clr, eps, USE_COEF, HAS_WD)
    if HAS_MASTER:
        store_as(master_ptr, offs, new_p, mask, MASKED)
    store_as(p_ptr, offs, new_p, mask, MASKED)
    store_as(s_ptr, offs, s, mask, MASKED)
    if TELEMETRY:
        acc_update += masked_square(new_p - p, mask, MASKED)
        acc_param += masked_square(new_p, mask, MASKED)
        if USE_COEF:
            g = g * coef
        acc_grad += masked_square(g, mask, MASKED)
    return acc_update, acc_param, acc_grad


@triton.jit(do_not_specialize=["n_tensors", "n_chunks", "partials_stride"])
def _adagrad_kernel(ptrs, numels, chunks, n_tensors, n_chunks, stats, partials, partials_stride,
                    lr_ptr, lr: tl.float64, lr_decay: tl.float64, eps: tl.float64,
                    weight_decay: tl.float64, PARAM: tl.constexpr, GRAD: tl.constexpr,
                    STATE: tl.constexpr, OP: tl.constexpr, USE_PROLOGUE: tl.constexpr,
                    MAXIMIZE: tl.constexpr, USE_COEF: tl.constexpr, HAS_WD: tl.constexpr,
                    HAS_MASTER: tl.constexpr, LR_FROM_PTR: tl.constexpr,
                    TELEMETRY: tl.constexpr, ALIGNED: tl.constexpr, CHUNK: tl.constexpr,
                    BLOCK: tl.constexpr):
    """One chunk of one tensor: its fp64 ``clr``, then its blocks (Note [pointer tables])."""
    tid, start, count = chunk_bounds(chunks, numels, n_chunks, CHUNK)
    t = (tl.load(row_ptr(ptrs, ROW_STEP, n_tensors, tid, 0, tl.float32, False)) + 1.0)
    t = t.to(tl.float64)
    if LR_FROM_PTR:
        lr64 = tl.load(lr_ptr).to(tl.float64)
        count = tl.where(lr_rejected(lr64), 0, count)  # NaN or negative: skip, finish flags it
    else:
        lr64 = f64(lr)
    clr = div_rn(lr64, 1.0 + (t - 1.0) * f64(lr_decay))
    coef = f64(1.0)
    if USE_PROLOGUE:
        coef = tl.load(stats + SLOT_COEF)
        count = tl.where(tl.load(stats + SLOT_FOUND_INF) != 0, 0, count)  # skip: no work at all
    if MAXIMIZE:
        coef = -coef  # ascend: exact, g * (-coef) is bitwise -(g * coef)
    p_ptr = row_ptr(ptrs, ROW_PARAM, n_tensors, tid, start, PARAM, ALIGNED)
    g_ptr = row_ptr(ptrs, ROW_GRAD, n_tensors, tid, start, GRAD, ALIGNED)
    s_ptr = row_ptr(ptrs, ROW_STATE0, n_tensors, tid, start, STATE, ALIGNED)
    master_ptr = row_ptr(ptrs, ROW_MASTER, n_tensors, tid, start, tl.float32, ALIGNED)
    s_coef = coef.to(OP)
    s_wd = f64(weight_decay).to(OP)
    s_clr = clr.to(OP)
    s_eps = f64(eps).to(OP)
    acc_update = tl.zeros([BLOCK], dtype=OP)
    acc_param = tl.zeros([BLOCK], dtype=OP)
    acc_grad = tl.zeros([BLOCK], dtype=OP)
    # Full blocks unmasked, then one masked tail (a while loop: Note [interpreter loops]).
    full_end = (count // BLOCK) * BLOCK
    off = 0
    while off < full_end:
        offs = block_offsets(off, BLOCK)
        acc_update, acc_param, acc_grad = _adagrad_block(
            offs, offs < count, p_ptr, g_ptr, s_ptr, master_ptr, s_coef, s_wd, s_clr, s_eps,
            acc_update, acc_param, acc_grad, OP, USE_COEF, HAS_WD, HAS_MASTER, TELEMETRY,
            False)
        off += BLOCK
    if full_end < count:
        offs = block_offsets(full_end, BLOCK)
        acc_update, acc_param, acc_grad = _adagrad_block(
            offs, offs < count, p_ptr, g_ptr, s_ptr, master_ptr, s_coef, s_wd, s_clr, s_eps,
            acc_update, acc_param, acc_grad, OP, USE_COEF, HAS_WD, HAS_MASTER, TELEMETRY,
            True)
    if TELEMETRY:
        cid = tl.program_id(0)
        tl.store(partials + cid, tl.sum(acc_update, axis=0).to(tl.float64))
        tl.store(partials + partials_stride + cid, tl.sum(acc_param, axis=0).to(tl.float64))
        tl.store(partials + 2 * partials_stride + cid, tl.sum(acc_grad, axis=0).to(tl.float64))


_LAUNCH = Launcher(_adagrad_kernel, [
    "PARAM", "GRAD", "STATE", "OP", "USE_PROLOGUE", "MAXIMIZE", "USE_COEF", "HAS_WD",
    "HAS_MASTER", "LR_FROM_PTR", "TELEMETRY", "ALIGNED", "CHUNK"])


def adagrad_step_(b, stats: torch.Tensor, *, lr, lr_decay: float, eps: float,
                  weight_decay: float, use_prologue: bool, telemetry: bool,
                  maximize: bool = False) -> None:
    """The kernel contract's ``adagrad_step_`` (:mod:`fusedopt.backends`): update, then finish."""
    tables = C.bucket_tables(b, chunk_size())
    lr_value, lr_ptr, lr_from_ptr = C.lr_arguments(lr, stats)
    if lr_rejected_on_host(lr, lr_value, lr_from_ptr, stats):
        return
    modes = dict(
        PARAM=C.torch_to_triton_dtype(b.param_dtype), GRAD=C.torch_to_triton_dtype(b.grad_dtype),
        STATE=C.torch_to_triton_dtype(b.states["sum"][0].dtype),
        OP=C.torch_to_triton_dtype(C.opmath(b.param_dtype)), USE_PROLOGUE=use_prologue,
        MAXIMIZE=maximize, USE_COEF=use_prologue or maximize, HAS_WD=weight_decay != 0.0,
        HAS_MASTER=b.masters is not None, LR_FROM_PTR=lr_from_ptr,
        TELEMETRY=telemetry, ALIGNED=tables.aligned, CHUNK=tables.chunk)

    def args_for(t: C.Tables, s: torch.Tensor) -> dict:
        partials = t.partial_sums()
        return dict(ptrs=t.ptrs, numels=t.numels, chunks=t.chunks, n_tensors=t.n_tensors,
                    n_chunks=t.n_chunks, stats=s, partials=partials,
                    partials_stride=partials.stride(0), lr_ptr=lr_ptr, lr=lr_value,
                    lr_decay=lr_decay, eps=eps, weight_decay=weight_decay)

    _LAUNCH(tables, stats, args_for, modes, reduces=telemetry)
    finish_(tables, stats, use_prologue=use_prologue, advance_steps=True,
            n_sums=3 if telemetry else 0, lr_ptr=lr_ptr if lr_from_ptr else None)


bind_helpers_for_interpreter(globals())  # Note [interpreter helper calls]
