"""Adam family (adam, amsgrad, adabelief, eadam, rmsprop, yogi; AdamD; AdamL) in one Triton launch.

:func:`adam_family_update` is :func:`fusedopt.reference.adam_family.adam_family_update` line by
line, in opmath (``csrc/math/adam.h`` follows the same order)::

    g = g * coef                                (after a prologue, or maximize: coef negated)
    g = g + p * wd  |  p = p * decay            (coupled L2 | decoupled decay)
    m = lerp(m, g, w), w = 1 - beta1            (rmsprop: no m, the direction is g)
          m + w * (g - m)  if |w| < 0.5,  else  g - (g - m) * (1 - w)     (torch's lerp)
    v = v * beta2 + ((1 - beta2) * g) * g       adam, amsgrad, eadam, rmsprop
      = v * beta2 + ((1 - beta2) * d) * d       adabelief, d = g - m
      = v - ((1 - beta2) * sign(v - g*g)) * (g*g)   yogi
    v = v + eps                                 adabelief, eadam
    v = v + a                                   AdamL
    vmax = max(vmax, v), used below             amsgrad
    denom = sqrt(v) / bc2_sqrt + (b | eps | 0)  (AdamL | others | eadam)
    p = p - (step_size * m) / denom

The per-tensor scalars come first, in fp64 as ``adam_step_scalars``: ``t = step + 1``,
``bc_i = 1 - beta_i^t``, ``step_size = lr * c / bc1``, ``bc2_sqrt = sqrt(bc2)``,
``decay = 1 - lr * wd``. ``beta^t`` is ``exp(t * log(beta))`` (Triton has no pow; the two agree to
a few fp64 ulps, far below the fp32 rounding of the scalars; fp64 params see ~1e-15 relative).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common as C
from ._device import (ROW_STATE0, ROW_STATE1, ROW_STATE2, SLOT_ABC, add_telemetry,
                      bind_helpers_for_interpreter, block_offsets, chunk_bounds, coef_and_skip,
                      div_rn, f64, load_op, load_param, row_ptr, sqrt_rn, step_and_lr,
                      store_as, store_param, store_telemetry, telemetry_zeros, update_ptrs)
from ._launch import Launcher, chunk_size, table_args, update_and_finish, update_modes
from .finish import lr_rejected_on_host

ADAM = tl.constexpr(C.VARIANT_CODES["adam"])
AMSGRAD = tl.constexpr(C.VARIANT_CODES["amsgrad"])
ADABELIEF = tl.constexpr(C.VARIANT_CODES["adabelief"])
EADAM = tl.constexpr(C.VARIANT_CODES["eadam"])
RMSPROP = tl.constexpr(C.VARIANT_CODES["rmsprop"])
YOGI = tl.constexpr(C.VARIANT_CODES["yogi"])
DECAY_COUPLED = tl.constexpr(C.DECAY_COUPLED)
DECAY_DECOUPLED = tl.constexpr(C.DECAY_DECOUPLED)


@triton.jit
def lerp(m, g, w):
    """``m + w (g - m)`` in torch's two-branch form (exact at w = 1); ``w`` is an opmath scalar."""
    if tl.abs(w) < 0.5:
        m = m + w * (g - m)
    else:
        m = g - (g - m) * (1.0 - w)
    return m


@triton.jit
def adam_family_update(p, g, m, v, vmax, coef, wd, decay, one_m_beta1, beta2, one_m_beta2, eps,
                       a, b, step_size, bc2_sqrt, VARIANT: tl.constexpr, DECAY: tl.constexpr,
                       USE_COEF: tl.constexpr, USE_ABC: tl.constexpr):
    """One element update in opmath; every scalar is already opmath. Returns (p, m, v, vmax)."""
    if USE_COEF:
        g = g * coef
    if DECAY == DECAY_COUPLED:
        g = g + p * wd
    elif DECAY == DECAY_DECOUPLED:
        p = p * decay
    if VARIANT == RMSPROP:
        direction = g
    else:
        m = lerp(m, g, one_m_beta1)
        direction = m
    if VARIANT == ADABELIEF:
        d = g - m
        v = v * beta2 + (one_m_beta2 * d) * d
    elif VARIANT == YOGI:
        g2 = g * g
        x = v - g2
        sign = tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, x))  # torch.sign: 0 -> 0, nan -> nan
        v = v - (one_m_beta2 * sign) * g2
    else:
        v = v * beta2 + (one_m_beta2 * g) * g
    if VARIANT == ADABELIEF or VARIANT == EADAM:
        v = v + eps
    if USE_ABC:
        v = v + a
    vd = v
    if VARIANT == AMSGRAD:
        vmax = tl.maximum(vmax, v, propagate_nan=tl.PropagateNan.ALL)
        vd = vmax
    denom = div_rn(sqrt_rn(vd), bc2_sqrt)
    if USE_ABC:
        denom = denom + b
    elif VARIANT != EADAM:
        denom = denom + eps
    p = p - div_rn(step_size * direction, denom)
    return p, m, v, vmax


@triton.jit
def _adam_block(offs, mask, p_ptr, g_ptr, m_ptr, v_ptr, vmax_ptr, master_ptr, coef, wd, decay,
                one_m_beta1, beta2, one_m_beta2, eps, a, b, step_size, bc2_sqrt,
                acc_update, acc_param, acc_grad, OP: tl.constexpr, VARIANT: tl.constexpr,
                DECAY: tl.constexpr, USE_COEF: tl.constexpr, USE_ABC: tl.constexpr,
                HAS_MASTER: tl.constexpr, TELEMETRY: tl.constexpr, MASKED: tl.constexpr):
    """Load, update and store one block; add its telemetry squares to the accumulators."""
    p = load_param(p_ptr, master_ptr, offs, mask, OP, HAS_MASTER, MASKED)
    g = load_op(g_ptr, offs, mask, OP, MASKED)
    m = g  # placeholders for the states a variant does not have (never stored)
    vmax = g
    if VARIANT != RMSPROP:
        m = load_op(m_ptr, offs, mask, OP, MASKED)
    v = load_op(v_ptr, offs, mask, OP, MASKED)
    if VARIANT == AMSGRAD:
        vmax = load_op(vmax_ptr, offs, mask, OP, MASKED)
    new_p, m, v, vmax = adam_family_update(p, g, m, v, vmax, coef, wd, decay, one_m_beta1, beta2,
                                           one_m_beta2, eps, a, b, step_size, bc2_sqrt, VARIANT,
                                           DECAY, USE_COEF, USE_ABC)
    store_param(p_ptr, master_ptr, offs, new_p, mask, HAS_MASTER, MASKED)
    if VARIANT != RMSPROP:
        store_as(m_ptr, offs, m, mask, MASKED)
    store_as(v_ptr, offs, v, mask, MASKED)
    if VARIANT == AMSGRAD:
        store_as(vmax_ptr, offs, vmax, mask, MASKED)
    if TELEMETRY:
        if USE_COEF:
            g = g * coef  # the update scaled its own copy
        acc_update, acc_param, acc_grad = add_telemetry(acc_update, acc_param, acc_grad, new_p,
                                                        p, g, mask, MASKED)
    return acc_update, acc_param, acc_grad


@triton.jit(do_not_specialize=["n_tensors", "n_chunks", "partials_stride"])
def _adam_kernel(ptrs, numels, chunks, n_tensors, n_chunks, stats, partials, partials_stride,
                 lr_ptr, lr: tl.float64, beta1: tl.float64, beta2: tl.float64, eps: tl.float64,
                 weight_decay: tl.float64, PARAM: tl.constexpr, GRAD: tl.constexpr,
                 STATE: tl.constexpr, OP: tl.constexpr, VARIANT: tl.constexpr,
                 DECAY: tl.constexpr, BIAS_CORRECTION: tl.constexpr, USE_PROLOGUE: tl.constexpr,
                 MAXIMIZE: tl.constexpr, USE_COEF: tl.constexpr, USE_ABC: tl.constexpr,
                 HAS_MASTER: tl.constexpr, LR_FROM_PTR: tl.constexpr, TELEMETRY: tl.constexpr,
                 ALIGNED: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    """One chunk of one tensor: its fp64 step scalars, then its blocks (Note [pointer tables])."""
    tid, start, count = chunk_bounds(chunks, numels, n_chunks, CHUNK)
    # Per-tensor scalars in fp64 (adam_step_scalars), from t = step + 1 (fp32, as torch).
    t, lr64, count = step_and_lr(ptrs, n_tensors, tid, lr_ptr, lr, count, LR_FROM_PTR)
    b1 = f64(beta1)
    b2 = f64(beta2)
    if BIAS_CORRECTION:
        bc1 = 1.0 - tl.exp(t * tl.log(b1))
        bc2 = 1.0 - tl.exp(t * tl.log(b2))
    else:
        bc1 = f64(1.0)
        bc2 = f64(1.0)
    c = f64(1.0)
    a = f64(0.0)
    b = f64(eps)
    if USE_ABC:  # AdamL's a, b, c from the device (fusedopt.reference.adaml)
        a = tl.load(stats + SLOT_ABC)
        b = tl.load(stats + SLOT_ABC + 1)
        c = tl.load(stats + SLOT_ABC + 2)
    step_size = div_rn(lr64 * c, bc1)
    bc2_sqrt = sqrt_rn(bc2)
    decay = 1.0 - lr64 * f64(weight_decay)
    coef, count = coef_and_skip(stats, count, USE_PROLOGUE, MAXIMIZE)
    p_ptr, g_ptr, master_ptr = update_ptrs(ptrs, n_tensors, tid, start, PARAM, GRAD, ALIGNED)
    m_ptr = row_ptr(ptrs, ROW_STATE0, n_tensors, tid, start, STATE, ALIGNED)
    v_ptr = row_ptr(ptrs, ROW_STATE1, n_tensors, tid, start, STATE, ALIGNED)
    vmax_ptr = row_ptr(ptrs, ROW_STATE2, n_tensors, tid, start, STATE, ALIGNED)
    # Everything below in opmath; the scalars are rounded once, as the reference's .to(op).
    s_coef = coef.to(OP)
    s_wd = f64(weight_decay).to(OP)
    s_decay = decay.to(OP)
    s_one_m_beta1 = (1.0 - b1).to(OP)
    s_beta2 = b2.to(OP)
    s_one_m_beta2 = (1.0 - b2).to(OP)
    s_eps = f64(eps).to(OP)
    s_a = a.to(OP)
    s_b = b.to(OP)
    s_step_size = step_size.to(OP)
    s_bc2_sqrt = bc2_sqrt.to(OP)
    acc_update, acc_param, acc_grad = telemetry_zeros(OP, BLOCK)
    # Full blocks unmasked (vector loads when ALIGNED), then one masked tail block.
    # (A while loop: Note [interpreter loops] in _device.)
    full_end = (count // BLOCK) * BLOCK
    off = 0
    while off < full_end:
        offs = block_offsets(off, BLOCK)
        acc_update, acc_param, acc_grad = _adam_block(
            offs, offs < count, p_ptr, g_ptr, m_ptr, v_ptr, vmax_ptr, master_ptr, s_coef, s_wd,
            s_decay, s_one_m_beta1, s_beta2, s_one_m_beta2, s_eps, s_a, s_b,
            s_step_size, s_bc2_sqrt, acc_update, acc_param, acc_grad, OP, VARIANT, DECAY,
            USE_COEF, USE_ABC, HAS_MASTER, TELEMETRY, False)
        off += BLOCK
    if full_end < count:
        offs = block_offsets(full_end, BLOCK)
        acc_update, acc_param, acc_grad = _adam_block(
            offs, offs < count, p_ptr, g_ptr, m_ptr, v_ptr, vmax_ptr, master_ptr, s_coef, s_wd,
            s_decay, s_one_m_beta1, s_beta2, s_one_m_beta2, s_eps, s_a, s_b,
            s_step_size, s_bc2_sqrt, acc_update, acc_param, acc_grad, OP, VARIANT, DECAY,
            USE_COEF, USE_ABC, HAS_MASTER, TELEMETRY, True)
    if TELEMETRY:
        store_telemetry(partials, partials_stride, acc_update, acc_param, acc_grad)


_LAUNCH = Launcher(_adam_kernel, [
    "PARAM", "GRAD", "STATE", "OP", "VARIANT", "DECAY", "BIAS_CORRECTION", "USE_PROLOGUE",
    "MAXIMIZE", "USE_COEF", "USE_ABC", "HAS_MASTER", "LR_FROM_PTR", "TELEMETRY", "ALIGNED",
    "CHUNK"])


def adam_step_(b, stats: torch.Tensor, *, lr, hp, use_prologue: bool, use_abc: bool,
               telemetry: bool, maximize: bool = False) -> None:
    """The kernel contract's ``adam_step_`` (:mod:`fusedopt.backends`): update, then finish."""
    tables = C.bucket_tables(b, chunk_size())
    lr_value, lr_ptr, lr_from_ptr = C.lr_arguments(lr, stats)
    if lr_rejected_on_host(lr, lr_value, lr_from_ptr, stats):
        return
    if hp.weight_decay == 0.0:
        decay = C.DECAY_NONE
    else:
        decay = C.DECAY_COUPLED if hp.decay == "coupled" else C.DECAY_DECOUPLED
    modes = update_modes(param=b.param_dtype, grad=b.grad_dtype, use_prologue=use_prologue,
                         maximize=maximize, has_master=b.masters is not None,
                         telemetry=telemetry, aligned=tables.aligned, chunk=tables.chunk)
    modes.update(STATE=C.torch_to_triton_dtype(b.states["exp_avg_sq"][0].dtype),
                 VARIANT=C.VARIANT_CODES[hp.variant], DECAY=decay,
                 BIAS_CORRECTION=hp.bias_correction and hp.variant != "rmsprop",
                 USE_ABC=use_abc, LR_FROM_PTR=lr_from_ptr)

    def args_for(t: C.Tables, s: torch.Tensor) -> dict:
        return table_args(t, s, lr_ptr=lr_ptr, lr=lr_value, beta1=hp.beta1, beta2=hp.beta2,
                          eps=hp.eps, weight_decay=hp.weight_decay)

    update_and_finish(_LAUNCH, tables, stats, args_for, modes, use_prologue=use_prologue,
                      telemetry=telemetry, lr_ptr=lr_ptr if lr_from_ptr else None)


bind_helpers_for_interpreter(globals())  # Note [interpreter helper calls]
