"""Three rules of the kernel contract (fusedopt.backends), on every backend that runs here:

* ``maximize``: every update call ascends (torch.optim's ``maximize``): the gradient
  coefficient is negated, so a call with ``maximize=True`` on grads ``g`` is bitwise the call
  with ``maximize=False`` on ``-g`` (negation is exact), and trajectories match
  torch.optim's ``maximize=True`` over many steps.
* Note [master re-seed] (csrc/math/master.h): with fp32 masters, a 16-bit param written since
  the last step (its bits differ from its master rounded) re-seeds the master: the step runs
  from the written value, bitwise as from a master freshly built from it. Without a write
  nothing changes (the masters follow the reference step by step).
* A tensor lr that is NaN or negative skips the whole call (params, states, masters, step
  counts, telemetry unchanged) and sets ``stats[LR_INVALID]``; a valid one leaves the slot.

Backends: ``reference`` (the oracle), ``cpu`` (the C++ core), ``cuda`` on the CPU emulator of
CUDA (the same csrc/cuda sources built by the host compiler: tests/test_cuda_emulation.py)
and ``triton`` under ``TRITON_INTERPRET=1`` (run in a child process when this one cannot
interpret, as tests/test_triton_backend.py does). Every backend is called through
``fusedopt.ops.Kernels`` with hand-built buckets, plus the optimizer classes for the re-seed.
"""
from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest
import torch

import fusedopt
from fusedopt import _native_cuda
from fusedopt import _stats as S
from fusedopt.backends import Bucket, availability, cuda_backend, load, reference_backend
from fusedopt.backends import triton_backend
from fusedopt.ops import Kernels
from fusedopt.reference.adam_family import AdamHyper

import test_cuda_emulation
from test_cuda_emulation import emulated_module  # noqa: F401  (the fixture building it)

TRITON_OK, _ = triton_backend.availability()
INTERPRETER = TRITON_OK and triton_backend.supports("cpu")
CPU_OK, CPU_WHY = availability("cpu")

BACKENDS = ["reference", "cpu", "cuda", "triton"]

#: the update calls tested: (kind, hyperparameters), torch.optim's equivalent where it exists
ADAM_HP = {
    "adamw": AdamHyper(0.9, 0.99, 1e-8, 0.05, "adam", "decoupled", True),
    "adam": AdamHyper(0.9, 0.99, 1e-8, 0.05, "adam", "coupled", True),
    "amsgrad": AdamHyper(0.9, 0.99, 1e-8, 0.05, "amsgrad", "decoupled", True),
    "rmsprop": AdamHyper(0.0, 0.99, 1e-8, 0.05, "rmsprop", "coupled", True),
    "yogi": AdamHyper(0.9, 0.99, 1e-3, 0.0, "yogi", "decoupled", True),
}
ADAGRAD = dict(lr_decay=1e-3, eps=1e-10, weight_decay=0.05)
#: the same in the order of fusedopt.reference.adagrad.HYPER (lr_decay, eps, weight_decay)
ADAGRAD_HYPER = (ADAGRAD["lr_decay"], ADAGRAD["eps"], ADAGRAD["weight_decay"])
ALGOS = list(ADAM_HP) + ["adagrad", "sgd", "nsgdm"]
LR = 1e-2
RHO = 0.1
SHAPES = [(7, 5), (1,), (33,), (4, 4, 4), (0,), (3000,)]


# ------------------------------------------------------------------------------ backends
@pytest.fixture
def emulated_cuda(request, monkeypatch):
    """The cuda backend on the CPU emulator, patched exactly as tests/test_cuda_emulation.py
    patches it for its own tests (its fixture's function, so the two cannot drift apart)."""
    module = request.getfixturevalue("emulated_module")
    fixture = test_cuda_emulation._cuda_backend_on_emulator
    out = getattr(fixture, "__wrapped__", fixture)(module, monkeypatch)
    if inspect.isgenerator(out):
        next(out)
        request.addfinalizer(lambda: next(out, None))
    return Kernels(cuda_backend)


@pytest.fixture(params=BACKENDS)
def kernels(request) -> Kernels:
    name = request.param
    if name == "cpu" and not CPU_OK:
        pytest.skip(f"cpu backend: {CPU_WHY}")
    if name == "triton" and not INTERPRETER:
        pytest.skip("runs in the TRITON_INTERPRET=1 child process (test_triton_interpreted)")
    if name == "cuda":
        return request.getfixturevalue("emulated_cuda")
    return Kernels(load(name))


@pytest.mark.skipif(INTERPRETER or not TRITON_OK, reason="this process runs them itself")
def test_triton_interpreted():
    """Every triton test of this file, in a child process with TRITON_INTERPRET=1."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          __file__, "-k", "triton and not interpreted"],
                         env=env, capture_output=True, text=True, cwd=os.path.dirname(__file__))
    tail = "\n".join((res.stdout + res.stderr).splitlines()[-40:])
    assert res.returncode == 0, f"TRITON_INTERPRET=1 run of {__file__} failed:\n{tail}"
    assert " passed" in res.stdout and " skipped" not in res.stdout.splitlines()[-1], tail


# ------------------------------------------------------------------------------ buckets
def _states(algo: str, params: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    def zeros(fill=0.0):
        sdt = torch.float64 if params[0].dtype == torch.float64 else torch.float32
        return [torch.full(p.shape, fill, dtype=sdt) for p in params]
    if algo in ADAM_HP:
        names = {"amsgrad": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
                 "rmsprop": ("exp_avg_sq",)}.get(algo, ("exp_avg", "exp_avg_sq"))
        return {n: zeros() for n in names}
    if algo == "adagrad":
        return {"sum": zeros(0.1)}
    if algo == "nsgdm":
        return {"momentum_buffer": zeros()}
    return {}


def make_bucket(algo: str, dtype: torch.dtype, *, master: bool = False, seed: int = 0,
                shapes=SHAPES) -> Bucket:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]
    grads = [torch.zeros_like(p) for p in params]
    steps = [torch.zeros((), dtype=torch.float32) for _ in params]
    masters = [p.float() for p in params] if master else None
    return Bucket(params, grads, steps, _states(algo, params), masters)


def clone_bucket(b: Bucket) -> Bucket:
    c = lambda ts: [t.clone() for t in ts]  # noqa: E731
    return Bucket(c(b.params), c(b.grads), c(b.steps), {k: c(v) for k, v in b.states.items()},
                  c(b.masters) if b.masters is not None else None)


def tensors_of(b: Bucket) -> dict[str, list[torch.Tensor]]:
    out = {"params": b.params, "steps": b.steps, **b.states}
    if b.masters is not None:
        out["masters"] = b.masters
    return out


def assert_bitwise(a: Bucket, b: Bucket, what: str = "") -> None:
    for key, xs in tensors_of(a).items():
        for i, (x, y) in enumerate(zip(xs, tensors_of(b)[key])):
            assert x.dtype == y.dtype and torch.equal(x.view(-1).view(torch.uint8),
                                                      y.view(-1).view(torch.uint8)), \
                f"{what}: {key}[{i}] differs"


def new_stats(scale: float = LR) -> torch.Tensor:
    stats = torch.zeros(S.NUM_SLOTS, dtype=torch.float64)
    stats[S.SCALE] = scale
    return stats


def step(k: Kernels, algo: str, b: Bucket, stats: torch.Tensor, *, lr=LR, maximize=False,
         use_prologue=False, telemetry=False) -> None:
    """One update call of ``algo`` (NSGDm: its momentum pass, then the step along it).
    ``maximize`` is passed only when set: the default must be False."""
    kw = {"maximize": True} if maximize else {}
    if algo in ADAM_HP:
        k.adam_step_(b, stats, lr=lr, hp=ADAM_HP[algo], use_prologue=use_prologue,
                     use_abc=False, telemetry=telemetry, **kw)
    elif algo == "adagrad":
        k.elementwise_step_(b, stats, algo="adagrad", lr=lr, hyper=ADAGRAD_HYPER,
                            use_prologue=use_prologue, telemetry=telemetry, **kw)
    elif algo == "sgd":
        k.sgd_step_(b, stats, direction="grad", use_prologue=use_prologue, telemetry=telemetry,
                    **kw)
    else:
        k.momentum_step_(b, stats, rho=RHO, use_prologue=use_prologue, **kw)
        k.sgd_step_(b, stats, direction="momentum", use_prologue=use_prologue,
                    telemetry=telemetry, **kw)


def set_grads(b: Bucket, gen: torch.Generator, sign: float = 1.0) -> list[torch.Tensor]:
    """Fresh random grads written in place (the buckets' cached tables stay valid)."""
    new = []
    for g in b.grads:
        x = torch.randn(g.shape, generator=gen, dtype=torch.float64).to(g.dtype)
        g.copy_(x * sign)
        new.append(x)
    return new


# ------------------------------------------------------------------------------ maximize
@pytest.mark.parametrize("prologue", [False, True])
@pytest.mark.parametrize("algo", ALGOS)
def test_maximize_is_descent_on_the_negated_grad(kernels, algo, prologue):
    """maximize=True on g is bitwise maximize=False on -g: params, states, steps and every
    stats slot (telemetry squares unchanged), with and without a prologue's coef."""
    up, down = make_bucket(algo, torch.float32), make_bucket(algo, torch.float32)
    s_up, s_down = new_stats(), new_stats()
    for s in (s_up, s_down):
        s[S.COEF] = 0.75  # an unscale x clip coefficient (read only with the prologue)
    gen_up, gen_down = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(4):
        set_grads(up, gen_up)
        set_grads(down, gen_down, sign=-1.0)
        step(kernels, algo, up, s_up, maximize=True, use_prologue=prologue, telemetry=True)
        step(kernels, algo, down, s_down, maximize=False, use_prologue=prologue, telemetry=True)
        assert_bitwise(up, down, f"{kernels.name}/{algo}")
        assert torch.equal(s_up, s_down)
    assert s_up[S.UPDATE_SQ] > 0 and s_up[S.STEP_GRAD_SQ] > 0


@pytest.mark.parametrize("algo", ALGOS)
def test_maximize_ascends(kernels, algo):
    """The flag is read: with the same grads, maximize moves every param the other way."""
    up, down = make_bucket(algo, torch.float32), make_bucket(algo, torch.float32)
    start = [p.clone() for p in up.params]
    set_grads(up, torch.Generator().manual_seed(1))
    set_grads(down, torch.Generator().manual_seed(1))
    step(kernels, algo, up, new_stats(), maximize=True)
    step(kernels, algo, down, new_stats(), maximize=False)
    for p0, pu, pd in zip(start, up.params, down.params):
        if p0.numel():
            assert not torch.equal(pu, pd)
            # first step of plain SGD and NSGDm is exactly p -/+ lr * g (times rho)
            if algo in ("sgd",):
                assert torch.allclose(pu - p0, -(pd - p0), rtol=1e-5, atol=1e-7)


TORCH_OPT = {
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=LR, betas=(0.9, 0.99), eps=1e-8,
                                          weight_decay=0.05, maximize=True),
    "adam": lambda ps: torch.optim.Adam(ps, lr=LR, betas=(0.9, 0.99), eps=1e-8,
                                        weight_decay=0.05, maximize=True),
    "amsgrad": lambda ps: torch.optim.AdamW(ps, lr=LR, betas=(0.9, 0.99), eps=1e-8,
                                            weight_decay=0.05, amsgrad=True, maximize=True),
    "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=LR, alpha=0.99, eps=1e-8,
                                              weight_decay=0.05, maximize=True),
    "adagrad": lambda ps: torch.optim.Adagrad(ps, lr=LR, lr_decay=1e-3, weight_decay=0.05,
                                              initial_accumulator_value=0.1, eps=1e-10,
                                              maximize=True),
    "sgd": lambda ps: torch.optim.SGD(ps, lr=LR, maximize=True),
}
REL = {torch.float32: 1e-6, torch.float64: 1e-12}
#: steps per backend: the interpreter and the emulator pay milliseconds per launch
TORCH_STEPS = {"reference": 150, "cpu": 150, "triton": 25, "cuda": 25}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("algo", list(TORCH_OPT))
def test_maximize_matches_torch_optim(kernels, algo, dtype):
    """150 steps (25 on the interpreter and the emulator) on random grads against
    torch.optim's ``maximize=True``: max |fusedopt - torch| / max |torch| per tensor <= 1e-6
    (fp32) / 1e-12 (fp64), as the reference is held to torch without maximize
    (tests/test_reference_vs_torch.py)."""
    b = make_bucket(algo, dtype)
    theirs = [p.clone().requires_grad_() for p in b.params]
    opt = TORCH_OPT[algo](theirs)
    gen = torch.Generator().manual_seed(9)
    stats = new_stats()
    for _ in range(TORCH_STEPS[kernels.name]):
        grads = set_grads(b, gen)
        for p, g in zip(theirs, grads):
            p.grad = g.to(dtype)
        opt.step()
        step(kernels, algo, b, stats, maximize=True)
    for ours, ref in zip(b.params, theirs):
        if ours.numel():
            err = float((ours - ref.detach()).abs().max() / ref.detach().abs().max())
            assert err <= REL[dtype], (algo, err)


@pytest.mark.parametrize("algo", ["adamw", "adam", "amsgrad", "rmsprop", "adagrad"])
def test_optimizer_maximize_matches_torch_optim(kernels, algo):
    """Through the optimizer classes (per-group ``maximize``, as the registry builds them):
    fp32, random grads, the same bound and step counts as the kernel-level test."""
    from fusedopt.registry import ALGORITHMS

    info = ALGORITHMS[algo]
    gen = torch.Generator().manual_seed(4)
    init = [torch.randn(s, generator=gen) for s in SHAPES]
    ours = [p.clone().requires_grad_() for p in init]
    theirs = [p.clone().requires_grad_() for p in init]
    opt = info.make(ours, backend=kernels.name, maximize=True)
    ref = info.make_torch(theirs, maximize=True, foreach=False)
    for _ in range(TORCH_STEPS[kernels.name]):
        for p, q in zip(ours, theirs):
            g = torch.randn(p.shape, generator=gen)
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        if a.numel():
            err = float((a - b).abs().max() / b.abs().max())
            assert err <= REL[torch.float32], (algo, err)


# ------------------------------------------------------------------------------ master re-seed
MASTER_DTYPES = [torch.bfloat16, torch.float16]


def _train(k: Kernels, algo: str, b: Bucket, stats: torch.Tensor, gen, n: int) -> None:
    for _ in range(n):
        set_grads(b, gen)
        step(k, algo, b, stats)


def _write(b: Bucket, seed: int) -> list[torch.Tensor]:
    """Overwrite the params as a user would (load_state_dict, re-init, clamp_): tensor 0 fully,
    the last tensor half, one tensor not at all. Returns per param the written elements."""
    gen = torch.Generator().manual_seed(seed)
    written = []
    for i, p in enumerate(b.params):
        new = (torch.randn(p.shape, generator=gen, dtype=torch.float64) * 3).to(p.dtype)
        if i == 1:
            new = p.clone()  # untouched
        elif i == len(b.params) - 1:
            new = torch.where(torch.arange(p.numel()).view(p.shape) % 2 == 0, new, p)
        written.append(new.view(torch.int16) != p.view(torch.int16))
        p.copy_(new)
    return written


@pytest.mark.parametrize("dtype", MASTER_DTYPES)
@pytest.mark.parametrize("algo", ALGOS)
def test_written_param_reseeds_its_master(kernels, algo, dtype):
    """After 3 steps, params are written; the next step equals, bitwise, the step of the same
    bucket whose masters were freshly built from the written params (exact widening), and the
    unwritten elements keep their masters' extra bits."""
    a = make_bucket(algo, dtype, master=True)
    stats = new_stats()
    _train(kernels, algo, a, stats, torch.Generator().manual_seed(2), 3)
    written = _write(a, seed=7)
    assert any(w.any() for w in written) and not all(w.all() for w in written if w.numel())
    fresh = clone_bucket(a)
    fresh.masters = [torch.where(w, p.float(), m) for w, p, m in zip(written, a.params, a.masters)]
    assert any(not torch.equal(m, f) for m, f in zip(a.masters, fresh.masters))
    gen_a, gen_f = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    for n in range(2):  # the re-seeding step, then an ordinary one
        set_grads(a, gen_a)
        set_grads(fresh, gen_f)
        step(kernels, algo, a, stats.clone())
        step(kernels, algo, fresh, stats.clone())
        assert_bitwise(a, fresh, f"{kernels.name}/{algo}/{dtype} step {n}")
    for p, m in zip(a.params, a.masters):
        assert torch.equal(p, m.to(dtype))  # the store's rounding: param = master rounded


@pytest.mark.parametrize("dtype", MASTER_DTYPES)
@pytest.mark.parametrize("algo", ["adamw", "adagrad", "sgd"])
def test_skipped_call_does_not_reseed(kernels, algo, dtype):
    """found_inf after a write: nothing is written, the stale master included; the next
    (unskipped) step still sees the write and re-seeds."""
    a = make_bucket(algo, dtype, master=True)
    stats = new_stats()
    _train(kernels, algo, a, stats, torch.Generator().manual_seed(2), 2)
    _write(a, seed=3)
    before = clone_bucket(a)
    stats[S.FOUND_INF] = 1.0
    stats[S.COEF] = 1.0
    set_grads(a, torch.Generator().manual_seed(6))
    step(kernels, algo, a, stats, use_prologue=True, telemetry=True)
    assert_bitwise(a, before, "skipped call")
    stats[S.FOUND_INF] = 0.0
    step(kernels, algo, a, stats, use_prologue=True)
    for p, m in zip(a.params, a.masters):
        assert torch.equal(p, m.to(dtype))
    # the written tensor 0 moved from its written value by one small step, not back to the
    # stale master's trajectory
    assert float((a.params[0].float() - before.params[0].float()).abs().max()) < 0.1


@pytest.mark.parametrize("dtype", MASTER_DTYPES)
@pytest.mark.parametrize("algo", ["adamw", "amsgrad", "adagrad", "sgd", "nsgdm"])
def test_without_a_write_masters_follow_the_reference(kernels, algo, dtype):
    """No write: every step, from the same state, the backend's fp32 masters are within 4 fp32
    ulps (of each element's magnitude) of the reference's, whose update starts from the
    master exactly as before the rule. A spurious re-seed (a wrong rounding in the check)
    would start from the 16-bit param instead: up to half a 16-bit ulp, thousands of fp32
    ulps, away."""
    b = make_bucket(algo, dtype, master=True)
    stats = new_stats()
    gen = torch.Generator().manual_seed(8)
    ref = Kernels(reference_backend)
    for _ in range(5):
        set_grads(b, gen)
        r, rs = clone_bucket(b), stats.clone()
        step(kernels, algo, b, stats)
        step(ref, algo, r, rs)
        for m, mr in zip(b.masters, r.masters):
            ulp = torch.finfo(torch.float32).eps * torch.maximum(m.abs(), mr.abs())
            assert torch.all((m - mr).abs() <= 4 * ulp), (algo, float((m - mr).abs().max()))
        for p, m in zip(b.params, b.masters):
            assert torch.equal(p, m.to(dtype))


def test_reference_without_a_write_is_the_master_update(monkeypatch):
    """The oracle itself: with no write, the rule is the identity (bitwise the update from the
    master, i.e. the rule switched off), over 20 AdamW steps."""
    ref = Kernels(reference_backend)
    a = make_bucket("adamw", torch.bfloat16, master=True)
    b = clone_bucket(a)
    ga, gb = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    sa, sb = new_stats(), new_stats()
    for _ in range(20):
        set_grads(a, ga)
        step(ref, "adamw", a, sa)
    monkeypatch.setattr(reference_backend, "reseed_master", lambda master, param: master)
    for _ in range(20):
        set_grads(b, gb)
        step(ref, "adamw", b, sb)
    assert_bitwise(a, b, "reference")


@pytest.mark.parametrize("dtype", MASTER_DTYPES)
def test_optimizer_write_after_steps_equals_fresh_optimizer(kernels, dtype):
    """Through the optimizer (NSGD: no moments, so a fresh optimizer is comparable): steps,
    then ``p.copy_(new)`` (a fine-tune loading pretrained weights), then a step, equals bitwise
    a fresh ``master_weights=True`` optimizer built on ``new`` taking that step."""
    name = kernels.name
    gen = torch.Generator().manual_seed(3)
    params = [torch.randn(s, generator=gen).to(dtype).requires_grad_() for s in SHAPES]
    opt = fusedopt.NSGD(params, lr=0.05, master_weights=True, backend=name)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(dtype)
        opt.step()
    new = [torch.randn(p.shape, generator=gen).to(dtype) for p in params]
    # a "write" of the bits a param already holds changes nothing (its master keeps its extra
    # bits): make every element really differ, as loading other weights does
    new = [torch.where(n.view(torch.int16) == p.detach().view(torch.int16), n + 1, n)
           for n, p in zip(new, params)]
    assert all((n.view(torch.int16) != p.detach().view(torch.int16)).all()
               for n, p in zip(new, params))
    with torch.no_grad():
        for p, n in zip(params, new):
            p.copy_(n)
    fresh_params = [n.clone().requires_grad_() for n in new]
    fresh = fusedopt.NSGD(fresh_params, lr=0.05, master_weights=True, backend=name)
    grads = [torch.randn(p.shape, generator=gen).to(dtype) for p in params]
    for ps, o in ((params, opt), (fresh_params, fresh)):
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        o.step()
    for p, q in zip(params, fresh_params):
        assert torch.equal(p.detach(), q.detach())
    for p, q in zip(params, fresh_params):
        assert torch.equal(opt.state[p]["master_param"], fresh.state[q]["master_param"])


# ------------------------------------------------------------------------------ invalid lr
@pytest.mark.parametrize("lr_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), -1.0])
@pytest.mark.parametrize("algo", ["adamw", "amsgrad", "rmsprop", "adagrad"])
def test_invalid_tensor_lr_skips_the_call(kernels, algo, bad, lr_dtype):
    """NaN or negative tensor lr: params, states, masters, steps and every other stats slot
    bitwise unchanged (telemetry on: no sum added), stats[LR_INVALID] = 1."""
    for master in (False, True):
        b = make_bucket(algo, torch.bfloat16 if master else torch.float32, master=master)
        stats = new_stats()
        _train(kernels, algo, b, stats, torch.Generator().manual_seed(2), 2)
        set_grads(b, torch.Generator().manual_seed(3))
        before, stats_before = clone_bucket(b), stats.clone()
        step(kernels, algo, b, stats, lr=torch.tensor(bad, dtype=lr_dtype), telemetry=True)
        assert_bitwise(b, before, f"{kernels.name}/{algo} lr={bad}")
        assert stats[S.LR_INVALID] == 1.0
        stats[S.LR_INVALID] = 0.0
        assert torch.equal(stats, stats_before)


@pytest.mark.parametrize("algo", ["adamw", "adagrad"])
def test_valid_tensor_lr_leaves_the_slot(kernels, algo):
    """A valid tensor lr (0 included) updates as the same float lr does and leaves the slot."""
    for lr in (LR, 0.0):
        b, f = make_bucket(algo, torch.float32), make_bucket(algo, torch.float32)
        sb, sf = new_stats(), new_stats()
        sb[S.LR_INVALID] = sf[S.LR_INVALID] = 0.25  # a value no kernel writes
        set_grads(b, torch.Generator().manual_seed(1))
        set_grads(f, torch.Generator().manual_seed(1))
        step(kernels, algo, b, sb, lr=torch.tensor(lr, dtype=torch.float32), telemetry=True)
        step(kernels, algo, f, sf, lr=float(torch.tensor(lr, dtype=torch.float32)),
             telemetry=True)
        assert_bitwise(b, f, f"{kernels.name}/{algo}")
        assert sb[S.LR_INVALID] == 0.25 and torch.equal(sb, sf)
        assert all(int(s) == 1 for s in b.steps)


@pytest.mark.parametrize("algo", ["adamw", "adagrad"])
def test_invalid_device_lr_on_the_cuda_kernels(emulated_cuda, monkeypatch, algo):
    """The cuda kernels' own check (a device tensor lr, read by the kernels through its
    pointer): on the emulator every tensor is host memory, so the tensor's pointer is handed
    to the kernels as a GPU run would (lr_args passes CPU tensors by value otherwise)."""
    codes = {torch.float32: 0, torch.float64: 3}
    monkeypatch.setattr(_native_cuda, "lr_args", lambda lr: (
        (0.0, lr.data_ptr(), codes[lr.dtype]) if isinstance(lr, torch.Tensor)
        else (float(lr), 0, 0)))
    for bad in (float("nan"), -1.0):
        b = make_bucket(algo, torch.bfloat16, master=True)
        stats = new_stats()
        set_grads(b, torch.Generator().manual_seed(3))
        before, stats_before = clone_bucket(b), stats.clone()
        step(emulated_cuda, algo, b, stats, lr=torch.tensor(bad, dtype=torch.float64),
             telemetry=True)
        assert_bitwise(b, before, f"cuda/{algo} device lr={bad}")
        assert stats[S.LR_INVALID] == 1.0
        stats[S.LR_INVALID] = 0.0
        assert torch.equal(stats, stats_before)
    b, f = make_bucket(algo, torch.float32), make_bucket(algo, torch.float32)
    sb, sf = new_stats(), new_stats()
    set_grads(b, torch.Generator().manual_seed(1))
    set_grads(f, torch.Generator().manual_seed(1))
    step(emulated_cuda, algo, b, sb, lr=torch.tensor(LR, dtype=torch.float64))
    step(emulated_cuda, algo, f, sf, lr=LR)
    assert_bitwise(b, f, "valid device lr")
    assert sb[S.LR_INVALID] == 0.0


@pytest.mark.skipif(not INTERPRETER, reason="runs in the TRITON_INTERPRET=1 child process")
@pytest.mark.parametrize("algo", ["adamw", "adagrad"])
def test_triton_host_read_lr(monkeypatch, algo):
    """The triton backend reads a CPU tensor lr with GPU params on the host (lr_arguments):
    the same rule applies there. Forced here on CPU tensors by passing the value as it would."""
    from fusedopt.triton_kernels import _common

    real = _common.lr_arguments
    monkeypatch.setattr(_common, "lr_arguments", lambda lr, stats: (
        (float(lr), stats, False) if isinstance(lr, torch.Tensor) else real(lr, stats)))
    k = Kernels(triton_backend)
    for bad in (float("nan"), -1.0):
        b = make_bucket(algo, torch.bfloat16, master=True)
        stats = new_stats()
        set_grads(b, torch.Generator().manual_seed(3))
        before, stats_before = clone_bucket(b), stats.clone()
        step(k, algo, b, stats, lr=torch.tensor(bad), telemetry=True)
        assert_bitwise(b, before, f"triton/{algo} host lr={bad}")
        assert stats[S.LR_INVALID] == 1.0
        stats[S.LR_INVALID] = 0.0
        assert torch.equal(stats, stats_before)
    b, f = make_bucket(algo, torch.float32), make_bucket(algo, torch.float32)
    sb, sf = new_stats(), new_stats()
    set_grads(b, torch.Generator().manual_seed(1))
    set_grads(f, torch.Generator().manual_seed(1))
    step(k, algo, b, sb, lr=torch.tensor(LR, dtype=torch.float64))
    step(k, algo, f, sf, lr=LR)
    assert_bitwise(b, f, "valid host lr")
    assert sb[S.LR_INVALID] == 0.0


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_custom_ops_carry_maximize(backend):
    """The torch.library ops (what a torch.compile'd step calls) take ``maximize`` (schema,
    fake impl and mutations checked by opcheck) and give the eager call's bits."""
    if backend == "cpu" and not CPU_OK:
        pytest.skip(CPU_WHY)
    k = Kernels(load(backend))
    a, b = make_bucket("adamw", torch.float32), make_bucket("adamw", torch.float32)
    set_grads(a, torch.Generator().manual_seed(1))
    set_grads(b, torch.Generator().manual_seed(1))
    sa, sb = new_stats(), new_stats()
    hp = ADAM_HP["adamw"]
    args = lambda x, s: (x.params, x.grads, x.states["exp_avg"], x.states["exp_avg_sq"], [],  # noqa: E731
                         [], x.steps, s, LR, None, hp.beta1, hp.beta2, hp.eps, hp.weight_decay,
                         hp.variant, hp.decay, hp.bias_correction, False, False, True, backend)
    torch.library.opcheck(torch.ops.fusedopt.adam_step_.default,
                          args(clone_bucket(a), new_stats()), {"maximize": True})
    torch.ops.fusedopt.adam_step_(*args(a, sa), maximize=True)
    step(k, "adamw", b, sb, maximize=True, telemetry=True)
    assert_bitwise(a, b, f"{backend} op vs eager")
    assert torch.equal(sa, sb)
    n = make_bucket("nsgdm", torch.float32)
    torch.library.opcheck(torch.ops.fusedopt.momentum_step_.default,
                          (n.params, n.grads, n.states["momentum_buffer"], n.steps, new_stats(),
                           RHO, False, backend), {"maximize": True})
    torch.library.opcheck(torch.ops.fusedopt.sgd_step_.default,
                          (n.params, n.grads, [], [], n.steps, new_stats(), "grad", False, True,
                           backend), {"maximize": True})
    ad = make_bucket("adagrad", torch.float32)
    torch.library.opcheck(torch.ops.fusedopt.elementwise_step_.default,
                          (ad.params, ad.grads, ad.states["sum"], [], [], [], [], ad.steps,
                           new_stats(), "adagrad", LR, torch.tensor(LR), [1e-3, 1e-10, 0.0],
                           False, True, backend),
                          {"maximize": True})


def test_lr_invalid_slot_agrees_everywhere():
    """The slot has one number in Python, the Triton constants and the C++ header."""
    from fusedopt.triton_kernels import _common

    assert S.LR_INVALID == 19 == _common.LR_INVALID and S.SLOT_NAMES["LR_INVALID"] == 19
    if CPU_OK:
        from fusedopt import _native

        assert _native.native().STATS_SLOTS["LR_INVALID"] == 19
