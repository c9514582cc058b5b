"""The Triton backend's one element-wise kernel (triton_kernels/elementwise.py: Lion, Adan,
Schedule-Free AdamW through ``elementwise_step_``) against the reference backend, under Triton's
interpreter on CPU tensors.

Every step is compared as tests/test_triton_backend.py compares the fixed kernels (its
``check``): before each step the Triton run's state is copied into a naive reference run (the
storage dtypes) and an fp64 oracle run, all three take the step, and every stream (params, fp32
masters, every state) must be within the project's error budget (``harness.assert_elementwise``:
K times the naive run's error plus an ulp floor, plus the fp64 slack of ``beta^t`` computed as
``exp(t log beta)``), with fp32 opmath bitwise equal to the naive run in 99% of the elements;
step counts exact; telemetry sums within SUM_REL. Sizes 1, 4095 (3 full blocks and a tail),
0 and 4097 (a full chunk and a one-element second chunk) with the interpreter's BLOCK 1024 and
CHUNK 4096; the step counts start at 0, so Adan's first step (no gradient difference) is
covered, and then two more.

Like tests/test_triton_backend.py, a process that cannot interpret (``TRITON_INTERPRET=1`` set
before triton is first imported) re-runs this file in a child process that can.
"""
from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fusedopt import _stats as S
from fusedopt.backends import Bucket, reference_backend, triton_backend
from fusedopt.reference import elementwise as spec

from interpreted import assert_interpreted_run_passes
from test_triton_backend import (DTYPES, INTERPRETER, MODES, TELEMETRY_SLOTS, TRITON_OK, Problem,
                                 check, copy_bucket, needs_gpu, needs_interpreter, new_stats)

ALGOS = ("lion", "adan", "schedule_free_adamw", "adopt")
SIZES = [1, 4095, 0, 4097]
STEPS = 3


@dataclass(frozen=True)
class ElementwiseUpdate:
    """``elementwise_step_`` of one algorithm with fixed hyperparameters (the ``update`` of
    test_triton_backend.check)."""

    algo: str
    hyper: tuple[float, ...]
    lr: float = 1e-2
    maximize: bool = False
    extra_slots: tuple = ()

    @property
    def name(self) -> str:
        return f"{self.algo}{self.hyper}{',maximize' if self.maximize else ''}"

    def __call__(self, backend, b, stats, lr, mode):
        backend.elementwise_step_(b, stats, algo=self.algo, lr=lr, hyper=self.hyper,
                                  use_prologue=mode.prologue, telemetry=mode.telemetry,
                                  maximize=self.maximize)


CASES = {
    "lion": ElementwiseUpdate("lion", (0.9, 0.99, 0.1)),
    "adan": ElementwiseUpdate("adan", (0.98, 0.92, 0.99, 1e-8, 0.02, 0.0)),
    "schedule_free_adamw": ElementwiseUpdate("schedule_free_adamw",
                                             (0.9, 0.999, 1e-8, 0.01, 0.25)),
    # coupled decay, the clip at t^(1/4) (reached: the states start with small v)
    "adopt": ElementwiseUpdate("adopt", (0.9, 0.99, 1e-6, 0.02, 0.0, 1.0, 0.25)),
    # decoupled instead of proximal decay; lerp's second branch (ckp1 >= 0.5) and no decay
    "adan-no_prox": ElementwiseUpdate("adan", (0.98, 0.92, 0.99, 1e-8, 0.02, 1.0)),
    "schedule_free_adamw-ckp1_0.75-wd_0": ElementwiseUpdate("schedule_free_adamw",
                                                            (0.9, 0.999, 1e-8, 0.0, 0.75)),
    # decoupled decay, no clip (the bound +inf)
    "adopt-decoupled-no_clip": ElementwiseUpdate("adopt", (0.9, 0.99, 1e-6, 0.02, 1.0, 0.0, 0.0)),
}

#: how each state starts: a run in progress (second moments >= 0, z near the param)
_STATE_INIT = {
    "exp_avg": lambda p, g: torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.1,
    "exp_avg_diff": lambda p, g: torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.05,
    "exp_avg_sq": lambda p, g: torch.rand(p.shape, generator=g, dtype=torch.float64) * 0.01,
    "prev_grad": lambda p, g: torch.randn(p.shape, generator=g, dtype=torch.float64),
    "z": lambda p, g: p + torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.1,
}


def make_problem(algo: str, steps: int = STEPS, sizes=None, seed: int = 0) -> Problem:
    gen = torch.Generator().manual_seed(seed)
    sizes = SIZES if sizes is None else sizes
    params = [torch.randn(n, generator=gen, dtype=torch.float64) for n in sizes]
    states = {k: [_STATE_INIT[k](p, gen) for p in params] for k in spec.spec(algo).STATES}
    grads = [[torch.randn(n, generator=gen, dtype=torch.float64) for n in sizes]
             for _ in range(steps)]
    return Problem(list(sizes), params, states, grads, step0=0.0)


@pytest.mark.skipif(INTERPRETER or not TRITON_OK, reason="this process runs the tests itself")
def test_interpreter_suite():
    """Every test of this file, in a child process with TRITON_INTERPRET=1."""
    assert_interpreted_run_passes(__file__)


# ------------------------------------------------------------------------------ conformance
# "skip": AMP scale and clipping through the prologue, telemetry and a tensor lr, with an inf
# in the grads of step 1 (the whole step skipped). "maximize": the same without the inf, ascent.
_MATRIX = [(algo, dt, mode) for algo in ALGOS for dt in ("fp32", "bf16_master", "fp64")
           for mode in ("plain", "skip", "maximize")]
_MATRIX += [(case, "fp32", mode) for case in CASES if case not in ALGOS
            for mode in ("plain", "skip")]


@needs_interpreter
@pytest.mark.parametrize("case,dt,mode", _MATRIX)
def test_matches_reference(case, dt, mode):
    update = CASES[case]
    if mode == "maximize":
        update, mode = ElementwiseUpdate(update.algo, update.hyper, maximize=True), "all"
    check(make_problem(update.algo), dt, mode, update, steps=STEPS)


@needs_interpreter
@pytest.mark.parametrize("bad", [math.nan, -1e-3])
@pytest.mark.parametrize("algo", ALGOS)
def test_invalid_tensor_lr_skips_everything(algo, bad):
    """A NaN or negative tensor lr: params, masters, states, steps and telemetry unchanged and
    stats[LR_INVALID] set, as the reference does; a valid lr afterwards leaves the flag set and
    steps normally (checked against the reference)."""
    update, dt = CASES[algo], DTYPES["bf16_master"]
    problem = make_problem(algo, steps=1)
    for backend in (triton_backend, reference_backend):
        b, stats = problem.bucket(dt), new_stats()
        problem.set_grads(b, 0, dt)
        before = copy_bucket(b)
        backend.elementwise_step_(b, stats, algo=algo, lr=torch.tensor(bad), hyper=update.hyper,
                                  use_prologue=False, telemetry=True)
        assert stats[S.LR_INVALID] == 1.0, backend.NAME
        for name, x, y in [("params", b.params, before.params),
                           ("masters", b.masters, before.masters),
                           ("steps", b.steps, before.steps)] + [
                (k, b.states[k], before.states[k]) for k in b.states]:
            for i, (u, v) in enumerate(zip(x, y)):
                assert torch.equal(u, v), f"{backend.NAME}: {name} {i} changed by the skip"
        for s in TELEMETRY_SLOTS:
            assert stats[s] == 0.0, f"{backend.NAME}: stats[{s}] accumulated in a skipped step"
        backend.elementwise_step_(b, stats, algo=algo, lr=torch.tensor(update.lr),
                                  hyper=update.hyper, use_prologue=False, telemetry=False)
        assert stats[S.LR_INVALID] == 1.0 and float(b.steps[1]) == 1.0
        # the step ran: ADOPT's first step moves no param (it only seeds exp_avg_sq)
        assert not all(torch.equal(x[1], y[1]) for x, y in [(b.params, before.params)] + [
            (b.states[k], before.states[k]) for k in b.states])
    check(problem, "bf16_master", "all", update, steps=1)


# ------------------------------------------------------------------------------ mutants
def _mutant(monkeypatch, algo: str, old: str, new: str) -> None:
    """Load triton_kernels/<algo>.py with ``old`` replaced by ``new`` in place of the real
    module (elementwise_step_ finds the kernel module by name)."""
    from fusedopt import triton_kernels

    path = Path(triton_kernels.__file__).parent / f"{algo}.py"
    src = path.read_text()
    assert src.count(old) == 1, f"{old!r} not once in {path}"
    src = src.replace(old, new).replace("from .", "from fusedopt.triton_kernels.")
    mutant_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"fusedopt_mutant_{os.getpid()}_{algo}.py"
    mutant_path.write_text(src)
    try:
        loader = importlib.util.spec_from_file_location(f"fusedopt_mutant_{algo}", mutant_path)
        mod = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(mod)
    finally:
        mutant_path.unlink()
    monkeypatch.setitem(sys.modules, f"fusedopt.triton_kernels.{algo}", mod)


@needs_interpreter
@pytest.mark.parametrize("algo,old,new", [
    # Lion's two interpolation weights swapped
    ("lion", "c = lerp(m, g, s[0])", "c = lerp(m, g, s[1])"),
    # Adan without its first-step select (a difference against the stale prev_grad)
    ("adan", "diff = select(s[11], 0.0, g - prev)", "diff = g - prev"),
    # Schedule-Free's y interpolated from the wrong end
    ("schedule_free_adamw", "y = lerp(y, z, s[5])", "y = lerp(z, y, s[5])"),
    # ADOPT moving p at its first step (which only seeds v)
    ("adopt", "return select(s[9], p, p_new), (", "return p_new, ("),
], ids=ALGOS)
def test_mutant_fails_the_budget(monkeypatch, algo, old, new):
    """The comparison can fail: a one-line change in a kernel module is caught."""
    problem = make_problem(algo, steps=2)
    check(problem, "fp32", "plain", CASES[algo], steps=2)  # the real module passes
    _mutant(monkeypatch, algo, old, new)
    with pytest.raises(AssertionError, match="outside the budget|equal to the reference"):
        check(problem, "fp32", "plain", CASES[algo], steps=2)


# ------------------------------------------------------------------------------ tables, checks
@needs_interpreter
def test_states_in_positional_rows():
    """An element-wise algorithm's i-th state is in table row ROW_STATE0 + i (Adan's four:
    rows 3-6), other states of the bucket are not read; the fixed calls keep their rows."""
    from fusedopt.triton_kernels import _common as C

    problem = make_problem("adan", steps=1)
    b = problem.bucket(DTYPES["fp32"])
    b.states["unrelated"] = [torch.full_like(p, 7.0) for p in b.params]
    problem.set_grads(b, 0, DTYPES["fp32"])
    CASES["adan"](triton_backend, b, new_stats(), 1e-2, MODES["plain"])
    ptrs = b.cache["triton"].host_ptrs
    for i, name in enumerate(spec.spec("adan").STATES):
        assert ptrs[C.ROW_STATE0 + i].tolist() == [t.data_ptr() for t in b.states[name]]
    assert C.ROW_STATE0 + 3 == C.ROW_STATE3 < C.NUM_ROWS
    unrelated = {t.data_ptr() for t in b.states["unrelated"] if t.numel()}
    assert not unrelated & set(ptrs.reshape(-1).tolist())
    assert all(torch.all(t == 7.0) for t in b.states["unrelated"])
    assert C.STATE_ROWS["max_exp_avg_sq"] == C.ROW_STATE2


@needs_interpreter
def test_bad_calls_raise_before_touching_anything():
    problem = make_problem("lion", steps=1)
    b, stats = problem.bucket(DTYPES["fp32"]), new_stats()
    problem.set_grads(b, 0, DTYPES["fp32"])
    before, stats0 = copy_bucket(b), stats.clone()
    kw = dict(lr=1e-2, use_prologue=False, telemetry=True)
    with pytest.raises(ValueError, match="hyperparameters"):
        triton_backend.elementwise_step_(b, stats, algo="lion", hyper=(0.9, 0.99), **kw)
    with pytest.raises(ValueError, match="no element-wise algorithm"):
        triton_backend.elementwise_step_(b, stats, algo="lion_typo", hyper=(0.9,), **kw)
    with pytest.raises(KeyError, match="exp_avg_diff"):
        triton_backend.elementwise_step_(b, stats, algo="adan",
                                         hyper=CASES["adan"].hyper, **kw)
    assert torch.equal(stats, stats0) and "triton" not in b.cache
    for x, y in zip(b.params + b.states["exp_avg"] + b.steps,
                    before.params + before.states["exp_avg"] + before.steps):
        assert torch.equal(x, y)


@needs_interpreter
def test_one_kernel_for_every_algorithm():
    """The shared traversal: every algorithm launches the same jit kernel, specialized by its
    module's scalars/update (the constexprs), and nothing else of the kernel differs."""
    from fusedopt.triton_kernels import elementwise as E

    flags = dict(param=torch.float32, grad=torch.float32, use_prologue=False, maximize=False,
                 has_master=False, lr_from_ptr=False, telemetry=False, aligned=True, chunk=4096)
    modes = {a: E.modes_for(a, [torch.float32] * len(spec.spec(a).STATES), **flags)
             for a in ALGOS}
    for a in ALGOS:
        kern = importlib.import_module(f"fusedopt.triton_kernels.{a}")
        assert modes[a]["SCALARS"] is kern.scalars and modes[a]["UPDATE"] is kern.update
        assert modes[a]["N_STATES"] == len(spec.spec(a).STATES)
        assert modes[a]["N_SCALARS"] == spec.spec(a).N_SCALARS
        assert set(modes[a]) == set(E.MODE_NAMES)
    assert len({id(launch.kernel) for launch in E._LAUNCH.values()}) == 1


# ------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("mode", ["plain", "skip", "maximize"])
@pytest.mark.parametrize("dt", ["fp32", "bf16_master", "fp64", "bf16_bf16state"])
@pytest.mark.parametrize("algo", ALGOS)
def test_gpu_matches_reference(algo, dt, mode):
    """Compiled (autotuned, or the fixed telemetry config) on a GPU: the same comparison, with
    a tensor over two GPU chunks."""
    from fusedopt.triton_kernels import _common as C

    update = CASES[algo]
    if mode == "maximize":
        update, mode = ElementwiseUpdate(update.algo, update.hyper, maximize=True), "all"
    problem = make_problem(algo, sizes=SIZES + [C.GPU_CHUNK + 1027])
    check(problem, dt, mode, update, steps=STEPS, device="cuda")
