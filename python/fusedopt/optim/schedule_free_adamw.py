"""Schedule-Free AdamW (Defazio et al. 2024, "The Road Less Scheduled";
docs/algorithms.md#schedule-free-adamw), the algorithm of ``schedulefree``'s
``AdamWScheduleFree`` (1.4.1) with its param-group keys, so that its checkpoints load.

.. math::

    y_t &= (1-\\beta_1) z_t + \\beta_1 x_t \\quad\\text{(what the params hold in train mode)}\\\\
    v_t &= \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2,\\quad
    \\hat g_t = g_t / (\\sqrt{v_t / (1-\\beta_2^t)} + \\epsilon) + \\lambda y_t\\\\
    z_{t+1} &= z_t - \\gamma_t \\hat g_t,\\quad
    x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1},\\quad
    c_{t+1} = \\frac{w_t}{\\sum_{i \\le t} w_i},\\ w_t = t^r \\gamma_{\\max}^{p}

with ``gamma_t = lr * min(1, t / warmup_steps)``. x is the point to evaluate: ``eval()``
turns the params into x, ``train()`` back into y. No learning-rate schedule is needed (the
averaging plays its part). The exact operation order of the update is in
:mod:`fusedopt.reference.schedule_free_adamw`.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import Tensor

from ..backends.reference_backend import reseed_master
from . import _validation as V
from ._elementwise import ElementwiseOptimizer, check_betas

#: the per-group schedule of schedulefree.AdamWScheduleFree, under its key names
_SCHEDULE = dict(k=0, train_mode=True, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0)


class ScheduleFreeAdamW(ElementwiseOptimizer):
    """Schedule-Free AdamW (see module doc), with ``train()``/``eval()`` as its authors' API.

    Call ``opt.eval()`` before evaluating or saving the model (the params then hold x, the
    average) and ``opt.train()`` before training again (the params hold y, where gradients
    are taken). ``step()`` in eval mode raises, as schedulefree's does.

    Differences from ``schedulefree.AdamWScheduleFree``:

    * it starts in train mode, where the authors' optimizer starts in eval mode and raises in
      ``step()`` until ``train()`` is called: a fusedopt optimizer is a drop-in
      ``torch.optim.Optimizer`` that a training loop (or the Hugging Face Trainer) can step
      without knowing it. It costs nothing: before the first step z equals the params, so
      the authors' opening ``train()`` is a no-op here as it is there (``train()``/``eval()``
      move no param of a group that has not stepped);
    * ``z`` is created with the rest of the state at construction (fusedopt creates state
      eagerly, for torch.distributed.checkpoint) as a copy of the param in the state dtype,
      and set to the param again at the group's first step, so that params loaded after
      construction are not reverted by a stale z;
    * the schedule (warmup factor, averaging weight ``c``) is computed on the host, per group,
      each step, as schedulefree does. A step that AMP skips on the device (a non-finite
      grad) still advances ``k`` and ``weight_sum``: knowing the skip on the host would need
      a device sync in every step. The bias correction uses each param's own step count,
      which a skipped step does not advance. A ``step()`` in which no param has a grad
      advances nothing;
    * a tensor ``lr`` is refused (TypeError): the schedule multiplies, compares and raises
      the lr to a power on the host every step, and reading a device tensor there is a sync
      per step. ``capturable=True`` is refused for the same reason: the per-step scalars are
      host floats that a captured graph would freeze;
    * ``beta1`` must be > 0: ``eval()`` recovers x from y and z by dividing by beta1;
    * with master weights the ``train()``/``eval()`` interpolation runs on the fp32 master
      and the param is set to the master rounded.

    Args:
        params: iterable of tensors, (name, tensor) pairs or param-group dicts.
        lr: learning rate (a float; see above).
        betas: (beta1, beta2): beta1 the interpolation between z and x, beta2 of v.
        eps: added to the bias-corrected ``sqrt(v)``.
        weight_decay: decay at y, added to the normalized gradient.
        warmup_steps: linear warmup of the lr over this many steps.
        r: the average's polynomial weighting ``t^r``.
        weight_lr_power: the average's weights are ``lr_max ** weight_lr_power``.
        **common: ``max_grad_norm, backend, state_dtype, master_weights, telemetry, maximize``
            (see :class:`~fusedopt.optim._base.FusedOptimizer`).
    """

    algorithm = "schedule_free_adamw"

    def __init__(self, params: Iterable, lr: float = 0.0025,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, warmup_steps: int = 0, r: float = 0.0,
                 weight_lr_power: float = 2.0, **common: Any) -> None:
        if common.get("capturable"):
            raise ValueError(f"{self._owner()}: capturable=True is not supported: the "
                             "schedule's scalars (warmup lr, averaging weight) change on the "
                             "host every step, and a captured graph would freeze them")
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, (tuple, list)) else betas,
                        eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps, r=r,
                        weight_lr_power=weight_lr_power, **_SCHEDULE)
        super().__init__(params, defaults, **common)

    # ------------------------------------------------------------------ validation and state
    def _validate_group(self, group: dict[str, Any], *, read: bool = False) -> None:
        owner = self._owner()
        if isinstance(group["lr"], Tensor):
            raise TypeError(f"{owner}: lr must be a float: the schedule (warmup, averaging "
                            "weights) is computed from it on the host every step, and a "
                            "tensor lr would be read there (a device sync per step)")
        super()._validate_group(group, read=read)
        beta1, _ = check_betas(owner, group["betas"], 2)
        if beta1 == 0.0:
            raise ValueError(f"Invalid beta parameter at index 0: {beta1} ({owner}: must be > 0; "
                             "eval() recovers the average x from y and z by dividing by beta1)")
        V.check_number(owner, "epsilon value", group["eps"])
        V.check_number(owner, "weight_decay value", group["weight_decay"])
        V.check_number(owner, "r value", group["r"], low=-math.inf)
        V.check_number(owner, "weight_lr_power value", group["weight_lr_power"])
        for key in ("warmup_steps", "k"):
            v = group[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"Invalid {key} value: {v!r} ({owner}: must be an int >= 0)")
        V.check_number(owner, "weight_sum value", group["weight_sum"])
        V.check_number(owner, "lr_max value", group["lr_max"], low=-1.0)
        if not isinstance(group["train_mode"], bool):
            raise TypeError(f"{owner}: train_mode must be a bool, got "
                            f"{type(group['train_mode']).__name__}")

    def _init_param_state(self, p: Tensor, group: dict[str, Any], state_dtype: torch.dtype
                          ) -> dict[str, Tensor]:
        # z starts at the param (the first y = x = z); empty_like keeps a dense param's layout
        return {"z": torch.empty_like(p, dtype=state_dtype).copy_(p.detach()),
                "exp_avg_sq": torch.zeros_like(p, dtype=state_dtype)}

    def _import_param_state(self, p: Tensor, saved: Any, group_step: Any, group: dict,
                            label: str) -> dict[str, Any]:
        """schedulefree keeps no per-param step: its group's ``k`` is every param's count."""
        if isinstance(saved, dict) and saved and "step" not in saved and group_step is None \
                and isinstance(group.get("k"), int):
            group_step = group["k"]
        return super()._import_param_state(p, saved, group_step, group, label)

    # ------------------------------------------------------------------ the step
    def _prepare_step(self, loss: Tensor | None = None) -> None:
        for group in self.param_groups:
            if not group["train_mode"]:
                raise RuntimeError(f"{self._owner()}: step() in eval mode: the params hold the "
                                   "average x, not y; call opt.train() before training")

    @staticmethod
    def _advance_schedule(group: dict[str, Any]) -> tuple[float, float]:
        """(lr, ckp1) of this step for ``group``, advancing its schedule: schedulefree's
        arithmetic, in its order (host floats)."""
        k = group["k"]
        warmup_steps = group["warmup_steps"]
        sched = (k + 1) / warmup_steps if k < warmup_steps else 1.0
        lr = group["lr"] * sched
        group["scheduled_lr"] = lr
        lr_max = group["lr_max"] = max(lr, group["lr_max"])
        weight = ((k + 1) ** group["r"]) * (lr_max ** group["weight_lr_power"])
        weight_sum = group["weight_sum"] = group["weight_sum"] + weight
        ckp1 = weight / weight_sum if weight_sum != 0 else 0.0
        group["k"] = k + 1
        return lr, ckp1

    def _run_updates(self, groups, stats, use_prologue, loss) -> None:
        first = {id(g): g["k"] == 0 for g in self.param_groups}
        schedule = {id(g): self._advance_schedule(g) for g in self.param_groups}
        for group, buckets in groups:
            lr, ckp1 = schedule[id(group)]
            beta1, beta2 = check_betas(self._owner(), group["betas"], 2)
            hyper = (beta1, beta2, float(group["eps"]), float(group["weight_decay"]), ckp1)
            for b in buckets:
                if first[id(group)]:
                    _seed_z(b)
                self._backend.elementwise_step_(
                    b, stats, algo=self.algorithm, lr=lr, hyper=hyper,
                    use_prologue=use_prologue, telemetry=self.telemetry,
                    maximize=group["maximize"])

    # ------------------------------------------------------------------ train / eval
    @torch.no_grad()
    def eval(self) -> None:
        """Set the params to x, the average (``p <- lerp(p, z, 1 - 1/beta1)``)."""
        self._switch(train=False)

    @torch.no_grad()
    def train(self) -> None:
        """Set the params to y, where gradients are taken (``p <- lerp(p, z, 1 - beta1)``)."""
        self._switch(train=True)

    def _switch(self, train: bool) -> None:
        for group in self.param_groups:
            if group["train_mode"] == train:
                continue
            beta1, _ = check_betas(self._owner(), group["betas"], 2)
            weight = 1.0 - beta1 if train else 1.0 - 1.0 / beta1
            if group["k"] > 0:  # before the first step y = x = z: nothing moves
                for p in group["params"]:
                    state = self.state.get(p)
                    if state and "z" in state:
                        _interpolate(p, state, weight)
            group["train_mode"] = train


def _seed_z(b) -> None:
    """z <- the value each param's first update starts from (the param, or its master
    re-seeded from the param where the param was written since: Note [master re-seed])."""
    for i, z in enumerate(b.states["z"]):
        p = b.params[i]
        z.copy_(p if b.masters is None else reseed_master(b.masters[i], p))


def _interpolate(p: Tensor, state: dict[str, Tensor], weight: float) -> None:
    """``p <- lerp(p, z, weight)``, on the fp32 master when there is one (then p = master
    rounded)."""
    z = state["z"]
    master = state.get("master_param")
    if master is not None:
        master.copy_(reseed_master(master, p.detach()))
        master.lerp_(z.to(master.dtype), weight)
        p.copy_(master)
    else:
        p.lerp_(z.to(p.dtype), weight)
