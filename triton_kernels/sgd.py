"""The SGD family's passes (IAN-SGD, NSGD, NSGDm, Clip-SGD, AdaGrad-Norm), one launch each.

:func:`scaled_sgd_update` and :func:`momentum_update` are those of
:mod:`fusedopt.reference.sgd_family`, in the same order (``csrc/math/sgd.h`` too), in opmath::

    d = g * coef   (direction "grad", after a prologue or maximize: coef negated)
    d = m          (direction "momentum": the momentum pass already used the negated grads)
    p = p - s * d                         s = stats[SCALE], the global scale of the step
    m = m * (1 - rho) + (g * coef) * rho  NSGDm's momentum pass, which also sums m_new^2 (coef
                                          negated for maximize)

The scale itself (``lr / max(c ||.|| + delta, floor)^beta``, or AdaGrad-Norm's
``lr / (sqrt(B) + eps)``) is computed on the device by the optimizer before the pass.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common as C
from ._device import (ROW_GRAD, ROW_STATE0, SLOT_SCALE, add_telemetry,
                      bind_helpers_for_interpreter, block_offsets, chunk_bounds, coef_and_skip,
                      f64, load_op, load_param, masked_square, row_ptr, store_as, store_param,
                      store_telemetry, telemetry_zeros, update_ptrs)
from ._launch import Launcher, chunk_size, table_args, update_and_finish, update_modes
from .finish import finish_


@triton.jit
def scaled_sgd_update(p, d, scale):
    """``p - s * d`` in opmath (``d`` already multiplied by coef when it is a grad)."""
    return p - scale * d


@triton.jit
def momentum_update(m, g, coef, one_m_rho, rho, USE_COEF: tl.constexpr):
    """NSGDm's ``m * (1 - rho) + (coef g) * rho`` in opmath."""
    if USE_COEF:
        g = g * coef
    return m * one_m_rho + g * rho


@triton.jit
def _sgd_block(offs, mask, p_ptr, g_ptr, m_ptr, master_ptr, coef, scale, acc_update, acc_param,
               acc_grad, OP: tl.constexpr, MOMENTUM: tl.constexpr, USE_COEF: tl.constexpr,
               HAS_MASTER: tl.constexpr, TELEMETRY: tl.constexpr, MASKED: tl.constexpr):
    """Load, update and store one block; add its telemetry squares to the accumulators."""
    p = load_param(p_ptr, master_ptr, offs, mask, OP, HAS_MASTER, MASKED)
    g = p  # placeholder when the grad is not read (never used then)
    if not MOMENTUM or TELEMETRY:
        g = load_op(g_ptr, offs, mask, OP, MASKED)
        if USE_COEF:
            g = g * coef
    if MOMENTUM:
        d = load_op(m_ptr, offs, mask, OP, MASKED)
    else:
        d = g
    new_p = scaled_sgd_update(p, d, scale)
    store_param(p_ptr, master_ptr, offs, new_p, mask, HAS_MASTER, MASKED)
    if TELEMETRY:
        acc_update, acc_param, acc_grad = add_telemetry(acc_update, acc_param, acc_grad, new_p,
                                                        p, g, mask, MASKED)
    return acc_update, acc_param, acc_grad


@triton.jit(do_not_specialize=["n_tensors", "n_chunks", "partials_stride"])
def _sgd_kernel(ptrs, numels, chunks, n_tensors, n_chunks, stats, partials, partials_stride,
                PARAM: tl.constexpr, GRAD: tl.constexpr, STATE: tl.constexpr, OP: tl.constexpr,
                MOMENTUM: tl.constexpr, USE_PROLOGUE: tl.constexpr, MAXIMIZE: tl.constexpr,
                USE_COEF: tl.constexpr, HAS_MASTER: tl.constexpr, TELEMETRY: tl.constexpr,
                ALIGNED: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    """One chunk of one tensor: ``p <- p - s d`` (Note [pointer tables])."""
    tid, start, count = chunk_bounds(chunks, numels, n_chunks, CHUNK)
    coef, count = coef_and_skip(stats, count, USE_PROLOGUE, MAXIMIZE)
    p_ptr, g_ptr, master_ptr = update_ptrs(ptrs, n_tensors, tid, start, PARAM, GRAD, ALIGNED)
    m_ptr = row_ptr(ptrs, ROW_STATE0, n_tensors, tid, start, STATE, ALIGNED)
    s_coef = coef.to(OP)
    s_scale = tl.load(stats + SLOT_SCALE).to(OP)
    acc_update, acc_param, acc_grad = telemetry_zeros(OP, BLOCK)
    # Full blocks unmasked, then one masked tail (a while loop: Note [interpreter loops]).
    full_end = (count // BLOCK) * BLOCK
    off = 0
    while off < full_end:
        offs = block_offsets(off, BLOCK)
        acc_update, acc_param, acc_grad = _sgd_block(
            offs, offs < count, p_ptr, g_ptr, m_ptr, master_ptr, s_coef, s_scale, acc_update,
            acc_param, acc_grad, OP, MOMENTUM, USE_COEF, HAS_MASTER, TELEMETRY, False)
        off += BLOCK
    if full_end < count:
        offs = block_offsets(full_end, BLOCK)
        acc_update, acc_param, acc_grad = _sgd_block(
            offs, offs < count, p_ptr, g_ptr, m_ptr, master_ptr, s_coef, s_scale, acc_update,
            acc_param, acc_grad, OP, MOMENTUM, USE_COEF, HAS_MASTER, TELEMETRY, True)
    if TELEMETRY:
        store_telemetry(partials, partials_stride, acc_update, acc_param, acc_grad)


@triton.jit
def _momentum_block(offs, mask, g_ptr, m_ptr, coef, one_m_rho, rho, acc, OP: tl.constexpr,
                    USE_COEF: tl.constexpr, MASKED: tl.constexpr):
    """Update one block of the momentum; add its squares to the accumulator."""
    g = load_op(g_ptr, offs, mask, OP, MASKED)
    m = load_op(m_ptr, offs, mask, OP, MASKED)
    m = momentum_update(m, g, coef, one_m_rho, rho, USE_COEF)
    store_as(m_ptr, offs, m, mask, MASKED)
    return acc + masked_square(m, mask, MASKED)


@triton.jit(do_not_specialize=["n_tensors", "n_chunks"])
def _momentum_kernel(ptrs, numels, chunks, n_tensors, n_chunks, stats, partials, rho: tl.float64,
                     GRAD: tl.constexpr, STATE: tl.constexpr, OP: tl.constexpr,
                     USE_PROLOGUE: tl.constexpr, MAXIMIZE: tl.constexpr, USE_COEF: tl.constexpr,
                     ALIGNED: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    """One chunk of one tensor: the new momentum and its partial ``sum(m^2)``."""
    tid, start, count = chunk_bounds(chunks, numels, n_chunks, CHUNK)
    # (maximize: the momentum accumulates the negated grads)
    coef, count = coef_and_skip(stats, count, USE_PROLOGUE, MAXIMIZE)
    g_ptr = row_ptr(ptrs, ROW_GRAD, n_tensors, tid, start, GRAD, ALIGNED)
    m_ptr = row_ptr(ptrs, ROW_STATE0, n_tensors, tid, start, STATE, ALIGNED)
    s_coef = coef.to(OP)
    s_rho = f64(rho).to(OP)
    s_one_m_rho = (1.0 - f64(rho)).to(OP)
    acc = tl.zeros([BLOCK], dtype=OP)
    full_end = (count // BLOCK) * BLOCK
    off = 0
    while off < full_end:  # a while loop: Note [interpreter loops]
        offs = block_offsets(off, BLOCK)
        acc = _momentum_block(offs, offs < count, g_ptr, m_ptr, s_coef, s_one_m_rho, s_rho, acc,
                              OP, USE_COEF, False)
        off += BLOCK
    if full_end < count:
        offs = block_offsets(full_end, BLOCK)
        acc = _momentum_block(offs, offs < count, g_ptr, m_ptr, s_coef, s_one_m_rho, s_rho, acc,
                              OP, USE_COEF, True)
    tl.store(partials + tl.program_id(0), tl.sum(acc, axis=0).to(tl.float64))


_SGD = Launcher(_sgd_kernel, ["PARAM", "GRAD", "STATE", "OP", "MOMENTUM", "USE_PROLOGUE",
                              "MAXIMIZE", "USE_COEF", "HAS_MASTER", "TELEMETRY", "ALIGNED",
                              "CHUNK"])
_MOMENTUM = Launcher(_momentum_kernel, ["GRAD", "STATE", "OP", "USE_PROLOGUE", "MAXIMIZE",
                                        "USE_COEF", "ALIGNED", "CHUNK"])


def _state_dtype(b) -> torch.dtype:
    """The momentum's dtype, or the param's when the bucket has no state (never loaded then)."""
    ms = b.states.get("momentum_buffer")
    return ms[0].dtype if ms else b.param_dtype


def sgd_step_(b, stats: torch.Tensor, *, direction: str, use_prologue: bool,
              telemetry: bool, maximize: bool = False) -> None:
    """The kernel contract's ``sgd_step_`` (:mod:`fusedopt.backends`): update, then finish."""
    tables = C.bucket_tables(b, chunk_size())
    modes = update_modes(param=b.param_dtype, grad=b.grad_dtype, use_prologue=use_prologue,
                         maximize=maximize, has_master=b.masters is not None,
                         telemetry=telemetry, aligned=tables.aligned, chunk=tables.chunk)
    modes.update(STATE=C.torch_to_triton_dtype(_state_dtype(b)),
                 MOMENTUM=direction == "momentum")
    update_and_finish(_SGD, tables, stats, table_args, modes, use_prologue=use_prologue,
                      telemetry=telemetry)


def momentum_step_(b, stats: torch.Tensor, *, rho: float, use_prologue: bool,
                   maximize: bool = False) -> None:
    """The kernel contract's ``momentum_step_``: NSGDm's momentum, ``sum(m^2)`` added to
    ``stats[MOMENTUM_SQ]`` (step counts untouched)."""
    tables = C.bucket_tables(b, chunk_size())
    modes = dict(GRAD=C.torch_to_triton_dtype(b.grad_dtype),
                 STATE=C.torch_to_triton_dtype(_state_dtype(b)),
                 OP=C.torch_to_triton_dtype(C.opmath(b.param_dtype)), USE_PROLOGUE=use_prologue,
                 MAXIMIZE=maximize, USE_COEF=use_prologue or maximize, ALIGNED=tables.aligned,
                 CHUNK=tables.chunk)

    def args_for(t: C.Tables, s: torch.Tensor) -> dict:
        return dict(ptrs=t.ptrs, numels=t.numels, chunks=t.chunks, n_tensors=t.n_tensors,
                    n_chunks=t.n_chunks, stats=s, partials=t.partial_sums(), rho=rho)

    _MOMENTUM(tables, stats, args_for, modes, reduces=True)
    finish_(tables, stats, use_prologue=use_prologue, advance_steps=False, n_sums=1,
            first_slot=C.MOMENTUM_SQ)


bind_helpers_for_interpreter(globals())  # Note [interpreter helper calls]
