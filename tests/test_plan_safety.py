"""What a kernel touches is always what was validated (issue 16): bad checkpoints, ``.data``
swaps, recycled grads, replaced state and overlapping params give a clear Python error or the
right result — never a crash or a silent misread — and the cached step plan is rebuilt in
every case that changes what a step reads (Note [step plan], optim/_plan.py).

The scenarios that crashed the process on the old code run in a subprocess (``_isolated``), so
a crash is a test failure, not a dead test run.
"""
from __future__ import annotations

import copy
import gc
import subprocess
import sys
import textwrap
import warnings
import weakref

import pytest
import torch

import fusedopt
from fusedopt import backends

BACKENDS = [b for b in ("cpu", "reference") if b in backends.available_backends("cpu")]


def _isolated(code: str) -> str:
    """Run ``code`` in a fresh interpreter; fail on a crash or a non-zero exit; its stdout."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, env={**_env(), "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, (f"exit code {done.returncode} (a negative code is a signal: "
                                  f"the process crashed)\n{done.stdout[-3000:]}\n"
                                  f"{done.stderr[-3000:]}")
    return done.stdout


def _env() -> dict:
    import os
    return dict(os.environ)


def _model(n=3, numel=(4, 3)):
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(numel)) for _ in range(n)]


def _grads(params, seed=1):
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)


def _snapshot(opt, params):
    return ([p.detach().clone() for p in params],
            {k: {kk: vv.clone() if isinstance(vv, torch.Tensor) else vv for kk, vv in v.items()}
             for k, v in opt.state_dict()["state"].items()})


def _unchanged(opt, params, snap):
    ps, st = snap
    assert all(torch.equal(p.detach(), q) for p, q in zip(params, ps))
    now = opt.state_dict()["state"]
    for k, v in st.items():
        for kk, vv in v.items():
            assert torch.equal(now[k][kk], vv) if isinstance(vv, torch.Tensor) else now[k][kk] == vv


# ------------------------------------------------------------------ 1, 2: bad checkpoints
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,match", [((4, 2), "shape"), ((4, 5), "shape"), ((12,), "shape"),
                                         ((3, 4), "shape")])
def test_moment_of_another_shape_is_refused_at_load(backend, shape, match):
    """Finding 1: smaller moments crashed the next step; larger or reshaped ones were accepted."""
    out = _isolated(f"""
        import copy, torch, fusedopt
        ps = [torch.nn.Parameter(torch.randn(4, 3)) for _ in range(2)]
        opt = fusedopt.AdamW(ps, backend={backend!r})
        for p in ps: p.grad = torch.randn_like(p)
        opt.step()
        sd = copy.deepcopy(opt.state_dict())  # state_dict() shares the live dicts, as torch's
        sd["state"][1]["exp_avg"] = torch.zeros({shape!r})
        before = [p.detach().clone() for p in ps]
        try:
            opt.load_state_dict(sd)
        except ValueError as e:
            assert "param 1" in str(e) and "exp_avg" in str(e), e
            print("refused:", e)
        for p in ps: p.grad = torch.randn_like(p)
        opt.step()  # the optimizer is intact and steps
        print("stepped")
    """)
    assert "refused:" in out and match in out and "stepped" in out


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_moment_is_a_key_error_at_load(backend):
    """Finding 2: a state without exp_avg crashed the next step (torch: KeyError)."""
    out = _isolated(f"""
        import copy, torch, fusedopt
        ps = [torch.nn.Parameter(torch.randn(5)) for _ in range(2)]
        opt = fusedopt.AdamW(ps, backend={backend!r})
        for p in ps: p.grad = torch.randn_like(p)
        opt.step()
        sd = copy.deepcopy(opt.state_dict())
        del sd["state"][0]["exp_avg"]
        try:
            opt.load_state_dict(sd)
        except KeyError as e:
            print("refused:", e)
    """)
    assert "refused:" in out and "exp_avg" in out and "param 0" in out


@pytest.mark.parametrize("backend", BACKENDS)
def test_group_switched_to_amsgrad_without_its_state_is_a_key_error(backend):
    """Finding 2: ``amsgrad=True`` set on a group whose states lack max_exp_avg_sq crashed."""
    out = _isolated(f"""
        import torch, fusedopt
        ps = [torch.nn.Parameter(torch.randn(5)) for _ in range(2)]
        opt = fusedopt.AdamW(ps, backend={backend!r})
        for p in ps: p.grad = torch.randn_like(p)
        opt.step()
        before = [p.detach().clone() for p in ps]
        opt.param_groups[0]["amsgrad"] = True
        try:
            opt.step()
        except KeyError as e:
            print("refused:", e)
        assert all(torch.equal(p.detach(), b) for p, b in zip(ps, before))
    """)
    assert "refused:" in out and "max_exp_avg_sq" in out


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_moment_in_a_checkpoint_is_read_by_index(backend):
    """Finding 3: a non-contiguous moment was read as contiguous (0.448 off after one step)."""
    params = _model(2, (6, 4))
    opt = fusedopt.AdamW(params, backend=backend, lr=0.1)
    _grads(params)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    strided = copy.deepcopy(sd)
    for st in strided["state"].values():
        for k in ("exp_avg", "exp_avg_sq"):
            st[k] = st[k].t().contiguous().t()  # same values, column-major strides
    a = [p.detach().clone().requires_grad_() for p in params]
    b = [p.detach().clone().requires_grad_() for p in params]
    oa, ob = fusedopt.AdamW(a, backend=backend, lr=0.1), fusedopt.AdamW(b, backend=backend, lr=0.1)
    oa.load_state_dict(sd)
    ob.load_state_dict(strided)
    _grads(a, 5)
    _grads(b, 5)
    oa.step()
    ob.step()
    for x, y in zip(a, b):
        assert torch.equal(x, y)


# ------------------------------------------------------------------ 4, 5: .data swaps
@pytest.mark.parametrize("backend", BACKENDS)
def test_param_grown_through_data_is_refused(backend):
    """Finding 4: a vocabulary grown 1000 -> 4000 rows through ``.data`` crashed the step."""
    out = _isolated(f"""
        import torch, fusedopt
        emb = torch.nn.Parameter(torch.randn(1000, 16))
        opt = fusedopt.AdamW([emb], backend={backend!r})
        emb.grad = torch.randn_like(emb); opt.step()
        emb.data = torch.randn(4000, 16)
        emb.grad = torch.randn_like(emb)
        try:
            opt.step()
        except ValueError as e:
            print("refused:", e)
    """)
    assert "refused:" in out and "exp_avg" in out and "(4000, 16)" in out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("swap", ["dtype", "size"])
def test_kept_grad_swapped_through_data_is_revalidated(backend, swap):
    """Finding 5: with ``zero_grad(set_to_none=False)`` a ``p.grad.data`` swap skipped
    validation (NaN params or a crash)."""
    new = "torch.randn(5, dtype=torch.float64)" if swap == "dtype" else "torch.randn(50)"
    out = _isolated(f"""
        import torch, fusedopt
        ps = [torch.nn.Parameter(torch.randn(5)) for _ in range(3)]
        opt = fusedopt.AdamW(ps, backend={backend!r})
        for p in ps: p.grad = torch.randn_like(p)
        opt.step(); opt.zero_grad(set_to_none=False)
        ps[1].grad.data = {new}
        before = [p.detach().clone() for p in ps]
        try:
            opt.step()
        except (TypeError, ValueError) as e:
            print("refused:", type(e).__name__, e)
        assert all(torch.equal(p.detach(), b) for p, b in zip(ps, before))
    """)
    assert "refused:" in out and "param 1" in out


# ------------------------------------------------------------------ 8: no grads held
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_plan_keeps_no_grad_alive(backend):
    """Finding 8: the cached plan kept the last step's grads alive after zero_grad()."""
    params = _model()
    opt = fusedopt.AdamW(params, backend=backend)
    for _ in range(2):
        _grads(params)
        opt.step()
    refs = [weakref.ref(p.grad) for p in params]
    opt.zero_grad()  # set_to_none=True
    gc.collect()
    assert all(r() is None for r in refs)
    _grads(params)
    opt.step()
    refs = [weakref.ref(p.grad) for p in params]
    for p in params:
        p.grad = None  # by hand, not through zero_grad
    gc.collect()
    assert all(r() is None for r in refs)


# ------------------------------------------------------------------ 11: bad lr values
@pytest.mark.parametrize("lr", [float("nan"), -1e-3])
def test_bad_tensor_lr_is_refused_at_construction(lr):
    """Finding 11: a NaN or negative tensor lr was accepted (torch rejects it)."""
    with pytest.raises(ValueError, match="Invalid learning rate"):
        fusedopt.AdamW(_model(), lr=torch.tensor(lr))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lr", [float("nan"), -1e-3])
def test_bad_tensor_lr_written_later_skips_the_step_and_flags_it(backend, lr):
    """A schedule writing a NaN or negative value into a tensor lr: the step is skipped and
    flagged without a host read (finding 11); the next valid lr steps again."""
    params = _model()
    lr_t = torch.tensor(1e-3)
    opt = fusedopt.AdamW(params, lr=lr_t, backend=backend, telemetry=True)
    _grads(params)
    opt.step()
    assert float(opt.lr_invalid) == 0.0
    lr_t.fill_(lr)  # a schedule writing the tensor in place
    _grads(params, 2)
    snap = _snapshot(opt, params)
    opt.step()
    _unchanged(opt, params, snap)
    assert float(opt.lr_invalid) == 1.0 and float(opt.last_stats["lr_invalid"]) == 1.0
    lr_t.fill_(1e-3)
    opt.step()
    assert float(opt.lr_invalid) == 0.0
    assert not torch.equal(params[0].detach(), snap[0][0])


# ------------------------------------------------------------------ 12: shared memory
@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicate_param_is_stepped_once_with_torch_warning(backend):
    """Finding 12: a param listed twice raced with itself at 2 threads."""
    p = torch.nn.Parameter(torch.randn(300_000))
    q = torch.nn.Parameter(p.detach().clone())
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt = fusedopt.AdamW([p, p], backend=backend, lr=0.1)
    ref = fusedopt.AdamW([q], backend=backend, lr=0.1)
    for s in range(3):
        g = torch.randn(p.shape, generator=torch.Generator().manual_seed(s))
        p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    assert torch.equal(p, q)
    assert len(opt.param_groups[0]["params"]) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_params_sharing_memory_are_refused(backend):
    base = torch.randn(100)
    a = torch.nn.Parameter(base[:60])
    b = torch.nn.Parameter(base[40:])
    opt = fusedopt.AdamW([a, b], backend=backend)
    a.grad, b.grad = torch.randn_like(a), torch.randn_like(b)
    snap = (a.detach().clone(), b.detach().clone())
    with pytest.raises(ValueError, match="share memory"):
        opt.step()
    assert torch.equal(a, snap[0]) and torch.equal(b, snap[1])


# ------------------------------------------------------------------ plan invalidation
def _fresh_like(opt_cls, params, sd, backend, **kw):
    """An optimizer built anew over copies of ``params`` with the state_dict ``sd``."""
    copies = [p.detach().clone().requires_grad_() for p in params]
    fresh = opt_cls(copies, backend=backend, **kw)
    fresh.load_state_dict(sd)
    return fresh, copies


def _invalidations():
    """(name, edit): edits between two steps with kept grads, each changing what a step reads."""
    def replace_state(opt, params):
        p = params[1]
        opt.state[p] = {k: (v.clone() * 0.5 if k != "step" else v.clone())
                        for k, v in opt.state[p].items()}

    def replace_moment(opt, params):
        opt.state[params[0]]["exp_avg"] = torch.ones_like(params[0])

    def clear_state(opt, params):
        opt.state.clear()

    def swap_param_storage(opt, params):
        params[2].data = params[2].detach().clone() + 1.0

    def swap_moment_storage(opt, params):
        st = opt.state[params[0]]["exp_avg_sq"]
        st.data = st.detach().clone() * 2.0

    def swap_grad_storage(opt, params):
        params[0].grad.data = params[0].grad.detach().clone() * 3.0

    def new_grad_object(opt, params):
        params[1].grad = params[1].grad.clone() * -1.0

    return [("replace_state", replace_state), ("replace_moment", replace_moment),
            ("clear_state", clear_state), ("swap_param_storage", swap_param_storage),
            ("swap_moment_storage", swap_moment_storage),
            ("swap_grad_storage", swap_grad_storage), ("new_grad_object", new_grad_object)]


def _run_invalidation(backend, edit):
    """Step, edit, step on one optimizer; compare with a fresh optimizer stepping from the edited
    state. Returns whether both agree bitwise."""
    params = _model(3, (7, 5))
    opt = fusedopt.AdamW(params, backend=backend, lr=0.05)
    _grads(params)
    opt.step()
    opt.zero_grad(set_to_none=False)
    _grads(params, 3)
    for p in params:  # kept grads: the same objects, new values
        pass
    opt.step()  # builds and caches the plan with these grad objects
    edit(opt, params)
    fresh, copies = _fresh_like(fusedopt.AdamW, params, opt.state_dict(), backend, lr=0.05)
    for p, c in zip(params, copies):
        c.grad = p.grad.detach().clone()
    opt.step()
    fresh.step()
    return all(torch.equal(p.detach(), c.detach()) for p, c in zip(params, copies)) and all(
        torch.equal(opt.state[p]["exp_avg"], fresh.state[c]["exp_avg"])
        for p, c in zip(params, copies))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,edit", _invalidations(), ids=[n for n, _ in _invalidations()])
def test_plan_is_rebuilt_after(backend, name, edit):
    assert _run_invalidation(backend, edit), name


_STATE_EDITS = [(n, e) for n, e in _invalidations()
                if n in ("replace_state", "replace_moment", "clear_state")]


@pytest.mark.parametrize("name,edit", _STATE_EDITS, ids=[n for n, _ in _STATE_EDITS])
def test_a_stale_plan_mutant_fails_the_invalidation_check(monkeypatch, name, edit):
    """The invalidation tests have teeth: a plan that is reused whatever changed fails them.

    Run on the reference backend, which follows the tensor objects a plan holds: a stale plan
    updates the replaced (or cleared) state. The storage-swap cases are caught by the address
    comparison; a mutant without it would write freed memory on the native backends, which
    cannot be run safely in-process (test_plan_is_rebuilt_after covers them on cpu)."""
    from fusedopt.optim import _base

    real = _base.FusedOptimizer._plan

    def stale(self):
        plan = self._last_plan
        if plan is None:
            return real(self)
        grads = [p.grad for p in plan.params]
        kgrads = [grads[i] for i in plan.with_grad]
        self._fill(plan, kgrads)
        return plan

    monkeypatch.setattr(_base.FusedOptimizer, "_plan", stale)
    assert not _run_invalidation("reference", edit), name


def test_cleared_state_restarts_like_torch():
    """``opt.state.clear()`` with kept grads: training goes on from fresh state, which
    state_dict() shows (torch.optim re-initializes the same way)."""
    params = _model()
    opt = fusedopt.AdamW(params, backend="reference")
    tparams = [p.detach().clone().requires_grad_() for p in params]
    topt = torch.optim.AdamW(tparams)
    for o, ps in ((opt, params), (topt, tparams)):
        _grads(ps)
        o.step()
        o.state.clear()
        o.step()
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert len(sd["state"]) == len(tsd["state"]) == len(params)
    for i in range(len(params)):
        assert float(sd["state"][i]["step"]) == float(tsd["state"][i]["step"]) == 1.0
        torch.testing.assert_close(sd["state"][i]["exp_avg"], tsd["state"][i]["exp_avg"])
    for p, q in zip(params, tparams):
        torch.testing.assert_close(p, q)


def test_state_edits_bump_the_version_and_pickle():
    import pickle

    params = _model()
    opt = fusedopt.AdamW(params, backend="reference")
    v0 = opt.state.version
    opt.state[params[0]]["exp_avg"] = torch.zeros_like(params[0])
    assert opt.state.version > v0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = pickle.loads(pickle.dumps(opt))
    v1 = again.state.version
    p0 = again.param_groups[0]["params"][0]
    again.state[p0]["exp_avg"] = torch.ones_like(p0)
    assert again.state.version > v1


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_grad_set_to_none_drops_its_param_from_the_step(backend):
    """The grad of one param is set to None between steps (its old grad freed): that param
    is not stepped, the others are (a dead weak reference must not pass for 'unchanged')."""
    params = _model()
    opt = fusedopt.AdamW(params, backend=backend)
    _grads(params)
    opt.step()
    opt.step()  # cached plan, kept grads
    params[1].grad = None
    gc.collect()
    before = params[1].detach().clone()
    other = params[0].detach().clone()
    opt.step()
    assert torch.equal(params[1].detach(), before)
    assert not torch.equal(params[0].detach(), other)
