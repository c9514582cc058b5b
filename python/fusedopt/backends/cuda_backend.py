"""The ``cuda`` backend: the kernel contract (:mod:`fusedopt.backends`) run by the CUDA kernels.

Each contract function is one call into ``fusedopt._C_cuda`` with the bucket's device table
(:func:`fusedopt._native_cuda.bucket_table`, Note [device tables]): a persistent-grid launch over
every chunk of the bucket (csrc/cuda/), a one-block launch that finishes it (step counts, the
fixed-order sums; Note [finish] in csrc/cuda/finish.cuh) and, for Adam and Adagrad, a small
launch before it for the per-tensor scalars. The skip on inf/nan, the gradient coefficient, the
lr and the step counts are read on the device, so no call reads a device value on the host and
a whole step can be captured in a CUDA graph. Kernels run on torch's current stream.

The math is csrc/math/*.h, shared with the CPU core, in the operation order of
:mod:`fusedopt.reference`, compiled without FMA contraction (Note [CUDA numerics] in
csrc/cuda/CMakeLists.txt). tests/test_cuda_backend.py holds it to the reference's error budget.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _native_cuda
from .. import _stats as S
from ..reference.adam_family import VARIANTS, AdamHyper
from .bucket import Bucket

NAME = "cuda"

#: Adam variant codes of csrc/cuda/api.h (AdamVariant): the index in VARIANTS.
VARIANT_CODES = {name: code for code, name in enumerate(VARIANTS)}

#: Set once tests/test_cuda_backend.py has passed on a GPU: until then selecting this backend
#: (auto or by name) warns once that the kernels are compile-checked and pass the conformance
#: tests on a CPU emulator of CUDA only (docs/cuda.md).
_VERIFIED = False
UNVALIDATED = None if _VERIFIED else (
    "its kernels compile cleanly and pass the conformance tests on a CPU emulator of CUDA, but "
    "have not yet run on a GPU (tests/test_cuda_backend.py); backend='cpu' on CPU copies or "
    "'reference' are the validated alternatives")


def availability() -> tuple[bool, str]:
    """(True, build facts) when ``fusedopt._C_cuda`` is built, loads, and its CUDA runtime (linked
    statically: it needs a driver at least as new as itself, which torch's may not) sees a
    device; else (False, why). Loads the module only when torch sees a device."""
    if not _native_cuda.is_built():
        return False, ("fusedopt._C_cuda was not built (nvcc was not found when fusedopt was "
                       "installed, or FUSEDOPT_CUDA=off)")
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    try:
        module = _native_cuda.native()
    except ImportError as exc:
        return False, f"fusedopt._C_cuda could not be imported: {exc}"
    status, info = module.runtime_status(), module.build_info()
    if status["device_count"] == 0:
        return False, (f"the CUDA {_version(status['runtime_version'])} runtime of "
                       f"fusedopt._C_cuda sees no device (driver "
                       f"{_version(status['driver_version'])}): {status['error']}")
    return True, f"CUDA kernels (nvcc {info['nvcc']}, {info['archs']})"


def _version(code: int) -> str:
    """CUDA's version code (13000) as text (13.0)."""
    return f"{code // 1000}.{code % 1000 // 10}" if code else "none"


def supports(device: torch.device) -> bool:
    return torch.device(device).type == "cuda"


def _as_fp32(t: Tensor | None) -> Tensor | None:
    """A loss scale or found_inf flag as an fp32 device tensor (the kernels read it through a
    pointer)."""
    return t if t is None or t.dtype == torch.float32 else t.to(torch.float32)


def grad_prologue_(grads: list[Tensor], stats: Tensor, *, region: int,
                   grad_scale: Tensor | None, found_inf: Tensor | None,
                   max_norm: float | None, compute_norm: bool) -> None:
    """Norm pass over ``grads`` writing ``stats[region:region+5]`` (contract)."""
    if compute_norm:
        table, opmath64 = _native_cuda.grad_table(grads, stats, region)
    else:
        table, opmath64 = _native_cuda.empty_table(stats.device), False
    scale, inf = _as_fp32(grad_scale), _as_fp32(found_inf)
    _native_cuda.native().grad_prologue(
        table, stats.data_ptr(), region, scale.data_ptr() if scale is not None else 0,
        inf.data_ptr() if inf is not None else 0, -1.0 if max_norm is None else float(max_norm),
        compute_norm, opmath64, _native_cuda.stream_handle(stats.device))


def _lr_args(lr, stats: Tensor) -> tuple[float, int, int] | None:
    """The kernels' (value, pointer, dtype code) of ``lr``, or None when the call is skipped.

    A device tensor lr is read by the kernels, which check it (NaN or negative: skip the call,
    set stats[LR_INVALID]). A CPU tensor lr is read on the host by ``lr_args`` (host memory, no
    device sync), so the same rule is applied here, as the cpu backend does: the flag is set by
    a device fill (no sync) and nothing is launched.
    """
    value, ptr, dtype = _native_cuda.lr_args(lr)
    if isinstance(lr, Tensor) and ptr == 0 and (value != value or value < 0.0):
        stats[S.LR_INVALID] = 1.0
        return None
    return value, ptr, dtype


def adam_step_(b: Bucket, stats: Tensor, *, lr, hp: AdamHyper, use_prologue: bool,
               use_abc: bool, telemetry: bool, maximize: bool = False) -> None:
    """Adam-family update of bucket ``b`` (contract)."""
    table = _native_cuda.bucket_table(b, "adam")
    lr_args = _lr_args(lr, stats)
    if lr_args is None:
        return
    lr_value, lr_ptr, lr_dtype = lr_args
    _native_cuda.native().adam_step(
        table, stats.data_ptr(), lr_value, lr_ptr, lr_dtype, hp.beta1, hp.beta2, hp.eps,
        hp.weight_decay, VARIANT_CODES[hp.variant], hp.decay == "coupled", hp.bias_correction,
        use_prologue, use_abc, telemetry, maximize, _native_cuda.stream_handle(stats.device))


def elementwise_step_(b: Bucket, stats: Tensor, *, algo: str, lr, hyper: tuple[float, ...],
                      use_prologue: bool, telemetry: bool, maximize: bool = False) -> None:
    """An element-wise algorithm's update of bucket ``b`` (contract)."""
    table = _native_cuda.bucket_table(b, algo)
    lr_args = _lr_args(lr, stats)
    if lr_args is None:
        return
    lr_value, lr_ptr, lr_dtype = lr_args
    _native_cuda.native().elementwise_step(
        table, stats.data_ptr(), algo, lr_value, lr_ptr, lr_dtype, list(hyper), use_prologue,
        telemetry, maximize, _native_cuda.stream_handle(stats.device))


def sgd_step_(b: Bucket, stats: Tensor, *, direction: str, use_prologue: bool,
              telemetry: bool, maximize: bool = False) -> None:
    """``p <- p - stats[SCALE] * d`` along the grad or the momentum (contract)."""
    if direction not in ("grad", "momentum"):
        raise ValueError(f"fusedopt cuda backend: direction must be 'grad' or 'momentum', "
                         f"got {direction!r}")
    table = _native_cuda.bucket_table(b, "sgd")
    _native_cuda.native().sgd_step(table, stats.data_ptr(), direction == "momentum",
                                   use_prologue, telemetry, maximize,
                                   _native_cuda.stream_handle(stats.device))


def momentum_step_(b: Bucket, stats: Tensor, *, rho: float, use_prologue: bool,
                   maximize: bool = False) -> None:
    """NSGDm's momentum pass, adding ``sum(m_new^2)`` to ``stats[MOMENTUM_SQ]`` (contract)."""
    table = _native_cuda.bucket_table(b, "sgd")
    _native_cuda.native().momentum_step(table, stats.data_ptr(), float(rho), use_prologue,
                                        maximize, _native_cuda.stream_handle(stats.device))
