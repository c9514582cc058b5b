"""The ``triton`` backend against the reference: under Triton's interpreter on CPU tensors (CI)
and compiled on a GPU (marker ``gpu``).

Error budget: the one of every backend (``harness.assert_elementwise``, docs/numerics.md), per
element of every stream (params, fp32 masters, states) after every step, and for every stats
slot the kernels write::

    |triton - ref64| <= K |ref_same - ref64| + FLOOR_ULPS ulp(storage, peak)
                        + (SQRT_ULPS eps(opmath) + SCALAR_REL) |ref64 - start|

``ref64`` is the reference backend on float64 copies (ground truth), ``ref_same`` the reference
backend in the storage dtypes (the naive same-precision baseline), both started from the Triton
run's state before the step (one step's error, not compounded), ``start`` that state. K = 2.
The floor is one ulp of the element itself at its magnitude over the step, peak =
max(|start|, |ref64|) (not of the largest element): where ref_same happens to land next to
ref64, a result rounded to the neighbouring value is still right. The last term scales with the
size of the update and covers the two places where the reference's arithmetic is not
IEEE-rounded fp32 / fp64: ``torch.sqrt`` on fp32 CPU tensors is one ulp off the correctly
rounded root for ~0.7% of inputs (measured: 7,197 of 10^6 uniform in [0, 0.01), torch 2.13,
AVX-512), where the kernels (Triton and csrc/math) take the IEEE root, so a denominator may
differ by an ulp (SQRT_ULPS); and ``beta^t`` is ``exp(t log beta)`` in fp64 here (Triton has no
pow), a few fp64 ulps from ``torch.pow``, amplified up to ~1/(1 - beta^t) in the bias
correction (SCALAR_REL; visible in fp64 params only).

The element bound alone would let a kernel that truncates, or contracts an FMA the reference
lacks, through (each costs at most an ulp). So, with fp32 opmath, at least AGREE of the elements
of every stream must also be bitwise equal to ref_same: the kernels do the reference's
operations in its order, and only those roots move a result, rarely.

The norm pass sums in another fixed order than torch (chunk partials, then fp64), so its slots
are compared per step with SUM_REL of relative slack, and the naive run then continues from the
Triton run's five prologue slots: otherwise a gradient coefficient one opmath ulp away would
scale every grad and hide the update's own error (the optimizer-level tests at the end check
the composition with the global budget of tests/harness.py).

How the interpreter is reached (Note [interpreter mode] in ``fusedopt.triton_kernels``):
``TRITON_INTERPRET=1`` must be set before the process first imports ``triton``, and pytest
processes import it while collecting (``fusedopt.available_backends``). So when this process
cannot interpret, ``test_interpreter_suite`` re-runs this file in a child process started with
``TRITON_INTERPRET=1`` and fails with the child's report if any test there fails; run
``TRITON_INTERPRET=1 pytest tests/test_triton_backend.py`` to see the tests one by one.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from fusedopt import _stats as S
from fusedopt.backends import Bucket, BackendNotAvailable, reference_backend, resolve
from fusedopt.backends import triton_backend
from fusedopt.reference.adam_family import AdamHyper
from fusedopt.registry import ALGORITHMS

from interpreted import assert_interpreted_run_passes
from harness import assert_elementwise

TRITON_OK, TRITON_WHY = triton_backend.availability()
INTERPRETER = TRITON_OK and triton_backend.supports("cpu")
GPU = TRITON_OK and torch.cuda.is_available() and triton_backend.supports("cuda")

needs_interpreter = pytest.mark.skipif(
    not INTERPRETER, reason="runs in the TRITON_INTERPRET=1 child process (test_interpreter_suite)")
needs_gpu = pytest.mark.skipif(not GPU, reason="needs a CUDA device and compiled Triton kernels")

K = 2.0
FLOOR_ULPS = 1.0
AGREE = 0.99
SQRT_ULPS = 2.0
SCALAR_REL = 1e-12
SUM_REL = {torch.float32: 2e-6, torch.float64: 1e-13}
AMP_SCALE = 1024.0
MAX_NORM = 2.0


# ------------------------------------------------------------------------------ launch sizes
def _sizes() -> tuple[int, int]:
    from fusedopt.triton_kernels import _common

    if INTERPRETER:
        return _common.INTERPRET_BLOCK, _common.INTERPRET_CHUNK
    return _common.GPU_REDUCE[0], _common.GPU_CHUNK


BLOCK, CHUNK = _sizes()
#: empty, 1, 3, BLOCK - 1, BLOCK, BLOCK + 1, and more than one chunk (full blocks and a tail)
SIZES = [0, 1, 3, BLOCK - 1, BLOCK, BLOCK + 1, CHUNK + BLOCK + 3]


# ------------------------------------------------------------------------------ buckets
@dataclass(frozen=True)
class Dtypes:
    """Storage dtypes of one bucket."""

    param: torch.dtype
    grad: torch.dtype
    state: torch.dtype
    master: bool = False


DTYPES = {
    "fp32": Dtypes(torch.float32, torch.float32, torch.float32),
    "fp64": Dtypes(torch.float64, torch.float64, torch.float64),
    "bf16": Dtypes(torch.bfloat16, torch.bfloat16, torch.float32),
    "fp16": Dtypes(torch.float16, torch.float16, torch.float32),
    "fp32_bf16state": Dtypes(torch.float32, torch.float32, torch.bfloat16),
    "bf16_bf16state": Dtypes(torch.bfloat16, torch.bfloat16, torch.bfloat16),
    "bf16_fp32grad": Dtypes(torch.bfloat16, torch.float32, torch.float32),
    "bf16_master": Dtypes(torch.bfloat16, torch.bfloat16, torch.float32, master=True),
    "fp16_master_fp32grad": Dtypes(torch.float16, torch.float32, torch.float32, master=True),
}

#: how each state starts: moments of a run in progress (v >= 0, vmax >= v, Adagrad's sum > 0)
_STATE_INIT = {
    "exp_avg": lambda n, g: torch.randn(n, generator=g, dtype=torch.float64) * 0.1,
    "exp_avg_sq": lambda n, g: torch.rand(n, generator=g, dtype=torch.float64) * 0.01,
    "max_exp_avg_sq": lambda n, g: torch.rand(n, generator=g, dtype=torch.float64) * 0.01 + 0.01,
    "sum": lambda n, g: torch.rand(n, generator=g, dtype=torch.float64) + 0.1,
    "momentum_buffer": lambda n, g: torch.randn(n, generator=g, dtype=torch.float64) * 0.1,
}


@dataclass
class Problem:
    """Float64 initial values and per-step grads of one bucket, materialized per run."""

    sizes: list[int]
    params: list[torch.Tensor]
    states: dict[str, list[torch.Tensor]]
    grads: list[list[torch.Tensor]]
    step0: float = 2.0

    def bucket(self, dt: Dtypes | None, device: str = "cpu") -> Bucket:
        """The bucket in the storage dtypes ``dt``, or all-fp64 for ``dt=None`` (the oracle)."""
        pdt = torch.float64 if dt is None else dt.param
        sdt = torch.float64 if dt is None else dt.state
        params = [p.to(device=device, dtype=pdt) for p in self.params]
        masters = None
        if dt is not None and dt.master:
            masters = [p.to(device=device, dtype=torch.float32) for p in self.params]
        steps = [torch.full((), self.step0, dtype=torch.float32, device=device) for _ in params]
        states = {k: [s.to(device=device, dtype=sdt) for s in v] for k, v in self.states.items()}
        return Bucket(params, [torch.empty(0)] * len(params), steps, states, masters)

    def set_grads(self, b: Bucket, t: int, dt: Dtypes | None, scale: float = 1.0) -> None:
        gdt = torch.float64 if dt is None else dt.grad
        b.grads = [(g * scale).to(device=b.device, dtype=gdt) for g in self.grads[t]]


def make_problem(state_names: tuple[str, ...], steps: int, sizes=None, seed: int = 0) -> Problem:
    gen = torch.Generator().manual_seed(seed)
    sizes = SIZES if sizes is None else sizes
    params = [torch.randn(n, generator=gen, dtype=torch.float64) for n in sizes]
    states = {k: [_STATE_INIT[k](n, gen) for n in sizes] for k in state_names}
    if "max_exp_avg_sq" in states:
        states["max_exp_avg_sq"] = [torch.maximum(m, v) for m, v in
                                    zip(states["max_exp_avg_sq"], states["exp_avg_sq"])]
    grads = [[torch.randn(n, generator=gen, dtype=torch.float64) for n in sizes]
             for _ in range(steps)]
    return Problem(list(sizes), params, states, grads)


def new_stats(device: str = "cpu") -> torch.Tensor:
    stats = torch.zeros(S.NUM_SLOTS, dtype=torch.float64, device=device)
    stats[S.CLIP_COEF] = 1.0
    stats[S.COEF] = 1.0
    return stats


# ------------------------------------------------------------------------------ the budget
def assert_budget(what: str, out: torch.Tensor, naive: torch.Tensor, oracle: torch.Tensor,
                  start: torch.Tensor, dtype: torch.dtype, op: torch.dtype,
                  floor_ulps: float = FLOOR_ULPS) -> None:
    """One step of one tensor within the budget of the module docstring
    (``harness.assert_elementwise``); ``op`` is the opmath dtype."""
    o = oracle.detach().to("cpu", torch.float64)
    s0 = start.detach().to("cpu", torch.float64).expand_as(o)
    assert_elementwise(what, [out], [naive], [o], storage=dtype, k=K, floor_ulps=floor_ulps,
                       peak=[torch.maximum(s0.abs(), o.abs())], path=[(o - s0).abs()],
                       path_rel=SQRT_ULPS * torch.finfo(op).eps + SCALAR_REL)


def compare_buckets(what: str, out: Bucket, naive: Bucket, oracle: Bucket, start: Bucket,
                    dt: Dtypes) -> None:
    """Every stream of ``out`` within the budget, and (fp32 opmath) bitwise equal to the naive
    run in at least AGREE of its elements; step counts equal to the oracle's."""
    op = opmath(dt)
    streams = {"param": (out.params, naive.params, oracle.params, start.params, dt.param)}
    if out.masters is not None:
        streams["master"] = (out.masters, naive.masters, oracle.params, start.params,
                             torch.float32)
    for k in out.states:
        streams[k] = (out.states[k], naive.states[k], oracle.states[k], start.states[k], dt.state)
    for name, (xs, ns, os_, ss, dtype) in streams.items():
        same = total = 0
        for i, (x, n, o, s0) in enumerate(zip(xs, ns, os_, ss)):
            assert_budget(f"{what} {name} {i}", x, n, o, s0, dtype, op)
            same += int((x == n).sum())
            total += x.numel()
        if op == torch.float32 and total:
            assert same >= AGREE * total, (
                f"{what} {name}: only {same} of {total} elements equal to the reference's")
    for i in range(len(out)):
        assert float(out.steps[i]) == float(oracle.steps[i]), f"{what}: step of tensor {i}"


def compare_stats(what: str, out: torch.Tensor, naive: torch.Tensor, oracle: torch.Tensor,
                  slots, op: torch.dtype) -> None:
    for s in slots:  # sums in opmath: SUM_REL of relative slack, as ulps of the opmath dtype
        assert_budget(f"{what} stats[{s}]", out[s], naive[s], oracle[s], torch.zeros(()),
                      op, op, floor_ulps=SUM_REL[op] / torch.finfo(op).eps)


def opmath(dt: Dtypes) -> torch.dtype:
    return torch.float64 if dt.param == torch.float64 else torch.float32


# ------------------------------------------------------------------------------ the runner
@dataclass(frozen=True)
class Mode:
    """How the update calls are driven."""

    prologue: bool = False     # AMP scale (grads x AMP_SCALE) + clipping, through the prologue
    telemetry: bool = False
    tensor_lr: bool = False
    inf_at: int | None = None  # step whose grads hold an inf (the whole step must be skipped)


MODES = {
    "plain": Mode(),
    "all": Mode(prologue=True, telemetry=True, tensor_lr=True),
    "skip": Mode(prologue=True, telemetry=True, tensor_lr=True, inf_at=1),
}
TELEMETRY_SLOTS = (S.UPDATE_SQ, S.PARAM_SQ, S.STEP_GRAD_SQ)


def step_once(backend, b: Bucket, stats: torch.Tensor, problem: Problem, t: int,
              dt: Dtypes | None, mode: Mode, update, prologue_from: torch.Tensor | None = None
              ) -> torch.Tensor | None:
    """Step ``t`` of a run: grads, prologue, update. Returns the five prologue slots (or None);
    ``prologue_from`` replaces them by another run's before the update."""
    problem.set_grads(b, t, dt, AMP_SCALE if mode.prologue else 1.0)
    if t == mode.inf_at:
        b.grads[-1].view(-1)[0] = float("inf")
    if mode.telemetry:
        stats[S.UPDATE_SQ:S.STEP_GRAD_SQ + 1] = 0.0
    slots = None
    if mode.prologue:
        backend.grad_prologue_(
            b.grads, stats, region=S.GRAD,
            grad_scale=torch.tensor(AMP_SCALE, dtype=torch.float32, device=b.device),
            found_inf=None, max_norm=MAX_NORM, compute_norm=True)
        slots = stats[S.GRAD:S.GRAD + 5].clone()
        if prologue_from is not None:
            stats[S.GRAD:S.GRAD + 5] = prologue_from
    lr = update.lr
    if mode.tensor_lr:
        lr = torch.tensor(lr, dtype=torch.float32, device=b.device)
    update(backend, b, stats, lr, mode)
    return slots


def run(backend, problem: Problem, dt: Dtypes | None, mode: Mode, update, steps: int,
        device: str = "cpu") -> tuple[Bucket, torch.Tensor]:
    """``steps`` steps of ``backend`` from the problem's start; returns the bucket and stats."""
    b, stats = problem.bucket(dt, device), new_stats(device)
    for t in range(steps):
        step_once(backend, b, stats, problem, t, dt, mode, update)
    return b, stats


def copy_bucket(b: Bucket, float64: bool = False) -> Bucket:
    """A copy of ``b``'s state; ``float64``: the oracle's copy (the master is the param)."""
    if not float64:
        clone = lambda ts: None if ts is None else [t.clone() for t in ts]  # noqa: E731
        return Bucket(clone(b.params), [], clone(b.steps),
                      {k: clone(v) for k, v in b.states.items()}, clone(b.masters))
    params = b.masters if b.masters is not None else b.params
    return Bucket([p.double() for p in params], [], [s.clone() for s in b.steps],
                  {k: [t.double() for t in v] for k, v in b.states.items()})


def check(problem: Problem, dt_name: str, mode_name: str, update, steps: int = 3,
          device: str = "cpu", backend=triton_backend) -> None:
    """Run ``backend`` for ``steps`` steps; before each, copy its state into a naive reference
    run and an fp64 oracle run, step all three, and compare that one step (the error
    of one step, not compounded)."""
    dt, mode = DTYPES[dt_name], MODES[mode_name]
    op = opmath(dt)
    out, stats = problem.bucket(dt, device), new_stats(device)
    for t in range(steps):
        what = f"{update.name}/{dt_name}/{mode_name} step {t}"
        naive, st_naive = copy_bucket(out), stats.clone()
        oracle, st_oracle = copy_bucket(out, float64=True), stats.clone()
        start = copy_bucket(oracle)
        slots = step_once(backend, out, stats, problem, t, dt, mode, update)
        slots_naive = step_once(reference_backend, naive, st_naive, problem, t, dt, mode, update,
                                prologue_from=slots)
        slots_oracle = step_once(reference_backend, oracle, st_oracle, problem, t, None, mode,
                                 update)
        if mode.prologue:
            compare_stats(f"{what} prologue", slots, slots_naive, slots_oracle, range(5), op)
        compare_buckets(what, out, naive, oracle, start, dt)
        compare_stats(what, stats, st_naive, st_oracle,
                      (TELEMETRY_SLOTS if mode.telemetry else ()) + update.extra_slots, op)


@dataclass(frozen=True)
class AdamUpdate:
    """``adam_step_`` with one AdamHyper; AdamL's (a, b, c) written to stats when given."""

    hp: AdamHyper
    abc: tuple[float, float, float] | None = None
    lr: float = 1e-2
    extra_slots: tuple = ()

    @property
    def name(self) -> str:
        return f"adam[{self.hp.variant},{self.hp.decay},bc={self.hp.bias_correction}," \
               f"abc={self.abc}]"

    def __call__(self, backend, b, stats, lr, mode):
        if self.abc is not None:
            stats[S.ABC:S.ABC + 3] = torch.tensor(self.abc, dtype=torch.float64)
        backend.adam_step_(b, stats, lr=lr, hp=self.hp, use_prologue=mode.prologue,
                           use_abc=self.abc is not None, telemetry=mode.telemetry)


@dataclass(frozen=True)
class AdagradUpdate:
    lr_decay: float = 1e-3
    eps: float = 1e-10
    weight_decay: float = 0.05
    lr: float = 5e-2
    extra_slots: tuple = ()
    name: str = "adagrad"

    def __call__(self, backend, b, stats, lr, mode):
        backend.elementwise_step_(b, stats, algo="adagrad", lr=lr,
                                  hyper=(self.lr_decay, self.eps, self.weight_decay),
                                  use_prologue=mode.prologue, telemetry=mode.telemetry)


@dataclass(frozen=True)
class SgdUpdate:
    """NSGDm when ``rho`` is given (momentum pass, then a step along m), else a grad step.

    The scale is the lr over the current value of a device scalar, as the SGD family sets it."""

    rho: float | None = None
    lr: float = 0.05
    name: str = "sgd"

    @property
    def extra_slots(self) -> tuple:
        return (S.MOMENTUM_SQ,) if self.rho is not None else ()

    def __call__(self, backend, b, stats, lr, mode):
        direction = "grad"
        if self.rho is not None:
            stats[S.MOMENTUM_SQ] = 0.0
            backend.momentum_step_(b, stats, rho=self.rho, use_prologue=mode.prologue)
            direction = "momentum"
        stats[S.SCALE] = torch.as_tensor(lr, dtype=torch.float64) / (1.0 + stats[S.GRAD_NORM])
        backend.sgd_step_(b, stats, direction=direction, use_prologue=mode.prologue,
                          telemetry=mode.telemetry)


def _adam(variant="adam", decay="decoupled", bias_correction=True, wd=0.05, abc=None):
    eps = {"adabelief": 1e-16, "yogi": 1e-3}.get(variant, 1e-8)
    beta1 = 0.0 if variant == "rmsprop" else 0.9
    hp = AdamHyper(beta1=beta1, beta2=0.99, eps=eps, weight_decay=wd, variant=variant,
                   decay=decay, bias_correction=bias_correction)
    return AdamUpdate(hp, abc)


ADAM_CASES = {f"{v}-{d}": _adam(v, d) for v in ("adam", "amsgrad", "adabelief", "eadam",
                                               "rmsprop", "yogi")
              for d in ("decoupled", "coupled")}
ADAM_CASES.update({
    "adam-nodecay": _adam(wd=0.0),
    "adamd": _adam(bias_correction=False),
    "adaml-gap": _adam(abc=(0.0, 1e-8, 0.37)),
    "adaml-additive": _adam(abc=(2e-6, 0.0, 1.0)),
    "beta1-above-half": AdamUpdate(AdamHyper(beta1=0.3, beta2=0.99, weight_decay=0.05)),
})


def _states(update) -> tuple[str, ...]:
    if isinstance(update, AdamUpdate):
        v = update.hp.variant
        return (() if v == "rmsprop" else ("exp_avg",)) + ("exp_avg_sq",) + (
            ("max_exp_avg_sq",) if v == "amsgrad" else ())
    if isinstance(update, AdagradUpdate):
        return ("sum",)
    return ("momentum_buffer",) if update.rho is not None else ()


# ------------------------------------------------------------------------------ always
def test_stats_slots_match_fusedopt_stats():
    from fusedopt.triton_kernels import _common

    for name in ("GRAD", "GRAD_SQ", "GRAD_NORM", "FOUND_INF", "CLIP_COEF", "COEF", "UPDATE_SQ",
                 "PARAM_SQ", "STEP_GRAD_SQ", "AUX", "SCALE", "ABC", "MOMENTUM_SQ", "NUM_SLOTS"):
        assert getattr(_common, name) == getattr(S, name), name
    from fusedopt.reference.adam_family import VARIANTS
    from fusedopt.reference.prologue import CLIP_EPS

    assert list(_common.VARIANT_CODES) == list(VARIANTS)
    assert _common.CLIP_EPS == CLIP_EPS


@pytest.mark.skipif(not TRITON_OK, reason=TRITON_WHY)
def test_device_support_follows_the_interpreter_mode():
    assert triton_backend.supports("cpu") == INTERPRETER
    if not INTERPRETER:
        with pytest.raises(BackendNotAvailable, match="TRITON_INTERPRET"):
            resolve("triton", torch.device("cpu"))
    else:
        assert resolve("triton", torch.device("cpu")) is triton_backend


@pytest.mark.skipif(INTERPRETER or not TRITON_OK, reason="this process runs the tests itself")
def test_interpreter_suite():
    """Every interpreter test of this file, in a child process with TRITON_INTERPRET=1."""
    assert_interpreted_run_passes(__file__, "--deselect",
                                  f"{__file__}::test_kernels_compile_for_gpus")


@pytest.mark.skipif(not TRITON_OK, reason=TRITON_WHY)
def test_kernels_compile_for_gpus():
    """sm_90 and sm_80 builds: no register spills, no fp32 FMA, no approximate division or
    square root, 16-byte vector loads on the aligned path (no GPU needed: Triton's ptxas)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-m", "fusedopt.triton_kernels.compile_check",
                          "--arch", "90", "80"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count(" ok") >= 2 * 20, res.stdout


# ------------------------------------------------------------------------------ interpreter
@needs_interpreter
@pytest.mark.parametrize("mode", ["plain", "all"])
@pytest.mark.parametrize("case", list(ADAM_CASES))
def test_adam_family(case, mode):
    update = ADAM_CASES[case]
    check(make_problem(_states(update), steps=3), "fp32", mode, update)


@needs_interpreter
@pytest.mark.parametrize("dt", [d for d in DTYPES if d != "fp32"])
@pytest.mark.parametrize("variant", ["adam", "amsgrad"])
def test_adam_dtypes(variant, dt):
    update = _adam(variant)
    check(make_problem(_states(update), steps=3), dt, "all", update)


@needs_interpreter
@pytest.mark.parametrize("mode", ["plain", "all"])
@pytest.mark.parametrize("dt", ["fp32", "bf16_master", "fp16", "fp64", "fp32_bf16state"])
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_adagrad(wd, dt, mode):
    update = AdagradUpdate(weight_decay=wd)
    check(make_problem(("sum",), steps=3), dt, mode, update)


@needs_interpreter
@pytest.mark.parametrize("mode", ["plain", "all"])
@pytest.mark.parametrize("dt", ["fp32", "bf16_master", "fp16_master_fp32grad", "fp64",
                                "bf16_bf16state"])
@pytest.mark.parametrize("rho", [None, 0.1])
def test_sgd_family(rho, dt, mode):
    update = SgdUpdate(rho=rho)
    check(make_problem(_states(update), steps=3), dt, mode, update)


@needs_interpreter
@pytest.mark.parametrize("update", [_adam("amsgrad"), AdagradUpdate(), SgdUpdate(rho=0.1)],
                         ids=["adam", "adagrad", "nsgdm"])
def test_nonfinite_grad_skips_everything(update):
    """An inf in the grads under AMP: params, states, masters, steps and telemetry unchanged,
    found_inf reported; the step after it runs normally (checked against the reference)."""
    problem = make_problem(_states(update), steps=2)
    b, stats = run(triton_backend, problem, DTYPES["bf16_master"], MODES["skip"], update, 2)
    assert stats[S.FOUND_INF] == 1.0
    before = problem.bucket(DTYPES["bf16_master"])
    first, _ = run(triton_backend, problem, DTYPES["bf16_master"], MODES["all"], update, 1)
    for name, x, y in [("params", b.params, first.params), ("masters", b.masters, first.masters),
                       ("steps", b.steps, first.steps)] + [
            (k, b.states[k], first.states[k]) for k in b.states]:
        for i, (u, v) in enumerate(zip(x, y)):
            assert torch.equal(u, v), f"{name} {i} changed by the skipped step"
    assert [float(s) for s in b.steps] == [problem.step0 + 1] * len(b)
    assert not before.params[3].equal(b.params[3])  # the first step did update
    for s in TELEMETRY_SLOTS:
        assert stats[s] == 0.0, f"stats[{s}] accumulated in a skipped step"
    check(problem, "bf16_master", "skip", update, steps=2)


@needs_interpreter
@pytest.mark.parametrize("grad_dtypes", [("fp32",), ("bf16", "fp32", "fp16"), ("fp32", "fp64")])
@pytest.mark.parametrize("scale,max_norm,found_inf", [
    (None, None, None), (AMP_SCALE, 0.5, None), (None, 1e9, 0.0), (AMP_SCALE, None, 1.0)])
def test_prologue(grad_dtypes, scale, max_norm, found_inf):
    """Norm pass over a list mixing dtypes (one launch each), in both regions."""
    names = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
             "fp64": torch.float64}
    gen = torch.Generator().manual_seed(3)
    grads64 = [torch.randn(n, generator=gen, dtype=torch.float64) * (scale or 1.0)
               for n in SIZES]
    dts = [names[grad_dtypes[i % len(grad_dtypes)]] for i in range(len(SIZES))]
    grads = [g.to(d) for g, d in zip(grads64, dts)]
    kw = dict(grad_scale=None if scale is None else torch.tensor(scale),
              found_inf=None if found_inf is None else torch.tensor(found_inf),
              max_norm=max_norm, compute_norm=True)
    op = torch.float64 if torch.float64 in dts else torch.float32
    for region in (S.GRAD, S.AUX):
        st = [new_stats() for _ in range(3)]
        triton_backend.grad_prologue_(grads, st[0], region=region, **kw)
        reference_backend.grad_prologue_(grads, st[1], region=region, **kw)
        reference_backend.grad_prologue_([g.double() for g in grads], st[2], region=region,
                                         **kw)
        compare_stats(f"prologue {grad_dtypes}", st[0], st[1], st[2],
                      range(region, region + 5), op)
        others = [i for i in range(S.NUM_SLOTS) if not region <= i < region + 5]
        assert torch.equal(st[0][others], new_stats()[others]), "wrote outside its region"


@needs_interpreter
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the 3e30 squared
def test_prologue_nonfinite_and_overflow():
    """inf and nan are found element by element; a finite grad whose square overflows fp32 is
    not an inf (sum and norm become inf, found_inf stays 0, as the reference)."""
    base = [torch.randn(n) for n in SIZES]
    for value, found in [(float("inf"), 1.0), (float("nan"), 1.0), (-float("inf"), 1.0),
                         (3e30, 0.0)]:
        grads = [g.clone() for g in base]
        grads[-1][CHUNK + 5] = value  # in the second chunk of the last tensor
        stats, ref = new_stats(), new_stats()
        triton_backend.grad_prologue_(grads, stats, region=S.GRAD, grad_scale=None,
                                      found_inf=None, max_norm=1.0, compute_norm=True)
        reference_backend.grad_prologue_(grads, ref, region=S.GRAD, grad_scale=None,
                                         found_inf=None, max_norm=1.0, compute_norm=True)
        assert stats[S.FOUND_INF] == found == ref[S.FOUND_INF], value
        assert torch.equal(torch.isnan(stats[:5]), torch.isnan(ref[:5])), (value, stats[:5])
        assert torch.equal(torch.isinf(stats[:5]), torch.isinf(ref[:5])), (value, stats[:5])


@needs_interpreter
def test_prologue_without_norm_pass():
    """compute_norm=False: no pass over memory: sq = norm = 0, clip 1, coef = 1/scale."""
    grads = [torch.full((5,), float("nan"))]
    stats = new_stats()
    triton_backend.grad_prologue_(grads, stats, region=S.GRAD, grad_scale=torch.tensor(512.0),
                                  found_inf=torch.tensor(1.0), max_norm=1.0, compute_norm=False)
    assert stats[:5].tolist() == [0.0, 0.0, 1.0, 1.0, 1.0 / 512.0]


@needs_interpreter
def test_deterministic_bitwise():
    """Two runs from the same inputs: the same bits everywhere, the norm and telemetry too."""
    update = _adam("amsgrad")
    problem = make_problem(_states(update), steps=2)
    (b1, s1), (b2, s2) = [run(triton_backend, problem, DTYPES["bf16_master"], MODES["all"],
                              update, 2) for _ in range(2)]
    assert torch.equal(s1, s2)
    for x, y in zip(b1.params + b1.masters + sum(b1.states.values(), []),
                    b2.params + b2.masters + sum(b2.states.values(), [])):
        assert torch.equal(x, y)


class _CountLaunches:
    """Stands in for a jit kernel and counts ``kernel[grid](...)`` launches."""

    def __init__(self, kernel):
        self.kernel, self.grids = kernel, []

    def __getitem__(self, grid):
        self.grids.append(grid)
        return self.kernel[grid]


@needs_interpreter
def test_many_tensors_one_launch(monkeypatch):
    """300 tensors (one over a chunk) are one update launch and one finishing launch."""
    from fusedopt.triton_kernels import adam, finish

    sizes = [CHUNK + 7] + [1 + (i * 37) % 300 for i in range(299)]
    update = _adam("adam")
    problem = make_problem(_states(update), steps=2, sizes=sizes)
    counts = {}
    for name, mod, attr in [("update", adam._LAUNCH, "kernel"),
                            ("finish", finish, "_finish_kernel")]:
        counts[name] = _CountLaunches(getattr(mod, attr))
        monkeypatch.setattr(mod, attr, counts[name])
    run(triton_backend, problem, DTYPES["fp32"], MODES["plain"], update, 1)
    assert counts["update"].grids == [(len(sizes) + 1,)]  # one chunk each, two for the first
    assert counts["finish"].grids == [(1,)]
    monkeypatch.undo()
    check(problem, "fp32", "all", update, steps=2)


@needs_interpreter
def test_tables_cache():
    """Note [table cache]: new grads refresh the grad row only; a swapped param storage or a
    replaced state tensor rebuilds the tables; the same tensors reuse them."""
    from fusedopt.triton_kernels import _common

    update = _adam("adam")
    problem = make_problem(_states(update), steps=1)
    b = problem.bucket(DTYPES["fp32"])
    stats = new_stats()
    problem.set_grads(b, 0, DTYPES["fp32"])
    update(triton_backend, b, stats, 1e-2, MODES["plain"])
    tables = b.cache["triton"]
    assert tables.n_chunks == sum(-(-n // _common.INTERPRET_CHUNK) for n in SIZES)
    update(triton_backend, b, stats, 1e-2, MODES["plain"])
    assert b.cache["triton"] is tables
    b.grads = [g.clone() for g in b.grads]
    update(triton_backend, b, stats, 1e-2, MODES["plain"])
    assert b.cache["triton"] is tables
    assert tables.ptrs[_common.ROW_GRAD].tolist() == [g.data_ptr() for g in b.grads]
    b.params[3].data = b.params[3].clone()
    update(triton_backend, b, stats, 1e-2, MODES["plain"])
    assert b.cache["triton"] is not tables
    tables = b.cache["triton"]
    b.states["exp_avg"][2] = b.states["exp_avg"][2].clone()
    update(triton_backend, b, stats, 1e-2, MODES["plain"])
    assert b.cache["triton"] is not tables
    assert b.cache["triton"].ptrs[_common.ROW_STATE0, 2] == b.states["exp_avg"][2].data_ptr()


@needs_interpreter
def test_autotune_runs_on_scratch(monkeypatch):
    """Note [autotune on scratch]: tuning times every config on scratch tensors; the real bucket
    is updated once (a second update would leave the budget), and the next step does not tune."""
    import triton

    from fusedopt.triton_kernels import _common, _launch, adam

    benched = []

    def do_bench(fn, quantiles=None):
        fn()
        benched.append(1)
        return [float(len(benched))] * 3

    tuned = _launch.Launcher(adam._adam_kernel, ["VARIANT"], interpreted=False,
                             tune=((BLOCK, 4), (BLOCK // 2, 4)), reduce=(BLOCK, 4),
                             scratch=(2, CHUNK + 5), do_bench=do_bench)
    monkeypatch.setattr(adam, "_LAUNCH", tuned)
    update = _adam("adam")
    problem = make_problem(_states(update), steps=3)
    check(problem, "fp32", "plain", update, steps=3)
    assert len(benched) == 2, "each config timed once, on the first launch only"
    assert isinstance(tuned.tuned, triton.runtime.Autotuner) and len(tuned.tuned.cache) == 1
    assert _common.GPU_CHUNK % max(b for b, _ in _common.GPU_TUNE) == 0


@needs_interpreter
@pytest.mark.parametrize("mode", ["plain", "clip", "amp", "clip_amp", "lossscaler", "telemetry",
                                  "tensor_lr"])
@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_optimizer_every_algorithm_and_mode(algo, mode):
    """The conformance harness (tests/harness.py) through the optimizer classes, small shapes."""
    from harness import DTYPES as H_DTYPES, MODES as H_MODES, SHAPES, assert_within_budget
    from harness import make_problem as h_problem, naive_runs, run as h_run

    info = ALGORITHMS[algo]
    problem = h_problem(SHAPES["small"], steps=4, seed=11)
    args = (problem, H_DTYPES["fp32"], H_MODES[mode])
    out = h_run(info, "triton", *args)
    naives = naive_runs(info, *args)
    naive = naives[0]
    oracle = h_run(info, "reference", *args, oracle=True)
    assert out.optimizer.backend == "triton"
    assert_within_budget(out, naives, oracle, k=K, param_dtype=torch.float32, state_dtype=None,
                         what=f"triton/{algo}/{mode}")
    for so, sn in zip(out.stats, naive.stats):
        for key, value in sn.items():
            assert so[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (algo, mode, key)


@needs_interpreter
@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_optimizer_many_tensors_over_a_chunk(algo):
    """The same through the optimizers: >1 chunk and 40 tensors in one bucket, fp16 + master."""
    from harness import DTYPES as H_DTYPES, MODES as H_MODES, assert_within_budget
    from harness import make_problem as h_problem, naive_runs, run as h_run

    info = ALGORITHMS[algo]
    shapes = [(CHUNK + 9,), (0,), (3, 5)] + [(7,)] * 37
    problem = h_problem(shapes, steps=3, seed=12)
    dt = H_DTYPES["fp16_master_fp32grad"]
    args = (problem, dt, H_MODES["clip_amp"])
    out = h_run(info, "triton", *args)
    naives = naive_runs(info, *args)
    oracle = h_run(info, "reference", *args, oracle=True)
    assert_within_budget(out, naives, oracle, k=K, param_dtype=dt.param, state_dtype=dt.state,
                         what=f"triton/{algo}/many")


# ------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("mode", ["plain", "all", "skip"])
@pytest.mark.parametrize("dt", ["fp32", "bf16_master", "fp16", "fp64", "bf16_bf16state"])
@pytest.mark.parametrize("case", ["adam-decoupled", "amsgrad-coupled", "yogi-decoupled",
                                  "adaml-gap", "adagrad", "sgd", "nsgdm"])
def test_gpu_matches_reference(case, dt, mode):
    update = {"adagrad": AdagradUpdate(), "sgd": SgdUpdate(), "nsgdm": SgdUpdate(rho=0.1)}.get(
        case) or ADAM_CASES[case]
    check(make_problem(_states(update), steps=3), dt, mode, update, device="cuda")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dt", ["fp32", "bf16_master", "fp64"])
@pytest.mark.parametrize("case", ["adam-decoupled", "amsgrad-coupled", "adagrad", "nsgdm"])
def test_gpu_matches_cuda_backend(case, dt):
    """Triton and the CUDA backend on the same inputs, both within the budget of the oracle and
    within K ulps of each other's error."""
    from fusedopt.backends import available_backends, load

    if "cuda" not in available_backends("cuda"):
        pytest.skip("the CUDA backend is not built here")
    update = {"adagrad": AdagradUpdate(), "nsgdm": SgdUpdate(rho=0.1)}.get(case) \
        or ADAM_CASES[case]
    problem = make_problem(_states(update), steps=3)
    cuda = load("cuda")
    d = DTYPES[dt]
    tri, st_tri = run(triton_backend, problem, d, MODES["all"], update, 3, "cuda")
    cu, st_cu = run(cuda, problem, d, MODES["all"], update, 3, "cuda")
    oracle, st_oracle = run(reference_backend, problem, None, MODES["all"], update, 3, "cuda")
    start = problem.bucket(None)
    compare_buckets(f"triton vs cuda {case}/{dt}", tri, cu, oracle, start, d)
    compare_buckets(f"cuda vs triton {case}/{dt}", cu, tri, oracle, start, d)


@pytest.mark.gpu
@needs_gpu
def test_gpu_deterministic_bitwise():
    update = _adam("amsgrad")
    problem = make_problem(_states(update), steps=2, sizes=SIZES + [1 << 20])
    (b1, s1), (b2, s2) = [run(triton_backend, problem, DTYPES["bf16_master"], MODES["all"],
                              update, 2, "cuda") for _ in range(2)]
    assert torch.equal(s1, s2)
    for x, y in zip(b1.params + sum(b1.states.values(), []),
                    b2.params + sum(b2.states.values(), [])):
        assert torch.equal(x, y)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_gpu_optimizer_every_algorithm(algo):
    from harness import DTYPES as H_DTYPES, MODES as H_MODES, SHAPES, assert_within_budget
    from harness import make_problem as h_problem, naive_runs, run as h_run

    info = ALGORITHMS[algo]
    for mode in H_MODES:
        problem = h_problem(SHAPES["odd"], steps=4, seed=13)
        args = (problem, H_DTYPES["fp32"], H_MODES[mode])
        out = h_run(info, "triton", *args, device="cuda")
        naives = naive_runs(info, *args, device="cuda")
        oracle = h_run(info, "reference", *args, oracle=True, device="cuda")
        assert_within_budget(out, naives, oracle, k=K, param_dtype=torch.float32,
                             state_dtype=None, what=f"triton-gpu/{algo}/{mode}")


@pytest.mark.gpu
@needs_gpu
def test_gpu_index_above_2_31():
    """A tensor of 2^31 + 3 elements: 64-bit chunk starts reach its last elements."""
    n = (1 << 31) + 3
    try:
        p = torch.zeros(n, dtype=torch.float16, device="cuda")
        g = torch.ones(n, dtype=torch.float16, device="cuda")
    except torch.OutOfMemoryError:
        pytest.skip("not enough GPU memory for two 4 GiB tensors")
    b = Bucket([p], [g], [torch.zeros((), device="cuda")], {})
    stats = new_stats("cuda")
    stats[S.SCALE] = 0.5
    triton_backend.sgd_step_(b, stats, direction="grad", use_prologue=False, telemetry=False)
    assert p[-4:].tolist() == [-0.5] * 4 and p[:2].tolist() == [-0.5] * 2
    assert float(b.steps[0]) == 1.0
