"""Conformance harness: drive any fusedopt optimizer on a seeded problem and compare backends.

The error budget (DESIGN.md §4, STYLE P9): a backend run in the storage precision is compared with
the reference run in float64 (the oracle); its error may be at most ``k`` times the error of the
reference run in the same storage precision (the "naive same-precision" baseline), plus a floor
of a few ulps of the storage dtype at the values' magnitude (for elements where the baseline
happens to be exact).
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

import fusedopt
from fusedopt import _stats as S
from fusedopt.registry import AlgoInfo

AMP_SCALE = 1024.0


@dataclass(frozen=True)
class Mode:
    """How a step is driven: clipping, AMP flavour, telemetry, tensor lr, injected infs."""

    name: str
    max_grad_norm: float | None = None
    amp: str | None = None  # None | "gradscaler" | "lossscaler"
    telemetry: bool = False
    tensor_lr: bool = False
    inf_steps: tuple[int, ...] = ()


MODES = {m.name: m for m in [
    Mode("plain"),
    Mode("clip", max_grad_norm=0.5),
    Mode("amp", amp="gradscaler", inf_steps=(2,)),
    Mode("clip_amp", max_grad_norm=0.5, amp="gradscaler", inf_steps=(3,)),
    Mode("lossscaler", max_grad_norm=0.5, amp="lossscaler", inf_steps=(1,)),
    Mode("telemetry", telemetry=True),
    Mode("tensor_lr", tensor_lr=True, max_grad_norm=0.5, telemetry=True),
]}


@dataclass(frozen=True)
class DtypeCase:
    """Storage dtypes of one run: params, grads, states (None: the optimizer's default), master."""

    name: str
    param: torch.dtype
    state: torch.dtype | None = None
    master: bool = False
    grad: torch.dtype | None = None  # None: the param dtype


DTYPES = {d.name: d for d in [
    DtypeCase("fp32", torch.float32),
    DtypeCase("fp64", torch.float64),
    DtypeCase("bf16", torch.bfloat16),
    DtypeCase("fp16", torch.float16),
    DtypeCase("bf16_bf16state", torch.bfloat16, state=torch.bfloat16),
    DtypeCase("fp32_bf16state", torch.float32, state=torch.bfloat16),
    DtypeCase("bf16_master", torch.bfloat16, master=True),
    DtypeCase("fp16_master_fp32grad", torch.float16, master=True, grad=torch.float32),
]}

#: shape sets that hit every path: empty, 1, 3, vector width +- 1, 65537, mixed
SHAPES = {
    "small": [(3, 5), (0,), (1,), (3,), (7,), (9,), (15,), (17,), (33,), (4, 16)],
    "odd": [(65537,), (31, 33), (1,), (0,), (255,), (257,)],
    "many": [(5,)] * 120 + [(3, 3)] * 40 + [(129,)] * 3,
}


@dataclass
class Problem:
    """A seeded optimization problem in float64: initial params and per-step grads/losses."""

    shapes: list[tuple[int, ...]]
    params: list[Tensor]
    grads: list[list[Tensor]]
    normalizer_grads: list[list[Tensor]]
    losses: list[float]

    @property
    def steps(self) -> int:
        return len(self.grads)


def case_seed(*names: str) -> int:
    """A seed that is the same in every process (``hash()`` of a str is salted per process)."""
    return zlib.crc32("/".join(names).encode()) % 1000


def make_problem(shapes, steps: int, seed: int = 0, grad_scale: float = 1.0) -> Problem:
    gen = torch.Generator().manual_seed(seed)

    def rand(shape, scale=1.0):
        return torch.randn(shape, generator=gen, dtype=torch.float64) * scale

    params = [rand(s) for s in shapes]
    grads = [[rand(s, grad_scale) for s in shapes] for _ in range(steps)]
    norm_grads = [[rand(s, grad_scale) for s in shapes] for _ in range(steps)]
    losses = [float(2.0 * 0.97 ** t + 0.1 * torch.rand((), generator=gen)) for t in range(steps)]
    return Problem(list(shapes), params, grads, norm_grads, losses)


@dataclass
class RunResult:
    params: list[Tensor]
    states: dict[str, list[Tensor]]
    steps: list[float]
    stats: list[dict[str, float]] = field(default_factory=list)
    optimizer: object = None


def _lr_of(info: AlgoInfo, tensor_lr: bool, device) -> float | Tensor:
    lr = info.kwargs["lr"]
    return torch.tensor(lr, dtype=torch.float32, device=device) if tensor_lr else lr


def run(info: AlgoInfo, backend: str, problem: Problem, dtypes: DtypeCase, mode: Mode, *,
        oracle: bool = False, device: str = "cpu", steps: int | None = None,
        extra: dict | None = None) -> RunResult:
    """Run ``steps`` steps. ``oracle=True`` runs everything in float64 (params, grads, states)."""
    pdt = torch.float64 if oracle else dtypes.param
    storage_gdt = dtypes.grad or dtypes.param
    gdt = torch.float64 if oracle else storage_gdt
    params = [p.to(device=device, dtype=pdt).clone() for p in problem.params]
    if gdt != pdt:  # e.g. fp32 grads of fp16 params (torch checks grad_dtype on assignment)
        for p in params:
            p.grad_dtype = gdt
    kw = dict(backend=backend, max_grad_norm=mode.max_grad_norm, telemetry=mode.telemetry,
              lr=_lr_of(info, mode.tensor_lr, device))
    if not oracle:
        kw.update(state_dtype=dtypes.state if info.has_moments else None,
                  master_weights=dtypes.master)
    kw.update(extra or {})
    opt = info.make(params, **kw)
    n = problem.steps if steps is None else steps
    # The scale grows every few good steps so short runs exercise growth; long runs grow it at
    # most ~2^20-fold (an fp32 scale never reaches inf). fp16 grads still overflow and back
    # the scale off, as in real AMP training; set_grads mirrors those skips in the oracle.
    growth_interval = max(3, n // 20)
    scaler = None
    if mode.amp == "gradscaler":
        scaler = torch.amp.GradScaler(device, init_scale=AMP_SCALE, growth_interval=growth_interval)
    elif mode.amp == "lossscaler":
        scaler = fusedopt.amp.LossScaler(init_scale=AMP_SCALE, growth_interval=growth_interval)
    stats = []
    for t in range(n):
        scale = float(scaler.get_scale()) if scaler is not None else 1.0

        def set_grads(grads):
            for p, g in zip(params, grads):
                scaled = g * scale
                gg = scaled.to(device=device, dtype=gdt)
                overflows = oracle and not bool(torch.isfinite(scaled.to(storage_gdt)).all())
                if (t in mode.inf_steps or overflows) and gg.numel():
                    # the oracle sees an inf wherever the storage grads overflow: a skipped
                    # step is a decision on the input, not a rounding error to budget for
                    gg.view(-1)[0] = float("inf")
                p.grad = gg

        if info.needs_normalizer:
            set_grads(problem.normalizer_grads[t])
            opt.record_normalizer(grad_scale=scaler.get_scale() if mode.amp == "lossscaler"
                                  else (torch.tensor(scale) if scaler is not None else None))
        set_grads(problem.grads[t])
        step_kw = {"loss": torch.tensor(problem.losses[t], device=device)} if info.needs_loss else {}
        if scaler is None:
            opt.step(**step_kw)
        else:
            if mode.amp == "gradscaler":
                scaler.scale(torch.ones((), device=device))  # registers the scale with the scaler
            scaler.step(opt, **step_kw)
            scaler.update()
        if mode.telemetry:
            stats.append({k: float(v) for k, v in opt.last_stats.items()})
    states: dict[str, list[Tensor]] = {}
    for key in info.state_keys:
        states[key] = [opt.state[p][key].detach().clone() for p in params]
    steps_out = [float(opt.state[p]["step"]) for p in params]
    return RunResult([p.detach().clone() for p in params], states, steps_out, stats, opt)


def ulp(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def max_err(a: list[Tensor], ref: list[Tensor],
            keep: list[Tensor] | None = None) -> tuple[float, float]:
    """(max abs error over all elements, max abs reference value); ``keep``: per-tensor boolean
    masks of the elements to look at (default all)."""
    err, mag = 0.0, 0.0
    for i, (x, r) in enumerate(zip(a, ref)):
        if keep is not None:
            x, r = x[keep[i]], r[keep[i]]
        if r.numel() == 0:
            continue
        r64 = r.to(torch.float64)
        err = max(err, float((x.to(torch.float64) - r64).abs().max()))
        mag = max(mag, float(r64.abs().max()))
    return err, mag


def assert_within_budget(backend: RunResult, naive: RunResult, oracle: RunResult, *, k: float,
                         param_dtype: torch.dtype, state_dtype: torch.dtype | None,
                         floor_ulps: float = 4.0, what: str = "",
                         sign_ties: tuple[str, int] | None = None) -> None:
    """|backend - oracle| <= k |naive - oracle| + floor_ulps * ulp(storage) * |oracle|.

    ``sign_ties=(state key, n)``: the update takes the sign of a difference of two rounded
    values (Yogi: sign(v - g^2)), so where the two are within rounding of each other, a
    one-ulp difference in the clip coefficient flips the sign and moves that element by a whole
    step (2 (1 - beta2) g^2 in v, ~2% of v at beta2 = 0.99) for the rest of the run, in the
    naive run as in the backend. Elements whose state is off the oracle's by more than
    max(1e-3, 8 ulp) relative in either run are such ties; up to ``n`` are left out of every
    check (params and states: the update is element-wise), more than ``n`` fails. Ties are
    rare (sign_ties_of), so a wrong kernel, which moves every element, still fails.
    """
    assert backend.steps == oracle.steps, f"{what}: step counts {backend.steps} != {oracle.steps}"
    sdt = state_dtype or param_dtype
    keep = None
    if sign_ties is not None:
        key, allowed = sign_ties
        rel = max(1e-3, 8 * ulp(sdt))
        keep = []
        for b, n, o in zip(backend.states[key], naive.states[key], oracle.states[key]):
            o64 = o.to(torch.float64)
            tol = rel * o64.abs()
            keep.append(((b.to(torch.float64) - o64).abs() <= tol)
                        & ((n.to(torch.float64) - o64).abs() <= tol))
        ties = sum(int((~m).sum()) for m in keep)
        assert ties <= allowed, (f"{what} {key}: {ties} elements off the oracle by more than "
                                 f"{rel:.0e} relative, more than the {allowed} sign ties allowed")
    checks = [("params", backend.params, naive.params, oracle.params, param_dtype)]
    for key in oracle.states:
        checks.append((key, backend.states[key], naive.states[key], oracle.states[key], sdt))
    for name, b, n, o, dt in checks:
        eb, mag = max_err(b, o, keep)
        en, _ = max_err(n, o, keep)
        bound = k * en + floor_ulps * ulp(dt) * mag
        assert eb <= bound, (f"{what} {name}: backend error {eb:.3e} > budget {bound:.3e} "
                             f"(naive error {en:.3e}, k={k}, |ref| {mag:.3e})")


def sign_ties_of(info: AlgoInfo, dtypes: DtypeCase, problem: Problem) -> tuple[str, int] | None:
    """``sign_ties`` of assert_within_budget for the algorithms whose update takes a sign, in
    long runs with fp32/fp64 grads and states. With 16-bit grads or states the naive run's
    rounding already flips signs often, and its error (the budget) covers them.

    Allowed ties: 4 + 3e-7 per element-step; the naive fp32 run against the float64 oracle, the
    pair that differs most, tied once per ~1e7 element-steps (yogi on the "odd" shapes,
    1,000 steps: 6 ties in 6.7e7)."""
    wide = (dtypes.grad or dtypes.param).itemsize >= 4 and (
        dtypes.state is None or dtypes.state.itemsize >= 4)
    if info.kwargs.get("variant") != "yogi" or problem.steps < 100 or not wide:
        return None
    element_steps = problem.steps * sum(p.numel() for p in problem.params)
    return ("exp_avg_sq", 4 + math.ceil(3e-7 * element_steps))


def with_steps(problem: Problem, steps: int) -> Problem:
    return replace(problem, grads=problem.grads[:steps],
                   normalizer_grads=problem.normalizer_grads[:steps], losses=problem.losses[:steps])


__all__ = ["Mode", "MODES", "DtypeCase", "DTYPES", "SHAPES", "Problem", "case_seed", "make_problem",
           "run",
           "RunResult", "assert_within_budget", "max_err", "sign_ties_of", "ulp", "S",
           "with_steps"]
