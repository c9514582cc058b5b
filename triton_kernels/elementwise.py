"""Every element-wise algorithm (Lion, Adan, Schedule-Free AdamW, ...) through ONE Triton kernel.

An element-wise algorithm is defined once per layer (:mod:`fusedopt.reference.elementwise`):
its reference module gives ``STATES``, ``HYPER`` and ``N_SCALARS``; its Triton module
``fusedopt.triton_kernels.<name>`` gives exactly two ``@triton.jit`` functions, in the
reference's operation order:

* ``scalars(t, lr, h)``: fp64 in, fp64 out: the tuple of its ``N_SCALARS`` per-tensor scalars
  from ``t = step + 1``, the learning rate and the hyperparameter tuple ``h`` (``MAX_HYPER``
  long, zero-padded);
* ``update(p, g, states, s)``: one block in opmath, ``g`` already times the gradient
  coefficient, ``states`` the tuple of its state blocks, ``s`` the scalars rounded to opmath;
  returns ``(p, states)``.

:func:`_elementwise_kernel` is the traversal all of them share, the same as the fixed kernels'
(:mod:`.adam`): one program per chunk (Note [pointer tables]), the skip rules (FOUND_INF after
a prologue, a NaN or negative tensor lr: no work at all, the finish kernel flags the lr), the
scalars in fp64 rounded once to opmath, then full blocks unmasked and one masked tail, each
block: load (the fp32 master re-seeded from a written 16-bit param), ``g * coef`` (negated for
maximize), ``update``, store (master, param, states), telemetry partials
``sum (p_new - p_old)^2, sum p_new^2, sum (coef g)^2``. The algorithm's two functions arrive as
``tl.constexpr`` arguments (``SCALARS``, ``UPDATE``): Triton specializes and caches the kernel
per function (by their source hash) as it does per dtype, so every algorithm compiles to its
own straight-line kernel, and the traversal is written once. The module is found by name, so
adding an algorithm edits nothing here.

Shared element operations (``lerp``, ``sign``, ``select``) are those of the reference's
:mod:`fusedopt.reference.elementwise` and the C++ ``csrc/math/opmath.h``, in the same order.
"""
from __future__ import annotations

import importlib
from types import ModuleType

import torch
import triton
import triton.language as tl

from fusedopt.reference import elementwise as spec

from . import _common as C
from ._device import (ROW_GRAD, ROW_MASTER, ROW_PARAM, ROW_STATE0, ROW_STATE1, ROW_STATE2,
                      ROW_STATE3, ROW_STEP, SLOT_COEF, SLOT_FOUND_INF,
                      bind_helpers_for_interpreter, block_offsets, chunk_bounds, f64, load_master,
                      load_op, lr_rejected, masked_square, row_ptr, store_as)
from ._launch import Launcher, chunk_size
from .finish import finish_, lr_rejected_on_host

assert C.MAX_STATES == spec.MAX_STATES, "table rows and the element-wise state limit differ"
MAX_HYPER = spec.MAX_HYPER


# ------------------------------------------------------------------ shared element operations
@triton.jit
def lerp(a, b, w):
    """torch's lerp with a scalar weight, two branches (exact at w = 1), no FMA:
    ``a + w (b - a)`` if ``|w| < 0.5``, else ``b - (b - a) (1 - w)``; ``w`` an opmath scalar."""
    d = b - a
    if tl.abs(w) < 0.5:
        out = a + w * d
    else:
        out = b - d * (1.0 - w)
    return out


@triton.jit
def sign(x):
    """torch.sign: -1, 0 or 1 in ``x``'s dtype, and 0 for NaN (as the C++ op_sign)."""
    return tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0)).to(x.dtype)


@triton.jit
def select(cond, a, b):
    """``a`` where the scalar flag ``cond`` is non-zero, else ``b`` (a select, not arithmetic)."""
    return tl.where(cond != 0, a, b)


# ------------------------------------------------------------------ the shared traversal
@triton.jit
def _to_opmath(s, OP: tl.constexpr):
    """The fp64 scalars rounded once to opmath, as the reference's ``.to(op)``."""
    out = ()
    for i in tl.static_range(len(s)):
        out = out + (s[i].to(OP),)
    return out


@triton.jit
def _state_ptrs(ptrs, n_tensors, tid, start, S0: tl.constexpr, S1: tl.constexpr,
                S2: tl.constexpr, S3: tl.constexpr, N_STATES: tl.constexpr,
                ALIGNED: tl.constexpr):
    """The addresses of the first N_STATES state rows (rows past them are never read)."""
    out = ()
    if N_STATES > 0:
        out = out + (row_ptr(ptrs, ROW_STATE0, n_tensors, tid, start, S0, ALIGNED),)
    if N_STATES > 1:
        out = out + (row_ptr(ptrs, ROW_STATE1, n_tensors, tid, start, S1, ALIGNED),)
    if N_STATES > 2:
        out = out + (row_ptr(ptrs, ROW_STATE2, n_tensors, tid, start, S2, ALIGNED),)
    if N_STATES > 3:
        out = out + (row_ptr(ptrs, ROW_STATE3, n_tensors, tid, start, S3, ALIGNED),)
    return out


@triton.jit
def _elementwise_block(offs, mask, p_ptr, g_ptr, master_ptr, state_ptrs, s, coef, acc_update,
                       acc_param, acc_grad, UPDATE: tl.constexpr, OP: tl.constexpr,
                       USE_COEF: tl.constexpr, HAS_MASTER: tl.constexpr,
                       TELEMETRY: tl.constexpr, MASKED: tl.constexpr):
    """Load, update and store one block; add its telemetry squares to the accumulators."""
    if HAS_MASTER:
        p = load_master(master_ptr, p_ptr, offs, mask, MASKED)  # Note [master re-seed]
    else:
        p = load_op(p_ptr, offs, mask, OP, MASKED)
    g = load_op(g_ptr, offs, mask, OP, MASKED)
    if USE_COEF:
        g = g * coef  # AMP unscale x clip, negated for maximize: before anything else
    states = ()
    for i in tl.static_range(len(state_ptrs)):
        states = states + (load_op(state_ptrs[i], offs, mask, OP, MASKED),)
    new_p, states = UPDATE(p, g, states, s)
    if HAS_MASTER:
        store_as(master_ptr, offs, new_p, mask, MASKED)
    store_as(p_ptr, offs, new_p, mask, MASKED)
    for i in tl.static_range(len(state_ptrs)):
        store_as(state_ptrs[i], offs, states[i], mask, MASKED)
    if TELEMETRY:
        acc_update += masked_square(new_p - p, mask, MASKED)
        acc_param += masked_square(new_p, mask, MASKED)
        acc_grad += masked_square(g, mask, MASKED)
    return acc_update, acc_param, acc_grad


@triton.jit(do_not_specialize=["n_tensors", "n_chunks", "partials_stride"])
def _elementwise_kernel(ptrs, numels, chunks, n_tensors, n_chunks, stats, partials,
                        partials_stride, lr_ptr, lr: tl.float64, h0: tl.float64,
                        h1: tl.float64, h2: tl.float64, h3: tl.float64, h4: tl.float64,
                        h5: tl.float64, h6: tl.float64, h7: tl.float64,
                        SCALARS: tl.constexpr, UPDATE: tl.constexpr, N_SCALARS: tl.constexpr,
                        N_STATES: tl.constexpr, PARAM: tl.constexpr, GRAD: tl.constexpr,
                        STATE0: tl.constexpr, STATE1: tl.constexpr, STATE2: tl.constexpr,
                        STATE3: tl.constexpr, OP: tl.constexpr, USE_PROLOGUE: tl.constexpr,
                        MAXIMIZE: tl.constexpr, USE_COEF: tl.constexpr,
                        HAS_MASTER: tl.constexpr, LR_FROM_PTR: tl.constexpr,
                        TELEMETRY: tl.constexpr, ALIGNED: tl.constexpr, CHUNK: tl.constexpr,
                        BLOCK: tl.constexpr):
    """One chunk of one tensor: the algorithm's fp64 scalars, then its blocks."""
    tid, start, count = chunk_bounds(chunks, numels, n_chunks, CHUNK)
    # t = step + 1 in fp32 (as torch counts), widened to fp64 for the scalars
    t = (tl.load(row_ptr(ptrs, ROW_STEP, n_tensors, tid, 0, tl.float32, False)) + 1.0)
    t = t.to(tl.float64)
    if LR_FROM_PTR:
        lr64 = tl.load(lr_ptr).to(tl.float64)
        count = tl.where(lr_rejected(lr64), 0, count)  # NaN or negative: skip, finish flags it
    else:
        lr64 = f64(lr)
    coef = f64(1.0)
    if USE_PROLOGUE:
        coef = tl.load(stats + SLOT_COEF)
        count = tl.where(tl.load(stats + SLOT_FOUND_INF) != 0, 0, count)  # skip: no work at all
    if MAXIMIZE:
        coef = -coef  # ascend: exact, g * (-coef) is bitwise -(g * coef)
    h = (f64(h0), f64(h1), f64(h2), f64(h3), f64(h4), f64(h5), f64(h6), f64(h7))
    s64 = SCALARS(t, lr64, h)
    tl.static_assert(len(s64) == N_SCALARS, "scalars() returns N_SCALARS values")
    s = _to_opmath(s64, OP)  # rounded once, as the reference's .to(op)
    s_coef = coef.to(OP)
    p_ptr = row_ptr(ptrs, ROW_PARAM, n_tensors, tid, start, PARAM, ALIGNED)
    g_ptr = row_ptr(ptrs, ROW_GRAD, n_tensors, tid, start, GRAD, ALIGNED)
    master_ptr = row_ptr(ptrs, ROW_MASTER, n_tensors, tid, start, tl.float32, ALIGNED)
    state_ptrs = _state_ptrs(ptrs, n_tensors, tid, start, STATE0, STATE1, STATE2, STATE3,
                             N_STATES, ALIGNED)
    acc_update = tl.zeros([BLOCK], dtype=OP)
    acc_param = tl.zeros([BLOCK], dtype=OP)
    acc_grad = tl.zeros([BLOCK], dtype=OP)
    # Full blocks unmasked (vector loads when ALIGNED), then one masked tail block.
    # (A while loop: Note [interpreter loops] in _device.)
    full_end = (count // BLOCK) * BLOCK
    off = 0
    while off < full_end:
        offs = block_offsets(off, BLOCK)
        acc_update, acc_param, acc_grad = _elementwise_block(
            offs, offs < count, p_ptr, g_ptr, master_ptr, state_ptrs, s, s_coef, acc_update,
            acc_param, acc_grad, UPDATE, OP, USE_COEF, HAS_MASTER, TELEMETRY, False)
        off += BLOCK
    if full_end < count:
        offs = block_offsets(full_end, BLOCK)
        acc_update, acc_param, acc_grad = _elementwise_block(
            offs, offs < count, p_ptr, g_ptr, master_ptr, state_ptrs, s, s_coef, acc_update,
            acc_param, acc_grad, UPDATE, OP, USE_COEF, HAS_MASTER, TELEMETRY, True)
    if TELEMETRY:
        cid = tl.program_id(0)
        tl.store(partials + cid, tl.sum(acc_update, axis=0).to(tl.float64))
        tl.store(partials + partials_stride + cid, tl.sum(acc_param, axis=0).to(tl.float64))
        tl.store(partials + 2 * partials_stride + cid, tl.sum(acc_grad, axis=0).to(tl.float64))


MODE_NAMES = [
    "SCALARS", "UPDATE", "N_SCALARS", "N_STATES", "PARAM", "GRAD", "STATE0", "STATE1", "STATE2",
    "STATE3", "OP", "USE_PROLOGUE", "MAXIMIZE", "USE_COEF", "HAS_MASTER", "LR_FROM_PTR",
    "TELEMETRY", "ALIGNED", "CHUNK"]
#: The one (BLOCK, num_warps) of a launch that sums (telemetry; never tuned, _launch), per
#: opmath. fp64 blocks take twice the registers: Adan (four fp64 states, the three telemetry
#: sums) spills 64 bytes at GPU_REDUCE for sm_90 (255 registers), not at half the block (176).
REDUCE = {torch.float32: C.GPU_REDUCE, torch.float64: (C.GPU_REDUCE[0] // 2, C.GPU_REDUCE[1])}
_LAUNCH = {op: Launcher(_elementwise_kernel, MODE_NAMES, reduce=cfg) for op, cfg in REDUCE.items()}


# ------------------------------------------------------------------ host
def algorithm(name: str) -> ModuleType:
    """The Triton module of element-wise algorithm ``name`` (its ``scalars`` and ``update``)."""
    try:
        mod = importlib.import_module(f"{__package__}.{name}")
    except ModuleNotFoundError as exc:
        raise ValueError(f"fusedopt triton backend: no Triton kernel for the element-wise "
                         f"algorithm {name!r} (triton_kernels/{name}.py)") from exc
    if not (hasattr(mod, "scalars") and hasattr(mod, "update")):
        raise ValueError(f"fusedopt triton backend: triton_kernels/{name}.py does not define "
                         "scalars and update")
    return mod


def modes_for(algo: str, state_dtypes: list[torch.dtype], *, param: torch.dtype,
              grad: torch.dtype, use_prologue: bool, maximize: bool, has_master: bool,
              lr_from_ptr: bool, telemetry: bool, aligned: bool, chunk: int) -> dict:
    """The ``tl.constexpr`` arguments of one launch (also what compile_check compiles)."""
    ref, kern = spec.spec(algo), algorithm(algo)
    dts = [C.torch_to_triton_dtype(d) for d in state_dtypes]
    dts += [tl.float32] * (C.MAX_STATES - len(dts))  # rows past N_STATES: never read
    return dict(
        SCALARS=kern.scalars, UPDATE=kern.update, N_SCALARS=ref.N_SCALARS,
        N_STATES=len(ref.STATES), PARAM=C.torch_to_triton_dtype(param),
        GRAD=C.torch_to_triton_dtype(grad), STATE0=dts[0], STATE1=dts[1], STATE2=dts[2],
        STATE3=dts[3], OP=C.torch_to_triton_dtype(C.opmath(param)),
        USE_PROLOGUE=use_prologue, MAXIMIZE=maximize, USE_COEF=use_prologue or maximize,
        HAS_MASTER=has_master, LR_FROM_PTR=lr_from_ptr, TELEMETRY=telemetry, ALIGNED=aligned,
        CHUNK=chunk)


def elementwise_step_(b, stats: torch.Tensor, *, algo: str, lr, hyper: tuple[float, ...],
                      use_prologue: bool, telemetry: bool, maximize: bool = False) -> None:
    """The kernel contract's ``elementwise_step_`` (:mod:`fusedopt.backends`): update, finish."""
    ref = spec.spec(algo)
    hyper = spec.check_hyper(ref, hyper)
    algorithm(algo)  # a missing kernel module raises before anything is touched
    missing = [name for name in ref.STATES if name not in b.states]
    if missing:
        raise KeyError(f"fusedopt triton backend: {algo} needs the states {ref.STATES}, the "
                       f"bucket has no {missing}")
    tables = C.bucket_tables(b, chunk_size(), states=ref.STATES)
    lr_value, lr_ptr, lr_from_ptr = C.lr_arguments(lr, stats)
    if lr_rejected_on_host(lr, lr_value, lr_from_ptr, stats):
        return
    modes = modes_for(algo, [b.states[name][0].dtype for name in ref.STATES],
                      param=b.param_dtype, grad=b.grad_dtype, use_prologue=use_prologue,
                      maximize=maximize, has_master=b.masters is not None,
                      lr_from_ptr=lr_from_ptr, telemetry=telemetry, aligned=tables.aligned,
                      chunk=tables.chunk)
    padded = hyper + (0.0,) * (MAX_HYPER - len(hyper))

    def args_for(t: C.Tables, s: torch.Tensor) -> dict:
        partials = t.partial_sums()
        return dict(ptrs=t.ptrs, numels=t.numels, chunks=t.chunks, n_tensors=t.n_tensors,
                    n_chunks=t.n_chunks, stats=s, partials=partials,
                    partials_stride=partials.stride(0), lr_ptr=lr_ptr, lr=lr_value,
                    **{f"h{i}": v for i, v in enumerate(padded)})

    _LAUNCH[C.opmath(b.param_dtype)](tables, stats, args_for, modes, reduces=telemetry)
    finish_(tables, stats, use_prologue=use_prologue, advance_steps=True,
            n_sums=3 if telemetry else 0, lr_ptr=lr_ptr if lr_from_ptr else None)


bind_helpers_for_interpreter(globals())  # Note [interpreter helper calls]
