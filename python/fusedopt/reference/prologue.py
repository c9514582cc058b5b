"""The shared prologue of every fused step (docs/algorithms.md#prologue), as small transforms.

Conventions (the kernels follow them exactly):

* ``inv = 1 / grad_scale`` when AMP is on, else 1.
* ``sq = sum over the grads, in list order, of sum((g * inv)^2)`` accumulated in opmath
  (fp32, or fp64 when a grad is fp64). ``norm = sqrt(sq)``.
* ``norm``, ``clip_coef`` and ``coef`` are then computed in fp64 (they are stored in the fp64
  stats buffer) and cast to opmath where an update pass uses them.
* ``found_inf`` is an explicit per-element ``isfinite`` test (not ``isfinite(sq)``: a finite
  but huge grad must not be mistaken for an overflow), OR-ed with a found_inf handed in by a
  ``torch.amp.GradScaler``.
* ``clip_coef = min(1, max_norm / (norm + 1e-6))`` (``torch.nn.utils.clip_grad_norm_``, norm
  type 2), or 1 without clipping.
* ``coef = inv * clip_coef`` multiplies every grad inside the update pass; the grads in memory
  are never written.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_ adds this to the norm


def ieee_sqrt(x: Tensor) -> Tensor:
    """The correctly rounded square root, as the kernels take it (IEEE ``sqrt``).

    torch's vectorized ``sqrt`` on the CPU is not correctly rounded, in fp32 (about 0.7% of
    inputs 1 ulp off with AVX-512) nor in fp64 (1.25% of inputs in [0, 10) 1 ulp off with AVX2,
    measured with torch 2.13 against libm's sqrt; tensors shorter than one vector take the
    scalar path and are exact). fp64 on the CPU therefore goes through numpy's sqrt (the IEEE
    instruction), and fp32 through fp64: rounding the correctly rounded fp64 root to fp32 gives
    the correctly rounded fp32 root (a double has more than 2 * 24 + 2 bits). CUDA's sqrt is
    IEEE (the default -prec-sqrt=true), so device tensors use torch's."""
    if x.dtype == torch.float32:
        return ieee_sqrt(x.to(torch.float64)).to(torch.float32)
    if x.dtype == torch.float64 and x.device.type == "cpu":
        a = x.detach().numpy()
        return torch.from_numpy(np.sqrt(a, out=np.empty_like(a)))
    return torch.sqrt(x)


def opmath_dtype(*tensors: Tensor) -> torch.dtype:
    """fp64 when any tensor is fp64, else fp32 (the opmath of fp32/bf16/fp16 storage)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def amp_inverse_scale(grad_scale: Tensor | None, device) -> Tensor:
    """``1 / grad_scale`` as a 0-d fp64 tensor (1 when AMP is off). No host sync."""
    if grad_scale is None:
        return torch.ones((), dtype=torch.float64, device=device)
    return torch.reciprocal(grad_scale.to(device=device, dtype=torch.float64))


def global_sum_of_squares(grads: list[Tensor], inv: Tensor, dtype: torch.dtype) -> Tensor:
    """``sum_i sum((g_i * inv)^2)`` accumulated in ``dtype`` (tensors in list order), as fp64."""
    inv_op = inv.to(dtype)
    total = torch.zeros((), dtype=dtype, device=inv.device)
    for g in grads:
        gs = g.detach().to(dtype) * inv_op
        total = total + torch.sum(gs * gs)
    return total.to(torch.float64)


def any_non_finite(grads: list[Tensor], device) -> Tensor:
    """0-d bool: does any element of any grad hold inf or nan."""
    flag = torch.zeros((), dtype=torch.bool, device=device)
    for g in grads:
        if g.numel():
            flag = flag | ~torch.isfinite(g.detach()).all()
    return flag


def clip_coefficient(norm: Tensor, max_norm: float | None) -> Tensor:
    """``min(1, max_norm / (norm + 1e-6))``; 1 when ``max_norm`` is None."""
    if max_norm is None:
        return torch.ones_like(norm)
    return torch.clamp(max_norm / (norm + CLIP_EPS), max=1.0)


@dataclass
class PrologueResult:
    """The global scalars of one step, 0-d fp64 tensors (found_inf: bool) on the grads' device."""

    sq: Tensor
    norm: Tensor
    found_inf: Tensor  # bool
    clip_coef: Tensor
    coef: Tensor


def prologue(
    grads: list[Tensor],
    *,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
    max_norm: float | None = None,
    compute_norm: bool = True,
    dtype: torch.dtype | None = None,
    device=None,
) -> PrologueResult:
    """Unscale, check for inf/nan and clip by the global norm (docs/algorithms.md#prologue).

    With ``compute_norm=False`` only the AMP part runs (``coef = inv``, found_inf as handed in);
    this is what a step under ``torch.amp.GradScaler`` without clipping needs.
    """
    device = device if device is not None else (grads[0].device if grads else "cpu")
    dtype = dtype or opmath_dtype(*grads)
    inv = amp_inverse_scale(grad_scale, device)
    if compute_norm:
        sq = global_sum_of_squares(grads, inv, dtype)
        bad = any_non_finite(grads, device)
    else:
        sq = torch.zeros((), dtype=torch.float64, device=device)
        bad = torch.zeros((), dtype=torch.bool, device=device)
    if found_inf is not None:
        bad = bad | (found_inf.to(device) != 0)
    norm = torch.sqrt(sq)
    clip = clip_coefficient(norm, max_norm if compute_norm else None)
    return PrologueResult(sq=sq, norm=norm, found_inf=bad, clip_coef=clip, coef=inv * clip)
