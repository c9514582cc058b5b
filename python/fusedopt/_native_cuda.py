"""Loads the CUDA kernels ``fusedopt._C_cuda<major>`` on first use and keeps their device tables.

Importing this module loads nothing: ``import fusedopt`` works on machines without CUDA
(docs/architecture.md#build); the compiled module is imported by :func:`native`, the first
time a kernel runs.

Note [CUDA modules]: an install carries one CUDA module per CUDA major it was built with
(``_C_cuda12``, ``_C_cuda13``; setup.py's toolkit_plan), each with its CUDA runtime linked
statically. A statically linked runtime needs a driver that supports its major: CUDA 12.x runs
on drivers for CUDA >= 12.0 (Linux >= 525.60.13) through minor version compatibility, CUDA 13.x
needs drivers for CUDA >= 13.0 (Linux >= 580.65.06): NVIDIA's CUDA Compatibility guide (table
"CUDA Toolkit 11.x, 12.x and 13.x driver version ranges") and the CUDA toolkit release notes
(driver table). :func:`native` asks the driver which CUDA version it supports
(``cuDriverGetVersion`` of libcuda.so.1, through ctypes: nothing else is loaded) and imports
the newest module that driver can run (:func:`choose`), so an R535 cluster gets the CUDA 12
kernels and an R580 one the CUDA 13 kernels from the same wheel. Cubins of a newer minor
release load on an older driver of the same major; PTX JIT (GPUs newer than every cubin) needs
a driver as new as the toolkit. ``FUSEDOPT_CUDA_MODULE=_C_cuda12`` forces a module (tests, a
GPU validation of the older build on a new driver). ``python -m fusedopt.env`` prints the
modules, what each needs, the driver's version and the choice.

Note [device tables]: every launch reads one int64 table in device memory (pointers, sizes and
the chunk list of a tensor list; layout in csrc/cuda/device_table.h) and writes per-chunk sums
and per-tensor scalars to a device workspace. Both are built once per tensor list:

* a bucket's table lives in ``bucket.tables`` (the optimizer hands over the same Bucket while
  its tensors are unchanged) and in ``bucket.cache`` (kept across Bucket rebuilds, e.g. after
  ``zero_grad(set_to_none=True)``, where new grads usually get the same addresses). Every step
  compares the params' and the grads' signatures (address, element count, dtype, contiguity of
  each tensor: :func:`fusedopt._native.signature`), also on the same Bucket: a param's storage
  can be swapped with ``p.data = ...`` and a grad's with ``p.grad.data = ...`` without the
  tensor objects changing. On a new Bucket the identity of the state, step and master tensors
  is compared too. A mismatch builds a new table (after
  :func:`fusedopt._native.check_bucket`). Steps with unchanged tensors do no host-to-device
  copy, which is what CUDA-graph capture needs: building a table while the stream is capturing
  raises instead of recording a copy from host memory into the graph.
* the norm pass's table of a grad list is kept per (optimizer stats buffer, region), until the
  grads' signature changes or the optimizer is freed. It holds no grads.

Note [table streams]: a table and its workspace are allocated on the stream current when they
are built; a later step may run on another stream (a side stream, a different stream per
micro-batch). Each entry remembers the streams it has been used on, and the first use on a new
one calls ``record_stream`` on its tensors, so that torch's caching allocator does not hand
their memory to another tensor while kernels queued there may still read it.

The memory a captured graph reads (tables, workspaces) stays alive as long as its entry: a
graph must be re-captured after anything that rebuilds the tables (new params, a loaded
state_dict), as it must after any change of the tensors it was captured with.

A CPU tensor lr with CUDA params is read on the host at every call (host memory: no device
sync) and passed by value, as the Triton backend does; inside a captured CUDA graph that value
is frozen at capture, so a schedule that must run inside a graph keeps its lr on the device.
"""
from __future__ import annotations

import ctypes
import importlib
import importlib.machinery
import operator
import os
import re
import weakref
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from ._native import DTYPE_CODES, check_bucket, check_grad_list, signature, state_slots
from .backends.bucket import Bucket

_module: ModuleType | None = None
_data_ptr = Tensor.data_ptr

#: CUDA major of a module -> (the driver's CUDA version it needs, as cuDriverGetVersion
#: reports it, and the first Linux driver release with it): Note [CUDA modules]
DRIVER_NEEDED: dict[int, tuple[int, str]] = {12: (12000, "525.60.13"), 13: (13000, "580.65.06")}
_NAME = re.compile(r"^_C_cuda(\d+)$")


def built_modules() -> list[tuple[int, str]]:
    """(CUDA major, module name) of each ``_C_cuda<major>`` in this install, newest first, found
    by file name (nothing is loaded)."""
    found = set()
    package = os.path.dirname(os.path.abspath(__file__))
    for name in os.listdir(package):
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            m = _NAME.match(name[:-len(suffix)]) if name.endswith(suffix) else None
            if m:
                found.add((int(m.group(1)), m.group(0)))
    return sorted(found, reverse=True)


def is_built() -> bool:
    """Whether a CUDA module was built into this install (checked without loading it)."""
    return bool(built_modules())


def driver_version() -> tuple[int | None, str]:
    """(the CUDA version the installed driver supports, e.g. 12040 for 12.4; or None, and why)
    from ``cuDriverGetVersion`` in libcuda.so.1 (no cuInit, no device needed)."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        return None, f"no CUDA driver (libcuda.so.1 cannot be loaded: {exc})"
    version = ctypes.c_int(0)
    code = libcuda.cuDriverGetVersion(ctypes.byref(version))
    if code != 0:
        return None, f"the CUDA driver's cuDriverGetVersion failed (CUresult {code})"
    return version.value, ""


def cuda_version_text(code: int) -> str:
    """CUDA's version code (12040) as text (12.4)."""
    return f"{code // 1000}.{code % 1000 // 10}"


def requirement(major: int) -> str:
    """What the CUDA ``major`` module needs of the driver, as text."""
    if major not in DRIVER_NEEDED:
        return f"a driver for CUDA >= {major}.0"
    cuda, linux = DRIVER_NEEDED[major]
    return f"a driver for CUDA >= {cuda_version_text(cuda)} (Linux >= {linux})"


def choose(modules: list[tuple[int, str]], driver: int | None, driver_error: str = "",
           forced: str | None = None) -> tuple[str | None, str]:
    """(the module to import, or None; why): the newest of ``modules`` ((major, name), as
    :func:`built_modules` lists them) whose major ``driver`` (cuDriverGetVersion's code) runs;
    ``forced`` (FUSEDOPT_CUDA_MODULE) picks one by name. Pure: tests give fake versions."""
    if not modules:
        return None, ("no CUDA module was built (nvcc was not found when fusedopt was installed, "
                      "or FUSEDOPT_CUDA=off)")
    names = [name for _, name in modules]
    if forced:
        if forced in names:
            return forced, f"FUSEDOPT_CUDA_MODULE={forced}"
        return None, f"FUSEDOPT_CUDA_MODULE={forced} is not built (built: {', '.join(names)})"
    if driver is None:
        return None, driver_error or "no CUDA driver"
    for major, name in sorted(modules, reverse=True):
        needed = DRIVER_NEEDED.get(major, (major * 1000, ""))[0]
        if driver >= needed:
            return name, (f"the newest module the driver (CUDA {cuda_version_text(driver)}) "
                          f"runs")
    oldest = min(major for major, _ in modules)
    return None, (f"the driver supports CUDA {cuda_version_text(driver)}; the oldest module "
                  f"built (CUDA {oldest}) needs {requirement(oldest)}: update the driver")


def selection() -> tuple[str | None, str]:
    """:func:`choose` for this install and this machine's driver."""
    driver, error = driver_version()
    return choose(built_modules(), driver, error, os.environ.get("FUSEDOPT_CUDA_MODULE") or None)


def native() -> ModuleType:
    """The compiled CUDA module the driver runs (Note [CUDA modules]), imported on first use;
    ImportError says why none can be."""
    global _module
    if _module is None:
        name, why = selection()
        if name is None:
            raise ImportError(f"no usable fusedopt CUDA module: {why}")
        _module = importlib.import_module(f"fusedopt.{name}")
    return _module


def current_stream(device: torch.device):
    """torch's current stream on ``device`` (kernels run there)."""
    return torch.cuda.current_stream(device)


def stream_handle(device: torch.device) -> int:
    """The raw ``cudaStream_t`` of torch's current stream on ``device``."""
    return current_stream(device).cuda_stream


def _record_stream(t: Tensor, stream) -> None:
    t.record_stream(stream)


def _use_on_current_stream(entry, device: torch.device) -> None:
    """Note [table streams]: the first use of ``entry``'s memory on a stream other than the one
    it was allocated on tells the caching allocator about it."""
    stream = current_stream(device)
    handle = stream.cuda_stream
    if handle not in entry.streams:
        entry.streams.add(handle)
        for t in (entry.table, entry.workspace):
            _record_stream(t, stream)


def device_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _check_not_capturing(what: str) -> None:
    if torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            f"fusedopt: the {what} changed while a CUDA graph is being captured; run one eager "
            "step with the same tensors before capturing (Note [device tables] in "
            "fusedopt._native_cuda)")


def _upload(table: bytes, device: torch.device) -> Tensor:
    """The int64 table on ``device``: an asynchronous copy from pinned memory (no host sync;
    torch keeps the pinned buffer until the copy has run)."""
    host = torch.frombuffer(bytearray(table), dtype=torch.int64)
    out = torch.empty(host.numel(), dtype=torch.int64, device=device)
    if host.numel():
        out.copy_(host.pin_memory(), non_blocking=True)
    return out


def _workspace(n_chunks: int, n_tensors: int, device: torch.device) -> tuple[Tensor, int, int]:
    """fp64 scratch of the passes over one table: per-chunk sums then per-tensor scalars.
    Returns (tensor, partials pointer, scalars pointer)."""
    C = native()
    n_partials = C.MAX_SUMS_PER_CHUNK * n_chunks
    ws = torch.empty(max(1, n_partials + C.MAX_SCALARS_PER_TENSOR * n_tensors),
                     dtype=torch.float64, device=device)
    return ws, ws.data_ptr(), ws.data_ptr() + 8 * n_partials


@dataclass
class _Entry:
    """One uploaded table with its workspace (Note [device tables]); holds the memory."""

    handle: Any  # _C_cuda.Table: the raw pointers the launches take
    table: Tensor
    workspace: Tensor
    param_sig: tuple
    grad_sig: tuple
    dtypes: tuple
    owned: list[list[Tensor]]
    streams: set[int]  # Note [table streams]: the streams used on (the allocating one first)
    grad_epoch: int = 0  # the Bucket.grad_epoch whose grad addresses the table holds


def _owned(b: Bucket, slots: tuple[str, ...]) -> list[list[Tensor]]:
    lists = [b.steps] + [b.states.get(k, []) for k in slots]
    if b.masters is not None:
        lists.append(b.masters)
    return lists


def _same_objects(a: list[list[Tensor]], b: list[list[Tensor]]) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(map(operator.is_, x, y)) for x, y in zip(a, b))


def _default_state_dtype(param_dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if param_dtype == torch.float64 else torch.float32


def _build(b: Bucket, slots: tuple[str, ...], chunk_size: int | None, param_sig, grad_sig,
           dtypes) -> _Entry:
    C = native()
    check_bucket(b, slots, "cuda")
    rows: list[list[int]] = [[] for _ in range(C.ROWS["count"])]
    rows[C.ROWS["param"]] = list(param_sig[0])
    rows[C.ROWS["grad"]] = list(grad_sig[0])
    if b.masters is not None:
        rows[C.ROWS["master"]] = [_data_ptr(m) for m in b.masters]
    for s, key in enumerate(slots):
        if key in b.states:
            rows[C.ROWS["state0"] + s] = [_data_ptr(t) for t in b.states[key]]
    rows[C.ROWS["step"]] = [_data_ptr(s) for s in b.steps]
    numel = [p.numel() for p in b.params]
    size = C.CHUNK_SIZE if chunk_size is None else chunk_size
    device = b.device
    table = _upload(C.table_bytes(numel, rows, size), device)
    n_chunks = C.num_chunks(numel, size)
    ws, partials, scalars = _workspace(n_chunks, len(numel), device)
    state_dtype = b.state_dtype or _default_state_dtype(b.param_dtype)
    handle = C.Table(table.data_ptr(), len(numel), n_chunks, size, partials, scalars,
                     DTYPE_CODES[b.param_dtype], DTYPE_CODES[b.grad_dtype],
                     DTYPE_CODES[state_dtype], b.masters is not None, device_index(device))
    return _Entry(handle, table, ws, param_sig, grad_sig, dtypes, _owned(b, slots),
                  {stream_handle(device)})


def bucket_table(b: Bucket, kind: str, chunk_size: int | None = None):
    """The ``_C_cuda.Table`` of bucket ``b`` for table kind ``kind`` (a key of
    :data:`fusedopt._native.STATE_SLOTS` or an element-wise algorithm's name), built once per
    tensor signature (Note [device tables]). ``chunk_size`` (a multiple of 4) overrides the
    default for tests."""
    key = ("cuda", kind, chunk_size)
    entry = b.tables.get(key) if b.frozen else None
    if entry is not None and entry.grad_epoch != b.grad_epoch:
        entry = None  # the plan saw new grad addresses (Bucket.grad_epoch): compare them
    if entry is None:
        # a new Bucket, one not frozen (Bucket.frozen) or with moved grads: check every
        # tensor's signature
        param_sig = signature(b.params)
        grad_sig = signature(b.grads)
        dtypes = (b.state_dtype, b.masters is not None)
        slots = state_slots(kind)
        entry = b.cache.get(key)
        if (entry is None or entry.param_sig != param_sig or entry.grad_sig != grad_sig
                or entry.dtypes != dtypes or not _same_objects(entry.owned, _owned(b, slots))):
            _check_not_capturing("tensors of a bucket")
            entry = _build(b, slots, chunk_size, param_sig, grad_sig, dtypes)
            b.cache[key] = entry
        entry.grad_epoch = b.grad_epoch
        b.tables[key] = entry
    _use_on_current_stream(entry, b.device)
    return entry.handle


@dataclass
class _GradEntry:
    handle: Any
    table: Tensor
    workspace: Tensor
    sig: tuple  # the grads' signature (fusedopt._native.signature); the grads are not held
    opmath64: bool
    streams: set[int]  # Note [table streams]


#: the norm pass's grad tables, per (id of an optimizer's stats buffer, region); an entry is
#: dropped when its stats buffer is freed (weakref.finalize), so ids are never confused
_GRAD_TABLES: dict[tuple[int, int], _GradEntry] = {}


def _build_grads(grads: list[Tensor], sig: tuple, device: torch.device,
                 chunk_size: int | None) -> _GradEntry:
    C = native()
    ptrs, numel, dtypes, _ = sig
    check_grad_list(grads, dtypes, "cuda")
    rows: list[list[int]] = [[] for _ in range(C.ROWS["count"])]
    rows[C.ROWS["grad"]] = list(ptrs)
    rows[C.ROWS["dtype"]] = [DTYPE_CODES[d] for d in dtypes]
    size = C.CHUNK_SIZE if chunk_size is None else chunk_size
    table = _upload(C.table_bytes(list(numel), rows, size), device)
    n_chunks = C.num_chunks(list(numel), size)
    ws, partials, scalars = _workspace(n_chunks, len(numel), device)
    dtype = DTYPE_CODES[torch.float32]
    handle = C.Table(table.data_ptr(), len(numel), n_chunks, size, partials, scalars, dtype,
                     dtype, dtype, False, device_index(device))
    opmath64 = torch.float64 in dtypes
    return _GradEntry(handle, table, ws, sig, opmath64, {stream_handle(device)})


def grad_table(grads: list[Tensor], stats: Tensor, region: int,
               chunk_size: int | None = None) -> tuple[Any, bool]:
    """(``_C_cuda.Table`` of ``grads``, opmath64) for the norm pass writing region ``region``
    of ``stats`` (Note [device tables])."""
    key = (id(stats), region)
    entry = _GRAD_TABLES.get(key)
    sig = signature(grads)
    if entry is None or entry.sig != sig:
        _check_not_capturing("grads of the norm pass")
        if entry is None:
            weakref.finalize(stats, _GRAD_TABLES.pop, key, None)
        entry = _GRAD_TABLES[key] = _build_grads(grads, sig, stats.device, chunk_size)
    _use_on_current_stream(entry, stats.device)
    return entry.handle, entry.opmath64


_EMPTY: dict[int, _GradEntry] = {}


def empty_table(device: torch.device) -> Any:
    """A table over no tensors: the norm pass without a norm (only its finish kernel runs)."""
    index = device_index(device)
    if index not in _EMPTY:
        _check_not_capturing("empty table")
        _EMPTY[index] = _build_grads([], signature([]), device, None)
    _use_on_current_stream(_EMPTY[index], device)
    return _EMPTY[index].handle


def lr_args(lr: float | Tensor) -> tuple[float, int, int]:
    """(value, device pointer, dtype code) of a float or one-element fp32/fp64 tensor lr. A CPU
    tensor lr (allowed with CUDA params) is read here at every call, as the Triton backend
    does: host memory, no device sync (Note [device tables])."""
    if isinstance(lr, Tensor):
        if lr.device.type == "cpu":
            return float(lr), 0, 0
        return 0.0, lr.data_ptr(), DTYPE_CODES[lr.dtype]
    return float(lr), 0, 0
