"""The ``triton`` backend: the kernel contract as Triton multi-tensor kernels.

Each contract function is one launch over the pointer tables of a bucket (any number of tensors)
plus a one-program launch that advances the step counts and finishes the fixed-order sums; the
kernels live in :mod:`fusedopt.triton_kernels`. It runs on CUDA (and ROCm) tensors, and on CPU
tensors under ``TRITON_INTERPRET=1``, where Triton executes the same kernel code with numpy —
how CI tests it without a GPU.

The kernel modules are imported at the first launch, not here: ``triton.jit`` fixes the
interpreter mode when it decorates (Note [interpreter mode] in :mod:`fusedopt.triton_kernels`).
"""
from __future__ import annotations

import importlib
import sys
from types import ModuleType

import torch

from .bucket import Bucket

NAME = "triton"
#: Cleared once tests/test_triton_backend.py has passed on a GPU (see backends/__init__.py):
#: the kernels pass their tests under Triton's interpreter and compile for sm_80/sm_90 without
#: spills, but compiled GPU runs have not been seen yet.
UNVALIDATED = (
    "its kernels pass the conformance tests under Triton's interpreter and compile for sm_80 and "
    "sm_90 without spills, but have not yet run compiled on a GPU (tests/test_triton_backend.py)")
_KERNELS = "fusedopt.triton_kernels"
#: oldest Triton with tl.pointer_type casts, tl.PropagateNan and fp64 kernel arguments used here
MIN_TRITON = (3, 0)


def availability() -> tuple[bool, str]:
    try:
        import triton
    except ImportError as exc:
        return False, f"triton is not installed ({exc}); pip install 'fusedopt[triton]'"
    version = tuple(int(x) for x in triton.__version__.split(".")[:2])
    if version < MIN_TRITON:
        return False, f"triton {triton.__version__} is older than {'.'.join(map(str, MIN_TRITON))}"
    return True, f"triton {triton.__version__}"


def _interpreted() -> bool:
    """Will Triton kernels launched in this process run in the interpreter?

    ``triton.jit`` reads ``TRITON_INTERPRET`` when it decorates: Triton's own library functions
    (``tl.sum``, ...) when ``triton`` is first imported, the fusedopt kernels when they are
    (Note [interpreter mode] in :mod:`fusedopt.triton_kernels`). Both must agree, so this asks
    Triton's library, and the kernels too once they exist.
    """
    import triton
    import triton.language as tl

    library = not isinstance(tl.sum, triton.runtime.JITFunction)
    kernels = sys.modules.get(f"{_KERNELS}._device")
    return library and (kernels is None or kernels.INTERPRETED)


def _compiled() -> bool:
    import triton
    import triton.language as tl

    kernels = sys.modules.get(f"{_KERNELS}._device")
    return (isinstance(tl.sum, triton.runtime.JITFunction)
            and (kernels is None or not kernels.INTERPRETED))


def supports(device: torch.device) -> bool:
    """CUDA tensors with compiled kernels; CPU tensors when the process runs Triton's interpreter
    (``TRITON_INTERPRET=1`` set before ``triton`` was first imported)."""
    device = torch.device(device)
    if device.type == "cpu":
        return _interpreted()
    return device.type == "cuda" and torch.cuda.is_available() and _compiled()


def _kernels(name: str) -> ModuleType:
    return importlib.import_module(f"{_KERNELS}.{name}")


def grad_prologue_(grads, stats, *, region, grad_scale, found_inf, max_norm, compute_norm):
    _kernels("norm").grad_prologue_(grads, stats, region=region, grad_scale=grad_scale,
                                    found_inf=found_inf, max_norm=max_norm,
                                    compute_norm=compute_norm)


def adam_step_(b: Bucket, stats, *, lr, hp, use_prologue, use_abc, telemetry, maximize=False):
    _kernels("adam").adam_step_(b, stats, lr=lr, hp=hp, use_prologue=use_prologue,
                                use_abc=use_abc, telemetry=telemetry, maximize=maximize)


def elementwise_step_(b: Bucket, stats, *, algo, lr, hyper, use_prologue, telemetry,
                      maximize=False):
    _kernels("elementwise").elementwise_step_(b, stats, algo=algo, lr=lr, hyper=hyper,
                                              use_prologue=use_prologue, telemetry=telemetry,
                                              maximize=maximize)


def sgd_step_(b: Bucket, stats, *, direction, use_prologue, telemetry, maximize=False):
    _kernels("sgd").sgd_step_(b, stats, direction=direction, use_prologue=use_prologue,
                              telemetry=telemetry, maximize=maximize)


def momentum_step_(b: Bucket, stats, *, rho, use_prologue, maximize=False):
    _kernels("sgd").momentum_step_(b, stats, rho=rho, use_prologue=use_prologue,
                                   maximize=maximize)
