"""Conformance harness: drive any fusedopt optimizer on a seeded problem and compare backends.

The error budget (docs/numerics.md, "Error budget"): a backend run in the storage precision is
compared, element by element, with the reference run in float64 (the oracle). Its error may be
at most ``k`` times the error of the reference run in the same storage precision (the "naive
same-precision" baseline), plus a floor of a few ulps of the storage dtype at that element's own
magnitude (for elements where the baseline happens to be exact). :func:`assert_elementwise` is
that budget, the one every backend test uses; :func:`assert_within_budget` applies it to every
stream of a :func:`run`: params, each state, the fp32 master, and the step counts (exactly).
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, replace

import pytest
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


class Trajectory:
    """Per element of one stream of a run: the largest magnitude it held (``peak``) and the
    total distance it moved (``path``), from its start through every step.

    Every rounding error of a step is relative to that step's operands (the old value and the
    update), never to the new value alone, and an absolute error made at one step is carried by
    every later one (``p - u`` does not shrink it; a moment's EMA shrinks it by beta per step).
    So the ulp an element's error is counted in is the ulp of its peak, not of its final value:
    a param that crossed zero on the last step was written with operands of the size of its
    neighbours, and its final value, ~0, says nothing about the rounding it went through.
    ``path`` is the update scale: what a relative error in the update itself (a scalar computed
    another way) moves the element by. Moments start at 0 (Adagrad's ``sum`` at its initial
    value, which ``path`` then over-counts once: conservative by that value only).
    """

    def __init__(self, tensors: list[Tensor], zero_start: bool = False) -> None:
        last = [t.detach().to(torch.float64).clone() for t in tensors]
        if zero_start:
            last = [torch.zeros_like(x) for x in last]
        self.peak = [x.abs() for x in last]
        self.path = [torch.zeros_like(x) for x in last]
        self._last = last

    def advance(self, tensors: list[Tensor]) -> None:
        """Record the values after one more step."""
        for i, t in enumerate(tensors):
            x = t.detach().to(torch.float64)
            self.path[i] = self.path[i] + (x - self._last[i]).abs()
            self.peak[i] = torch.maximum(self.peak[i], x.abs())
            self._last[i] = x.clone()


def advance_trajectories(trajectories: dict[str, Trajectory],
                         streams: dict[str, list[Tensor]]) -> None:
    """Record one step of every stream; a stream seen for the first time (a state created by
    the first step) starts from 0."""
    for key, values in streams.items():
        if key not in trajectories:
            trajectories[key] = Trajectory(values, zero_start=True)
        trajectories[key].advance(values)


@dataclass
class RunResult:
    params: list[Tensor]
    states: dict[str, list[Tensor]]
    steps: list[float]
    stats: list[dict[str, float]] = field(default_factory=list)
    optimizer: object = None
    #: the fp32 master copies (``state["master_param"]``) when master weights are on
    masters: list[Tensor] | None = None
    #: per stream ("params" and each state key): the element trajectories (oracle runs only)
    trajectories: dict[str, Trajectory] | None = None


def _lr_of(info: AlgoInfo, tensor_lr: bool, device) -> float | Tensor:
    lr = info.kwargs["lr"]
    if tensor_lr and not info.tensor_lr:
        pytest.skip(f"{info.name} refuses a tensor lr (AlgoInfo.tensor_lr)")
    return torch.tensor(lr, dtype=torch.float32, device=device) if tensor_lr else lr


def run(info: AlgoInfo, backend: str, problem: Problem, dtypes: DtypeCase, mode: Mode, *,
        oracle: bool = False, device: str = "cpu", steps: int | None = None,
        extra: dict | None = None) -> RunResult:
    """Run ``steps`` steps. ``oracle=True`` runs everything in float64 (params, grads, states)
    and records every stream's :class:`Trajectory` (the per-element scale of the budget)."""
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
    traj: dict[str, Trajectory] | None = {"params": Trajectory(params)} if oracle else None
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
        if traj is not None:
            streams = {"params": params}
            for key in info.state_keys:
                if all(key in opt.state[p] for p in params):
                    streams[key] = [opt.state[p][key] for p in params]
            advance_trajectories(traj, streams)
    if traj is not None:
        _difference_peaks(info, traj)
    states: dict[str, list[Tensor]] = {}
    for key in info.state_keys:
        states[key] = [opt.state[p][key].detach().clone() for p in params]
    steps_out = [float(opt.state[p]["step"]) for p in params]
    masters = None
    if all("master_param" in opt.state[p] for p in params) and params:
        masters = [opt.state[p]["master_param"].detach().clone() for p in params]
    return RunResult([p.detach().clone() for p in params], states, steps_out, stats, opt,
                     masters, traj)


def _difference_peaks(info: AlgoInfo, traj: dict[str, Trajectory]) -> None:
    """A state that averages differences of another stream (``AlgoInfo.difference_of``: Adan's
    exp_avg_diff, from g_t - g_{t-1}) is written from operands of that stream's size, however
    small the difference: a clip coefficient an ulp off at one step but not the next (a norm
    summed in another order) rounds g * coef the other way, which moves the difference by an
    ulp of g, and the state by (1 - beta) of that, decaying by beta per step after: in all
    about an ulp or two of g. (The naive runs' clip perturbations are the same at every step,
    and cancel in the difference.) Its peak is the larger of its own and the operand's."""
    for key, operand in info.difference_of.items():
        if key in traj and operand in traj:
            traj[key].peak = [torch.maximum(a, b) for a, b in zip(traj[key].peak,
                                                                  traj[operand].peak)]


#: The floor of multi-step comparisons, in ulps of the storage dtype at an element's peak: an
#: element whose naive value happens to be exact while the backend, equally exact, rounded a few
#: of its writes the other way (an order of operations within the contract, a norm summed in
#: another fixed order: ~1 ulp per write that lands near a rounding boundary, carried to the
#: end). Single-step comparisons (one write) use 1.
FLOOR_ULPS = 4.0


def ulp(dtype: torch.dtype) -> float:
    """The relative spacing of ``dtype`` (machine epsilon: the ulp of 1)."""
    return torch.finfo(dtype).eps


def assert_elementwise(what: str, out: list[Tensor], naive: list[Tensor], oracle: list[Tensor],
                       *, storage: torch.dtype, k: float, floor_ulps: float,
                       peak: list[Tensor] | None = None, path: list[Tensor] | None = None,
                       path_rel: float = 0.0, keep: list[Tensor] | None = None) -> None:
    """The error budget, for every element ``i`` of every tensor::

        |out_i - o_i| <= k |naive_i - o_i| + floor_ulps ulp(storage, peak_i) + path_rel path_i

    ``o`` is the oracle (float64 reference), ``naive`` the reference in the storage precision.
    ``ulp(storage, x) = eps(storage) max(|x|, tiny(storage))``: the spacing of the storage dtype
    at the element's own magnitude (below the smallest normal ``tiny`` the spacing stops
    shrinking, so ``eps tiny`` is the ulp of every subnormal and of 0). ``peak`` is that
    magnitude: the element's :class:`Trajectory` peak over the run (default ``|o|``), because a
    rounding error is relative to the operands it was made with. ``path`` and ``path_rel``:
    errors relative to the update itself (a step-size scalar or a square root computed another,
    equally exact way), ``path_rel`` times the distance the element moved; 0 unless a caller
    names such a difference. An element passes when it equals the oracle (infs included) or
    both are NaN. ``keep``: boolean masks of the elements to check (default all).
    """
    eps, tiny = torch.finfo(storage).eps, torch.finfo(storage).tiny
    for i, (x, n, o) in enumerate(zip(out, naive, oracle)):
        x64 = x.detach().to("cpu", torch.float64).reshape(-1)
        n64 = n.detach().to("cpu", torch.float64).reshape(-1)
        o64 = o.detach().to("cpu", torch.float64).reshape(-1)
        assert x64.shape == o64.shape, f"{what} {i}: shape {tuple(x.shape)} != {tuple(o.shape)}"
        mag = o64.abs() if peak is None else peak[i].to("cpu", torch.float64).reshape(-1)
        bound = k * (n64 - o64).abs() + floor_ulps * eps * mag.clamp(min=tiny)
        if path is not None and path_rel:
            bound = bound + path_rel * path[i].to("cpu", torch.float64).reshape(-1)
        err = (x64 - o64).abs()
        ok = (err <= bound) | (x64 == o64) | (torch.isnan(x64) & torch.isnan(o64))
        if keep is not None:
            ok = ok | ~keep[i].to("cpu").reshape(-1)
        if not bool(ok.all()):
            j = int((~ok).nonzero()[0])
            raise AssertionError(
                f"{what} {i}: {int((~ok).sum())} of {ok.numel()} elements outside the budget; "
                f"first at {j}: backend {x64[j].item()!r}, oracle {o64[j].item()!r}, naive "
                f"{n64[j].item()!r}, error {err[j].item():.3e} > budget {bound[j].item():.3e} "
                f"(k={k}, {floor_ulps} ulp of {storage} at {mag[j].item():.3e})")


def opmath(dtype: torch.dtype) -> torch.dtype:
    """The precision the element math runs in for ``dtype`` storage (docs/numerics.md)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def clip_perturbations(max_grad_norm: float | None, param_dtype: torch.dtype) -> list[float]:
    """``max_grad_norm`` one opmath ulp up and down (none without clipping).

    The contract lets a backend sum the grad norm in its own fixed order, so its clip
    coefficient may be an ulp or so from the reference's. The reference runs with these norms
    are exactly as correct as the naive run; :func:`naive_runs` adds them to the baseline."""
    if max_grad_norm is None:
        return []
    eps = torch.finfo(opmath(param_dtype)).eps
    return [max_grad_norm * (1 + eps), max_grad_norm * (1 - eps)]


def naive_runs(info: AlgoInfo, problem: Problem, dtypes: DtypeCase, mode: Mode, *,
               device: str = "cpu", extra: dict | None = None) -> list[RunResult]:
    """The naive baseline of the budget: the reference run in the storage precision, and, when
    the mode clips, the same run with the clip coefficient an ulp up and an ulp down
    (:func:`clip_perturbations`). The first is the naive run proper (its telemetry is the one
    to compare with)."""
    out = [run(info, "reference", problem, dtypes, mode, device=device, extra=extra)]
    for norm in clip_perturbations(mode.max_grad_norm, dtypes.param):
        out.append(run(info, "reference", problem, dtypes, mode, device=device,
                       extra={**(extra or {}), "max_grad_norm": norm}))
    return out


def envelope(naives: list[list[Tensor]], oracle: list[Tensor]) -> list[Tensor]:
    """Per element, the naive value farthest from the oracle's (float64)."""
    out = []
    for i, o in enumerate(oracle):
        o64 = o.detach().to("cpu", torch.float64)
        best = naives[0][i].detach().to("cpu", torch.float64)
        for other in naives[1:]:
            x = other[i].detach().to("cpu", torch.float64)
            best = torch.where((x - o64).abs() > (best - o64).abs(), x, best)
        out.append(best)
    return out


def _trajectory(result: RunResult, key: str) -> tuple[list[Tensor] | None, list[Tensor] | None]:
    traj = (result.trajectories or {}).get(key)
    return (traj.peak, traj.path) if traj is not None else (None, None)


def assert_within_budget(backend: RunResult, naive: RunResult | list[RunResult], oracle: RunResult,
                         *, k: float,
                         param_dtype: torch.dtype, state_dtype: torch.dtype | None,
                         floor_ulps: float = FLOOR_ULPS, path_rel: float = 0.0, what: str = "",
                         sign_ties: tuple[str, int] | None = None) -> None:
    """Every stream of a :func:`run` within :func:`assert_elementwise` of the oracle's:

    * ``step`` of every param: exactly the oracle's (a count, no rounding);
    * params, in the ulps of ``param_dtype``;
    * every state, in the ulps of ``state_dtype`` (None: the param dtype);
    * with master weights (``naive.masters``): the fp32 master against the oracle's params, in
      fp32 ulps, and the param exactly the master rounded to nearest even (the contract).

    ``naive``: one naive run, or the list of :func:`naive_runs`; per element the k term takes
    the largest of their errors. A clipping backend's coefficient is an ulp or so from the
    reference's (the norm is summed in another order), and where an element's update is ill
    conditioned (RMSprop's ``g coef + wd p`` cancelling after ``p`` crossed zero) that ulp moves
    the element by many ulps: in the backend, and equally in a reference run whose coefficient
    is an ulp away, while the single naive run may by chance sit next to the oracle.

    Each element's magnitude is its peak in the oracle's trajectory (run(..., oracle=True));
    ``floor_ulps``: :data:`FLOOR_ULPS`.

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
    naives = naive if isinstance(naive, list) else [naive]
    naive = naives[0]
    sdt = state_dtype or param_dtype
    keep = None
    if sign_ties is not None:
        key, allowed = sign_ties
        rel = max(1e-3, 8 * ulp(sdt))
        keep = []
        for b, n, o in zip(backend.states[key], envelope([r.states[key] for r in naives],
                                                          oracle.states[key]), oracle.states[key]):
            o64 = o.to(torch.float64)
            tol = rel * o64.abs()
            keep.append(((b.to(torch.float64) - o64).abs() <= tol)
                        & ((n.to(torch.float64) - o64).abs() <= tol))
        ties = sum(int((~m).sum()) for m in keep)
        assert ties <= allowed, (f"{what} {key}: {ties} elements off the oracle by more than "
                                 f"{rel:.0e} relative, more than the {allowed} sign ties allowed")
    checks = [("params", backend.params, envelope([r.params for r in naives], oracle.params),
               oracle.params, param_dtype, "params")]
    assert set(backend.states) == set(oracle.states), f"{what}: state keys differ"
    for key in oracle.states:
        checks.append((key, backend.states[key],
                       envelope([r.states[key] for r in naives], oracle.states[key]),
                       oracle.states[key], sdt, key))
    if naive.masters is not None:
        assert backend.masters is not None, f"{what}: no master_param with master weights on"
        checks.append(("master_param", backend.masters,
                       envelope([r.masters for r in naives], oracle.params), oracle.params,
                       torch.float32, "params"))
        for i, (p, m) in enumerate(zip(backend.params, backend.masters)):
            assert torch.equal(p, m.to(p.dtype)), (
                f"{what} params {i}: not the master rounded to nearest even")
    for name, b, n, o, dt, traj_key in checks:
        peak, path = _trajectory(oracle, traj_key)
        assert_elementwise(f"{what} {name}", b, n, o, storage=dt, k=k, floor_ulps=floor_ulps,
                           peak=peak, path=path, path_rel=path_rel, keep=keep)


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
           "run", "RunResult", "FLOOR_ULPS", "Trajectory", "advance_trajectories", "clip_perturbations",
           "envelope", "naive_runs", "opmath", "assert_elementwise", "assert_within_budget",
           "sign_ties_of", "ulp", "S", "with_steps"]
