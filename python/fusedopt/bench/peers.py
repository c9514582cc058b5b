"""The peers fusedopt is compared with, in the same process on the same tensors.

* ``torch.forloop`` / ``torch.foreach`` / ``torch.fused``: the registry's torch.optim
  equivalent with that implementation. In the clipping and AMP modes each runs torch's
  composition: ``GradScaler.unscale_`` (AMP), ``clip_grad_norm_`` (clip), then the step through
  ``GradScaler.step`` (which hands ``found_inf`` to a fused optimizer and checks it on the host
  for the others) — with ``torch.fused`` that is the composition
  docs/architecture.md#passes-over-memory counts as ~48 B.
* ``torch.compile``: the same optimizer (foreach) with ``clip_grad_norm_`` and ``step()``
  compiled into one graph; the AMP unscale and skip stay eager (GradScaler cannot be traced).
* ``deepspeed.cpu_adam`` (CPU) / ``deepspeed.fused_adam``, ``apex.fused_adam``,
  ``te.fused_adam`` (CUDA): Adam/AdamW only, with the same composition for clip and AMP.

A peer whose package is not installed is left out with a note; one that cannot run a case
(algorithm, dtype, device) raises :class:`~fusedopt.bench.contenders.Skip` with the reason.
The telemetry mode runs the peers plain: none of them computes those norms.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn.utils import clip_grad_norm_

from .case import Case
from .contenders import PEER, Contender, Runner, Skip
from .modes import LOSS_SCALE, SCALER_GROWTH_INTERVAL

#: Adam-family algorithms the third-party fused Adams implement, with their AdamW switch.
_ADAM_W_MODE = {"adamw": True, "adam": False}


def _torch_optimizer(case: Case, **flags) -> torch.optim.Optimizer:
    """The registry's torch.optim equivalent of the case's algorithm, with ``flags``."""
    info = case.info
    if info.torch_equivalent is None:
        raise Skip(f"torch.optim has no {case.algorithm}")
    try:
        return info.make_torch(case.params, **flags)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise Skip(f"torch.optim equivalent of {case.algorithm}({_flags(flags)}): {exc}") \
            from None


def _flags(flags: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in flags.items())


def _scaler(case: Case) -> torch.amp.GradScaler | None:
    if not case.mode.amp:
        return None
    scaler = torch.amp.GradScaler(case.device.type, init_scale=LOSS_SCALE,
                                  growth_interval=SCALER_GROWTH_INTERVAL)
    scaler.scale(case.loss)  # GradScaler creates its scale tensor on the first scale() call
    return scaler


def _composed(case: Case, opt: torch.optim.Optimizer, step_name: str, foreach: bool) -> Runner:
    """torch's way to run ``opt`` with the case's clipping and AMP: one call per piece."""
    mode, params = case.mode, case.params
    scaler = _scaler(case)
    max_norm = mode.max_grad_norm

    def step() -> None:
        if scaler is not None:
            scaler.unscale_(opt)
        if max_norm is not None:
            clip_grad_norm_(params, max_norm, foreach=foreach)
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()

    parts = ["GradScaler.unscale_"] if scaler is not None else []
    if max_norm is not None:
        parts.append(f"clip_grad_norm_(foreach={foreach})")
    parts.append(step_name + (" via GradScaler.step" if scaler is not None else ""))
    return Runner(step, " + ".join(parts), opt)


def _torch_impl(**flags) -> Callable[[Case], Runner]:
    def build(case: Case) -> Runner:
        opt = _torch_optimizer(case, **flags)
        name = f"torch.optim.{type(opt).__name__}({_flags(flags)})"
        return _composed(case, opt, name, foreach=flags.get("foreach", True))
    return build


def _torch_compile(case: Case) -> Runner:
    opt = _torch_optimizer(case, foreach=True)
    params, max_norm = case.params, case.mode.max_grad_norm
    eager_step = opt.step

    def body() -> None:
        if max_norm is not None:
            clip_grad_norm_(params, max_norm, foreach=True)
        eager_step()

    compiled = torch.compile(body)
    scaler = _scaler(case)
    name = f"torch.compile({'clip_grad_norm_ + ' if max_norm else ''}" \
           f"{type(opt).__name__}(foreach=True).step)"
    if scaler is None:
        return Runner(compiled, name, opt)
    opt.step = compiled  # GradScaler.step checks found_inf, then calls the compiled body

    def step() -> None:
        scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()

    return Runner(step, f"GradScaler.unscale_ + {name} via GradScaler.step", opt)


def _adam_kwargs(case: Case) -> dict:
    if case.algorithm not in _ADAM_W_MODE:
        raise Skip(f"implements Adam/AdamW only, not {case.algorithm}")
    kw = case.info.kwargs
    return dict(lr=kw["lr"], betas=kw["betas"], eps=kw["eps"], weight_decay=kw["weight_decay"])


def _deepspeed_cpu_adam(case: Case) -> Runner:
    kwargs = _adam_kwargs(case)
    from deepspeed.ops.adam import DeepSpeedCPUAdam
    opt = DeepSpeedCPUAdam(case.params, adamw_mode=_ADAM_W_MODE[case.algorithm], **kwargs)
    return _composed(case, opt, "deepspeed DeepSpeedCPUAdam.step", foreach=True)


def _third_party_fused_adam(module: str, attr: str, switch: str) -> Callable[[Case], Runner]:
    def build(case: Case) -> Runner:
        kwargs = _adam_kwargs(case)
        cls = getattr(importlib.import_module(module), attr)
        opt = cls(case.params, **{switch: _ADAM_W_MODE[case.algorithm]}, **kwargs)
        return _composed(case, opt, f"{module}.{attr}.step", foreach=True)
    return build


@dataclass(frozen=True)
class PeerSpec:
    """A peer: its name, the package it needs, the device types it runs on, its builder."""

    name: str
    package: str
    devices: tuple[str, ...]
    build: Callable[[Case], Runner]


PEERS: dict[str, PeerSpec] = {p.name: p for p in [
    PeerSpec("torch.forloop", "torch", ("cpu", "cuda"), _torch_impl(foreach=False)),
    PeerSpec("torch.foreach", "torch", ("cpu", "cuda"), _torch_impl(foreach=True)),
    PeerSpec("torch.fused", "torch", ("cpu", "cuda"), _torch_impl(fused=True)),
    PeerSpec("torch.compile", "torch", ("cpu", "cuda"), _torch_compile),
    PeerSpec("deepspeed.cpu_adam", "deepspeed", ("cpu",), _deepspeed_cpu_adam),
    PeerSpec("deepspeed.fused_adam", "deepspeed", ("cuda",),
             _third_party_fused_adam("deepspeed.ops.adam", "FusedAdam", "adam_w_mode")),
    PeerSpec("apex.fused_adam", "apex", ("cuda",),
             _third_party_fused_adam("apex.optimizers", "FusedAdam", "adam_w_mode")),
    PeerSpec("te.fused_adam", "transformer_engine", ("cuda",),
             _third_party_fused_adam("transformer_engine.pytorch.optimizers", "FusedAdam",
                                     "adam_w_mode")),
]}


def peer_contenders(device: torch.device, requested: list[str] | None = None
                    ) -> tuple[list[Contender], list[str]]:
    """The peers to time on ``device`` (all by default) and notes on the ones left out."""
    names = list(PEERS) if requested is None else requested
    out, notes = [], []
    for name in names:
        spec = PEERS[name]
        if device.type not in spec.devices:
            if requested is not None:
                notes.append(f"{name} skipped: runs on {'/'.join(spec.devices)} only")
            continue
        if importlib.util.find_spec(spec.package) is None:
            notes.append(f"{name} skipped: {spec.package} is not installed")
            continue
        out.append(Contender(name, PEER, spec.build))
    return out, notes
