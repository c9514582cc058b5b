"""Checks of the ``cuda`` backend, written once for any device the backend runs on.

tests/test_cuda_backend.py runs them on a GPU (marker ``gpu``). Each check drives fusedopt
optimizers through tests/harness.py and compares with the float64 reference within the error
budget of tests/test_conformance.py (``K`` times the error of the reference run in the storage
precision), or bitwise where the contract promises bits (run-to-run determinism, the same
inputs through the CPU core, which calls the same csrc/math headers in the same order).
"""
from __future__ import annotations

import math

import pytest
import torch

import fusedopt
from fusedopt.registry import ALGORITHMS

from harness import (DTYPES, MODES, SHAPES, assert_elementwise, assert_within_budget, case_seed,
                     make_problem, naive_runs, run, sign_ties_of)
from test_conformance import CASES, K  # noqa: F401 (CASES: re-exported to test_cuda_backend)

#: Shapes around the CUDA engine's boundaries: the 4-element vectors (+-1), a chunk of 2^16
#: elements exactly and +1, several chunks with a tail, a 4097 dimension, empty tensors.
CHUNK_SHAPES = [(65536,), (0,), (65537,), (3,), (5,), (3 * 65536 + 7,), (4, 4097), (1,)]

#: Modes whose updates read no reduction (no norm, no clip): the CPU core and the CUDA kernels
#: then compute every element with the same operations in the same order, so the same bits.
NO_REDUCTION_MODES = ("plain", "amp", "telemetry")


def shape_sets() -> dict[str, list[tuple[int, ...]]]:
    return {**SHAPES, "chunks": CHUNK_SHAPES}


def check_conformance(algo: str, dt: str, mode: str, *, device: str, shapes: str = "small",
                      steps: int = 8) -> None:
    """The cuda backend against the float64 reference within the error budget."""
    info = ALGORITHMS[algo]
    problem = make_problem(shape_sets()[shapes], steps=steps, seed=case_seed(algo, shapes))
    oracle = run(info, "reference", problem, DTYPES[dt], MODES[mode], oracle=True, device=device)
    naives = naive_runs(info, problem, DTYPES[dt], MODES[mode], device=device)
    out = run(info, "cuda", problem, DTYPES[dt], MODES[mode], device=device)
    what = f"cuda/{algo}/{dt}/{mode}/{shapes}/{steps} steps"
    assert_within_budget(out, naives, oracle, k=K, param_dtype=DTYPES[dt].param,
                         state_dtype=DTYPES[dt].state, what=what,
                         sign_ties=sign_ties_of(info, DTYPES[dt], problem))
    if MODES[mode].telemetry:
        for so, sn in zip(out.stats, naives[0].stats):
            for key, value in sn.items():
                assert so[key] == pytest.approx(value, rel=1e-3, abs=1e-6), (what, key)


def check_matches_cpu_core(algo: str, dt: str, mode: str, *, device: str) -> None:
    """Identical inputs through the CPU core and the CUDA kernels: bitwise where no reduction
    feeds the update, else each element within 2 ulps of the storage dtype at its peak
    magnitude in the float64 run (harness.assert_elementwise with the CPU core as the oracle and
    k = 0: the norm's summation order differs, which moves the clip coefficient by at most an
    ulp, and so an update no larger than twice the peak by about an ulp)."""
    info = ALGORITHMS[algo]
    problem = make_problem(shape_sets()["chunks"], steps=4, seed=11)
    cuda = run(info, "cuda", problem, DTYPES[dt], MODES[mode], device=device)
    cpu = run(info, "cpu", problem, DTYPES[dt], MODES[mode], device="cpu")
    assert cuda.steps == cpu.steps
    pairs = [("params", cuda.params, cpu.params, DTYPES[dt].param)]
    pairs += [(k, cuda.states[k], cpu.states[k], DTYPES[dt].state or DTYPES[dt].param)
              for k in cpu.states]
    if mode not in NO_REDUCTION_MODES:
        scale = run(info, "reference", problem, DTYPES[dt], MODES[mode], oracle=True).trajectories
    for name, a, b, dtype in pairs:
        a = [x.cpu() for x in a]
        if mode in NO_REDUCTION_MODES:
            assert all(torch.equal(x, y) for x, y in zip(a, b)), f"{algo}/{dt}/{mode} {name}"
        else:
            assert_elementwise(f"{algo}/{dt}/{mode} {name}", a, b, b, storage=dtype, k=0.0,
                               floor_ulps=2.0, peak=scale[name].peak)


def _run_twice_bitwise(make_run) -> None:
    a, b = make_run(), make_run()
    for x, y in zip(a.params, b.params):
        assert torch.equal(x, y)
    for key in a.states:
        for x, y in zip(a.states[key], b.states[key]):
            assert torch.equal(x, y), key
    assert a.stats == b.stats  # every telemetry value, the grad norm included, to the bit
    assert torch.equal(a.optimizer._stats, b.optimizer._stats)


def check_determinism(*, device: str) -> None:
    """Two runs on the same inputs are bitwise equal: params, states, norms (no atomics; every
    sum is per chunk and finished in a fixed order)."""
    info = ALGORITHMS["adamw"]
    problem = make_problem(shape_sets()["chunks"] + [(300000,)], steps=3, seed=5)
    mode = MODES["tensor_lr"]  # clip + telemetry + tensor lr: every reduction runs
    _run_twice_bitwise(lambda: run(info, "cuda", problem, DTYPES["bf16_master"], mode,
                                   device=device))


def check_many_tensors(*, device: str, count: int = 1500) -> None:
    """More than 1,000 tensors of mixed sizes in one step (one launch per pass)."""
    shapes = [(1 + (37 * i) % 700,) for i in range(count)] + [(70000,), (0,)]
    info = ALGORITHMS["adamw"]
    problem = make_problem(shapes, steps=2, seed=3)
    mode, dt = MODES["clip_amp"], DTYPES["fp32"]
    oracle = run(info, "reference", problem, dt, mode, oracle=True, device=device)
    naives = naive_runs(info, problem, dt, mode, device=device)
    out = run(info, "cuda", problem, dt, mode, device=device)
    assert_within_budget(out, naives, oracle, k=K, param_dtype=dt.param, state_dtype=None,
                         what=f"{count} tensors")


def check_misaligned_views(*, device: str) -> None:
    """Params that are contiguous views at odd offsets (no 16-byte alignment: every chunk takes
    the element-by-element path) match the same params stored aligned, bitwise."""
    gen = torch.Generator().manual_seed(4)
    sizes = [5, 65537, 9]
    base = torch.randn(sum(sizes) + 3, generator=gen).to(device)

    def make(aligned: bool) -> tuple[list[torch.nn.Parameter], torch.optim.Optimizer]:
        storage = base.clone()
        params, off = [], 1
        for n in sizes:
            view = storage[off:off + n]
            params.append(torch.nn.Parameter(view.clone() if aligned else view))
            off += n
        opt = fusedopt.AdamW(params, lr=1e-2, max_grad_norm=0.5, telemetry=True,
                             backend="cuda")
        return params, opt

    runs = [make(aligned) for aligned in (False, True)]
    assert runs[0][0][1].data_ptr() % 16 != 0
    grads = [[torch.randn(n, generator=gen).to(device) for n in sizes] for _ in range(3)]
    for params, opt in runs:
        for gs in grads:
            for p, g in zip(params, gs):
                p.grad = g.clone()
            opt.step()
    for p, q in zip(runs[0][0], runs[1][0]):
        assert torch.equal(p, q)
    # the norm pass reads the (aligned) grads alike; the telemetry sums of the two paths add the
    # same terms in another order
    assert torch.equal(runs[0][1]._stats[:5], runs[1][1]._stats[:5])
    torch.testing.assert_close(runs[0][1]._stats, runs[1][1]._stats, rtol=1e-12, atol=0)


def check_skip_leaves_everything(algo: str, *, device: str) -> None:
    """A non-finite grad under LossScaler skips the step on the device: nothing changes."""
    info = ALGORITHMS[algo]
    params = [torch.randn(s, dtype=torch.float64).float().to(device).requires_grad_()
              for s in CHUNK_SHAPES]
    opt = info.make(params, backend="cuda", max_grad_norm=1.0, telemetry=True)
    scaler = fusedopt.amp.LossScaler(init_scale=1024.0, growth_interval=10**9)

    def step(bad: bool) -> None:
        if info.needs_normalizer:
            for p in params:
                p.grad = torch.randn_like(p)
            opt.record_normalizer(grad_scale=scaler.get_scale())
        for p in params:
            p.grad = torch.randn_like(p) * 1024.0
        if bad:
            params[-3].grad.view(-1)[12345] = math.nan
        kw = {"loss": torch.tensor(1.0, device=device)} if info.needs_loss else {}
        scaler.step(opt, **kw)
        scaler.update()

    step(False)
    before = [p.detach().clone() for p in params]
    states = {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in params}
    step(True)
    assert float(opt.last_stats["found_inf"]) == 1.0
    for p, b in zip(params, before):
        assert torch.equal(p, b)
        for k, v in opt.state[p].items():
            assert torch.equal(v, states[id(p)][k]), k


def check_compiled_step(*, device: str) -> None:
    """torch.compile(fullgraph=True) of forward + backward + step (a graph break would raise):
    the step runs through the fusedopt custom ops into the cuda backend, and the params follow
    the eager run to a few ulps (inductor computes its own grads); step counts are equal."""
    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                                   torch.nn.Linear(16, 2)).to(device)

    def step_fn(m, opt):
        def train_step(x, y):
            loss = torch.nn.functional.mse_loss(m(x), y)
            loss.backward()
            opt.step()
            return loss.detach()
        return train_step

    eager_m, compiled_m = model(), model()
    kw = dict(lr=1e-2, max_grad_norm=0.5, telemetry=True, backend="cuda")
    eager_opt = fusedopt.AdamW(eager_m.parameters(), **kw)
    compiled_opt = fusedopt.AdamW(compiled_m.parameters(), **kw)
    eager = step_fn(eager_m, eager_opt)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        compiled = torch.compile(step_fn(compiled_m, compiled_opt), fullgraph=True)
        gen = torch.Generator().manual_seed(1)
        for _ in range(4):
            x, y = torch.randn(4, 8, generator=gen).to(device), torch.randn(4, 2, generator=gen)
            eager_opt.zero_grad()
            compiled_opt.zero_grad()
            eager(x, y.to(device))
            compiled(x, y.to(device))
    tol = 32 * torch.finfo(torch.float32).eps
    for p, q in zip(eager_m.parameters(), compiled_m.parameters()):
        torch.testing.assert_close(q, p, rtol=tol, atol=tol)
        assert torch.equal(eager_opt.state[p]["step"], compiled_opt.state[q]["step"])
    assert float(compiled_opt.state[next(compiled_m.parameters())]["step"]) == 4.0
