"""``@triton.jit`` building blocks shared by the kernels: chunk bounds, table loads, I/O in opmath.

Numerics rules every kernel follows (docs/architecture.md#numerics-rules):

* Arithmetic in opmath (fp32; fp64 for fp64 params); loads upcast, stores round to nearest even.
* Division and square root are IEEE-rounded (:func:`div_rn`, :func:`sqrt_rn`: Triton's fp32 ``/``
  and ``tl.sqrt`` lower to approximate PTX instructions), and every GPU launch passes
  ``enable_fp_fusion=False`` so no ``a * b + c`` is contracted to an FMA the reference lacks.
* Loops whose bounds are runtime values are ``while`` loops. Note [interpreter loops]: Triton
  3.6's interpreter turns a ``range()`` bound into an int with ``int(ndarray)``, which NumPy 2.4
  rejects for its 1-element arrays (triton-lang/triton#9171); ``while`` conditions go through
  ``bool()``, which works, and compile to the same scf loop on a GPU.
* Hyperparameters arrive as ``tl.float64`` scalars and per-step scalars are computed in fp64, as
  the reference computes them, then cast to opmath once. Integer sizes and slot indices are
  ``do_not_specialize`` (Triton would otherwise compile a variant per "== 1" / "% 16 == 0").
"""
from __future__ import annotations

import triton
import triton.language as tl

from . import _common

# Constants of the host module, as constexpr globals the kernels can read.
SLOT_FOUND_INF = tl.constexpr(_common.FOUND_INF)
SLOT_COEF = tl.constexpr(_common.COEF)
SLOT_SCALE = tl.constexpr(_common.SCALE)
SLOT_ABC = tl.constexpr(_common.ABC)
SLOT_LR_INVALID = tl.constexpr(_common.LR_INVALID)
ROW_PARAM = tl.constexpr(_common.ROW_PARAM)
ROW_GRAD = tl.constexpr(_common.ROW_GRAD)
ROW_STEP = tl.constexpr(_common.ROW_STEP)
ROW_MASTER = tl.constexpr(_common.ROW_MASTER)
ROW_STATE0 = tl.constexpr(_common.ROW_STATE0)
ROW_STATE1 = tl.constexpr(_common.ROW_STATE1)
ROW_STATE2 = tl.constexpr(_common.ROW_STATE2)
ROW_STATE3 = tl.constexpr(_common.ROW_STATE3)
CLIP_EPS = tl.constexpr(_common.CLIP_EPS)


@triton.jit
def f64(x):
    """A runtime hyperparameter as an exact fp64 scalar.

    Compiled kernels receive it as a ``tl.float64`` argument already; the interpreter hands the
    Python float through unchanged, and ``tl.full`` keeps all 53 bits where any arithmetic on the
    bare float would first round it to fp32.
    """
    return tl.full((), x, tl.float64)


#: Were the kernels built for the interpreter? ``triton.jit`` reads TRITON_INTERPRET when it
#: decorates, i.e. when this module is first imported (Note [interpreter mode]).
INTERPRETED = not isinstance(f64, triton.runtime.JITFunction)
#: convert bf16 on the bits (Note [bf16 rounding]): only the interpreter needs it
BF16_ON_BITS = tl.constexpr(INTERPRETED)


def bind_helpers_for_interpreter(namespace: dict) -> None:
    """Under the interpreter, call the ``@triton.jit`` helpers of a module as plain functions.

    Note [interpreter helper calls]: Triton 3.6's interpreter re-patches ``triton.language``
    (``inspect.getmembers`` over every builtin, ~1.7 ms) on *each* call of a jit helper, though
    the launch has already patched it for the whole kernel; that was 65% of the CPU tests' time.
    This rebinds every helper name of ``namespace`` (not the ``*_kernel`` launch targets) to the
    function the interpreter would run, so a helper call is a Python call. Same code, same
    semantics; nothing changes for compiled kernels.
    """
    if not INTERPRETED:
        return
    for name, obj in list(namespace.items()):
        if hasattr(obj, "rewrite") and not name.endswith("_kernel"):
            namespace[name] = obj.rewrite()


@triton.jit
def div_rn(x, y):
    """``x / y`` rounded to nearest: ``tl.div_rn`` for fp32 (plain ``/`` is approximate there);
    fp64 division is always IEEE-rounded."""
    if x.dtype == tl.float64:
        return x / y
    else:
        return tl.div_rn(x, y)


@triton.jit
def sqrt_rn(x):
    """IEEE-rounded square root: ``tl.sqrt_rn`` for fp32; ``tl.sqrt`` is exact-rounded in fp64."""
    if x.dtype == tl.float64:
        return tl.sqrt(x)
    else:
        return tl.sqrt_rn(x)


@triton.jit
def chunk_bounds(chunks, numels, n_chunks, CHUNK: tl.constexpr):
    """(tensor index, first element, element count) of this program's chunk.

    The first element is int64 (tensors may exceed 2^31 elements); the count is at most CHUNK,
    so offsets inside a chunk are int32 from a 64-bit base pointer (:func:`row_ptr`), which
    keeps the per-element address math (and register use) small.
    """
    cid = tl.program_id(0)
    tid = tl.load(chunks + cid)
    start = tl.load(chunks + n_chunks + cid)
    count = tl.minimum(tl.load(numels + tid) - start, CHUNK).to(tl.int32)
    return tid, start, count


@triton.jit
def row_ptr(ptrs, row, n_tensors, tid, start, DTYPE: tl.constexpr, ALIGNED: tl.constexpr):
    """The address of element ``start`` of tensor ``tid`` in table row ``row``, as ``DTYPE*``."""
    p = tl.load(ptrs + row * n_tensors + tid).to(tl.pointer_type(DTYPE)) + start
    if ALIGNED:  # the host checked every address and chunk starts are multiples of CHUNK
        p = tl.multiple_of(p, 16)
    return p


@triton.jit
def block_offsets(off, BLOCK: tl.constexpr):
    """``off + [0, BLOCK)``, declared contiguous and BLOCK-aligned (vector loads)."""
    return tl.max_contiguous(tl.multiple_of(off + tl.arange(0, BLOCK), BLOCK), BLOCK)


@triton.jit
def upcast(x, OP: tl.constexpr):
    """A loaded block in opmath (exact: every storage dtype widens without rounding)."""
    if BF16_ON_BITS and x.dtype == tl.bfloat16:  # Note [bf16 rounding]
        x = (x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    return x.to(OP)


@triton.jit
def round_to(x, DTYPE: tl.constexpr):
    """``x`` rounded to the storage dtype, to nearest even, as torch's ``.to(dtype)``.

    Note [bf16 rounding]: compiled, ``.to(tl.bfloat16)`` is the GPU's round-to-nearest-even
    conversion. Triton 3.6's interpreter instead truncates (and with rounding="rtne" rounds ties
    away from zero), so under the interpreter bf16 is converted on the bits: add 0x7FFF plus the
    lowest kept bit and keep the high half (ties to even, overflow carries into inf), NaN becomes
    torch's 0x7FC0 — the GPU's result, which the CPU tests can then compare exactly.
    """
    if BF16_ON_BITS and DTYPE == tl.bfloat16:
        tl.static_assert(x.dtype == tl.float32, "bf16 storage is rounded from fp32 opmath")
        bits = x.to(tl.uint32, bitcast=True)
        rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
        rounded = tl.where(x != x, 0x7FC0, rounded)
        return rounded.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(DTYPE)


@triton.jit
def load_op(ptr, offs, mask, OP: tl.constexpr, MASKED: tl.constexpr):
    """Load a block and upcast it to opmath; the tail block (MASKED) reads 0 past the end."""
    if MASKED:
        x = tl.load(ptr + offs, mask=mask, other=0.0)
    else:
        x = tl.load(ptr + offs)
    return upcast(x, OP)


@triton.jit
def store_as(ptr, offs, x, mask, MASKED: tl.constexpr):
    """Round ``x`` to the pointee dtype (nearest even) and store the block."""
    y = round_to(x, ptr.dtype.element_ty)
    if MASKED:
        tl.store(ptr + offs, y, mask=mask)
    else:
        tl.store(ptr + offs, y)


@triton.jit
def load_master(master_ptr, p_ptr, offs, mask, MASKED: tl.constexpr):
    """A block of fp32 masters, re-seeded from the 16-bit params they no longer round to.

    Note [master re-seed] (csrc/math/master.h): every update stores param = master rounded to
    nearest even, so a param whose bits differ from its rounded master was written since the
    last step (load_state_dict, clamp_, re-init); the update then starts from the param,
    widened (exact), and its store re-seeds the master. Unwritten params change nothing.
    """
    if MASKED:
        master = tl.load(master_ptr + offs, mask=mask, other=0.0)
        param = tl.load(p_ptr + offs, mask=mask, other=0.0)
    else:
        master = tl.load(master_ptr + offs)
        param = tl.load(p_ptr + offs)
    rounded = round_to(master, param.dtype)
    same = rounded.to(tl.uint16, bitcast=True) == param.to(tl.uint16, bitcast=True)
    return tl.where(same, master, upcast(param, tl.float32))


@triton.jit
def lr_rejected(lr64):
    """A tensor lr (read through its pointer) that is NaN or negative: the call is skipped and
    the finish kernel sets stats[LR_INVALID] (the contract, fusedopt.backends)."""
    return (lr64 != lr64) | (lr64 < 0.0)


@triton.jit
def masked_square(x, mask, MASKED: tl.constexpr):
    """``x * x``, with 0 in the lanes past the end of a tail block (for partial sums)."""
    sq = x * x
    if MASKED:
        sq = tl.where(mask, sq, 0.0)
    return sq


@triton.jit
def fixed_order_sum(ptr, n, BLOCK: tl.constexpr):
    """fp64 sum of ``ptr[0:n]`` in a fixed order (lane-wise over blocks, then one tree).

    The second stage of every reduction: the partials are written per chunk, never atomically,
    and summed here by one program, so the result is the same bits on every run.
    """
    acc = tl.zeros([BLOCK], dtype=tl.float64)
    i = 0
    while i < n:  # not range(): see Note [interpreter loops]
        idx = i + tl.arange(0, BLOCK)
        acc += tl.load(ptr + idx, mask=idx < n, other=0.0).to(tl.float64)
        i += BLOCK
    return tl.sum(acc, axis=0)



bind_helpers_for_interpreter(globals())
