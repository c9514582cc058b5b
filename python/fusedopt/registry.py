"""One declarative entry per algorithm: the tests, benchmarks and docs are generated from here.

An :class:`AlgoInfo` names the optimizer class and the constructor arguments that select the
algorithm, the hyperparameters the conformance tests use, the state keys, the torch.optim
equivalent (when torch has the same algorithm), the reference module that specifies it and the
storage dtypes it supports. A new algorithm gets the whole test matrix by adding one entry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import optim

FLOAT_PARAM_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
STATE_DTYPES = (torch.float32, torch.bfloat16)


@dataclass(frozen=True)
class AlgoInfo:
    """Everything the generic tests need to know about one algorithm."""

    name: str
    cls: type
    #: constructor keyword arguments of the tests (lr included)
    kwargs: dict[str, Any]
    #: per-param state keys besides ``step`` (and ``master_param``)
    state_keys: tuple[str, ...]
    #: reference module (under fusedopt.reference) holding the per-element update
    reference: str
    #: factory ``(params, **impl) -> torch.optim.Optimizer`` with the same algorithm, or None
    torch_equivalent: Callable[..., torch.optim.Optimizer] | None = None
    #: AdamL: step(loss=...)
    needs_loss: bool = False
    #: IAN-SGD (independent): record_normalizer() before step()
    needs_normalizer: bool = False
    #: does the state hold moments (so state_dtype applies)?
    has_moments: bool = True
    #: does it take a tensor lr? (ScheduleFreeAdamW computes its schedule from a float lr on
    #: the host each step and refuses one; tests skip their tensor-lr modes for it)
    tensor_lr: bool = True
    #: state key -> the stream it is a difference of (Adan's exp_avg_diff averages
    #: g_t - g_{t-1}, kept in prev_grad): its rounding errors are relative to that stream's
    #: magnitude, not its own, and the tests' error budget counts its ulps at that scale
    difference_of: dict[str, str] = field(default_factory=dict)
    param_dtypes: tuple[torch.dtype, ...] = FLOAT_PARAM_DTYPES
    state_dtypes: tuple[torch.dtype, ...] = STATE_DTYPES
    paper: str = ""
    notes: dict[str, str] = field(default_factory=dict)

    def make(self, params, **overrides: Any) -> torch.optim.Optimizer:
        """Construct the fusedopt optimizer with the entry's kwargs, overridden by ``overrides``."""
        return self.cls(params, **{**self.kwargs, **overrides})

    def make_torch(self, params, **impl: Any) -> torch.optim.Optimizer:
        """The torch.optim equivalent; ``impl`` picks its implementation (``foreach=``,
        ``fused=``)."""
        if self.torch_equivalent is None:
            raise ValueError(f"{self.name} has no torch.optim equivalent")
        return self.torch_equivalent(params, **impl)


def _torch(factory: Callable[..., torch.optim.Optimizer], **kw: Any):
    return lambda params, **impl: factory(params, **kw, **impl)


_ADAM_KW = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05)

ALGORITHMS: dict[str, AlgoInfo] = {a.name: a for a in [
    AlgoInfo("adamw", optim.AdamW, dict(_ADAM_KW), ("exp_avg", "exp_avg_sq"), "adam_family",
             _torch(torch.optim.AdamW, **_ADAM_KW), paper="P2"),
    AlgoInfo("adam", optim.Adam, dict(_ADAM_KW), ("exp_avg", "exp_avg_sq"), "adam_family",
             _torch(torch.optim.Adam, **_ADAM_KW), paper="P2, P3"),
    AlgoInfo("amsgrad", optim.AdamW, dict(_ADAM_KW, amsgrad=True),
             ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), "adam_family",
             _torch(torch.optim.AdamW, amsgrad=True, **_ADAM_KW), paper="P2"),
    AlgoInfo("adabelief", optim.AdamW, dict(_ADAM_KW, variant="adabelief", eps=1e-16),
             ("exp_avg", "exp_avg_sq"), "adam_family", paper="P1 baseline, P2"),
    AlgoInfo("eadam", optim.AdamW, dict(_ADAM_KW, variant="eadam"),
             ("exp_avg", "exp_avg_sq"), "adam_family", paper="P1 baseline"),
    AlgoInfo("rmsprop", optim.Adam, dict(lr=1e-2, betas=(0.0, 0.99), eps=1e-8,
                                         weight_decay=0.05, variant="rmsprop"),
             ("exp_avg_sq",), "adam_family",
             _torch(torch.optim.RMSprop, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.05),
             paper="P4"),
    AlgoInfo("yogi", optim.AdamW, dict(_ADAM_KW, variant="yogi", eps=1e-3),
             ("exp_avg", "exp_avg_sq"), "adam_family", paper="P2 family"),
    AlgoInfo("adamd", optim.AdamD, dict(_ADAM_KW), ("exp_avg", "exp_avg_sq"), "adam_family",
             paper="P2", notes={"reading": "fusedopt's reading of P2 (no bias correction)"}),
    AlgoInfo("adaml", optim.AdamL, dict(_ADAM_KW, scaling="gap"), ("exp_avg", "exp_avg_sq"),
             "adaml", needs_loss=True, paper="P1",
             notes={"reading": "fusedopt's reading of P1, not the verified formula"}),
    AlgoInfo("adaml_additive", optim.AdamL, dict(_ADAM_KW, scaling="additive", gamma=0.5),
             ("exp_avg", "exp_avg_sq"), "adaml", needs_loss=True, paper="P1",
             notes={"reading": "fusedopt's reading of P1, not the verified formula"}),
    AlgoInfo("adagrad", optim.Adagrad, dict(lr=5e-2, lr_decay=1e-3, weight_decay=0.05,
                                            initial_accumulator_value=0.1, eps=1e-10),
             ("sum",), "adagrad",
             _torch(torch.optim.Adagrad, lr=5e-2, lr_decay=1e-3, weight_decay=0.05,
                    initial_accumulator_value=0.1, eps=1e-10), paper="P3"),
    AlgoInfo("adagrad_norm", optim.Adagrad, dict(lr=5e-2, eps=1e-10, norm=True,
                                                 initial_accumulator_value=0.1),
             (), "adagrad", has_moments=False, paper="P3"),
    AlgoInfo("iansgd", optim.IANSGD, dict(lr=0.05, beta=2 / 3, delta=1e-2, floor=0.2),
             (), "sgd_family", needs_normalizer=True, has_moments=False, paper="P5"),
    AlgoInfo("nsgd", optim.NSGD, dict(lr=0.05, delta=1e-2), (), "sgd_family",
             has_moments=False, paper="P5 baseline"),
    AlgoInfo("nsgdm", optim.NSGDm, dict(lr=0.05, momentum=0.1, delta=1e-2),
             ("momentum_buffer",), "sgd_family", paper="P5 baseline"),
    AlgoInfo("clip_sgd", optim.ClipSGD, dict(lr=0.05, delta=1e-2, floor=0.2), (), "sgd_family",
             has_moments=False, paper="P5 baseline"),
    # the element-wise algorithms (one elementwise_step_ call): weight decay on, so that every
    # scalar and state matters in a short run; Schedule-Free with a warmup shorter than the runs
    AlgoInfo("lion", optim.Lion, dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1),
             ("exp_avg",), "lion", paper="Chen et al. 2023"),
    AlgoInfo("adan", optim.Adan, dict(lr=1e-2, betas=(0.98, 0.92, 0.99), eps=1e-8,
                                      weight_decay=0.05),
             ("exp_avg", "exp_avg_diff", "exp_avg_sq", "prev_grad"), "adan",
             difference_of={"exp_avg_diff": "prev_grad"}, paper="Xie et al. 2022/2024"),
    AlgoInfo("schedule_free_adamw", optim.ScheduleFreeAdamW,
             dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05, warmup_steps=3),
             ("z", "exp_avg_sq"), "schedule_free_adamw", tensor_lr=False,
             paper="Defazio et al. 2024"),
    # ADOPT with beta2 0.99 (not 0.9999) so that v, and so the clip, change in a short run
    AlgoInfo("adopt", optim.ADOPT, dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.05),
             ("exp_avg", "exp_avg_sq"), "adopt", paper="Taniguchi et al. 2024"),
]}


def get(name: str) -> AlgoInfo:
    return ALGORITHMS[name]
