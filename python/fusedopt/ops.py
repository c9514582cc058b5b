"""``torch.library`` custom ops over the kernel contract, and the dispatcher optimizers call.

Every contract function (:mod:`fusedopt.backends`) is registered as a custom op in the
``fusedopt`` namespace with a schema that declares what it mutates and a fake impl, so that
``torch.compile`` traces an optimizer step through it (inductor keeps a list-mutating custom op
in place). The op takes the backend name as an argument and runs that backend's function.

Eager steps do not go through the dispatcher: it costs ~1 us per tensor argument (about 125 us
for GPT-2's 148 tensors on a CPU, 10% of a GPU step), so :class:`Kernels` calls the backend
function directly with the bucket (and its cached pointer tables) and uses the custom op only
while tracing (``torch.compiler.is_compiling()``). Both paths run the same kernel.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Optional

import torch
from torch import Tensor

from . import backends
from .backends import Bucket
from .reference import elementwise
from .reference.adam_family import AdamHyper

#: Note [traced caches]: the backend caches of the traced path (``Bucket.cache``), one per
#: bucket, keyed by (op, backend, the params' data_ptrs): a compiled step passes the same params
#: every call, so a bucket's tables are built once; the backends check every tensor's signature
#: against what a cached table was built for (grads, whose addresses change from step to step,
#: are not in the key). ``Bucket.tables`` is fresh on every call: it is trusted without checks
#: on the same Bucket, and nothing here knows that the tensors are unchanged. Bounded: at most
#: _TRACED_MAX entries, least recently used dropped first; and an entry is dropped when its
#: first param is freed, so the states, steps and masters its tables hold die with the model.
_TRACED: OrderedDict[tuple, tuple[dict, weakref.finalize]] = OrderedDict()
_TRACED_MAX = 64


def _bucket(op, backend, params, grads, steps, states, masters) -> Bucket:
    states = {k: v for k, v in states.items() if v}
    key = (op, backend) + tuple(map(Tensor.data_ptr, params))
    entry = _TRACED.get(key)
    if entry is None:
        while len(_TRACED) >= _TRACED_MAX:
            _TRACED.popitem(last=False)[1][1].detach()
        entry = _TRACED[key] = ({}, weakref.finalize(params[0], _TRACED.pop, key, None))
    else:
        _TRACED.move_to_end(key)
    return Bucket(list(params), list(grads), list(steps), states,
                  list(masters) if masters else None, entry[0], {})


def _lr(lr: float, lr_tensor: Optional[Tensor]):
    return lr_tensor if lr_tensor is not None else lr


# --------------------------------------------------------------------------- grad_prologue_
@torch.library.custom_op("fusedopt::grad_prologue_", mutates_args=("stats",))
def grad_prologue_(grads: list[Tensor], stats: Tensor, region: int,
                   grad_scale: Optional[Tensor], found_inf: Optional[Tensor],
                   max_norm: Optional[float], compute_norm: bool, backend: str) -> None:
    """Norm pass: sum of squares, found_inf, clip and gradient coefficients into ``stats``."""
    backends.load(backend).grad_prologue_(
        grads, stats, region=region, grad_scale=grad_scale, found_inf=found_inf,
        max_norm=max_norm, compute_norm=compute_norm)


@grad_prologue_.register_fake
def _(grads, stats, region, grad_scale, found_inf, max_norm, compute_norm, backend):
    return None


# --------------------------------------------------------------------------- adam_step_
@torch.library.custom_op(
    "fusedopt::adam_step_",
    mutates_args=("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "masters", "steps",
                  "stats"))
def adam_step_(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
               exp_avg_sqs: list[Tensor], max_exp_avg_sqs: list[Tensor], masters: list[Tensor],
               steps: list[Tensor], stats: Tensor, lr: float, lr_tensor: Optional[Tensor],
               beta1: float, beta2: float, eps: float, weight_decay: float, variant: str,
               decay: str, bias_correction: bool, use_prologue: bool, use_abc: bool,
               telemetry: bool, backend: str, maximize: bool = False) -> None:
    """Adam-family update of one bucket (empty lists for absent states / masters)."""
    b = _bucket("adam", backend, params, grads, steps,
                {"exp_avg": exp_avgs, "exp_avg_sq": exp_avg_sqs,
                 "max_exp_avg_sq": max_exp_avg_sqs}, masters)
    hp = AdamHyper(beta1, beta2, eps, weight_decay, variant, decay, bias_correction)
    backends.load(backend).adam_step_(b, stats, lr=_lr(lr, lr_tensor), hp=hp,
                                      use_prologue=use_prologue, use_abc=use_abc,
                                      telemetry=telemetry, maximize=maximize)


@adam_step_.register_fake
def _(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, steps, stats, lr,
      lr_tensor, beta1, beta2, eps, weight_decay, variant, decay, bias_correction, use_prologue,
      use_abc, telemetry, backend, maximize=False):
    return None


# --------------------------------------------------------------------------- elementwise_step_
@torch.library.custom_op(
    "fusedopt::elementwise_step_",
    mutates_args=("params", "state0", "state1", "state2", "state3", "masters", "steps", "stats"))
def elementwise_step_(params: list[Tensor], grads: list[Tensor], state0: list[Tensor],
                      state1: list[Tensor], state2: list[Tensor], state3: list[Tensor],
                      masters: list[Tensor], steps: list[Tensor], stats: Tensor, algo: str,
                      lr: float, lr_tensor: Optional[Tensor], hyper: list[float],
                      use_prologue: bool, telemetry: bool, backend: str,
                      maximize: bool = False) -> None:
    """An element-wise algorithm's update of one bucket: its state streams in the algorithm's
    order (``fusedopt.reference.<algo>.STATES``), unused ones empty."""
    names = elementwise.spec(algo).STATES
    b = _bucket(f"elementwise:{algo}", backend, params, grads, steps,
                dict(zip(names, (state0, state1, state2, state3))), masters)
    backends.load(backend).elementwise_step_(b, stats, algo=algo, lr=_lr(lr, lr_tensor),
                                             hyper=tuple(hyper), use_prologue=use_prologue,
                                             telemetry=telemetry, maximize=maximize)


@elementwise_step_.register_fake
def _(params, grads, state0, state1, state2, state3, masters, steps, stats, algo, lr, lr_tensor,
      hyper, use_prologue, telemetry, backend, maximize=False):
    return None


# --------------------------------------------------------------------------- sgd_step_
@torch.library.custom_op("fusedopt::sgd_step_",
                         mutates_args=("params", "masters", "steps", "stats"))
def sgd_step_(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor],
              masters: list[Tensor], steps: list[Tensor], stats: Tensor, direction: str,
              use_prologue: bool, telemetry: bool, backend: str, maximize: bool = False) -> None:
    """``p <- p - stats[SCALE] * d`` over one bucket (d: grad or momentum)."""
    b = _bucket("sgd", backend, params, grads, steps, {"momentum_buffer": momentum_buffers},
                masters)
    backends.load(backend).sgd_step_(b, stats, direction=direction, use_prologue=use_prologue,
                                     telemetry=telemetry, maximize=maximize)


@sgd_step_.register_fake
def _(params, grads, momentum_buffers, masters, steps, stats, direction, use_prologue, telemetry,
      backend, maximize=False):
    return None


# --------------------------------------------------------------------------- momentum_step_
@torch.library.custom_op("fusedopt::momentum_step_", mutates_args=("momentum_buffers", "stats"))
def momentum_step_(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor],
                   steps: list[Tensor], stats: Tensor, rho: float, use_prologue: bool,
                   backend: str, maximize: bool = False) -> None:
    """NSGDm's momentum pass over one bucket, adding ``sum(m^2)`` to ``stats[MOMENTUM_SQ]``."""
    b = _bucket("momentum", backend, params, grads, steps, {"momentum_buffer": momentum_buffers},
                None)
    backends.load(backend).momentum_step_(b, stats, rho=rho, use_prologue=use_prologue,
                                          maximize=maximize)


@momentum_step_.register_fake
def _(params, grads, momentum_buffers, steps, stats, rho, use_prologue, backend, maximize=False):
    return None


# --------------------------------------------------------------------------- dispatcher
def _split_lr(lr) -> tuple[float, Optional[Tensor]]:
    return (0.0, lr) if isinstance(lr, Tensor) else (float(lr), None)


class Kernels:
    """The kernel contract of one backend, as optimizers call it.

    Eager: the backend function itself (no dispatcher cost, bucket caches kept). While
    ``torch.compile`` traces: the ``torch.ops.fusedopt`` custom op with the same arguments.
    """

    def __init__(self, backend) -> None:
        self.backend = backend
        self.name = backend.NAME

    def grad_prologue_(self, grads, stats, *, region, grad_scale, found_inf, max_norm,
                       compute_norm) -> None:
        if torch.compiler.is_compiling():
            torch.ops.fusedopt.grad_prologue_(grads, stats, region, grad_scale, found_inf,
                                              max_norm, compute_norm, self.name)
        else:
            self.backend.grad_prologue_(grads, stats, region=region, grad_scale=grad_scale,
                                        found_inf=found_inf, max_norm=max_norm,
                                        compute_norm=compute_norm)

    def adam_step_(self, b: Bucket, stats, *, lr, hp: AdamHyper, use_prologue, use_abc,
                   telemetry, maximize: bool = False) -> None:
        if torch.compiler.is_compiling():
            lr_f, lr_t = _split_lr(lr)
            s = b.states
            torch.ops.fusedopt.adam_step_(
                b.params, b.grads, s.get("exp_avg", []), s["exp_avg_sq"],
                s.get("max_exp_avg_sq", []), b.masters or [], b.steps, stats, lr_f, lr_t,
                hp.beta1, hp.beta2, hp.eps, hp.weight_decay, hp.variant, hp.decay,
                hp.bias_correction, use_prologue, use_abc, telemetry, self.name, maximize)
        else:
            self.backend.adam_step_(b, stats, lr=lr, hp=hp, use_prologue=use_prologue,
                                    use_abc=use_abc, telemetry=telemetry, maximize=maximize)

    def elementwise_step_(self, b: Bucket, stats, *, algo: str, lr, hyper: tuple[float, ...],
                          use_prologue: bool, telemetry: bool, maximize: bool = False) -> None:
        if torch.compiler.is_compiling():
            lr_f, lr_t = _split_lr(lr)
            names = elementwise.spec(algo).STATES
            lists = [b.states[k] for k in names] + [[]] * (elementwise.MAX_STATES - len(names))
            torch.ops.fusedopt.elementwise_step_(
                b.params, b.grads, *lists, b.masters or [], b.steps, stats, algo, lr_f, lr_t,
                list(hyper), use_prologue, telemetry, self.name, maximize)
        else:
            self.backend.elementwise_step_(b, stats, algo=algo, lr=lr, hyper=hyper,
                                           use_prologue=use_prologue, telemetry=telemetry,
                                           maximize=maximize)

    def sgd_step_(self, b: Bucket, stats, *, direction, use_prologue, telemetry,
                  maximize: bool = False) -> None:
        if torch.compiler.is_compiling():
            torch.ops.fusedopt.sgd_step_(
                b.params, b.grads, b.states.get("momentum_buffer", []), b.masters or [], b.steps,
                stats, direction, use_prologue, telemetry, self.name, maximize)
        else:
            self.backend.sgd_step_(b, stats, direction=direction, use_prologue=use_prologue,
                                   telemetry=telemetry, maximize=maximize)

    def momentum_step_(self, b: Bucket, stats, *, rho, use_prologue,
                       maximize: bool = False) -> None:
        if torch.compiler.is_compiling():
            torch.ops.fusedopt.momentum_step_(
                b.params, b.grads, b.states["momentum_buffer"], b.steps, stats, rho,
                use_prologue, self.name, maximize)
        else:
            self.backend.momentum_step_(b, stats, rho=rho, use_prologue=use_prologue,
                                        maximize=maximize)
