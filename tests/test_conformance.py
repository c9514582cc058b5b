"""Every backend against the float64 reference, within the error budget (docs/numerics.md).

Generated from the registry: algorithm x storage dtypes x mode x shape set, for every backend
that can run on the CPU here (``fusedopt.available_backends("cpu")``: the native ``cpu``
backend, and ``triton`` under ``TRITON_INTERPRET=1``). The ``reference`` backend is the oracle
itself; it is checked against torch.optim (test_reference_vs_torch.py) and hand-computed
examples (test_reference_examples.py), and tests/test_mutations.py shows that the budget catches
wrong backends.
GPU backends run the same checks on a CUDA device (marker ``gpu``).
"""
from __future__ import annotations

import functools
import os

import pytest
import torch

import fusedopt
from fusedopt.registry import ALGORITHMS

from harness import (DTYPES, MODES, SHAPES, assert_elementwise, assert_within_budget, case_seed,
                     make_problem, naive_runs, run, sign_ties_of)

#: k of the error budget: a backend may be at most this many times less accurate than the
#: reference run in the same storage precision. 2 covers a different but equally exact
#: evaluation order (FMA vs separate multiply-add would already cost less than that).
K = 2.0


def _backends(device: str) -> list[str]:
    names = [b for b in fusedopt.available_backends(device) if b != "reference"]
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        names = [b for b in names if b != "triton"]
    return names


CPU_BACKENDS = _backends("cpu")
GPU_BACKENDS = _backends("cuda") if torch.cuda.is_available() else []


def _cases():
    """Full mode set for fp32/fp64/bf16; the dtype-only cases with the AMP+clip mode."""
    for algo in ALGORITHMS:
        for dt in DTYPES:
            modes = MODES if dt in ("fp32", "bf16", "fp64") else ("plain", "clip_amp")
            for mode in modes:
                if not ALGORITHMS[algo].has_moments and "state" in dt:
                    continue
                yield algo, dt, mode


CASES = list(_cases())


@functools.lru_cache(maxsize=None)
def _references(algo: str, dt: str, mode: str, shapes: str, steps: int, device: str = "cpu"):
    info = ALGORITHMS[algo]
    problem = make_problem(SHAPES[shapes], steps=steps, seed=case_seed(algo, shapes))
    oracle = run(info, "reference", problem, DTYPES[dt], MODES[mode], oracle=True, device=device)
    naives = naive_runs(info, problem, DTYPES[dt], MODES[mode], device=device)
    return problem, oracle, naives


def _check(backend: str, algo: str, dt: str, mode: str, shapes: str = "small", steps: int = 8,
           device: str = "cpu") -> None:
    info = ALGORITHMS[algo]
    # Long runs are not cached: a 1,000-step problem on the "odd" shapes holds ~1 GB of grads.
    refs = _references if steps <= 100 else _references.__wrapped__
    problem, oracle, naives = refs(algo, dt, mode, shapes, steps, device)
    out = run(info, backend, problem, DTYPES[dt], MODES[mode], device=device)
    what = f"{backend}/{algo}/{dt}/{mode}/{shapes}"
    assert_within_budget(out, naives, oracle, k=K, param_dtype=DTYPES[dt].param,
                         state_dtype=DTYPES[dt].state, what=what,
                         sign_ties=sign_ties_of(info, DTYPES[dt], problem))
    if MODES[mode].telemetry:
        for so, sn in zip(out.stats, naives[0].stats):
            for key, value in sn.items():
                assert so[key] == pytest.approx(value, rel=1e-3, abs=1e-6), (what, key)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("algo,dt,mode", CASES)
def test_backend_matches_reference(backend, algo, dt, mode):
    _check(backend, algo, dt, mode)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shapes", ["odd", "many"])
@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_backend_shape_sets(backend, algo, shapes):
    _check(backend, algo, "fp32", "clip_amp", shapes=shapes, steps=4)


@pytest.mark.slow
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("algo,dt,mode", CASES)
def test_backend_1000_steps(backend, algo, dt, mode):
    """The whole case matrix over 1,000 steps: errors that compound show here (~25 min)."""
    _check(backend, algo, dt, mode, steps=1000)


@pytest.mark.slow
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shapes", ["odd", "many"])
@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_backend_shape_sets_1000_steps(backend, algo, shapes):
    _check(backend, algo, "fp32", "clip_amp", shapes=shapes, steps=1000)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("algo,dt,mode", CASES)
def test_gpu_backend_matches_reference(backend, algo, dt, mode):
    _check(backend, algo, dt, mode, device="cuda")


def test_reference_oracle_is_not_trivial():
    """The budget must be able to fail: a 1% wrong lr is far outside it."""
    info = ALGORITHMS["adamw"]
    problem = make_problem(SHAPES["small"], steps=8)
    oracle = run(info, "reference", problem, DTYPES["fp32"], MODES["plain"], oracle=True)
    naive = run(info, "reference", problem, DTYPES["fp32"], MODES["plain"])
    wrong = run(info, "reference", problem, DTYPES["fp32"], MODES["plain"],
                extra={"lr": info.kwargs["lr"] * 1.01})
    with pytest.raises(AssertionError):
        assert_within_budget(wrong, naive, oracle, k=K, param_dtype=torch.float32,
                             state_dtype=None)


@pytest.mark.parametrize("wrong", [{"lr": 1.01e-2}, {"betas": (0.9, 0.98)}])
def test_sign_ties_do_not_hide_a_wrong_update(wrong):
    """Yogi's tie allowance must still fail a wrong lr (params) or beta2 (v)."""
    info = ALGORITHMS["yogi"]
    problem = make_problem(SHAPES["small"], steps=8)
    oracle = run(info, "reference", problem, DTYPES["fp32"], MODES["clip"], oracle=True)
    naive = run(info, "reference", problem, DTYPES["fp32"], MODES["clip"])
    bad = run(info, "reference", problem, DTYPES["fp32"], MODES["clip"], extra=wrong)
    with pytest.raises(AssertionError):
        assert_within_budget(bad, naive, oracle, k=K, param_dtype=torch.float32, state_dtype=None,
                             sign_ties=("exp_avg_sq", 4))


def test_cases_cover_every_algorithm_and_mode():
    assert {c[0] for c in CASES} == set(ALGORITHMS)
    assert {c[2] for c in CASES} == set(MODES)


def _resync_steps(backend: str, algo: str, dt: str, mode: str, steps: int = 6):
    """Single-step errors for 16-bit params: before every step the naive and the oracle runs
    are set to the backend's exact state (params, moments, step counts, master), so each step's
    error is measured on its own and cannot compound. Yields, per step, (backend params, naive
    params, oracle params, params before the step)."""
    info, dts, md = ALGORITHMS[algo], DTYPES[dt], MODES[mode]
    problem = make_problem(SHAPES["small"], steps=steps, seed=7)
    kw = dict(max_grad_norm=md.max_grad_norm, state_dtype=dts.state if info.has_moments else None,
              master_weights=dts.master)
    params = [p.to(dts.param).requires_grad_() for p in problem.params]
    opt = info.make(params, backend=backend, **kw)
    for t in range(steps):
        sd = opt.state_dict()
        naive_params = [p.detach().clone().requires_grad_() for p in params]
        naive = info.make(naive_params, backend="reference", **kw)
        naive.load_state_dict(sd)
        masters = [opt.state[p].get("master_param") for p in params]
        oracle_params = [(m if m is not None else p.detach()).double().requires_grad_()
                         for p, m in zip(params, masters)]
        start = [p.detach().clone() for p in oracle_params]
        oracle = info.make(oracle_params, backend="reference", max_grad_norm=md.max_grad_norm)
        oracle.load_state_dict(_without_master(sd))
        for o, ps in ((opt, params), (naive, naive_params), (oracle, oracle_params)):
            for p, g in zip(ps, problem.grads[t]):
                p.grad = g.to(p.dtype)
            if info.needs_normalizer:
                for p, g in zip(ps, problem.normalizer_grads[t]):
                    p.grad = g.to(p.dtype)
                o.record_normalizer()
                for p, g in zip(ps, problem.grads[t]):
                    p.grad = g.to(p.dtype)
            o.step(**({"loss": torch.tensor(problem.losses[t])} if info.needs_loss else {}))
        yield ([p.detach().clone() for p in params], [p.detach() for p in naive_params],
               [p.detach() for p in oracle_params], start)


def _without_master(sd):
    state = {k: {kk: vv for kk, vv in v.items() if kk != "master_param"}
             for k, v in sd["state"].items()}
    return {"state": state, "param_groups": sd["param_groups"]}


RESYNC_CASES = [(a, d, m) for a in ALGORITHMS for d in ("bf16", "fp16", "bf16_master")
                for m in ("plain", "clip")]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("algo,dt,mode", RESYNC_CASES)
def test_backend_16bit_single_step_resync(backend, algo, dt, mode):
    """One step from the same state: K x the naive error + 1 ulp of the param dtype at the
    element's magnitude over the step (the larger of its value before and after)."""
    for t, (out, naive, oracle, start) in enumerate(_resync_steps(backend, algo, dt, mode)):
        peak = [torch.maximum(s.abs(), o.abs()) for s, o in zip(start, oracle)]
        assert_elementwise(f"{backend}/{algo}/{dt}/{mode} step {t}", out, naive, oracle,
                           storage=DTYPES[dt].param, k=K, floor_ulps=1.0, peak=peak)


def test_resync_harness_measures_something():
    """The re-sync measurement is not vacuous: the naive bf16 run has a per-step error, and
    a wrong step (the update twice) is outside the one-step budget."""
    for t, (out, naive, oracle, start) in enumerate(_resync_steps("reference", "adamw", "bf16",
                                                                  "plain")):
        assert any(not torch.equal(n.double(), o) for n, o in zip(naive, oracle))
        assert all(torch.equal(a, b) for a, b in zip(out, naive))  # reference vs itself
        twice = [(2 * o - s).to(torch.bfloat16) for o, s in zip(oracle, start)]
        peak = [torch.maximum(s.abs(), o.abs()) for s, o in zip(start, oracle)]
        with pytest.raises(AssertionError):
            assert_elementwise("update twice", twice, naive, oracle, storage=torch.bfloat16,
                               k=K, floor_ulps=1.0, peak=peak)
