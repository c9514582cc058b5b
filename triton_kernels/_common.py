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
across steps) with what decides whether they still hold: the params' and grads' signatures
(:func:`signature`: address, element count, dtype and contiguity of every tensor), compared
every call (a param's storage can be swapped with ``p.data = ...``, a grad's with
``p.grad.data = ...``, at the same address or another); strong references to the step, master
and state tensors, compared by identity (the optimizer replaces them only in
``load_state_dict``, which clears the caches, and holding them means no cached address
outlives its memory). When only the grads' addresses changed (grads re-allocated by
``zero_grad(set_to_none=True)``) only the grad row is copied again; any other change builds
new tables, after :func:`build_tables` has checked that every tensor is contiguous with the
param's element count and one dtype per row. Grads are never held, so the cache does not keep
last step's grads alive. The norm pass caches its grad lists by the grads' signature.

Note [table streams]: tables are built by host-to-device copies from temporary pinned buffers,
on the stream current at the time; building (or refreshing the grad row) while that stream
captures a CUDA graph raises instead (the graph would record a copy from a buffer that is gone
at replay): run one eager step with the same tensors before capturing. Tables used later on
another stream are ``record_stream``-ed there once, so the caching allocator does not reuse
their memory while kernels queued on that stream may still read it.

A CPU tensor lr with GPU params is read on the host at every call (host memory: no sync) and
passed by value, as the cuda backend does; inside a captured graph that value is frozen at
capture, so a schedule that must run inside a graph keeps its lr on the device.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from fusedopt.backends.bucket import is_dense, same_layout

# ---------------------------------------------------------------- stats slots
# The one Python spelling of the slots (python/fusedopt/_stats.py; csrc/include/fusedopt/stats.h
# is the C++ one, checked against it by tests/test_cpu_backend.py).
from fusedopt._stats import (ABC, AUX, CLIP_COEF, COEF, FOUND_INF, GRAD, GRAD_NORM,  # noqa: E402
                             GRAD_SQ, LR_INVALID, MOMENTUM_SQ, NUM_SLOTS, PARAM_SQ, SCALE,
                             STEP_GRAD_SQ, UPDATE_SQ)

#: clip_grad_norm_ adds this to the norm (fusedopt.reference.prologue.CLIP_EPS)
CLIP_EPS = 1e-6

# ---------------------------------------------------------------- pointer-table rows
# The order of the CUDA core's device table (csrc/cuda/device_table.h, enum Row; checked by
# tests/test_elementwise_native.py): param, grad, master, the states, step. The CUDA table's
# last row (each grad's dtype code, for its norm pass over mixed dtypes) has no use here: a
# Triton norm pass is one launch per grad dtype.
ROW_PARAM = 0
ROW_GRAD = 1
ROW_MASTER = 2
ROW_STATE0 = 3     # exp_avg or momentum_buffer; an element-wise algorithm's first state
ROW_STATE1 = 4     # exp_avg_sq
ROW_STATE2 = 5     # max_exp_avg_sq
ROW_STATE3 = 6     # an element-wise algorithm's fourth state (Adan's prev_grad)
ROW_STEP = 7
NUM_ROWS = 8
#: state streams per param (fusedopt.reference.elementwise.MAX_STATES)
MAX_STATES = ROW_STATE3 - ROW_STATE0 + 1
#: the table row of every state stream of the fixed contract calls (adam, sgd)
STATE_ROWS = {"exp_avg": ROW_STATE0, "momentum_buffer": ROW_STATE0,
              "exp_avg_sq": ROW_STATE1, "max_exp_avg_sq": ROW_STATE2}


def positional_state_rows(names) -> dict[str, int]:
    """The rows of an element-wise algorithm's states: its ``STATES`` in kernel order, the
    i-th in ``ROW_STATE0 + i`` (fusedopt.reference.elementwise)."""
    names = tuple(names)
    if len(names) > MAX_STATES:
        raise ValueError(f"fusedopt triton backend: {len(names)} state streams, the tables hold "
                         f"{MAX_STATES}")
    return {name: ROW_STATE0 + i for i, name in enumerate(names)}

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
_numel = Tensor.numel
_dtype = operator.attrgetter("dtype")
_stride = Tensor.stride


def signature(tensors) -> tuple:
    """(addresses, element counts, dtypes, contiguity) of ``tensors``: what a kernel that reads
    ``numel`` contiguous elements at each address depends on (Note [table cache])."""
    return (tuple(map(_data_ptr, tensors)), tuple(map(_numel, tensors)),
            tuple(map(_dtype, tensors)), tuple(map(_stride, tensors)))


def _current_stream(device: torch.device):
    """torch's current stream on a GPU ``device``; None on the CPU (the interpreter)."""
    return None if device.type == "cpu" else torch.cuda.current_stream(device)


def _record_stream(t: Tensor, stream) -> None:
    t.record_stream(stream)


def _capturing(device: torch.device) -> bool:
    """Whether the current stream of ``device`` is capturing a CUDA graph (never on the CPU)."""
    return device.type != "cpu" and torch.cuda.is_current_stream_capturing()


def _check_not_capturing(device: torch.device, what: str) -> None:
    """Note [table streams]: no host-to-device copy into a graph being captured."""
    if _capturing(device):
        raise RuntimeError(
            f"fusedopt triton backend: the {what} changed while a CUDA graph is being "
            "captured; run one eager step with the same tensors before capturing (Note [table "
            "streams] in fusedopt.triton_kernels._common)")


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
    #: Note [table cache]: the signatures compared on every call (params: the lowest row)
    key_sig: tuple = ()
    grad_sig: tuple = ()
    held: list = field(default_factory=list)
    #: (state name, table row) of every state in the tables (bucket_tables)
    layout: tuple = ()
    #: Note [table streams]: handle -> stream of every stream the tables were used on
    streams: dict = field(default_factory=dict)
    #: the Bucket.grad_epoch whose grad addresses the tables hold (bucket_tables)
    grad_epoch: int = 0

    def partial_sums(self) -> Tensor:
        if self.partials is None:
            self.partials = torch.zeros(3, max(self.n_chunks, 1), dtype=torch.float64,
                                        device=self.ptrs.device)
            for stream in self.streams.values():
                _record_stream(self.partials, stream)
        return self.partials

    def use_on_current_stream(self) -> None:
        """Note [table streams]: ``record_stream`` on the first use on a new stream."""
        stream = _current_stream(self.ptrs.device)
        if stream is None or stream.cuda_stream in self.streams:
            return
        self.streams[stream.cuda_stream] = stream
        for t in (self.ptrs, self.numels, self.chunks, self.partials):
            if t is not None:
                _record_stream(t, stream)

    def set_grads(self, grad_sig: tuple) -> None:
        """New grad addresses (re-allocated grads): refresh that row only."""
        _check_not_capturing(self.ptrs.device, "grads of a bucket")
        self.host_ptrs[ROW_GRAD] = torch.tensor(grad_sig[0], dtype=torch.int64)
        self.ptrs[ROW_GRAD].copy_(_to_device(self.host_ptrs[ROW_GRAD], self.ptrs.device),
                                  non_blocking=True)
        self.aligned = _all_aligned(self.host_ptrs)
        self.grad_sig = grad_sig


def build_tables(rows: dict[int, list[Tensor]], chunk: int) -> Tables:
    """Pointer, size and chunk tables for the tensors of ``rows`` (row index -> tensors).

    Every row holds one tensor per param; the sizes are those of the lowest row, and every
    other row (but the 0-d step counts) must match them, be contiguous and of one dtype: the
    kernels read that many contiguous elements at each address. One host to device copy per
    table (the caller caches the result).
    """
    first = rows[min(rows)]
    n = len(first)
    device = first[0].device
    _check_rows(rows)
    _check_not_capturing(device, "tensors of a bucket")
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
    tables = Tables(ptrs=_to_device(ptrs, device), numels=_to_device(numels, device),
                    chunks=_to_device(chunks, device), n_tensors=n,
                    n_chunks=int(chunks.shape[1]), chunk=chunk, aligned=_all_aligned(ptrs),
                    host_ptrs=ptrs, row_dtypes={r: ts[0].dtype for r, ts in rows.items()})
    stream = _current_stream(device)
    if stream is not None:
        tables.streams[stream.cuda_stream] = stream
    return tables


def _check_rows(rows: dict[int, list[Tensor]]) -> None:
    first = rows[min(rows)]
    for r, ts in rows.items():
        if len(ts) != len(first):
            raise ValueError(f"fusedopt triton backend: table row {r} has {len(ts)} tensors, "
                             f"row {min(rows)} {len(first)}")
        for i, (t, f) in enumerate(zip(ts, first)):
            size_ok = t.numel() == 1 if r == ROW_STEP else t.numel() == f.numel()
            layout_ok = r == ROW_STEP or (is_dense(f) and same_layout(t, f))
            if not size_ok or t.dtype != ts[0].dtype or not layout_ok:
                raise ValueError(
                    f"fusedopt triton backend: tensor {i} of table row {r} is {t.dtype}, "
                    f"{t.numel()} elements, strides {tuple(t.stride())}; the kernel needs "
                    f"{ts[0].dtype}, {1 if r == ROW_STEP else f.numel()} elements, the dense "
                    f"strides {tuple(f.stride())}")


def _all_aligned(ptrs: Tensor) -> bool:
    """Every address a multiple of 16 bytes (the 0s of unused rows are)."""
    return bool(torch.all(ptrs % 16 == 0))


def grad_list_tables(cache: dict, key: str, grads: list[Tensor], chunk: int) -> Tables:
    """The tables of a grad list (the norm pass) from ``cache[key]``, rebuilt when the grads'
    signature changes (Note [table cache])."""
    sig = signature(grads)
    tables = cache.get(key)
    if tables is None or tables.key_sig != sig or tables.chunk != chunk:
        tables = cache[key] = build_tables({ROW_GRAD: grads}, chunk)
        tables.key_sig = sig
    tables.use_on_current_stream()
    return tables


def _to_device(t: Tensor, device: torch.device) -> Tensor:
    # Pinned source + non_blocking: the copy is queued on the stream; the host does not wait.
    if device.type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def bucket_tables(b, chunk: int, states=None) -> Tables:
    """The cached tables of a :class:`~fusedopt.backends.Bucket`.

    ``states``: None for the fixed contract calls (every state of ``b`` in its
    :data:`STATE_ROWS` row), or an element-wise algorithm's ordered state names (each in its
    :func:`positional_state_rows` row; other states of ``b`` are not in the tables). One set
    of tables serves every kernel of the bucket (update, momentum, finish); they live in
    ``b.cache``, which the optimizer keeps across steps (Note [table cache]), keyed also by
    which state goes to which row.
    """
    state_rows = STATE_ROWS if states is None else positional_state_rows(states)
    names = list(b.states) if states is None else list(states)
    layout = tuple((name, state_rows[name]) for name in names)
    key = ("triton", chunk, layout)
    tables = b.tables.get(key) if b.frozen else None
    if tables is not None and tables.grad_epoch != b.grad_epoch:
        tables = None  # the plan saw new grad addresses (Bucket.grad_epoch): compare them
    if tables is not None:
        # a frozen Bucket handed over again: none of its tensors changed (Bucket.frozen)
        tables.use_on_current_stream()
        return tables
    param_sig = signature(b.params)
    grad_sig = signature(b.grads)
    held = list(b.steps) + (b.masters or []) + [t for name in names for t in b.states[name]]
    tables = b.cache.get("triton")
    if (tables is not None and tables.key_sig == param_sig and tables.chunk == chunk
            and tables.layout == layout
            and tables.grad_sig[1:] == grad_sig[1:] and len(tables.held) == len(held)
            and all(map(operator.is_, tables.held, held))):
        if tables.grad_sig[0] != grad_sig[0]:
            tables.set_grads(grad_sig)
    else:
        rows = {ROW_PARAM: b.params, ROW_GRAD: b.grads, ROW_STEP: b.steps}
        if b.masters is not None:
            rows[ROW_MASTER] = b.masters
        for name, row in layout:
            rows[row] = b.states[name]
        tables = b.cache["triton"] = build_tables(rows, chunk)
        tables.key_sig, tables.grad_sig, tables.held = param_sig, grad_sig, held
        tables.layout = layout
    tables.grad_epoch = b.grad_epoch
    b.tables[key] = tables
    tables.use_on_current_stream()
    return tables


def lr_arguments(lr, stats: Tensor) -> tuple[float, Tensor, bool]:
    """``(lr value, lr pointer, read lr from the pointer?)`` for a float or 0-d tensor lr.

    A tensor lr on the params' device is read by the kernel (no host sync, schedules write it
    in place). A CPU tensor lr with GPU params is host memory: it is read here, at every call,
    and passed by value, as the cuda backend does (Note [table streams] on CUDA graphs). A
    float lr is passed by value and the pointer is a placeholder the kernel never reads.
    """
    if isinstance(lr, Tensor):
        if lr.device.type == "cpu" and stats.device.type != "cpu":
            return float(lr), stats, False
        return 0.0, on_device(lr, stats.device).reshape(()), True
    return float(lr), stats, False


def on_device(t: Tensor, device: torch.device) -> Tensor:
    """``t`` on ``device`` (a 0-d scalar such as a CPU loss scale or lr): queued, no host wait."""
    return t if t.device == device else t.to(device, non_blocking=True)
