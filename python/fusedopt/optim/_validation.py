"""Input validation shared by every optimizer: it runs before anything is mutated.

Every check raises ``ValueError`` (a bad value) or ``TypeError`` (a bad kind of tensor) with a
message that names the optimizer, the hyperparameter or the parameter, and what was expected.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

PARAM_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
STATE_DTYPES = (None, torch.float32, torch.bfloat16)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_number(owner: str, name: str, value: Any, *, low: float = 0.0, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False) -> None:
    """A finite float in the interval (brackets as given); NaN and inf are rejected."""
    if not _is_number(value):
        raise TypeError(f"{owner}: {name} must be a float, got {type(value).__name__}")
    v = float(value)
    lo_ok = v > low if low_open else v >= low
    hi_ok = v < high if high_open else v <= high
    if math.isnan(v) or math.isinf(v) or not (lo_ok and hi_ok):
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        raise ValueError(f"{owner}: invalid {name}: {value} (must be finite, in {lb}{low}, {high}{hb})")


def check_lr(owner: str, lr: Any, device: torch.device | None) -> None:
    """A non-negative finite float, or a one-element fp32/fp64 tensor (checked without a sync)."""
    if isinstance(lr, Tensor):
        if lr.numel() != 1 or lr.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"{owner}: a tensor lr must be a one-element fp32/fp64 tensor, "
                             f"got shape {tuple(lr.shape)} {lr.dtype}")
        if device is not None and lr.device != device and lr.device.type != "cpu":
            raise ValueError(f"{owner}: lr tensor is on {lr.device}, params are on {device}")
        return
    check_number(owner, "learning rate lr", lr)


def check_betas(owner: str, betas: Any) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
    for i, b in enumerate(betas):
        check_number(owner, f"beta parameter at index {i}", b, low=0.0, high=1.0, high_open=True)


def param_label(group: dict, index: int, group_index: int) -> str:
    """'param 3 ("layer.weight") of param group 0' — names come from named_parameters()."""
    names = group.get("param_names")
    name = f' ("{names[index]}")' if names and index < len(names) else ""
    return f"param {index}{name} of param group {group_index}"


def check_param(owner: str, p: Any, label: str, device: torch.device | None) -> None:
    """A dense real floating tensor of a supported dtype on the optimizer's device."""
    if not isinstance(p, Tensor):
        raise TypeError(f"{owner}: {label} must be a torch.Tensor, got {type(p).__name__}")
    if p.is_sparse or p.layout != torch.strided:
        raise TypeError(f"{owner}: {label} is sparse ({p.layout}); fusedopt supports dense params")
    if p.is_complex():
        raise TypeError(f"{owner}: {label} is complex ({p.dtype}); fusedopt supports real params")
    if p.dtype not in PARAM_DTYPES:
        raise TypeError(f"{owner}: {label} has dtype {p.dtype}; supported: fp32, bf16, fp16, fp64")
    if device is not None and p.device != device:
        raise ValueError(f"{owner}: {label} is on {p.device} but the other params are on {device}; "
                         "one optimizer drives the params of one device")


def check_grad(owner: str, p: Tensor, g: Tensor, label: str) -> None:
    """The grad of ``p``: dense, real, same shape and device, dtype of the param or fp32."""
    if g.is_sparse or g.layout != torch.strided:
        raise TypeError(f"{owner}: the grad of {label} is sparse; fusedopt supports dense grads")
    if g.is_complex():
        raise TypeError(f"{owner}: the grad of {label} is complex ({g.dtype})")
    if g.shape != p.shape:
        raise ValueError(f"{owner}: the grad of {label} has shape {tuple(g.shape)}, "
                         f"the param {tuple(p.shape)}")
    if g.device != p.device:
        raise ValueError(f"{owner}: the grad of {label} is on {g.device}, the param on {p.device}")
    if g.dtype != p.dtype and g.dtype != torch.float32:
        raise TypeError(f"{owner}: the grad of {label} has dtype {g.dtype}; it must be the param's "
                        f"dtype ({p.dtype}) or fp32")
    local_g = g._local_tensor if hasattr(g, "_local_tensor") else g  # DTensor: its shard
    local_p = p._local_tensor if hasattr(p, "_local_tensor") else p
    if not local_g.is_contiguous() or not local_p.is_contiguous():
        raise ValueError(f"{owner}: {label} or its grad is not contiguous; fusedopt needs dense "
                         "contiguous storage")
