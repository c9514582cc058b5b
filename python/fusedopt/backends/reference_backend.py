"""The ``reference`` backend: the kernel contract run tensor by tensor with the reference math.

It is the executable specification behind ``backend="reference"`` and the oracle of the tests
(run in float64 it is the ground truth; run in the storage precision it is the "naive
same-precision" baseline of the error budget). Slow by design; clear by design.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _stats as S
from ..reference import elementwise
from ..reference.adam_family import AdamHyper, adam_family_update, adam_step_scalars
from ..reference.prologue import opmath_dtype, prologue
from ..reference.sgd_family import momentum_update, scaled_sgd_update
from .bucket import Bucket

NAME = "reference"


def availability() -> tuple[bool, str]:
    return True, "pure PyTorch, always available"


def supports(device: torch.device) -> bool:
    return True


def grad_prologue_(grads, stats, *, region, grad_scale, found_inf, max_norm, compute_norm):
    r = prologue(grads, grad_scale=grad_scale, found_inf=found_inf, max_norm=max_norm,
                 compute_norm=compute_norm, device=stats.device)
    values = torch.stack([r.sq, r.norm, r.found_inf.to(torch.float64), r.clip_coef, r.coef])
    stats[region:region + 5].copy_(values)


class _Pass:
    """What every update call shares: skip flag, coef, telemetry sums, step advance.

    ``maximize`` negates the gradient coefficient (-COEF, or -1 without a prologue): every
    grad the call reads is negated before anything else, as torch.optim's ``maximize``.
    ``lr``: a tensor lr that is NaN or negative skips the call and sets ``stats[LR_INVALID]``.
    """

    def __init__(self, stats: Tensor, use_prologue: bool, telemetry: bool,
                 maximize: bool = False, lr=None):
        self.stats = stats
        coef = stats[S.COEF] if use_prologue else None
        if maximize:
            coef = -(coef if coef is not None
                     else torch.ones((), dtype=torch.float64, device=stats.device))
        self.coef = coef
        self.skip = (stats[S.FOUND_INF] != 0) if use_prologue else None
        if isinstance(lr, Tensor):
            bad = torch.isnan(lr) | (lr < 0)
            bad = bad.to(stats.device).reshape(())
            stats[S.LR_INVALID] = torch.where(bad, 1.0, stats[S.LR_INVALID])
            self.skip = bad if self.skip is None else self.skip | bad
        self.telemetry = telemetry
        self.sums = torch.zeros(3, dtype=torch.float64, device=stats.device)

    def commit(self, dst: Tensor, new: Tensor) -> None:
        new = new.to(dst.dtype)
        dst.copy_(new if self.skip is None else torch.where(self.skip, dst, new))

    def next_step(self, step: Tensor) -> Tensor:
        return step + 1

    def advance(self, step: Tensor) -> None:
        self.commit(step, step + 1)

    def observe(self, old_p: Tensor, new_p: Tensor, g_eff: Tensor | None) -> None:
        if not self.telemetry:
            return
        d = new_p - old_p
        parts = [torch.sum(d * d), torch.sum(new_p * new_p)]
        parts.append(torch.sum(g_eff * g_eff) if g_eff is not None else torch.zeros_like(parts[0]))
        self.sums += torch.stack(parts).to(torch.float64)

    def finish(self) -> None:
        if not self.telemetry:
            return
        sums = self.sums if self.skip is None else torch.where(self.skip, 0.0, self.sums)
        self.stats[S.UPDATE_SQ:S.STEP_GRAD_SQ + 1] += sums


def _load_param(b: Bucket, i: int, op: torch.dtype) -> Tensor:
    """The value the update starts from: the param, or its fp32 master re-seeded where the
    param was written since the last step (Note [master re-seed], reseed_master)."""
    if b.masters is None:
        return b.params[i].detach().to(op)
    return reseed_master(b.masters[i].detach(), b.params[i].detach()).to(op)


def reseed_master(master: Tensor, param: Tensor) -> Tensor:
    """Note [master re-seed]: per element, the master where rounding it to the param dtype
    (round to nearest even, the store's rounding) gives the param's bits, else the param
    widened (exact). A param written since the last step (load_state_dict, clamp_, re-init)
    thus re-seeds its master instead of being reverted by it; an unwritten param always
    equals its rounded master, so normal steps are unchanged bit for bit."""
    bits = {torch.bfloat16: torch.int16, torch.float16: torch.int16}[param.dtype]
    same = master.to(param.dtype).view(bits) == param.view(bits)
    return torch.where(same, master, param.to(master.dtype))


def _store_param(b: Bucket, i: int, new: Tensor, ps: _Pass) -> None:
    if b.masters is not None:
        ps.commit(b.masters[i], new)
    ps.commit(b.params[i], new)


def _g_eff(g: Tensor, ps: _Pass) -> Tensor:
    return g * ps.coef.to(g.dtype) if ps.coef is not None else g


def adam_step_(b: Bucket, stats: Tensor, *, lr, hp: AdamHyper, use_prologue: bool,
               use_abc: bool, telemetry: bool, maximize: bool = False) -> None:
    ps = _Pass(stats, use_prologue, telemetry, maximize, lr)
    a = bb = c = None
    if use_abc:
        a, bb, c = stats[S.ABC], stats[S.ABC + 1], stats[S.ABC + 2]
    m_list = b.states.get("exp_avg")
    vmax_list = b.states.get("max_exp_avg_sq")
    for i in range(len(b)):
        op = opmath_dtype(b.params[i])
        p = _load_param(b, i, op)
        g = b.grads[i].detach().to(op)
        m = m_list[i].to(op) if m_list is not None else None
        v = b.states["exp_avg_sq"][i].to(op)
        vmax = vmax_list[i].to(op) if vmax_list is not None else None
        t = ps.next_step(b.steps[i])
        step_size, bc2_sqrt, decay = adam_step_scalars(t, lr, hp, c)
        new_p, new_m, new_v, new_vmax = adam_family_update(
            p, g, m, v, vmax, step_size=step_size, bc2_sqrt=bc2_sqrt, decay=decay, hp=hp,
            coef=ps.coef, a=a, b=bb)
        ps.observe(p, new_p, _g_eff(g, ps))
        _store_param(b, i, new_p, ps)
        if m_list is not None:
            ps.commit(m_list[i], new_m)
        ps.commit(b.states["exp_avg_sq"][i], new_v)
        if vmax_list is not None:
            ps.commit(vmax_list[i], new_vmax)
        ps.advance(b.steps[i])
    ps.finish()


def elementwise_step_(b: Bucket, stats: Tensor, *, algo: str, lr, hyper: tuple[float, ...],
                      use_prologue: bool, telemetry: bool, maximize: bool = False) -> None:
    """An element-wise algorithm (:mod:`fusedopt.reference.elementwise`) over bucket ``b``."""
    mod = elementwise.spec(algo)
    hyper = elementwise.check_hyper(mod, hyper)
    ps = _Pass(stats, use_prologue, telemetry, maximize, lr)
    for i in range(len(b)):
        op = opmath_dtype(b.params[i])
        p = _load_param(b, i, op)
        g = _g_eff(b.grads[i].detach().to(op), ps)
        states = [b.states[k][i].to(op) for k in mod.STATES]
        s = elementwise.tensor_scalars(mod, ps.next_step(b.steps[i]), lr, hyper, op)
        new_p, new_states = mod.update(p, g, states, s)
        ps.observe(p, new_p, g)
        _store_param(b, i, new_p, ps)
        for k, new in zip(mod.STATES, new_states):
            ps.commit(b.states[k][i], new)
        ps.advance(b.steps[i])
    ps.finish()


def sgd_step_(b: Bucket, stats: Tensor, *, direction: str, use_prologue: bool,
              telemetry: bool, maximize: bool = False) -> None:
    # direction "momentum": the buffer was built from the negated grads by
    # momentum_step_(maximize=True), so the direction itself is not negated again
    ps = _Pass(stats, use_prologue, telemetry, maximize)
    scale = stats[S.SCALE]
    for i in range(len(b)):
        op = opmath_dtype(b.params[i])
        p = _load_param(b, i, op)
        if direction == "momentum":
            d, coef = b.states["momentum_buffer"][i].to(op), None
        else:
            d, coef = b.grads[i].detach().to(op), ps.coef
        new_p = scaled_sgd_update(p, d, scale=scale, coef=coef)
        ps.observe(p, new_p, _g_eff(b.grads[i].detach().to(op), ps))
        _store_param(b, i, new_p, ps)
        ps.advance(b.steps[i])
    ps.finish()


def momentum_step_(b: Bucket, stats: Tensor, *, rho: float, use_prologue: bool,
                   maximize: bool = False) -> None:
    ps = _Pass(stats, use_prologue, telemetry=False, maximize=maximize)
    total = torch.zeros((), dtype=torch.float64, device=stats.device)
    for i in range(len(b)):
        op = opmath_dtype(b.params[i])
        m_state = b.states["momentum_buffer"][i]
        new_m = momentum_update(m_state.to(op), b.grads[i].detach().to(op), rho=rho, coef=ps.coef)
        total = total + torch.sum(new_m * new_m).to(torch.float64)
        ps.commit(m_state, new_m)
    if ps.skip is not None:
        total = torch.where(ps.skip, 0.0, total)
    stats[S.MOMENTUM_SQ] += total
