"""The native step signature (Note [step signature], csrc/step_signature.cpp; issue 18).

One native call re-checks, before every step, everything the kernels will read: param objects
and group lists, and the address, dtype, sizes, strides and device of every param, state,
master, step count and grad. These tests hold it to three things:

* it reads tensors exactly as Python does (many dtypes, views, layouts);
* every change that alters what a step reads makes the step revalidate (the plan is rebuilt,
  or the new grads checked), on the native path and on the Python fallback, and a signature
  that never notices anything fails those checks (the tests have teeth);
* while nothing changes, no plan or bucket is rebuilt, with kept grads and with fresh grads
  (what ``zero_grad()`` + ``backward()`` gives each step).
"""
from __future__ import annotations

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import fusedopt
from fusedopt import _native, _shim, backends
from fusedopt.optim import _base

BACKENDS = [b for b in ("cpu", "reference") if b in backends.available_backends("cpu")]
NATIVE = _native.LOAD_ERROR is None

needs_native = pytest.mark.skipif(not NATIVE, reason="fusedopt._C is not built")


@pytest.fixture(params=["native", "python"])
def path(request, monkeypatch):
    """Run the test with the native signature, then with the Python fallback."""
    if request.param == "native":
        if not NATIVE:
            pytest.skip("fusedopt._C is not built")
        assert _shim.native() is not None
    else:
        monkeypatch.setattr(_shim, "_MODULE", False)
    return request.param


def _params(n=3, shape=(5, 5), dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=gen).to(dtype)) for _ in range(n)]


def _grads(params, seed=1, dtype=None):
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).to(dtype or p.dtype)


# ------------------------------------------------------------------ reading tensors
def _tensors() -> list[torch.Tensor]:
    out = []
    for dt in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
               torch.int8, torch.bool, torch.complex64):
        base = torch.zeros(4 * 5 * 6, dtype=dt)
        out += [base, base[3:], base[::2], base.reshape(4, 5, 6).transpose(0, 2),
                base.reshape(4, 5, 6)[1:, ::2], base.reshape(2, 3, 4, 5)
                .to(memory_format=torch.channels_last), base[:1].reshape(()),
                base[:0].reshape(0, 7), base[:6].reshape(6, 1).expand(6, 3)]
    out.append(torch.nn.Parameter(torch.zeros(3, 3)))
    return out


@needs_native
def test_the_shim_reads_what_python_reads():
    C = _shim.native()
    assert C is not None, "torch's C shim did not load: the step signature runs in Python"
    ts = _tensors()
    ptrs, numels, dtypes, strides = C.signature(ts)
    for i, t in enumerate(ts):
        assert (ptrs[i], numels[i], dtypes[i], strides[i]) == _shim.python_signature(t), i
        meta = C.tensor_meta(t)
        assert meta[0] == t.data_ptr() and meta[5] == tuple(t.shape), i
    assert _native.signature(ts) == tuple(
        tuple(col) for col in zip(*map(_shim.python_signature, ts)))


@needs_native
def test_a_tensor_the_shim_cannot_read_is_refused():
    """A tensor torch's shim refuses to read (a sparse tensor has no strides; a wrapper
    subclass such as DTensor has no storage) raises ValueError, on which the signature
    function and the plan take their Python path."""
    C = _shim.native()
    sparse = torch.zeros(3).to_sparse()
    with pytest.raises(ValueError):
        C.signature([sparse])
    with pytest.raises(ValueError):
        C.StepSignature([{"params": []}], [sparse], [], False)


class _OwnCdata(torch.Tensor):
    """A subclass that redefines ``_cdata``: the shim must never take its value for a
    TensorImpl (it would read arbitrary memory)."""

    @property
    def _cdata(self):
        return 12345


@needs_native
def test_a_subclass_redefining_cdata_is_never_read_natively():
    C = _shim.native()
    odd = torch.Tensor._make_subclass(_OwnCdata, torch.zeros(3))
    with pytest.raises(ValueError):
        C.signature([odd])
    p = torch.Tensor._make_subclass(_OwnCdata, torch.zeros(4), True)
    opt = fusedopt.AdamW([p], backend="cpu")
    p.grad = torch.ones(4)
    opt.step()
    opt.step()
    assert opt._last_plan.native is None  # the Python check runs for it
    assert torch.all(p.detach() < 0)


# ------------------------------------------------------------------ invalidation
def _fresh_from(opt, params, backend, **kw):
    copies = [p.detach().clone().requires_grad_() for p in params]
    fresh = fusedopt.AdamW(copies, backend=backend, **kw)
    fresh.load_state_dict(opt.state_dict())
    for p, c in zip(params, copies):
        if p.grad is not None and p.grad.dtype != c.dtype:
            c.grad_dtype = None  # torch >= 2.10 accepts an fp32 grad of a bf16 param so only
        c.grad = None if p.grad is None else p.grad.detach().clone()
    return fresh, copies


def _stepped_like_fresh(backend, edit, dtype=torch.float32, **kw):
    """Two steps (the second one on a cached plan), ``edit``, then one more step; compared
    bitwise with an optimizer built anew from the edited state and params."""
    params = _params(dtype=dtype)
    opt = fusedopt.AdamW(params, backend=backend, lr=0.05, **kw)
    for s in range(2):
        _grads(params, seed=s)
        opt.step()
    edit(opt, params)
    fresh, copies = _fresh_from(opt, params, backend, lr=0.05, **kw)
    for g_fresh, g in zip(fresh.param_groups, opt.param_groups):
        for k, v in g.items():
            if k != "params":
                g_fresh[k] = v
    opt.step()
    fresh.step()
    return all(torch.equal(p.detach(), c.detach()) for p, c in zip(params, copies))


def _lr_to_tensor(opt, params):
    opt.param_groups[0]["lr"] = torch.tensor(0.01)


def _lr_to_float(opt, params):
    opt.param_groups[0]["lr"] = torch.tensor(0.01)
    opt.step()
    opt.param_groups[0]["lr"] = 0.2


def _new_weight_decay(opt, params):
    opt.param_groups[0]["weight_decay"] = 0.5


def _new_betas(opt, params):
    opt.param_groups[0]["betas"] = (0.5, 0.6)


def _grads_moved(opt, params):
    keep = [p.grad for p in params]  # alive: the fresh grads get other addresses
    _grads(params, seed=7)
    opt._keep = keep


def _grad_transposed(opt, params):
    params[1].grad = torch.randn(5, 5).t()  # another layout: staged through a copy


def _grads_kept_new_values(opt, params):
    for p in params:
        p.grad.mul_(-2.0)


HYPER_AND_GRAD_EDITS = [_lr_to_tensor, _lr_to_float, _new_weight_decay, _new_betas,
                        _grads_moved, _grad_transposed, _grads_kept_new_values]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("edit", HYPER_AND_GRAD_EDITS, ids=lambda f: f.__name__.strip("_"))
def test_a_step_after_an_edit_is_the_step_of_a_fresh_optimizer(path, backend, edit):
    assert _stepped_like_fresh(backend, edit)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grads_of_another_dtype_move_the_param_to_another_bucket(path, backend):
    """bf16 params whose grads turn from bf16 to fp32 (both accepted): another bucket."""
    def to_fp32(opt, params):
        for p in params:
            if hasattr(p, "grad_dtype"):
                p.grad_dtype = None  # torch >= 2.10 accepts an fp32 grad of a bf16 param so only
        _grads(params, seed=5, dtype=torch.float32)

    assert _stepped_like_fresh(backend, to_fp32, dtype=torch.bfloat16)


def _drop_last_param_in_place(opt, params):
    del opt.param_groups[0]["params"][2]


def _replace_param_in_place(opt, params):
    opt.param_groups[0]["params"][2] = opt._other


GROUP_LIST_EDITS = [_drop_last_param_in_place, _replace_param_in_place]


def _group_list_edit_is_seen(backend, edit) -> bool:
    """The group's own params list edited in place: the step updates exactly the params the
    list now holds."""
    params = _params()
    other = torch.nn.Parameter(torch.ones(5, 5))
    opt = fusedopt.AdamW(params, backend=backend, lr=0.05)
    opt._other = other
    for s in range(2):
        _grads(params, seed=s)
        opt.step()
    other.grad = torch.ones(5, 5)
    edit(opt, params)
    before = [p.detach().clone() for p in params + [other]]
    opt.step()
    listed = {id(p) for p in opt.param_groups[0]["params"]}
    return all(torch.equal(p.detach(), b) != (id(p) in listed)
               for p, b in zip(params + [other], before))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("edit", GROUP_LIST_EDITS, ids=lambda f: f.__name__.strip("_"))
def test_a_group_list_edited_in_place_is_seen(path, backend, edit):
    assert _group_list_edit_is_seen(backend, edit)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_bad_value_written_between_steps_is_refused(path, backend):
    params = _params()
    opt = fusedopt.AdamW(params, backend=backend)
    _grads(params)
    opt.step()
    opt.step()
    before = [p.detach().clone() for p in params]
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="learning rate"):
        opt.step()
    opt.param_groups[0]["lr"] = 1e-3
    opt.param_groups[0]["betas"] = [0.9, 0.999]  # a list: checked every step
    opt.step()
    opt.param_groups[0]["betas"][1] = 1.5
    before = [p.detach().clone() for p in params]
    with pytest.raises(ValueError, match="beta"):
        opt.step()
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_grad_of_another_shape_is_refused_naming_the_param(path, backend):
    params = _params()
    opt = fusedopt.AdamW(params, backend=backend)
    _grads(params)
    opt.step()
    opt.step()
    params[2].grad.data = torch.randn(25)  # torch refuses it as .grad, not as .grad.data
    before = [p.detach().clone() for p in params]
    with pytest.raises(ValueError, match="param 2"):
        opt.step()
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))


# ---- what only the native signature sees: a .data swap keeping the address and numel
@needs_native
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_param_transposed_through_data_is_revalidated(backend):
    """``p.data = p.data.t()`` and the same for its kept grad (same addresses, dtypes and
    element counts, other strides): the moments no longer share the param's layout, which the
    step refuses, naming the param. The Python check (addresses and element counts) missed it
    and stepped the old layout."""
    params = _params()
    opt = fusedopt.AdamW(params, backend=backend)
    _grads(params)
    opt.step()
    opt.step()
    params[1].data = params[1].data.t()
    params[1].grad.data = params[1].grad.data.t()  # the same grad object, transposed too
    with pytest.raises(ValueError, match="param 1.*strides|strides.*param 1"):
        opt.step()


@needs_native
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_param_reinterpreted_through_data_is_stepped_as_its_new_dtype(backend):
    """``p.data = p.data.view(torch.float16)`` on a bf16 param and its kept grad (same
    addresses, sizes and strides): the next step runs the fp16 kernel, as a fresh optimizer
    does. The Python check missed it and ran the bf16 kernel on fp16 bits."""
    def reinterpret(opt, params):
        params[0].data = params[0].data.view(torch.float16)
        params[0].grad.data = params[0].grad.data.view(torch.float16)  # the same grad object

    assert _stepped_like_fresh(backend, reinterpret, dtype=torch.bfloat16)


# ------------------------------------------------------------------ teeth
class _StaleSignature:
    """A mutant: a signature that says "unchanged" whatever happened, with the grads its
    params hold now (as the real one returns them)."""

    def __init__(self, groups, watched, kernel_index, sharded):
        self.params = [p for g in groups for p in g["params"]]
        self.index = list(kernel_index)

    def check(self, groups):
        out = [None] * (max(self.index, default=-1) + 1)
        for p, k in zip(self.params, self.index):
            if k >= 0:
                out[k] = p.grad
        return out, False

    def grad_ptrs(self):
        raise AssertionError("a stale signature never reports moved grads")


@pytest.mark.parametrize("edit", GROUP_LIST_EDITS, ids=lambda f: f.__name__.strip("_"))
def test_a_stale_signature_mutant_fails_the_group_list_check(monkeypatch, edit):
    """Run on the reference backend, which steps the tensor objects the plan holds: a plan
    whose signature never notices steps the param that left the list."""
    monkeypatch.setattr(_base, "step_signature", lambda: _StaleSignature)
    assert not _group_list_edit_is_seen("reference", edit)


def test_a_stale_signature_mutant_misses_a_grad_of_another_shape(monkeypatch):
    monkeypatch.setattr(_base, "step_signature", lambda: _StaleSignature)
    params = _params()
    opt = fusedopt.AdamW(params, backend="reference")
    _grads(params)
    opt.step()
    opt.step()
    params[2].grad.data = torch.randn(25)  # torch refuses it as .grad, not as .grad.data
    with pytest.raises(Exception) as err:
        opt.step()
    assert "param 2" not in str(err.value)  # no validation ran: torch's own shape error


# ------------------------------------------------------------------ reuse
@needs_native
@pytest.mark.parametrize("fresh_grads", [False, True], ids=["kept", "reassigned"])
def test_the_plan_and_its_buckets_are_reused_while_nothing_changes(monkeypatch, fresh_grads):
    params = _params(n=6)
    opt = fusedopt.AdamW(params, backend="cpu", max_grad_norm=1.0)
    _grads(params)
    opt.step()
    opt.step()
    plan = opt._last_plan
    assert plan.native is not None
    buckets = [b for _, bs in plan.groups for b in bs]
    calls = []
    for name in ("_build_plan", "_rebuild_buckets", "_validate_groups"):
        real = getattr(_base.FusedOptimizer, name)
        monkeypatch.setattr(_base.FusedOptimizer, name,
                            lambda self, *a, _n=name, _r=real: calls.append(_n) or _r(self, *a))
    keep = []
    for s in range(4):
        if fresh_grads:
            keep.append([p.grad for p in params])  # alive, so the new grads move
            _grads(params, seed=10 + s)
        opt.step()
    assert calls == []
    assert opt._last_plan is plan
    assert [b for _, bs in plan.groups for b in bs] == buckets
    assert all(b.grad_epoch == (4 if fresh_grads else 0) for b in buckets)


@needs_native
def test_moved_grads_give_the_python_paths_result_bitwise(monkeypatch):
    """Fresh grads at new addresses every step: the cpu tables' grad column follows them (the
    same bits as the Python path, which rebuilds its buckets for every new grad)."""
    def run():
        params = _params(n=4, shape=(33,))
        opt = fusedopt.AdamW(params, backend="cpu", max_grad_norm=0.5)
        keep = []
        for s in range(6):
            keep.append([p.grad for p in params])
            _grads(params, seed=s)
            opt.step()
        return [p.detach().clone() for p in params]

    native = run()
    monkeypatch.setattr(_shim, "_MODULE", False)
    python = run()
    assert all(torch.equal(a, b) for a, b in zip(native, python))


CUDA_BACKENDS = ["cuda", "triton", "reference"]


@pytest.mark.gpu
@needs_native
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_cuda_params_keep_their_plan_and_follow_moved_grads(monkeypatch, backend):
    """CUDA tensors through the native signature (the shim reads device tensors' metadata, no
    sync): fresh grads at new addresses every step keep the plan, and the results are the
    Python path's bit for bit (it rebuilds the buckets for every new grad)."""
    import warnings

    if backend not in backends.available_backends("cuda"):
        pytest.skip(f"{backend} is not available on cuda here")

    def run():
        params = [torch.nn.Parameter(torch.randn(33, device="cuda",
                                                 generator=torch.Generator("cuda").manual_seed(i)))
                  for i in range(4)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unvalidated backend named explicitly warns
            opt = fusedopt.AdamW(params, backend=backend, max_grad_norm=0.5)
        keep, plans = [], set()
        for s in range(6):
            keep.append([p.grad for p in params])
            gen = torch.Generator("cuda").manual_seed(100 + s)
            for p in params:
                p.grad = torch.randn(33, device="cuda", generator=gen)
            opt.step()
            plans.add(id(opt._last_plan))
        return [p.detach().clone() for p in params], opt, len(plans)

    native, opt, n_plans = run()
    assert opt._last_plan.native is not None and n_plans == 1
    monkeypatch.setattr(_shim, "_MODULE", False)
    python, _, _ = run()
    assert all(torch.equal(a, b) for a, b in zip(native, python))


# ------------------------------------------------------------------ torch.optim's step protocol
def test_step_hooks_and_the_profiler_range_are_kept():
    params = _params(n=1)
    opt = fusedopt.AdamW(params, backend="reference")
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: seen.append("post"))
    handle = register_optimizer_step_pre_hook(lambda o, a, k: seen.append("global pre"))
    try:
        _grads(params)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            opt.step()
    finally:
        handle.remove()
    assert seen == ["global pre", "pre", "post"]
    names = {e.name for e in prof.events()}
    assert "Optimizer.step#AdamW.step" in names
    assert getattr(type(opt).step, "hooked", False)
    # the reference backend writes the leaf params in place: that raises unless the step runs
    # under no_grad; the closure runs with grad enabled
    x = torch.ones(2, requires_grad=True)

    def closure():
        loss = (x * 2).sum()
        assert torch.is_grad_enabled()
        return loss

    opt.step(closure)
