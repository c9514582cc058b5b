"""What a contender is, and fusedopt's backends as contenders.

A :class:`Contender` builds, for one :class:`~fusedopt.bench.case.Case`, a :class:`Runner`:
the closure one timed step calls, a description of what it runs, and the optimizer whose state
dtype goes into the bytes model. A contender that cannot run a case raises :class:`Skip` with
the reason, and the case goes on without it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .. import backends
from ..amp import LossScaler
from .case import Case
from .modes import LOSS_SCALE, SCALER_GROWTH_INTERVAL

FUSEDOPT = "fusedopt"
PEER = "peer"
ROOFLINE = "roofline"

#: Note shown when the reference backend stands in for a missing native one.
REFERENCE_ONLY_NOTE = ("no native fusedopt backend is built for {device}: fusedopt runs on its "
                       "pure-PyTorch reference backend (the specification, tensor by tensor, "
                       "not a fast path)")


class Skip(Exception):
    """This contender cannot run this case (the message says why)."""


@dataclass
class Runner:
    """One contender set up on one case."""

    step: Callable[[], None]
    #: what one timed call runs, e.g. "GradScaler.unscale_ + clip_grad_norm_ + AdamW(fused=True)"
    impl: str
    #: the optimizer (its state dtype feeds the bytes model); None for the roofline
    optimizer: torch.optim.Optimizer | None = None
    #: bytes one call moves, when not given by the bytes model (the roofline)
    moved_bytes: int | None = None
    #: run after every call, outside the timed region (a peer that rewrites the shared grads
    #: puts them back here)
    after: Callable[[], None] | None = None


@dataclass(frozen=True)
class Contender:
    """A named way to run a case: a fusedopt backend, a peer, or a roofline kernel."""

    name: str
    kind: str
    build: Callable[[Case], Runner]
    #: the registry algorithms it runs; None: any (``build`` raises Skip for the others)
    algorithms: tuple[str, ...] | None = None


def state_dtype(runner: Runner, case: Case) -> torch.dtype | None:
    """Storage dtype of the optimizer's per-element states (after its first step)."""
    if runner.optimizer is None or not case.params:
        return None
    p = case.params[0]
    for key, value in runner.optimizer.state.get(p, {}).items():
        if (key != "master_param" and isinstance(value, torch.Tensor)
                and value.numel() == p.numel() and value.is_floating_point()):
            return value.dtype
    return None


def _fusedopt_build(backend: str) -> Callable[[Case], Runner]:
    def build(case: Case) -> Runner:
        info, mode = case.info, case.mode
        opt = info.make(case.params, backend=backend, max_grad_norm=mode.max_grad_norm,
                        telemetry=mode.telemetry)
        step_kwargs = {"loss": case.loss} if info.needs_loss else {}
        scaler = (LossScaler(init_scale=LOSS_SCALE, growth_interval=SCALER_GROWTH_INTERVAL)
                  if mode.amp else None)

        def step() -> None:
            if info.needs_normalizer:
                opt.record_normalizer(grad_scale=scaler.scale_tensor if scaler else None)
            if scaler is None:
                opt.step(**step_kwargs)
            else:
                scaler.step(opt, **step_kwargs)
                scaler.update()

        args = [f"backend={backend!r}"]
        if mode.clip:
            args.append(f"max_grad_norm={mode.max_grad_norm}")
        if mode.telemetry:
            args.append("telemetry=True")
        impl = f"fusedopt.{info.cls.__name__}({', '.join(args)})"
        if info.needs_normalizer:
            impl += " record_normalizer() +"
        impl += " step()" if scaler is None else " via fusedopt.amp.LossScaler"
        return Runner(step, impl, opt)

    return build


def fusedopt_contenders(device: torch.device, requested: list[str] | None = None
                        ) -> tuple[list[Contender], list[str]]:
    """The fusedopt backends to time on ``device`` and notes on the ones left out.

    ``requested=None`` ("auto"): every native backend that can run on the device (Triton on a
    CPU only by request: there it is the interpreter, a correctness tool); the reference backend
    only when there is none (it is the slow specification). A requested backend that cannot run
    here is left out with the reason.
    """
    available = backends.available_backends(device)
    notes = []
    if requested is None:
        chosen = [b for b in available
                  if b != "reference" and not (b == "triton" and device.type != "cuda")]
        if not chosen:
            chosen = ["reference"]
            notes.append(REFERENCE_ONLY_NOTE.format(device=device.type))
    else:
        chosen = []
        for name in requested:
            if name in available:
                chosen.append(name)
            else:
                ok, reason = backends.availability(name)
                why = reason if not ok else f"cannot run on {device.type} tensors"
                notes.append(f"fusedopt.{name} skipped: {why}")
    return [Contender(f"fusedopt.{b}", FUSEDOPT, _fusedopt_build(b)) for b in chosen], notes
