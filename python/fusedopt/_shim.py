"""Tensor metadata read natively through torch's C shim (Note [step signature],
csrc/step_signature.cpp), loaded on first use.

:func:`native` returns ``fusedopt._C`` once torch's C shim has loaded and read a set of probe
tensors exactly as Python reads them; otherwise None, and the callers keep their Python
code, which sees the same things at ~10x the cost: the step plan its Python check
(optim/_plan.py), :func:`fusedopt._native.signature` its attribute reads. The first call
imports ``fusedopt._C`` (``import fusedopt`` itself stays light).
"""
from __future__ import annotations

import os
import warnings
from typing import Any

import torch

#: None: not tried yet; False: unavailable in this process; else fusedopt._C. Tests set False
#: to run the Python paths.
_MODULE: Any = None

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8,
           torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool, torch.complex64,
           torch.complex128)


def native() -> Any:
    """``fusedopt._C`` with the shim loaded, or None when it cannot be used here."""
    global _MODULE
    if _MODULE is None:
        _MODULE = _load() or False
    return _MODULE or None


def step_signature() -> Any:
    """``fusedopt._C.StepSignature`` when usable in this process, else None."""
    m = native()
    return None if m is None else m.StepSignature


def _probes() -> list[torch.Tensor]:
    """Tensors whose every field the shim must read as Python does: dtypes, 0-d, empty,
    offset, transposed and channels_last views, a stride-0 expand, a Parameter."""
    base = torch.arange(120, dtype=torch.float32)
    return [base, base[7:].view(113)[:50], base.reshape(4, 5, 6).permute(2, 0, 1),
            base.reshape(2, 3, 4, 5).to(memory_format=torch.channels_last),
            torch.zeros((), dtype=torch.bfloat16), torch.zeros(0, 3, dtype=torch.float16),
            torch.ones(3, 1, dtype=torch.float64).expand(3, 4),
            torch.nn.Parameter(torch.zeros(2, 2))]


def python_signature(t: torch.Tensor) -> tuple:
    """(data_ptr, numel, dtype, strides) of ``t`` read through Python."""
    return t.data_ptr(), t.numel(), t.dtype, tuple(t.stride())


def _load() -> Any:
    try:
        from . import _C  # type: ignore[attr-defined]
    except ImportError:
        return None
    make = getattr(getattr(torch._C, "_aoti", None), "unsafe_alloc_void_ptr_from_tensor", None)
    if make is None or not hasattr(_C, "StepSignature"):
        return None
    lib = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    probe = torch.zeros(2)
    try:
        _C.load_torch_shim(lib, torch._C.TensorBase, probe, make(probe), {})
        codes = {_C.tensor_meta(torch.empty(0, dtype=dt))[1]: dt for dt in _DTYPES}
        if len(codes) != len(_DTYPES):
            return None
        _C.load_torch_shim(lib, torch._C.TensorBase, probe, make(probe), codes)
    except (ImportError, TypeError, ValueError):
        return None
    probes = _probes()
    ptrs, numels, dtypes, strides = _C.signature(probes)
    for i, t in enumerate(probes):
        meta = _C.tensor_meta(t)
        if ((ptrs[i], numels[i], dtypes[i], strides[i]) != python_signature(t)
                or meta[5] != tuple(t.shape) or meta[4] != _C.tensor_meta(probe)[4]):
            warnings.warn("fusedopt: torch's C shim reads tensors differently from Python on "
                          f"torch {torch.__version__}; tensor signatures stay in Python "
                          "(slower host side, same results)", RuntimeWarning, stacklevel=3)
            return None
    return _C
