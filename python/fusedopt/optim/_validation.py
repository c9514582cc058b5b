"""Input validation shared by every optimizer: it runs before anything is mutated.

Every check raises ``ValueError`` (a bad value), ``TypeError`` (a bad kind of object) or
``KeyError`` (a missing state entry) with a message that names the hyperparameter or the
parameter. Where torch.optim makes the same check, the exception type and the start of the
message are torch's (``Invalid learning rate: -1.0``), so code and tests written against
torch.optim's messages keep matching; fusedopt adds who raised it and what it expected.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

PARAM_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
STATE_DTYPES = (None, torch.float32, torch.bfloat16)
#: dtypes a tensor hyperparameter (lr, betas) may have: the kernels read fp32 or fp64
TENSOR_HYPER_DTYPES = (torch.float32, torch.float64)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_number(owner: str, name: str, value: Any, *, low: float = 0.0, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False) -> None:
    """A finite float in the interval (brackets as given); NaN and inf are rejected.

    ``name`` is torch.optim's wording ("learning rate", "epsilon value", "beta parameter at
    index 0", "weight_decay value"): the message reads ``Invalid <name>: <value>``."""
    if not _is_number(value):
        raise TypeError(f"Invalid {name}: expected a float, got {type(value).__name__} "
                        f"({owner})")
    v = float(value)
    lo_ok = v > low if low_open else v >= low
    hi_ok = v < high if high_open else v <= high
    if math.isnan(v) or math.isinf(v) or not (lo_ok and hi_ok):
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        raise ValueError(f"Invalid {name}: {value} ({owner}: must be finite, in "
                         f"{lb}{low}, {high}{hb})")


def _check_one_element(owner: str, name: str, t: Tensor) -> None:
    if t.numel() != 1:
        raise ValueError(f"Tensor {name} must be 1-element ({owner}: got shape {tuple(t.shape)})")
    if t.dtype not in TENSOR_HYPER_DTYPES:
        raise TypeError(f"{owner}: a tensor {name} must be fp32 or fp64, got {t.dtype}")


def check_lr(owner: str, lr: Any, device: torch.device | None, *, read: bool = False) -> None:
    """A non-negative finite float, or a one-element fp32/fp64 tensor.

    A tensor lr's value is read only when ``read`` (construction, add_param_group,
    load_state_dict), as torch.optim checks it. A value a schedule writes later is checked by
    the kernels, which read it anyway: a NaN or negative lr skips the update of the groups
    that read it and raises the ``lr_invalid`` flag (``last_stats``, ``opt.lr_invalid``), with
    no host read in the step — the same on a CPU tensor as on a device one.
    """
    if isinstance(lr, Tensor):
        _check_one_element(owner, "lr", lr)
        if device is not None and lr.device != device and lr.device.type != "cpu":
            raise ValueError(f"{owner}: lr tensor is on {lr.device}, params are on {device}")
        if read:
            v = float(lr)
            if not (math.isfinite(v) and v >= 0.0):
                raise ValueError(f"Invalid learning rate: {v} ({owner}: must be finite, >= 0)")
        return
    check_number(owner, "learning rate", lr)


def beta_value(owner: str, i: int, b: Any) -> float:
    """beta_i as a float: a number, or a one-element CPU tensor (read without a device sync)."""
    if isinstance(b, Tensor):
        _check_one_element(owner, f"betas[{i}]", b)
        if b.device.type != "cpu":
            raise ValueError(f"{owner}: betas[{i}] is a tensor on {b.device}; fusedopt reads "
                             "the betas on the host each step, so pass floats or CPU tensors")
        b = float(b)
    check_number(owner, f"beta parameter at index {i}", b, high=1.0, high_open=True)
    return float(b)


def check_betas(owner: str, betas: Any) -> tuple[float, float]:
    """(beta1, beta2) as floats; both floats or both one-element tensors, as torch.optim."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
    if isinstance(betas[0], Tensor) != isinstance(betas[1], Tensor):
        raise ValueError("betas must be either both floats or both Tensors")
    return beta_value(owner, 0, betas[0]), beta_value(owner, 1, betas[1])


def param_label(group: dict, index: int, group_index: int) -> str:
    """'param 3 ("layer.weight") of param group 0' — names come from named_parameters()."""
    names = group.get("param_names")
    name = f' ("{names[index]}")' if names and index < len(names) else ""
    return f"param {index}{name} of param group {group_index}"


def check_param(owner: str, p: Any, label: str, device: torch.device | None) -> None:
    """A strided real floating tensor of a supported dtype on the optimizer's device."""
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
    """The grad of ``p``: strided, real, same shape and device, dtype of the param or fp32."""
    if g.layout != torch.strided:
        raise TypeError(f"{owner}: the grad of {label} is sparse ({g.layout}); fusedopt supports "
                        "dense grads")
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
