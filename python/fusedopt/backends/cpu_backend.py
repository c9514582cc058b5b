"""The ``cpu`` backend: the kernel contract (:mod:`fusedopt.backends`) run by the native C++ core.

Each contract function is one call into ``fusedopt._C`` with a cached pointer table
(:func:`fusedopt._native.bucket_table`, Note [table cache]): the C++ side reads the stats
buffer, decides the skip, computes the per-tensor scalars and runs one vectorized,
multi-threaded pass over the bucket (csrc/cpu/). The math is csrc/math/*.h, in the operation
order of :mod:`fusedopt.reference`; tests/test_cpu_backend.py holds it to the reference's error
budget. Threads follow ``torch.get_num_threads()``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _native
from ..reference.adam_family import VARIANTS, AdamHyper
from .bucket import Bucket

NAME = "cpu"

#: Adam variant codes of csrc/cpu/api.h (AdamVariant): the index in VARIANTS.
VARIANT_CODES = {name: code for code, name in enumerate(VARIANTS)}

_NO_GRADS = None  # the empty GradList of a prologue without a norm pass (built on first use)


def availability() -> tuple[bool, str]:
    """(True, ISA in use) when ``fusedopt._C`` is built and importable, else (False, why)."""
    if _native.LOAD_ERROR is not None:
        return False, _native.LOAD_ERROR
    return True, f"native CPU kernels ({_native.native().isa()})"


def supports(device: torch.device) -> bool:
    return torch.device(device).type == "cpu"


def _as_fp32(t: Tensor | None) -> Tensor | None:
    """A 0-d loss scale or found_inf flag as fp32 (the kernel reads it through a pointer)."""
    return t if t is None or t.dtype == torch.float32 else t.to(torch.float32)


def grad_prologue_(grads: list[Tensor], stats: Tensor, *, region: int,
                   grad_scale: Tensor | None, found_inf: Tensor | None,
                   max_norm: float | None, compute_norm: bool) -> None:
    """Norm pass over ``grads`` writing ``stats[region:region+5]`` (contract)."""
    global _NO_GRADS
    C = _native.native()
    if compute_norm:
        table = _native.grad_list(grads)
    else:
        if _NO_GRADS is None:
            _NO_GRADS = C.GradList([], [], [])
        table = _NO_GRADS
    scale, inf = _as_fp32(grad_scale), _as_fp32(found_inf)
    C.grad_prologue(table, stats.data_ptr(), region,
                    scale.data_ptr() if scale is not None else 0,
                    inf.data_ptr() if inf is not None else 0,
                    -1.0 if max_norm is None else float(max_norm), compute_norm,
                    _native.num_threads())


def adam_step_(b: Bucket, stats: Tensor, *, lr, hp: AdamHyper, use_prologue: bool,
               use_abc: bool, telemetry: bool, maximize: bool = False) -> None:
    """Adam-family update of bucket ``b`` (contract)."""
    table = _native.bucket_table(b, "adam")
    lr_value, lr_ptr, lr_dtype = _native.lr_args(lr)
    _native.native().adam_step(
        table, stats.data_ptr(), lr_value, lr_ptr, lr_dtype, hp.beta1, hp.beta2, hp.eps,
        hp.weight_decay, VARIANT_CODES[hp.variant], hp.decay == "coupled", hp.bias_correction,
        use_prologue, use_abc, telemetry, maximize, _native.num_threads())


def elementwise_step_(b: Bucket, stats: Tensor, *, algo: str, lr, hyper: tuple[float, ...],
                      use_prologue: bool, telemetry: bool, maximize: bool = False) -> None:
    """An element-wise algorithm's update of bucket ``b`` (contract)."""
    table = _native.bucket_table(b, algo)
    lr_value, lr_ptr, lr_dtype = _native.lr_args(lr)
    _native.native().elementwise_step(table, stats.data_ptr(), algo, lr_value, lr_ptr, lr_dtype,
                                      list(hyper), use_prologue, telemetry, maximize,
                                      _native.num_threads())


def sgd_step_(b: Bucket, stats: Tensor, *, direction: str, use_prologue: bool,
              telemetry: bool, maximize: bool = False) -> None:
    """``p <- p - stats[SCALE] * d`` along the grad or the momentum (contract)."""
    if direction not in ("grad", "momentum"):
        raise ValueError(f"fusedopt cpu backend: direction must be 'grad' or 'momentum', "
                         f"got {direction!r}")
    table = _native.bucket_table(b, "sgd")
    _native.native().sgd_step(table, stats.data_ptr(), direction == "momentum", use_prologue,
                              telemetry, maximize, _native.num_threads())


def momentum_step_(b: Bucket, stats: Tensor, *, rho: float, use_prologue: bool,
                   maximize: bool = False) -> None:
    """NSGDm's momentum pass, adding ``sum(m_new^2)`` to ``stats[MOMENTUM_SQ]`` (contract)."""
    table = _native.bucket_table(b, "sgd")
    _native.native().momentum_step(table, stats.data_ptr(), float(rho), use_prologue, maximize,
                                   _native.num_threads())
