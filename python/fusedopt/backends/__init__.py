"""Backends: each one implements the same kernel contract; the optimizer picks one per device.

Kernel contract
===============
A backend is a module that defines ``NAME``, ``availability() -> (bool, reason)``,
``supports(device) -> bool`` and these functions. A backend whose kernels have not yet passed
their tests on real hardware sets ``UNVALIDATED`` to a sentence saying so: "auto" then passes it
over (Note [auto policy]); named explicitly it runs, with that sentence as a warning, once per
process. All of them mutate in place, return None,
never read a device value on the host (no ``.item()``), and write or accumulate only the slots of
the fp64 ``stats`` tensor named below (layout: :mod:`fusedopt._stats`).

``grad_prologue_(grads, stats, *, region, grad_scale, found_inf, max_norm, compute_norm)``
    The norm pass of docs/algorithms.md#prologue over ``grads`` (any mix of fp32/bf16/fp16/fp64,
    in list order), writing the five slots of the prologue region ``region``
    (Note [prologue region]).
    ``grad_scale``/``found_inf``: 0-d fp32 tensors or None. ``max_norm``: float or None.
    ``compute_norm=False``: no pass over memory, only ``coef = 1/grad_scale``, found_inf copied.
    The sum of squares is deterministic: fixed chunk partials combined in a fixed order.

``adam_step_(b, stats, *, lr, hp, use_prologue, use_abc, telemetry, maximize=False)``
    Adam family update (:mod:`fusedopt.reference.adam_family`) of bucket ``b``; ``hp`` is an
    :class:`~fusedopt.reference.adam_family.AdamHyper`; ``lr`` a float or a 0-d fp32/fp64
    tensor on the device. States: ``exp_avg`` (absent for rmsprop), ``exp_avg_sq``,
    ``max_exp_avg_sq`` (amsgrad).

``elementwise_step_(b, stats, *, algo, lr, hyper, use_prologue, telemetry, maximize=False)``
    The update of an element-wise algorithm (Adagrad, Lion, Adan, Schedule-Free AdamW, ...: one
    call for all of them, :mod:`fusedopt.reference.elementwise`): ``algo`` its name, ``hyper`` its fp64
    hyperparameters in the order of ``fusedopt.reference.<algo>.HYPER``, states
    ``b.states[name]`` for the names of its ``STATES``. Per tensor, its ``scalars`` are computed
    in fp64 from ``t = step + 1``, ``lr`` and ``hyper``, rounded once to opmath, and its
    ``update`` runs on every element with ``g`` times the gradient coefficient.

``sgd_step_(b, stats, *, direction, use_prologue, telemetry, maximize=False)``
    ``p <- p - stats[SCALE] * d`` with ``d`` the grad (``direction="grad"``, times COEF after a
    prologue) or the ``momentum_buffer`` state (``direction="momentum"``).

``momentum_step_(b, stats, *, rho, use_prologue, maximize=False)``
    NSGDm's ``m <- m (1 - rho) + (coef g) rho``, adding ``sum(m_new^2)`` to
    ``stats[MOMENTUM_SQ]``. Does not advance the step counts.

Common rules of the update functions:

* ``use_prologue``: ``stats[COEF]`` multiplies every grad and a non-zero ``stats[FOUND_INF]``
  skips the whole call (params, states, steps unchanged). Without it: coef 1, no skip.
* ``adam_step_``, ``elementwise_step_`` and ``sgd_step_`` first compute
  ``t = step + 1`` for each tensor, use it, and store it back unless the step is skipped.
* ``maximize`` (torch.optim's meaning: ascend): every grad the call reads is negated before
  anything else. It is the gradient coefficient negated (``-stats[COEF]``, or -1 without a
  prologue), so ``g * (-coef)`` is bitwise ``-(g * coef)``; the telemetry's squares are
  unchanged. ``sgd_step_(direction="momentum")`` reads no grad as its direction: the buffer was
  built by ``momentum_step_(maximize=True)`` from the negated grads and is not negated again.
* tensor ``lr`` (read through its pointer, on the device): a NaN or negative value skips the
  whole call (params, states, masters, steps and telemetry unchanged) and sets
  ``stats[LR_INVALID]`` to 1; a valid one leaves that slot untouched. A float lr is not checked
  here (the optimizer validates it on the host).
* ``use_abc``: AdamL's ``a, b, c`` are read from ``stats[ABC:ABC+3]`` (else ``0, eps, 1``).
* master weights: when ``b.masters`` is given the update reads and writes the fp32 master and
  stores ``param = master`` rounded to the param dtype (round-to-nearest-even). Re-seed rule
  (Note [master re-seed]): per element, before the update, a param whose bits differ from its
  master rounded to the param dtype was written since the last step (``load_state_dict``,
  ``clamp_``, re-initialisation): the update then starts from the param widened to fp32
  (exact), not from the stale master, so such a write is kept, never reverted. Folded into
  the update pass (one more 16-bit read per element, no host sync); a skipped call writes
  nothing, the master included.
* ``telemetry``: add ``sum((p_new - p_old)^2)``, ``sum(p_new^2)`` (opmath values, on the master
  when there is one; ``p_old`` is the value the update started from, a re-seeded master
  included) and ``sum((coef g)^2)`` to ``UPDATE_SQ``, ``PARAM_SQ``, ``STEP_GRAD_SQ``.
"""
from __future__ import annotations

import importlib
import warnings
from types import ModuleType

import torch

from .bucket import Bucket, PlanGrads

#: Every backend fusedopt knows, in the order "auto" prefers them for a device type.
BACKENDS = ("cuda", "triton", "cpu", "reference")
_AUTO_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}


class BackendNotAvailable(RuntimeError):
    """The requested backend was not built or cannot run here (the message says why)."""


def load(name: str) -> ModuleType:
    """Import the backend module ``name`` (no availability check)."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {('auto',) + BACKENDS}, got {name!r}")
    return importlib.import_module(f"{__name__}.{name}_backend")


def availability(name: str) -> tuple[bool, str]:
    """(available, reason) for backend ``name`` on this machine."""
    try:
        mod = load(name)
    except ImportError as exc:  # not part of this build, or its dependencies are missing
        return False, f"not built in this install ({exc})"
    return mod.availability()


def resolve(name: str, device: torch.device) -> ModuleType:
    """The backend module to run on ``device``: ``name`` itself, or the first usable for "auto".

    Raises :class:`BackendNotAvailable` with the reason when an explicit backend cannot run.
    """
    device = torch.device(device)
    if name == "auto":
        # Note [auto policy]: "auto" never picks a backend whose kernels have not passed their
        # tests on real hardware (UNVALIDATED set): it falls back to the next one, at worst the
        # reference, and says once how to opt in by naming the backend.
        skipped = []
        for candidate in _AUTO_ORDER.get(device.type, ("reference",)):
            ok, _ = availability(candidate)
            if not (ok and load(candidate).supports(device)):
                continue
            if getattr(load(candidate), "UNVALIDATED", None):
                skipped.append(candidate)
                continue
            _warn_skipped(skipped, candidate, device)
            return load(candidate)
        _warn_skipped(skipped, "reference", device)
        return load("reference")
    ok, reason = availability(name)
    if not ok:
        raise BackendNotAvailable(f"fusedopt backend {name!r} is not available: {reason}")
    mod = load(name)
    if not mod.supports(device):
        raise BackendNotAvailable(
            f"fusedopt backend {name!r} cannot run on {device.type} tensors"
            + (" (set TRITON_INTERPRET=1 to run Triton on the CPU)" if name == "triton" else "")
        )
    return _warn_if_unvalidated(mod)


_WARNED: set[str] = set()


def _warn_skipped(skipped: list[str], chosen: str, device: torch.device) -> None:
    """Once per process: "auto" passed over built but unvalidated backends (Note [auto policy])."""
    key = "auto:" + ",".join(skipped)
    if skipped and key not in _WARNED:
        _WARNED.add(key)
        names = " or ".join(f"backend={s!r}" for s in skipped)
        warnings.warn(f"fusedopt: backend='auto' runs {device.type} tensors on {chosen!r}: "
                      f"{', '.join(skipped)} {'is' if len(skipped) == 1 else 'are'} built but "
                      f"not yet validated on real hardware; pass {names} to use "
                      f"{'it' if len(skipped) == 1 else 'them'} anyway", stacklevel=4)


def _warn_if_unvalidated(mod: ModuleType) -> ModuleType:
    """Once per process and backend: say that its kernels have not yet run on real hardware."""
    note = getattr(mod, "UNVALIDATED", None)
    if note and mod.NAME not in _WARNED:
        _WARNED.add(mod.NAME)
        warnings.warn(f"fusedopt backend {mod.NAME!r}: {note}", stacklevel=4)
    return mod


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Names of the backends that can run on ``device`` here, best first."""
    device = torch.device(device)
    out = []
    for name in BACKENDS:
        ok, _ = availability(name)
        if ok and load(name).supports(device):
            out.append(name)
    return out


__all__ = ["BACKENDS", "Bucket", "PlanGrads", "BackendNotAvailable", "availability", "available_backends",
           "load", "resolve"]
