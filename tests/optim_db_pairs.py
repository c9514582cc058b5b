"""fusedopt classes paired with their torch.optim equivalents, and torch's OptimizerInfo sweeps
translated into fusedopt constructor arguments (used by tests/test_torch_optim_db.py).

torch ships the database its own optimizer tests run on
(``torch.testing._internal.common_optimizers.optim_db``): per optimizer, ``optim_inputs_func``
(a sweep of constructor kwargs) and ``optim_error_inputs_func`` (kwargs that must fail, with the
exception type and a regex of the message). A :class:`Pair` names the fusedopt class that claims
to replace one of those optimizers and how torch's kwargs map onto it.

Mapping (registry.py: the torch equivalents):

* ``torch.optim.AdamW`` -> ``fusedopt.AdamW``, ``Adam`` -> ``fusedopt.Adam``, ``Adagrad`` ->
  ``fusedopt.Adagrad``: every kwarg passes through unchanged (``maximize``, ``foreach``,
  ``fused``, ``differentiable``, ``capturable`` included: fusedopt accepts torch's spellings).
* ``torch.optim.RMSprop`` -> ``fusedopt.Adam(variant="rmsprop")`` with ``betas=(0, alpha)``
  (RMSprop's v is Adam's v with beta2 = alpha; beta1 = 0 makes m the grad and the variant drops
  the bias correction) and RMSprop's defaults (lr 1e-2, eps 1e-8). ``centered=True`` and
  ``momentum != 0`` have no fusedopt counterpart: those sweep entries are :class:`Unmapped`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.testing._internal.common_optimizers import optim_db

import fusedopt


class Unmapped(Exception):
    """A torch kwargs set that the fusedopt class has no counterpart for."""


@dataclass(frozen=True)
class Pair:
    """One fusedopt class standing in for one torch.optim class."""

    name: str                                  # torch's class name (OptimizerInfo.name)
    torch_cls: type
    fused_cls: Callable[..., torch.optim.Optimizer]
    to_fused: Callable[[dict[str, Any]], dict[str, Any]]
    #: fusedopt state key -> torch state key, besides "step"
    state_keys: dict[str, str]

    @property
    def info(self):
        return next(i for i in optim_db if i.optim_cls is self.torch_cls)

    def make(self, params, torch_kwargs: dict[str, Any] | None = None, **extra: Any):
        """The fusedopt optimizer for torch's kwargs plus fusedopt-only ``extra``. Tensor
        hyperparameters are passed as they are (not copied): a tensor lr written in place
        must reach the optimizer."""
        kw = self.to_fused(dict(torch_kwargs or {}))
        return self.fused_cls(params, **kw, **extra)

    def make_torch(self, params, torch_kwargs: dict[str, Any] | None = None):
        """torch's single-tensor (for-loop) implementation, the ground truth of torch's tests.
        ``capturable`` is dropped: torch refuses it for CPU params and it does not change the
        math."""
        kw = copy.deepcopy(torch_kwargs or {})
        kw.pop("capturable", None)
        kw.update(foreach=False)
        if "fused" in kw:
            kw["fused"] = False
        kw.pop("differentiable", None)
        return self.torch_cls(params, **kw)

    def state_keys_for(self, torch_kwargs: dict[str, Any]) -> dict[str, str]:
        keys = dict(self.state_keys)
        if self.name in ("Adam", "AdamW") and torch_kwargs.get("amsgrad"):
            keys["max_exp_avg_sq"] = "max_exp_avg_sq"
        return keys


def _same(kw: dict[str, Any]) -> dict[str, Any]:
    return kw


def _rmsprop(kw: dict[str, Any]) -> dict[str, Any]:
    if kw.pop("centered", False):
        raise Unmapped("centered=True (RMSprop's centered variance) has no fusedopt counterpart")
    if kw.pop("momentum", 0) != 0:
        raise Unmapped("momentum != 0 (RMSprop's heavy-ball buffer) has no fusedopt counterpart")
    out = dict(lr=kw.pop("lr", 1e-2), betas=(0.0, kw.pop("alpha", 0.99)),
               eps=kw.pop("eps", 1e-8), weight_decay=kw.pop("weight_decay", 0.0),
               variant="rmsprop")
    out.update(kw)  # maximize, capturable, foreach, fused, differentiable
    return out


PAIRS: dict[str, Pair] = {p.name: p for p in [
    Pair("AdamW", torch.optim.AdamW, fusedopt.AdamW, _same,
         {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}),
    Pair("Adam", torch.optim.Adam, fusedopt.Adam, _same,
         {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}),
    Pair("Adagrad", torch.optim.Adagrad, fusedopt.Adagrad, _same, {"sum": "sum"}),
    Pair("RMSprop", torch.optim.RMSprop, lambda ps, **kw: fusedopt.Adam(ps, **kw), _rmsprop,
         {"exp_avg_sq": "square_avg"}),
]}


def _desc_id(desc: str) -> str:
    return desc.replace(", ", "+").replace(" & ", "&").replace(" ", "_")


def sweep(pair: Pair, flags: str = "base") -> list[tuple[str, dict[str, Any]]]:
    """(id, torch kwargs) of torch's ``optim_inputs_func`` for ``pair``: the CPU entries plus
    the entries torch runs only on CUDA (capturable, tensor lr, tensor betas: fusedopt runs them
    on CPU params), minus the Unmapped ones. As torch's own helper
    (``_get_optim_inputs_including_global_cliquey_kwargs``) does, ``flags="base"`` sets the impl
    flags the torch class has to their explicit off values (``foreach=False,
    differentiable=False``, ``fused=False`` where torch has ``fused``) and ``flags="foreach"``
    sets ``foreach=True`` instead, ``flags="fused"`` ``fused=True`` (only for the classes torch
    has a fused kernel for); ``flags="none"`` leaves the kwargs as torch lists them.
    ``differentiable=True`` is tested apart."""
    info = pair.info
    seen, out = set(), []
    for device in ("cpu", "cuda"):
        for oi in info.optim_inputs_func(device):
            if oi.desc in seen:
                continue
            seen.add(oi.desc)
            kw = dict(oi.kwargs)
            try:
                pair.to_fused(copy.deepcopy(kw))
            except Unmapped:
                continue
            if flags == "fused" and "fused" not in info.supported_impls:
                continue
            if flags != "none":
                kw.update(foreach=flags == "foreach", differentiable=False)
                if "fused" in info.supported_impls:
                    kw["fused"] = flags == "fused"
            out.append((_desc_id(oi.desc), kw))
    return out


def unmapped(pair: Pair) -> list[str]:
    """Descriptions of the sweep entries left out as Unmapped (the test file's docstring lists
    them)."""
    out = []
    for device in ("cpu", "cuda"):
        for oi in pair.info.optim_inputs_func(device):
            try:
                pair.to_fused(copy.deepcopy(oi.kwargs))
            except Unmapped:
                out.append(oi.desc)
    return sorted(set(out))
