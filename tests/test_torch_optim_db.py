"""fusedopt as a drop-in for torch.optim, judged by the database torch's own optimizer tests run on.

``torch.testing._internal.common_optimizers.optim_db`` gives, per torch optimizer, a sweep of
constructor kwargs (``optim_inputs_func``) and kwargs that must fail with a given exception type
and message (``optim_error_inputs_func``). Every fusedopt class with a torch.optim equivalent
(tests/optim_db_pairs.py: AdamW, Adam, Adagrad, and Adam(variant="rmsprop") for RMSprop) is run
through that sweep on the ``cpu`` and ``reference`` backends (a subset on ``triton`` under
Triton's interpreter, in a child process started with TRITON_INTERPRET=1, as
tests/test_triton_backend.py does), and through the checks of torch's ``TestOptimRenewed``
that concern the optimizer object, written anew here:

* numerics: every kwargs set of the sweep (the CPU entries and the CUDA-only ones: capturable,
  tensor lr, tensor betas), 5 steps, fp32 and fp64 (tensor hyperparameters in the param
  dtype), against torch's for-loop implementation, params, every state and the step counts;
  the same with torch's impl flags at their explicit defaults, with ``foreach=True`` and with
  ``fused=True`` (fp32, cpu backend, 3 steps). Bound, as tests/test_reference_vs_torch.py:
  max |fusedopt - torch| / max |torch| per tensor <= 1e-6 (fp32) / 1e-12 (fp64);
* errors: torch's exception type and a message matching torch's regex where fusedopt makes the
  same check; ``differentiable=True`` refused clearly; NaN / negative lr refused at construction;
* hooks (state_dict, load_state_dict with prepend, step), deepcopy and pickle (the copy steps
  identically and keeps fusedopt's options), named state_dicts into unnamed optimizers and back,
  ``initial_lr`` through a reload (StepLR resumed with ``last_epoch``), deterministic and older
  (keys missing, python-number step) state_dicts, ``torch.save``/``weights_only`` load;
* kept vs re-assigned grads, replaced and cleared state, tensor lr written in place, tensor
  betas, ``maximize``, transposed / sliced / channels_last params, complex and sparse refusal,
  duplicate params (a warning, stepped once, deterministic), overlapping leaf params refused.

Sweep entries left out (no fusedopt counterpart): RMSprop's ``centered``, ``momentum`` and
``maximize, centered, weight_decay, w/ momentum``. The triton subset (TRITON_SWEEP, TRITON_NAMES
below): the sweep's default, maximize, lr_decay and tensor lr + tensor betas + amsgrad entries,
the three strided layouts, and kept / replaced / cleared state for AdamW and Adagrad (one
optimizer per kernel), fp32.
"""
from __future__ import annotations

import copy
import io
import os
import pickle
import re
import subprocess
import sys

import pytest
import torch
from torch.nn import Parameter
from torch.optim.lr_scheduler import StepLR
from torch.testing._internal.common_optimizers import OptimizerErrorEnum

from fusedopt.backends import triton_backend

from optim_db_pairs import PAIRS, sweep

REL = {torch.float32: 1e-6, torch.float64: 1e-12}
BACKENDS = ["cpu", "reference"]
STEPS = 5
NAMES = list(PAIRS)

TRITON_OK, TRITON_WHY = triton_backend.availability()
INTERPRETER = TRITON_OK and triton_backend.supports("cpu")
needs_interpreter = pytest.mark.skipif(
    not INTERPRETER,
    reason="runs in the TRITON_INTERPRET=1 child process (test_interpreter_subset)")


#: the triton subset runs only in the TRITON_INTERPRET=1 child (test_interpreter_subset)
#: the sweep entries the triton subset runs (per optimizer, where the sweep has them)
TRITON_SWEEP = ("default", "maximize", "lr_decay",
                "Tensor_lr+Tensor_betas+with_capturable_and_amsgrad")
#: the optimizers whose object tests also run on triton: one per kernel (Adam and RMSprop run
#: AdamW's adam kernel)
TRITON_NAMES = ("AdamW", "Adagrad")


def _name_backend(triton: bool = False):
    """(name, backend) for every optimizer on cpu and reference, plus triton for TRITON_NAMES."""
    out = [pytest.param(n, b, id=f"{n}-{b}") for n in NAMES for b in BACKENDS]
    if triton:
        out += [pytest.param(n, "triton", id=f"{n}-triton", marks=needs_interpreter)
                for n in TRITON_NAMES]
    return out


def _cases(flags: str, names=NAMES):
    return [pytest.param(n, kw, id=f"{n}-{i}") for n in names for i, kw in sweep(PAIRS[n], flags)]


# ------------------------------------------------------------------------------ helpers
def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) if b.numel() else 0.0


def _assert_close(a, b, dtype, what):
    err = _rel_err(a, b)
    assert err <= REL[dtype], f"{what}: relative error {err:.3g} > {REL[dtype]:.0g}"


def _params(dtype=torch.float32, layout="contiguous", seed=0):
    """torch's test parameters (weight 10x5, bias 10) plus a 3-d tensor, in the given layout:
    ``transposed`` (a transposed view made a leaf), ``sliced`` (every other element: gaps),
    ``channels_last`` (a conv weight in channels_last)."""
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64).to(dtype)  # noqa: E731
    if layout == "contiguous":
        ts = [rnd(10, 5), rnd(10), rnd(2, 3, 4)]
    elif layout == "transposed":
        ts = [rnd(5, 10).t(), rnd(10), rnd(4, 3, 2).permute(2, 1, 0)]
    elif layout == "sliced":  # torch's own non-contiguous case (test_forloop_goes_right_direction)
        ts = [rnd(10, 5, 2)[..., 0], rnd(10, 2)[..., 0], rnd(2, 3, 8)[..., ::2]]
    elif layout == "channels_last":
        ts = [rnd(4, 3, 3, 3).contiguous(memory_format=torch.channels_last), rnd(4),
              rnd(2, 5, 2, 3).contiguous(memory_format=torch.channels_last)]
    else:
        raise ValueError(layout)
    return [Parameter(t) for t in ts]


def _twin(params):
    """Copies with the same values and strides."""
    out = []
    for p in params:
        q = torch.empty_strided(p.shape, p.stride(), dtype=p.dtype)
        q.copy_(p.detach())
        assert q.stride() == p.stride()
        out.append(Parameter(q))
    return out


def _grads(params, gen, scale=1.0):
    """One grad per param, same strides as the param (as autograd makes them)."""
    gs = []
    for p in params:
        g = torch.empty_strided(p.shape, p.stride(), dtype=p.dtype)
        g.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale)
        gs.append(g)
    return gs


def _set_grads(groups, gs):
    for ps in groups:
        for p, g in zip(ps, gs):
            p.grad = g.clone(memory_format=torch.preserve_format)


def _fill_grads(groups, gs):
    """Write into the existing grads (zero_grad(set_to_none=False) style)."""
    for ps in groups:
        for p, g in zip(ps, gs):
            p.grad.copy_(g)


def _compare(pair, kw, fused_opt, torch_opt, fps, tps, dtype, what=""):
    keys = pair.state_keys_for(kw)
    for i, (a, b) in enumerate(zip(fps, tps)):
        _assert_close(a, b, dtype, f"{what} param {i}")
        sa, sb = fused_opt.state[a], torch_opt.state[b]
        if not sb:
            continue
        assert float(sa["step"]) == float(sb["step"]), f"{what} step of param {i}"
        for fk, tk in keys.items():
            _assert_close(sa[fk], sb[tk], dtype, f"{what} state {fk} of param {i}")


def _hparams_as(kw, dtype):
    """Tensor lr / betas in the param dtype. torch's database makes them fp32; with fp64 params
    torch's for-loop then rounds lr / bc1 and 1 - beta to fp32 (relative 1e-8 in the moments),
    where fusedopt computes its scalars in fp64 (docs/numerics.md). fp64 tensors keep torch's
    arithmetic fp64 too, so the fp64 bound compares the algorithms, not that rounding."""
    def conv(v):
        return v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v

    out = dict(kw)
    if "lr" in out:
        out["lr"] = conv(out["lr"])
    if isinstance(out.get("betas"), tuple):
        out["betas"] = tuple(conv(b) for b in out["betas"])
    return out


def _run_vs_torch(name, kw, dtype, backend, layout="contiguous", steps=STEPS, extra=None):
    pair = PAIRS[name]
    if dtype == torch.float64:
        kw = _hparams_as(kw, dtype)
    tps = _params(dtype, layout)
    fps = _twin(tps)
    ref = pair.make_torch(tps, kw)
    opt = pair.make(fps, kw, backend=backend, **(extra or {}))
    gen = torch.Generator().manual_seed(1)
    for t in range(steps):
        _set_grads([fps, tps], _grads(tps, gen))
        opt.step()
        ref.step()
        _compare(pair, kw, opt, ref, fps, tps, dtype, f"step {t + 1}:")
    for a, b in zip(fps, tps):
        assert a.stride() == b.stride(), "the param's layout changed"
    return opt, ref, fps, tps


# ------------------------------------------------------------------------------ numerics
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("name,kw", _cases("none"))
def test_sweep_matches_torch(name, kw, dtype, backend):
    """Every kwargs set of torch's sweep as torch lists it: params and every state (and the
    step counts, exactly) as torch's for-loop after each of 5 steps."""
    _run_vs_torch(name, kw, dtype, backend)


@pytest.mark.parametrize("name,kw", _cases("base"))
def test_sweep_with_explicit_impl_defaults(name, kw):
    """The same kwargs with torch's impl flags spelled out at their defaults, as torch's own
    helper adds them (``foreach=False, differentiable=False``, ``fused=False``): accepted,
    same steps."""
    _run_vs_torch(name, kw, torch.float32, "cpu", steps=3)


@pytest.mark.parametrize("name,kw", _cases("foreach") + _cases("fused"))
def test_sweep_foreach_or_fused_true_matches_torch(name, kw):
    """``foreach=True`` or ``fused=True`` (torch's multi-tensor and fused paths; a fusedopt step
    is always both) is accepted and changes nothing."""
    _run_vs_torch(name, kw, torch.float32, "cpu", steps=3)


@pytest.mark.parametrize("name", [n for n in NAMES if "fused" in PAIRS[n].info.supported_impls])
def test_fused_and_foreach_together_refused(name):
    """torch's check (from its CUDA error inputs, device independent): RuntimeError
    "`fused` and `foreach` cannot be `True` together"."""
    msg = "`fused` and `foreach` cannot be `True` together"
    for make in (lambda ps: PAIRS[name].torch_cls(ps, fused=True, foreach=True),
                 lambda ps: PAIRS[name].make(ps, {"fused": True, "foreach": True})):
        with pytest.raises(RuntimeError, match=msg):
            make([Parameter(torch.randn(3))])


def _subset(flags, descs):
    return [c for c in _cases(flags) if c.id.split("-", 1)[1] in descs]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["transposed", "sliced", "channels_last"])
@pytest.mark.parametrize("name,kw", _subset("none", ("default", "maximize", "amsgrad")))
def test_strided_params_match_torch(name, kw, layout, backend):
    """Transposed views, sliced tensors with gaps and channels_last conv weights step in place
    like torch's, keeping their strides (the sweep's default, maximize and amsgrad entries)."""
    _run_vs_torch(name, kw, torch.float32, backend, layout=layout, steps=3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_channels_last_conv_trains_like_torch(name, backend):
    """``Conv2d(...).to(memory_format=torch.channels_last)`` trained by real backward passes
    (autograd's channels_last grads) as with torch.optim."""
    pair = PAIRS[name]
    torch.manual_seed(3)
    ref_model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Tanh(),
                                    torch.nn.Conv2d(4, 2, 3)).to(memory_format=torch.channels_last)
    model = copy.deepcopy(ref_model)
    assert not ref_model[0].weight.is_contiguous()
    ref = pair.make_torch(ref_model.parameters(), {})
    opt = pair.make(model.parameters(), {}, backend=backend)
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        x = torch.randn(2, 3, 7, 7, generator=gen).contiguous(memory_format=torch.channels_last)
        for m, o in ((model, opt), (ref_model, ref)):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
    for a, b in zip(model.parameters(), ref_model.parameters()):
        _assert_close(a, b, torch.float32, "conv param")
        assert a.stride() == b.stride()


# ------------------------------------------------------------------------------ errors
def _error_cases():
    out = []
    for name in NAMES:
        info = PAIRS[name].info
        for k, e in enumerate(info.optim_error_inputs_func(device="cpu", dtype=torch.float32)):
            out.append(pytest.param(name, k, id=f"{name}-{_slug(e.optimizer_error_input.desc)}"))
    return out


def _slug(desc: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", desc).strip("_")[:60]


#: torch checks that concern only torch's foreach/fused implementations or the mixing of
#: float and tensor betas: fusedopt, with one implementation, may accept these kwargs (it then
#: must step), and where it refuses them it must do so with torch's type and message.
_MAY_ACCEPT = ("lr as a Tensor is not supported for capturable=False and foreach=True",
               "betas must be either both floats or both Tensors",
               r"betas\[0\] as a Tensor is not supported for capturable=False and foreach=True")
#: torch checks on kwargs that have no fusedopt counterpart (RMSprop's momentum)
_NOT_MAPPED = ("Invalid momentum value",)


@pytest.mark.parametrize("name,k", _error_cases())
def test_errors_match_torch(name, k):
    """torch's ``optim_error_inputs_func``: the same exception type, a message that
    ``re.search``es torch's regex (warnings: the same category and regex). torch passes
    ``params=None`` for hyperparameter errors (it checks them before the params): a real param
    list is given instead, so that the check under test is the one reached."""
    pair = PAIRS[name]
    err = pair.info.optim_error_inputs_func(device="cpu", dtype=torch.float32)[k]
    oi = err.optimizer_error_input
    if any(s in err.error_regex for s in _NOT_MAPPED):
        pytest.skip("the kwarg has no fusedopt counterpart")
    params = oi.params if oi.params is not None else [Parameter(torch.randn(2, 2))]
    # torch's own class fails this way (guards the port against a changed database)
    _expect(err, lambda: _construct_and_step(lambda: pair.torch_cls(params, **oi.kwargs), err))

    def fused():
        return _construct_and_step(lambda: pair.make(params, oi.kwargs, backend="cpu"), err)

    if err.error_regex in _MAY_ACCEPT:
        try:
            fused()
        except Exception as e:  # noqa: BLE001 - type and message checked below
            assert isinstance(e, err.error_type), f"{type(e).__name__}: {e}"
            assert re.search(err.error_regex, str(e)), str(e)
        return
    _expect(err, fused)


def _construct_and_step(make, err):
    opt = make()
    if err.error_on == OptimizerErrorEnum.STEP_ERROR or err.error_regex in _MAY_ACCEPT:
        for g in opt.param_groups:
            for p in g["params"]:
                p.grad = torch.ones_like(p)
        opt.step()
    return opt


def _expect(err, fn):
    if issubclass(err.error_type, Warning):
        with pytest.warns(err.error_type, match=err.error_regex):
            fn()
    else:
        with pytest.raises(err.error_type) as info:
            fn()
        assert re.search(err.error_regex, str(info.value)), (
            f"{err.error_type.__name__} message {str(info.value)!r} does not match torch's "
            f"regex {err.error_regex!r}")


@pytest.mark.parametrize("name", NAMES)
def test_differentiable_true_refused(name):
    """fusedopt's step is not differentiable: ``differentiable=True`` raises a clear error
    naming the flag (never a silently non-differentiable step)."""
    with pytest.raises((ValueError, TypeError, NotImplementedError, RuntimeError),
                       match="differentiable") as info:
        PAIRS[name].make([Parameter(torch.randn(3))], {"differentiable": True})
    # refused because of its value, not because the keyword is unknown (False is accepted)
    assert "unexpected keyword" not in str(info.value), str(info.value)


@pytest.mark.parametrize("lr", [float("nan"), -1e-3, "tensor_nan", "tensor_negative"])
@pytest.mark.parametrize("name", NAMES)
def test_invalid_lr_refused_at_construction(name, lr):
    """NaN or negative lr, float or tensor: ValueError "Invalid learning rate" as torch."""
    if lr == "tensor_nan":
        lr = torch.tensor(float("nan"))
    elif lr == "tensor_negative":
        lr = torch.tensor(-1e-3)
    pair = PAIRS[name]
    with pytest.raises(ValueError, match="Invalid learning rate"):
        pair.torch_cls([Parameter(torch.randn(3))], lr=lr)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        pair.make([Parameter(torch.randn(3))], {"lr": lr})


@pytest.mark.parametrize("name", NAMES)
def test_explicit_torch_defaults_accepted(name):
    """A config written for torch.optim with every default spelled out steps exactly as the
    fusedopt optimizer without those kwargs."""
    explicit = dict(maximize=False, foreach=None, differentiable=False, capturable=False)
    if "fused" in PAIRS[name].info.supported_impls:
        explicit["fused"] = None
    runs = []
    spelled_false = dict(explicit, foreach=False)
    if "fused" in explicit:
        spelled_false["fused"] = False
    for kw in (explicit, {}, spelled_false):
        ps = _params()
        opt = PAIRS[name].make(ps, kw, backend="cpu")
        gen = torch.Generator().manual_seed(2)
        for _ in range(2):
            _set_grads([ps], _grads(ps, gen))
            opt.step()
        runs.append([p.detach().clone() for p in ps])
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], run))


@pytest.mark.parametrize("name", NAMES)
def test_complex_and_sparse_refused(name):
    """Complex params, sparse params and sparse grads: TypeError (torch steps complex params
    as pairs of reals and refuses sparse grads with RuntimeError; fusedopt supports neither and
    says so before anything is changed)."""
    pair = PAIRS[name]
    with pytest.raises(TypeError, match="complex"):
        pair.make([Parameter(torch.randn(3, dtype=torch.complex64))], {})
    with pytest.raises(TypeError, match="sparse"):
        pair.make([torch.randn(4, 3).to_sparse().requires_grad_()], {})
    p = Parameter(torch.randn(4, 3))
    opt = pair.make([p], {}, backend="cpu")
    before = p.detach().clone()
    p.grad = torch.randn(4, 3).to_sparse()
    with pytest.raises(TypeError, match="sparse"):
        opt.step()
    assert torch.equal(p.detach(), before)
    assert float(opt.state[p].get("step", torch.zeros(()))) == 0.0


# ------------------------------------------------------------------------------ the object
def _trained(name, kw=None, backend="cpu", steps=2, ps=None, **extra):
    ps = ps if ps is not None else _params()
    opt = PAIRS[name].make(ps, kw or {}, backend=backend, **extra)
    gen = torch.Generator().manual_seed(5)
    for _ in range(steps):
        _set_grads([ps], _grads(ps, gen))
        opt.step()
    return opt, ps


def _step_both(opts_params, gen):
    """One step of each (optimizer, params) with the same grads."""
    gs = _grads(opts_params[0][1], gen)
    for opt, ps in opts_params:
        _set_grads([ps], gs)
        opt.step()


@pytest.mark.parametrize("name", NAMES)
def test_hooks_fire(name):
    """state_dict pre/post hooks, load_state_dict pre/post hooks (prepend orders them; a pre
    hook's returned dict is the one loaded), step pre/post hooks: as torch.optim.Optimizer."""
    opt, ps = _trained(name)
    calls = []
    opt.register_state_dict_pre_hook(lambda o: calls.append("sd_pre"))

    def sd_post(o, sd):
        calls.append("sd_post")
        sd["extra"] = 7
        return sd

    opt.register_state_dict_post_hook(sd_post)
    sd = opt.state_dict()
    assert calls == ["sd_pre", "sd_post"] and sd["extra"] == 7

    calls.clear()

    def pre_a(o, d):
        calls.append("pre_a")
        d = copy.deepcopy(d)
        d["param_groups"][0]["lr"] = 0.0123
        return d

    opt.register_load_state_dict_pre_hook(pre_a)
    opt.register_load_state_dict_pre_hook(lambda o, d: calls.append("pre_b"), prepend=True)
    opt.register_load_state_dict_post_hook(lambda o: calls.append("post_a"))
    opt.register_load_state_dict_post_hook(lambda o: calls.append("post_b"), prepend=True)
    opt.load_state_dict(sd)
    assert calls == ["pre_b", "pre_a", "post_b", "post_a"]
    assert opt.param_groups[0]["lr"] == 0.0123, "the pre hook's returned state_dict was not used"

    calls.clear()
    opt.register_step_pre_hook(lambda o, a, k: calls.append("step_pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("step_post"))
    _set_grads([ps], _grads(ps, torch.Generator().manual_seed(0)))
    opt.step()
    assert calls == ["step_pre", "step_post"]


_COPY_CONFIGS = {
    # fp32 params, bf16 moments, clipping, telemetry
    "fp32_bf16state": (torch.float32, dict(max_grad_norm=0.5, state_dtype=torch.bfloat16,
                                           telemetry=True)),
    # bf16 params with fp32 master weights, clipping, telemetry
    "bf16_master": (torch.bfloat16, dict(max_grad_norm=0.5, master_weights=True, telemetry=True)),
}


def _round_trip(opt, how):
    if how == "deepcopy":
        return copy.deepcopy(opt)
    return pickle.loads(pickle.dumps(opt))


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("config", list(_COPY_CONFIGS))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_deepcopy_and_pickle(name, backend, config, how):
    """``copy.deepcopy(opt)`` and a pickle round trip give an optimizer (over copied params)
    that keeps fusedopt's options and public attributes and steps bitwise as the original."""
    dtype, extra = _COPY_CONFIGS[config]
    opt, ps = _trained(name, backend=backend, ps=_params(dtype), **extra)
    twin = _round_trip(opt, how)
    for attr in ("max_grad_norm", "backend_name", "state_dtype", "master_weights", "telemetry",
                 "capturable", "backend", "defaults"):
        assert getattr(twin, attr) == getattr(opt, attr), attr
    public = lambda o: {k for k in vars(o) if not k.startswith("_")}  # noqa: E731
    assert public(twin) == public(opt)
    tps = twin.param_groups[0]["params"]
    assert all(a is not b and torch.equal(a, b) for a, b in zip(ps, tps))
    gen = torch.Generator().manual_seed(6)
    for _ in range(2):
        _step_both([(opt, ps), (twin, tps)], gen)
        assert all(torch.equal(a, b) for a, b in zip(ps, tps))
        for a, b in zip(ps, tps):
            for k, v in opt.state[a].items():
                if isinstance(v, torch.Tensor):
                    assert torch.equal(v, twin.state[b][k]), k
        for k, v in opt.last_stats.items():
            assert torch.equal(v, twin.last_stats[k]), k


def _named(ps):
    return [(f"p{i}", p) for i, p in enumerate(ps)]


@pytest.mark.parametrize("direction", ["named_into_unnamed", "unnamed_into_named"])
@pytest.mark.parametrize("name", NAMES)
def test_named_state_dict(name, direction):
    """A state_dict of an optimizer built from (name, tensor) pairs loads into one built from
    tensors, and back; ``param_names`` end up as torch's loader leaves them (the saved names
    when the state_dict has them, else the optimizer's own) and the two optimizers then step
    identically."""
    pair = PAIRS[name]
    src_named = direction == "named_into_unnamed"
    results = {}
    for impl in ("torch", "fused"):
        make = ((lambda p: pair.make_torch(p, {})) if impl == "torch"
                else (lambda p: pair.make(p, {}, backend="cpu")))
        ps = _params()
        src = make(_named(ps) if src_named else ps)
        gen = torch.Generator().manual_seed(7)
        for _ in range(2):
            _set_grads([ps], _grads(ps, gen))
            src.step()
        sd = copy.deepcopy(src.state_dict())  # torch's loader may alias the saved tensors
        qs = _twin(ps)
        dst = make(qs if src_named else _named(qs))
        dst.load_state_dict(sd)
        results[impl] = [g.get("param_names") for g in dst.param_groups]
        for _ in range(2):
            _step_both([(src, ps), (dst, qs)], gen)
        assert all(torch.equal(a, b) for a, b in zip(ps, qs)), impl
        assert dst.state_dict()["param_groups"][0].get("param_names") == results[impl][0]
    assert results["fused"] == results["torch"] == [["p0", "p1", "p2"]]


@pytest.mark.parametrize("name", NAMES)
def test_initial_lr_kept_and_scheduler_resumes(name):
    """``initial_lr`` (written by a scheduler) survives load_state_dict into a fresh optimizer,
    so ``StepLR(opt, 2, last_epoch=1)`` resumes; the lrs and params then follow torch's."""
    pair = PAIRS[name]
    lrs, finals = {}, {}
    for impl in ("torch", "fused"):
        make = ((lambda p: pair.make_torch(p, {"lr": 0.05})) if impl == "torch"
                else (lambda p: pair.make(p, {"lr": 0.05}, backend="cpu")))
        ps = _params()
        opt = make(ps)
        sched = StepLR(opt, 2, gamma=0.5)
        gen = torch.Generator().manual_seed(8)
        for _ in range(2):
            _set_grads([ps], _grads(ps, gen))
            opt.step()
            sched.step()
        sd = copy.deepcopy(opt.state_dict())  # as a checkpoint: torch's loader may alias
        qs = _twin(ps)
        opt2 = make(qs)
        opt2.load_state_dict(sd)
        assert opt2.param_groups[0]["initial_lr"] == 0.05, impl
        sched2 = StepLR(opt2, 2, gamma=0.5, last_epoch=1)
        seq = [opt2.param_groups[0]["lr"]]
        for _ in range(3):
            _set_grads([qs], _grads(qs, gen))
            opt2.step()
            sched2.step()
            seq.append(opt2.param_groups[0]["lr"])
        lrs[impl], finals[impl] = seq, qs
    assert lrs["fused"] == lrs["torch"]
    for a, b in zip(finals["fused"], finals["torch"]):
        _assert_close(a, b, torch.float32, "param after the resumed schedule")


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_deterministic_and_older_formats(name):
    """torch's state_dict checks: a loaded state_dict continues bitwise; it is not modified by
    the load; equal params give equal state_dicts; a state_dict without the newer group keys
    (maximize, foreach, differentiable, capturable, fused) or with python-number steps loads
    and steps."""
    opt, ps = _trained(name)
    sd = copy.deepcopy(opt.state_dict())
    kept = copy.deepcopy(sd)
    qs = _twin(ps)
    opt2 = PAIRS[name].make(qs, {}, backend="cpu")
    opt2.load_state_dict(sd)
    _assert_sd_equal(sd, kept)
    _assert_sd_equal(opt.state_dict(), opt2.state_dict())
    gen = torch.Generator().manual_seed(9)
    _step_both([(opt, ps), (opt2, qs)], gen)
    assert all(torch.equal(a, b) for a, b in zip(ps, qs))

    old = copy.deepcopy(opt.state_dict())
    for g in old["param_groups"]:
        for k in ("maximize", "foreach", "differentiable", "capturable", "fused"):
            g.pop(k, None)
    for st in old["state"].values():
        st["step"] = float(st["step"])
    opt3 = PAIRS[name].make(_twin(ps), {}, backend="cpu")
    opt3.load_state_dict(old)
    rs = opt3.param_groups[0]["params"]
    _step_both([(opt, ps), (opt3, rs)], gen)
    assert all(torch.equal(a, b) for a, b in zip(ps, rs))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_loads_with_weights_only(name):
    """``torch.save(opt.state_dict())`` then ``torch.load(..., weights_only=True)`` (torch's
    default since 2.6): the state_dict holds only tensors, numbers, strings and plain
    containers; the loaded one continues bitwise."""
    opt, ps = _trained(name)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    opt2 = PAIRS[name].make(_twin(ps), {}, backend="cpu")
    opt2.load_state_dict(loaded)
    qs = opt2.param_groups[0]["params"]
    _step_both([(opt, ps), (opt2, qs)], torch.Generator().manual_seed(18))
    assert all(torch.equal(a, b) for a, b in zip(ps, qs))


def _assert_sd_equal(a, b):
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        sa, sb = a["state"][k], b["state"][k]
        assert sa.keys() == sb.keys()
        for key in sa:
            if isinstance(sa[key], torch.Tensor):
                assert torch.equal(sa[key], sb[key]), key
            else:
                assert sa[key] == sb[key], key


@pytest.mark.parametrize("name,kw", _subset("none", ("default", "maximize", "amsgrad")))
def test_torch_state_dict_continues_like_torch(name, kw):
    """A checkpoint of the torch.optim optimizer loads into the fusedopt one, which continues
    as torch would; fusedopt's checkpoint loads back into torch (AdamW, Adam, Adagrad: the
    classes that share torch's name and group keys)."""
    pair = PAIRS[name]
    tps = _params()
    ref = pair.make_torch(tps, kw)
    gen = torch.Generator().manual_seed(10)
    for _ in range(2):
        _set_grads([tps], _grads(tps, gen))
        ref.step()
    fps = _twin(tps)
    opt = pair.make(fps, kw, backend="cpu")
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))
    for _ in range(2):
        _set_grads([fps, tps], _grads(tps, gen))
        opt.step()
        ref.step()
        _compare(pair, kw, opt, ref, fps, tps, torch.float32, "after torch's checkpoint:")
    if name == "RMSprop":
        return  # Adam(variant="rmsprop")'s groups are Adam's: only torch -> fusedopt is promised
    back = pair.make_torch(_twin(fps), kw)
    back.load_state_dict(copy.deepcopy(opt.state_dict()))
    bps = back.param_groups[0]["params"]
    _set_grads([bps, tps], _grads(tps, gen))
    back.step()
    ref.step()
    for a, b in zip(bps, tps):
        _assert_close(a, b, torch.float32, "torch resumed from fusedopt's checkpoint")


@pytest.mark.parametrize("name,backend", _name_backend(triton=True))
def test_kept_and_reassigned_grads(name, backend):
    """torch's results through every way a training loop hands grads over: new tensors; kept
    tensors written in place after ``zero_grad(set_to_none=False)``; one kept grad replaced by a
    new tensor; ``zero_grad(set_to_none=True)`` with only some grads set (the others are not
    stepped); ``p.grad = None`` for one param while the others are kept."""
    pair = PAIRS[name]
    tps = _params()
    fps = _twin(tps)
    ref, opt = pair.make_torch(tps, {}), pair.make(fps, {}, backend=backend)
    gen = torch.Generator().manual_seed(11)

    def check(what):
        _compare(pair, {}, opt, ref, fps, tps, torch.float32, what)

    _set_grads([fps, tps], _grads(tps, gen))
    opt.step(), ref.step(), check("new grads")
    for _ in range(2):
        opt.zero_grad(set_to_none=False), ref.zero_grad(set_to_none=False)
        _fill_grads([fps, tps], _grads(tps, gen))
        opt.step(), ref.step(), check("kept grads written in place")
    gs = _grads(tps, gen)
    _fill_grads([fps, tps], gs)
    fps[0].grad, tps[0].grad = gs[0].clone() * 2, gs[0].clone() * 2  # a new tensor for one
    opt.step(), ref.step(), check("one grad re-assigned")
    _fill_grads([fps, tps], _grads(tps, gen))
    opt.step(), ref.step(), check("kept again after the re-assignment")
    opt.zero_grad(set_to_none=True), ref.zero_grad(set_to_none=True)
    g = _grads(tps, gen)[1]
    fps[1].grad, tps[1].grad = g.clone(), g.clone()
    opt.step(), ref.step(), check("only param 1 has a grad")
    assert float(opt.state[fps[0]]["step"]) == float(ref.state[tps[0]]["step"]) == 5
    _set_grads([fps, tps], _grads(tps, gen))
    opt.step(), ref.step()
    fps[2].grad, tps[2].grad = None, None
    _fill_grads([fps[:2], tps[:2]], _grads(tps, gen)[:2])
    opt.step(), ref.step(), check("kept grads, one set to None")


def _fresh_state(p, gen, torch_keys):
    """A replacement state for ``p`` in torch's key names (step 7, random moments)."""
    st = {"step": torch.tensor(7.0)}
    for tk in torch_keys:
        st[tk] = torch.rand(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) + 0.1
    return st


@pytest.mark.parametrize("name,backend", _name_backend(triton=True))
def test_replaced_state_with_kept_grads(name, backend):
    """``opt.state[p] = {...}`` between steps while the grads are kept: the next step updates
    the new moments (as torch does), not the ones the last step used."""
    pair = PAIRS[name]
    tps = _params()
    fps = _twin(tps)
    ref, opt = pair.make_torch(tps, {}), pair.make(fps, {}, backend=backend)
    gen = torch.Generator().manual_seed(12)
    _set_grads([fps, tps], _grads(tps, gen))
    opt.step(), ref.step()
    keys = pair.state_keys_for({})
    new = _fresh_state(tps[0], gen, list(keys.values()))
    ref.state[tps[0]] = {k: v.clone() for k, v in new.items()}
    opt.state[fps[0]] = {"step": new["step"].clone(),
                         **{fk: new[tk].clone() for fk, tk in keys.items()}}
    for _ in range(2):
        _fill_grads([fps, tps], _grads(tps, gen))
        opt.step(), ref.step()
        _compare(pair, {}, opt, ref, fps, tps, torch.float32, "after replacing param 0's state:")
    assert float(opt.state[fps[0]]["step"]) == 9.0


@pytest.mark.parametrize("name,backend", _name_backend(triton=True))
def test_cleared_state_with_kept_grads(name, backend):
    """``opt.state.clear()`` while the grads are kept: training restarts from fresh state (step
    1, zero moments, as torch), and ``state_dict()`` shows that state — a checkpoint taken then
    holds what training continues with."""
    pair = PAIRS[name]
    tps = _params()
    fps = _twin(tps)
    ref, opt = pair.make_torch(tps, {}), pair.make(fps, {}, backend=backend)
    gen = torch.Generator().manual_seed(13)
    _set_grads([fps, tps], _grads(tps, gen))
    for _ in range(2):
        opt.step(), ref.step()
        _fill_grads([fps, tps], _grads(tps, gen))
    opt.state.clear(), ref.state.clear()
    opt.step(), ref.step()
    _compare(pair, {}, opt, ref, fps, tps, torch.float32, "after state.clear():")
    sd, tsd = opt.state_dict()["state"], ref.state_dict()["state"]
    assert sorted(sd) == sorted(tsd) == [0, 1, 2]
    keys = pair.state_keys_for({})
    for i in tsd:
        assert float(sd[i]["step"]) == float(tsd[i]["step"]) == 1.0
        for fk, tk in keys.items():
            _assert_close(sd[i][fk], tsd[i][tk], torch.float32, f"state_dict {fk} of param {i}")
    qs = _twin(fps)
    opt2 = pair.make(qs, {}, backend=backend)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    _step_both([(opt, fps), (opt2, qs)], gen)
    assert all(torch.equal(a, b) for a, b in zip(fps, qs)), "the checkpoint lost state"


@pytest.mark.parametrize("name,backend", _name_backend(triton=False))
def test_tensor_lr_written_in_place(name, backend):
    """A tensor lr changed in place between steps (a schedule writing it, as under
    capturable) is read at each step, as torch reads it; the result equals the float-lr run."""
    pair = PAIRS[name]
    tps = _params()
    fps = _twin(tps)
    lr = torch.tensor(0.01)
    ref = pair.make_torch(tps, {"lr": 0.01})
    opt = pair.make(fps, {"lr": lr}, backend=backend)
    gen = torch.Generator().manual_seed(14)
    for t in range(4):
        _set_grads([fps, tps], _grads(tps, gen))
        opt.step(), ref.step()
        _compare(pair, {}, opt, ref, fps, tps, torch.float32, f"step {t + 1}:")
        lr.mul_(0.5)
        ref.param_groups[0]["lr"] = float(lr)


@pytest.mark.parametrize("betas", ["0-d", "1-element"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["AdamW", "Adam"])
def test_tensor_betas(name, backend, betas):
    """``betas=(torch.tensor(0.9), torch.tensor(0.99))`` (and 1-element shaped tensors, as
    torch's sweep uses) are accepted and step as the float betas."""
    mk = (lambda v: torch.tensor(v)) if betas == "0-d" else (lambda v: torch.tensor([[v]]))
    kw = {"betas": (mk(0.9), mk(0.99)), "weight_decay": 0.1}
    _run_vs_torch(name, kw, torch.float32, backend, steps=3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_maximize_ascends(name, backend):
    """torch's test_forloop_goes_right_direction: 20 steps on ``(W x + b)^2`` lower the loss,
    and raise it with ``maximize=True``; every step as torch's."""
    pair = PAIRS[name]
    for maximize in (False, True):
        kw = {"maximize": maximize, "lr": 1e-2}
        torch.manual_seed(15)
        w, b = Parameter(torch.randn(10, 5)), Parameter(torch.randn(10))
        x = torch.randn(5)
        tw, tb = _twin([w, b])
        opt = pair.make([w, b], kw, backend=backend)
        ref = pair.make_torch([tw, tb], kw)

        def loss_of(ww, bb):
            return (ww.mv(x) + bb).pow(2).sum()

        initial = float(loss_of(w, b))
        for _ in range(20):
            for o, ww, bb in ((opt, w, b), (ref, tw, tb)):
                o.zero_grad()
                loss_of(ww, bb).backward()
                o.step()
            _assert_close(w, tw, torch.float32, f"maximize={maximize}")
        final = float(loss_of(w, b))
        assert (final > initial) if maximize else (final < initial), (maximize, initial, final)


@pytest.mark.parametrize("name,backend", _name_backend(triton=False))
def test_duplicate_params_warn_and_step_once(name, backend):
    """The same param twice in a group: torch's warning ("duplicate parameters"), then the
    param is stepped once per step (as the optimizer over the deduplicated list), run to run
    bitwise."""
    pair = PAIRS[name]
    runs = []
    for _ in range(2):
        ps = _params()
        with pytest.warns(UserWarning, match="duplicate parameters"):
            opt = pair.make([ps[0], ps[1], ps[0], ps[2]], {}, backend=backend)
        tps = _twin(ps)
        ref = pair.make_torch(tps, {})
        gen = torch.Generator().manual_seed(16)
        for _ in range(3):
            _set_grads([ps, tps], _grads(tps, gen))
            opt.step(), ref.step()
        _compare(pair, {}, opt, ref, ps, tps, torch.float32, "duplicated param 0:")
        assert float(opt.state[ps[0]]["step"]) == 3.0
        runs.append([p.detach().clone() for p in ps])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@pytest.mark.parametrize("name", NAMES)
def test_overlapping_leaf_params_refused(name):
    """Two leaf params viewing overlapping memory: an element-wise update of both is
    order-dependent (torch accepts them and steps the shared elements twice): fusedopt raises
    ValueError (at construction or at the first step) and changes nothing."""
    base = torch.randn(10)
    a = base[:6].requires_grad_()
    b = base[4:].requires_grad_()
    assert a.is_leaf and b.is_leaf
    before = base.clone()
    with pytest.raises(ValueError):
        opt = PAIRS[name].make([a, b], {}, backend="cpu")
        a.grad, b.grad = torch.ones(6), torch.ones(6)
        opt.step()
    assert torch.equal(base, before)


@pytest.mark.parametrize("name", NAMES)
def test_step_without_grads_is_a_noop(name):
    """Params whose grad is None are left as they are, their step counts too (torch's
    test_step_is_noop_when_params_have_no_grad); a param group mixing both steps the rest."""
    pair = PAIRS[name]
    ps = _params()
    opt = pair.make(ps, {}, backend="cpu")
    before = [p.detach().clone() for p in ps]
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(ps, before))
    ps[1].grad = torch.randn(ps[1].shape)
    opt.step()
    assert torch.equal(ps[0], before[0]) and torch.equal(ps[2], before[2])
    assert not torch.equal(ps[1], before[1])
    assert float(opt.state[ps[0]].get("step", torch.zeros(()))) == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_param_groups_like_torch(name):
    """Two param groups with their own lr and weight_decay step as torch's (torch's
    test_param_groups_lr / _weight_decay), and the optimizer prints."""
    pair = PAIRS[name]
    tps = _params()
    fps = _twin(tps)
    def mk(ps):
        return [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.05, "weight_decay": 0.1}]

    ref = pair.make_torch(mk(tps), {"lr": 0.01})
    opt = pair.make(mk(fps), {"lr": 0.01}, backend="cpu")
    assert repr(opt)
    gen = torch.Generator().manual_seed(17)
    for _ in range(3):
        _set_grads([fps, tps], _grads(tps, gen))
        opt.step(), ref.step()
    _compare(pair, {}, opt, ref, fps, tps, torch.float32, "param groups:")


# ------------------------------------------------------------------------------ triton subset
@needs_interpreter
@pytest.mark.parametrize("name,kw", _subset("none", TRITON_SWEEP))
def test_triton_sweep_matches_torch(name, kw):
    """The triton backend (interpreted) on the sweep entries of TRITON_SWEEP, fp32, 3 steps."""
    _run_vs_torch(name, kw, torch.float32, "triton", steps=3)


@needs_interpreter
@pytest.mark.parametrize("layout", ["transposed", "sliced", "channels_last"])
@pytest.mark.parametrize("name,kw", _subset("none", ("default",)))
def test_triton_strided_params_match_torch(name, kw, layout):
    _run_vs_torch(name, kw, torch.float32, "triton", layout=layout, steps=2)


@pytest.mark.skipif(INTERPRETER or not TRITON_OK, reason="this process runs the tests itself")
def test_interpreter_subset():
    """The triton subset of this file, in a child process with TRITON_INTERPRET=1 (Triton reads
    it when first imported, which this process has done)."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          __file__, "-k", "triton"],
                         env=env, capture_output=True, text=True, cwd=os.path.dirname(__file__))
    tail = "\n".join((res.stdout + res.stderr).splitlines()[-60:])
    assert res.returncode == 0, f"TRITON_INTERPRET=1 run of {__file__} failed:\n{tail}"
    assert " passed" in res.stdout and " skipped" not in res.stdout, tail


# ------------------------------------------------------------------------------ more of torch's checks
@pytest.mark.parametrize("name,kw", _cases("none"))
def test_tensor_lr_matches_float_lr(name, kw):
    """torch's test_tensor_lr: every sweep entry with ``lr=torch.tensor(1e-3)`` steps as with
    ``lr=1e-3`` (torch's float-lr run is the reference)."""
    pair = PAIRS[name]
    kw = {k: v for k, v in kw.items() if k != "lr"}
    tps = _params()
    fps = _twin(tps)
    ref = pair.make_torch(tps, dict(kw, lr=1e-3))
    opt = pair.make(fps, dict(kw, lr=torch.tensor(1e-3)), backend="cpu")
    gen = torch.Generator().manual_seed(19)
    for t in range(3):
        _set_grads([fps, tps], _grads(tps, gen))
        opt.step(), ref.step()
        _compare(pair, kw, opt, ref, fps, tps, torch.float32, f"step {t + 1}:")


@pytest.mark.parametrize("tensor_lr", [False, True], ids=["float_lr", "tensor_lr"])
@pytest.mark.parametrize("name,backend", _name_backend())
def test_schedulers_like_torch(name, backend, tensor_lr):
    """The schedulers of torch's OptimizerInfo (``scheduler_inputs``: StepLR, ReduceLROnPlateau,
    and the others torch lists) on two param groups, 20 closure steps of torch's
    test_param_group_with_lrscheduler_goes_right_direction: the same lrs (a tensor lr is
    written in place by the scheduler) and params as torch, and the loss goes down."""
    pair = PAIRS[name]
    for k, constructors in enumerate(pair.info.scheduler_inputs):
        runs = {}
        for impl in ("torch", "fused"):
            torch.manual_seed(20)
            w, b = Parameter(torch.randn(10, 5)), Parameter(torch.randn(10))
            x = torch.randn(5)
            lr = torch.tensor(0.01) if tensor_lr else 0.01
            groups = [{"params": [w]}, {"params": [b], "lr": lr}]
            opt = (pair.make_torch(groups, {}) if impl == "torch"
                   else pair.make(groups, {}, backend=backend))
            scheds = [c(opt) for c in constructors]

            def closure():
                opt.zero_grad()
                loss = (w.mv(x) + b).pow(2).sum()
                loss.backward()
                return loss

            initial = float(closure())
            lrs = []
            for _ in range(20):
                loss = opt.step(closure)
                for s in scheds:
                    if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau):
                        s.step(loss)
                    else:
                        s.step()
                lrs.append([float(g["lr"]) for g in opt.param_groups])
            assert float(closure()) < initial, (impl, k)
            runs[impl] = (lrs, w.detach().clone(), b.detach().clone())
        assert runs["fused"][0] == runs["torch"][0], f"scheduler set {k}: lrs differ"
        _assert_close(runs["fused"][1], runs["torch"][1], torch.float32, f"set {k} weight")
        _assert_close(runs["fused"][2], runs["torch"][2], torch.float32, f"set {k} bias")


def _mutations(name):
    """Hyperparameter writes into param_groups between steps, as torch reads them each step."""
    common = [("lr", 0.02), ("weight_decay", 0.2), ("maximize", True), ("eps", 1e-3)]
    if name in ("Adam", "AdamW"):
        return common + [("betas", (0.8, 0.95))]
    if name == "RMSprop":  # torch's alpha is fusedopt's betas[1]
        return common + [("alpha", 0.9)]
    return common + [("lr_decay", 0.1)]


@pytest.mark.parametrize("name,backend", _name_backend(triton=True))
def test_group_hyperparameters_changed_between_steps(name, backend):
    """Writing ``group[key] = value`` between steps (lr, weight_decay, maximize, eps, betas /
    alpha / lr_decay) takes effect at the next step, as in torch, with kept grads (the cached
    plan must not keep the old values)."""
    pair = PAIRS[name]
    tps = _params()
    fps = _twin(tps)
    ref, opt = pair.make_torch(tps, {}), pair.make(fps, {}, backend=backend)
    gen = torch.Generator().manual_seed(21)
    _set_grads([fps, tps], _grads(tps, gen))
    opt.step(), ref.step()
    for key, value in _mutations(name):
        ref.param_groups[0][key] = value
        if name == "RMSprop" and key == "alpha":
            opt.param_groups[0]["betas"] = (0.0, value)
        else:
            opt.param_groups[0][key] = value
        _fill_grads([fps, tps], _grads(tps, gen))
        opt.step(), ref.step()
        _compare(pair, {}, opt, ref, fps, tps, torch.float32, f"after setting {key}={value}:")


@pytest.mark.parametrize("name,backend", _name_backend(triton=True))
def test_add_param_group_after_steps(name, backend):
    """``add_param_group`` after some steps (kept grads): the new group's params are stepped
    with their own lr from then on, as in torch."""
    pair = PAIRS[name]
    tps = _params()
    fps = _twin(tps)
    ref, opt = pair.make_torch(tps[:2], {}), pair.make(fps[:2], {}, backend=backend)
    gen = torch.Generator().manual_seed(22)
    _set_grads([fps, tps], _grads(tps, gen))
    for _ in range(2):
        opt.step(), ref.step()
        _fill_grads([fps, tps], _grads(tps, gen))
    ref.add_param_group({"params": [tps[2]], "lr": 0.05})
    opt.add_param_group({"params": [fps[2]], "lr": 0.05})
    for _ in range(2):
        opt.step(), ref.step()
        _compare(pair, {}, opt, ref, fps, tps, torch.float32, "after add_param_group:")
        _fill_grads([fps, tps], _grads(tps, gen))


@pytest.mark.parametrize("name,backend", _name_backend())
def test_mixed_dtypes_and_empty_params(name, backend):
    """One optimizer over fp32 and fp64 params and empty (0-element) ones, as torch's
    test_mixed_device_dtype and its empty-grad cases: each param as torch's for-loop."""
    pair = PAIRS[name]
    gen = torch.Generator().manual_seed(23)
    init = [torch.randn(6, 4, generator=gen), torch.randn(7, generator=gen, dtype=torch.float64),
            torch.randn(0, 3), torch.randn(3, 3, generator=gen, dtype=torch.float64),
            torch.empty(0, dtype=torch.float64)]
    tps = [Parameter(t.clone()) for t in init]
    fps = [Parameter(t.clone()) for t in init]
    ref, opt = pair.make_torch(tps, {}), pair.make(fps, {}, backend=backend)
    for t in range(3):
        _set_grads([fps, tps], _grads(tps, gen))
        opt.step(), ref.step()
        for i, (a, b) in enumerate(zip(fps, tps)):
            dt = torch.float64 if b.dtype == torch.float64 else torch.float32
            _assert_close(a, b, dt, f"step {t + 1}: param {i} ({b.dtype})")
            assert a.dtype == b.dtype
