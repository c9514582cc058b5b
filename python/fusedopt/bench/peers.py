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
* ``pytorch_optimizer``, ``lion_pytorch``, ``schedulefree``: the public implementations of the
  algorithms torch.optim lacks (:data:`PUBLIC`: Lion, Adan, Schedule-Free AdamW), built with
  the registry entry's hyperparameters and the same composition for clip and AMP; each runs
  only the algorithms of that table (the others never select it).

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


# ------------------------------------------------------------ public implementations
def _same(*keys: str) -> Callable[[dict], dict]:
    """The registry kwargs ``keys``, passed under the same names."""
    return lambda kw: {k: kw[k] for k in keys if k in kw}


def _adan_kwargs(kw: dict) -> dict:
    # fusedopt's no_prox (decay as a multiply before the update) is pytorch-optimizer's
    # weight_decouple; both default to the proximal form (docs/algorithms.md, Adan)
    return dict(_same("lr", "betas", "eps", "weight_decay")(kw),
                weight_decouple=kw.get("no_prox", False))


@dataclass(frozen=True)
class Public:
    """A public implementation of a registry algorithm: ``package.attr(params, **kwargs(kw))``
    with ``kw`` the registry entry's kwargs (the conventions aligned as
    tests/test_public_references.py checks them numerically)."""

    package: str
    attr: str
    kwargs: Callable[[dict], dict]
    #: extra constructor flags, stated in the legend (e.g. schedulefree's foreach=True)
    flags: tuple[tuple[str, object], ...] = ()
    #: its step rewrites p.grad in place (schedulefree divides the grads by the denominator
    #: and adds the decay into them): the bench restores the case's grads after each of its
    #: calls, untimed (Runner.after), so that every contender keeps seeing the same grads
    rewrites_grads: bool = False
    #: the authors' API wants train() before the first step (Schedule-Free)
    train: bool = False


#: Registry algorithm -> the public implementations it is timed against (peer = package).
#: pytorch-optimizer's Lion and Adan take their foreach path on CPU too by default
#: (foreach=None: any group of dense real grads); schedulefree's foreach=True is its default,
#: passed explicitly so the legend says it. lion-pytorch has no foreach path (a loop over params).
PUBLIC: dict[str, tuple[Public, ...]] = {
    "lion": (Public("pytorch_optimizer", "Lion", _same("lr", "betas", "weight_decay")),
             Public("lion_pytorch", "Lion", _same("lr", "betas", "weight_decay"))),
    "adan": (Public("pytorch_optimizer", "Adan", _adan_kwargs),),
    "schedule_free_adamw": (
        Public("schedulefree", "AdamWScheduleFree",
               _same("lr", "betas", "eps", "weight_decay", "warmup_steps", "r",
                     "weight_lr_power"),
               flags=(("foreach", True),), rewrites_grads=True, train=True),),
}


def public_algorithms(package: str) -> tuple[str, ...]:
    """The registry algorithms ``package`` has a public implementation of in :data:`PUBLIC`."""
    return tuple(a for a, impls in PUBLIC.items() if any(i.package == package for i in impls))


def _uses_foreach(opt: torch.optim.Optimizer) -> bool | None:
    """Whether a pytorch-optimizer optimizer takes its foreach path for its first group (None
    when it has no such switch)."""
    check = getattr(opt, "_can_use_foreach", None)
    return None if check is None else bool(check(opt.param_groups[0]))


def _grad_restorer(case: Case) -> Callable[[], None]:
    """A hook that copies the case's grads back to their values when it was made (one snapshot
    per case, shared by every peer that needs it)."""
    grads = [p.grad for p in case.params]
    saved = case.scratch.get("grads_snapshot")
    if saved is None:
        saved = case.scratch["grads_snapshot"] = [g.detach().clone() for g in grads]

    def restore() -> None:
        for p, g in zip(case.params, grads):
            p.grad = g  # in case the peer replaced the tensor rather than writing into it
        torch._foreach_copy_(grads, saved)

    return restore


def _public_peer(package: str) -> Callable[[Case], Runner]:
    def build(case: Case) -> Runner:
        impl = next((i for i in PUBLIC.get(case.algorithm, ()) if i.package == package), None)
        if impl is None:
            raise Skip(f"{package} has no {case.algorithm} in the bench's table")
        kwargs = {**impl.kwargs(case.info.kwargs), **dict(impl.flags)}
        cls = getattr(importlib.import_module(package), impl.attr)
        opt = cls(case.params, **kwargs)
        if impl.train:
            opt.train()
        name = f"{package}.{impl.attr}({_flags(kwargs)})"
        foreach = _uses_foreach(opt)
        if foreach is not None:
            name += f" [its {'foreach' if foreach else 'per-param'} path]"
        runner = _composed(case, opt, name, foreach=True)
        if impl.rewrites_grads:
            runner.after = _grad_restorer(case)
            runner.impl += " (grads restored after each call, untimed)"
        return runner
    return build


@dataclass(frozen=True)
class PeerSpec:
    """A peer: its name, the package it needs, the device types it runs on, its builder, and
    the algorithms it can run (None: it decides in ``build``, raising Skip)."""

    name: str
    package: str
    devices: tuple[str, ...]
    build: Callable[[Case], Runner]
    algorithms: tuple[str, ...] | None = None


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
    *(PeerSpec(pkg, pkg, ("cpu", "cuda"), _public_peer(pkg), public_algorithms(pkg))
      for pkg in dict.fromkeys(i.package for impls in PUBLIC.values() for i in impls)),
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
        out.append(Contender(name, PEER, spec.build, spec.algorithms))
    return out, notes
