"""Host-side pieces every Triton kernel shares: stats slots, table rows, launch sizes, tables.

Importing this module decorates no ``@triton.jit`` function (those live in :mod:`._device` and
the algorithm modules), so it can be imported for its constants at any time without fixing the
interpreter mode (Note [interpreter mode] in :mod:`fusedopt.triton_kernels`).

Note [pointer tables]: a bucket of N tensors is described to a kernel by three int64 device
tensors:

* ``ptrs``   ``[NUM_ROWS, N]``: row ``ROW_*`` holds the addresses of one stream (params, grads,
  step counts, fp32 masters, states); rows a call does not use hold 0 and are never loaded.
* ``numels`` ``[N]``: elements per tensor.
* ``chunks`` ``[2, C]``: for every chunk of at most ``chunk`` elements, the tensor index (row 0)
  and the first element (row 1), tensors in list order. One program runs one chunk, so one
  launch covers any number of tensors and every offset is 64-bit.

Note [table cache]: the tables of a bucket live in ``bucket.cache`` (the optimizer keeps it
across steps) with what decides whether they still hold: the params' ``data_ptr`` tuple (a
param's storage can be swapped with ``p.data = ...``), compared every call; strong
references to the step, master and state tensors, compared by identity (the optimizer replaces
them only in ``load_state_dict``, which clears the caches, and holding them means no cached
address outlives its memory); and the grads' addresses, which change when grads are
re-allocated (``zero_grad(set_to_none=True)``): then only the grad row is copied again. Grads
are never held, so the cache does not keep last step's grads alive. The norm pass caches its
grad lists by (addresses, sizes).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch import Tensor

# ---------------------------------------------------------------- stats slots (fusedopt._stats)
# The same numbers as python/fusedopt/_stats.py and csrc/include/fusedopt/stats.h.
GRAD = 0
GRAD_SQ = 0
GRAD_NORM = 1
FOUND_INF = 2
CLIP_COEF = 3
COEF = 4
UPDATE_SQ = 5
PARAM_SQ = 6
STEP_GRAD_SQ = 7
AUX = 8
SCALE = 13
ABC = 14
MOMENTUM_SQ = 17
NUM_SLOTS = 32

#: clip_grad_norm_ adds this to the norm (fusedopt.reference.prologue.CLIP_EPS)
CLIP_EPS = 1e-6

# ---------------------------------------------------------------- pointer-table rows
ROW_PARAM = 0
ROW_GRAD = 1
ROW_STEP = 2
ROW_MASTER = 3
ROW_STATE0 = 4     # exp_avg, sum or momentum_buffer
ROW_STATE1 = 5     # exp_avg_sq
ROW_STATE2 = 6     # max_exp_avg_sq
NUM_ROWS = 7
#: the table row of every state stream of the kernel contract
STATE_ROWS = {"exp_avg": ROW_STATE0, "sum": ROW_STATE0, "momentum_buffer": ROW_STATE0,
              "exp_avg_sq": ROW_STATE1, "max_exp_avg_sq": ROW_STATE2}

# ---------------------------------------------------------------- mode codes (tl.constexpr)
# Adam-family variants, in the order of fusedopt.reference.adam_family.VARIANTS.
VARIANT_CODES = {"adam": 0, "amsgrad": 1, "adabelief": 2, "eadam": 3, "rmsprop": 4, "yogi": 5}
# Weight decay: none, coupled L2 (g += wd p), decoupled (p *= 1 - lr wd).
DECAY_NONE, DECAY_COUPLED, DECAY_DECOUPLED = 0, 1, 2

# ---------------------------------------------------------------- launch sizes
#: Elements per chunk on a GPU: 64 Ki elements (Apex's and torch's multi-tensor chunk) gives
#: 16-64 BLOCK iterations per program, and a multiple of every tuned BLOCK keeps each block's
#: start aligned for 16-byte vector loads.
GPU_CHUNK = 65536
#: (BLOCK, num_warps) tried by triton.autotune for the element-wise update launches.
GPU_TUNE = ((1024, 4), (2048, 4), (2048, 8), (4096, 16))
#: The one config of launches that reduce (norm pass, telemetry, momentum): autotuning would
#: change the summation order between processes, and the sums must be bitwise reproducible.
GPU_REDUCE = (2048, 8)
#: Under TRITON_INTERPRET=1 every op is one numpy call on a whole block and costs ~50 us of
#: Python whatever the block size, so the CPU tests are fastest with big blocks (a 65,537-element
#: tensor is 68 blocks here, 513 at BLOCK=128); 4 blocks per chunk keep ">1 chunk" cheap to test.
INTERPRET_BLOCK = 1024
INTERPRET_CHUNK = 4096
#: BLOCK of the one-program finishing kernels (step counts, fixed-order sums of the partials).
FINISH_BLOCK = 256
#: Scratch bucket the GPU autotuner times configs on (Note [autotune on scratch]): 32 tensors of
#: 256 Ki elements, 8 Mi elements per stream, enough to reach steady-state bandwidth.
SCRATCH_TENSORS = 32
SCRATCH_NUMEL = 1 << 18


def torch_to_triton_dtype(dtype: torch.dtype):
    """The ``triton.language`` dtype of a torch storage dtype (fp32, bf16, fp16, fp64)."""
    import triton.language as tl

    return {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16,
            torch.float64: tl.float64}[dtype]


def opmath(dtype: torch.dtype) -> torch.dtype:
    """Arithmetic dtype of a storage dtype: fp64 for fp64, fp32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


_data_ptr = Tensor.data_ptr


@dataclass
class Tables:
    """The device tables of one set of tensors (Note [pointer tables]) and their cache keys."""

    ptrs: Tensor
    numels: Tensor
    chunks: Tensor
    n_tensors: int
    n_chunks: int
    chunk: int
    #: every address is a multiple of 16 bytes: the kernels may hint vector loads
    aligned: bool
    #: ``ptrs`` on the host (unused rows hold 0)
    host_ptrs: Tensor
    #: storage dtype of every row in use (what a scratch copy for autotuning needs)
    row_dtypes: dict[int, torch.dtype]
    #: fp64 scratch for per-chunk partial sums, ``[3, n_chunks]`` (allocated on first use)
    partials: Tensor | None = None
    #: the tensors the addresses point into, when the tables own them (autotuning scratch)
    owned: dict | None = None
    #: Note [table cache]: compared on every call
    key_ptrs: tuple = ()
    key_numels: tuple = ()
    grad_ptrs: tuple = ()
    held: list = field(default_factory=list)

    def partial_sums(self) -> Tensor:
        if self.partials is None:
            self.partials = torch.zeros(3, max(self.n_chunks, 1), dtype=torch.float64,
                                        device=self.ptrs.device)
        return self.partials

    def set_grads(self, grad_ptrs: tuple) -> None:
        """New grad addresses (re-allocated grads): refresh that row only."""
        self.host_ptrs[ROW_GRAD] = torch.tensor(grad_ptrs, dtype=torch.int64)
        self.ptrs[ROW_GRAD].copy_(_to_device(self.host_ptrs[ROW_GRAD], self.ptrs.device),
                                  non_blocking=True)
        self.aligned = _all_aligned(self.host_ptrs)
        self.grad_ptrs = grad_ptrs


def build_tables(rows: dict[int, list[Tensor]], chunk: int) -> Tables:
    """Pointer, size and chunk tables for the tensors of ``rows`` (row index -> tensors).

    Every row holds one tensor per param; the sizes are those of the lowest row. One host to
    device copy per table (the caller caches the result).
    """
    first = rows[min(rows)]
    n = len(first)
    device = first[0].device
    ptrs = torch.zeros(NUM_ROWS, n, dtype=torch.int64)
    for r, ts in rows.items():
        ptrs[r] = torch.tensor([t.data_ptr() for t in ts], dtype=torch.int64)
    numels = torch.tensor([t.numel() for t in first], dtype=torch.int64)
    per_tensor = (numels + chunk - 1) // chunk
    tensor_of_chunk = torch.repeat_interleave(torch.arange(n, dtype=torch.int64), per_tensor)
    first_chunk = torch.cumsum(per_tensor, 0) - per_tensor
    start = (torch.arange(tensor_of_chunk.numel(), dtype=torch.int64)
             - first_chunk[tensor_of_chunk]) * chunk
    chunks = torch.stack([tensor_of_chunk, start])
    return Tables(ptrs=_to_device(ptrs, device), numels=_to_device(numels, device),
                  chunks=_to_device(chunks, device), n_tensors=n, n_chunks=int(chunks.shape[1]),
                  chunk=chunk, aligned=_all_aligned(ptrs), host_ptrs=ptrs,
                  row_dtypes={r: ts[0].dtype for r, ts in rows.items()})


def _all_aligned(ptrs: Tensor) -> bool:
    """Every address a multiple of 16 bytes (the 0s of unused rows are)."""
    return bool(torch.all(ptrs % 16 == 0))


def grad_list_tables(cache: dict, key: str, grads: list[Tensor], chunk: int) -> Tables:
    """The tables of a grad list (the norm pass) from ``cache[key]``, rebuilt when the grads'
    addresses or sizes change."""
    ptrs = tuple(map(_data_ptr, grads))
    numels = tuple(map(Tensor.numel, grads))
    tables = cache.get(key)
    if (tables is None or tables.key_ptrs != ptrs or tables.key_numels != numels
            or tables.chunk != chunk):
        tables = cache[key] = build_tables({ROW_GRAD: grads}, chunk)
        tables.key_ptrs, tables.key_numels = ptrs, numels
    return tables


def _to_device(t: Tensor, device: torch.device) -> Tensor:
    # Pinned source + non_blocking: the copy is queued on the stream; the host does not wait.
    if device.type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def bucket_tables(b, chunk: int) -> Tables:
    """The cached tables of a :class:`~fusedopt.backends.Bucket`: every stream it holds.

    One set of tables serves every kernel of the bucket (update, momentum, finish); they live in
    ``b.cache``, which the optimizer keeps across steps (Note [table cache]).
    """
    param_ptrs = tuple(map(_data_ptr, b.params))
    grad_ptrs = tuple(map(_data_ptr, b.grads))
    held = list(b.steps) + (b.masters or []) + [t for ts in b.states.values() for t in ts]
    tables = b.cache.get("triton")
    if (tables is not None and tables.key_ptrs == param_ptrs and tables.chunk == chunk
            and len(tables.held) == len(held)
            and all(map(operator.is_, tables.held, held))):
        if tables.grad_ptrs != grad_ptrs:
            tables.set_grads(grad_ptrs)
        return tables
    rows = {ROW_PARAM: b.params, ROW_GRAD: b.grads, ROW_STEP: b.steps}
    if b.masters is not None:
        rows[ROW_MASTER] = b.masters
    for name, tensors in b.states.items():
        rows[STATE_ROWS[name]] = tensors
    tables = b.cache["triton"] = build_tables(rows, chunk)
    tables.key_ptrs, tables.grad_ptrs, tables.held = param_ptrs, grad_ptrs, held
    return tables


def lr_arguments(lr, stats: Tensor) -> tuple[float, Tensor, bool]:
    """``(lr value, lr pointer, read lr from the pointer?)`` for a float or 0-d tensor lr.

    A tensor lr is read by the kernel on the device (no host sync, schedules write it in place);
    one on another device than the params is copied there first. A float lr is passed by value
    and the pointer is a placeholder the kernel never reads.
    """
    if isinstance(lr, Tensor):
        return 0.0, on_device(lr, stats.device).reshape(()), True
    return float(lr), stats, False


def on_device(t: Tensor, device: torch.device) -> Tensor:
    """``t`` on ``device`` (a 0-d scalar such as a CPU loss scale or lr): queued, no host wait."""
    return t if t.device == device else t.to(device, non_blocking=True)
