"""Validation before mutation (docs/architecture.md#validation): bad input raises a clear error
naming the culprit and leaves params, grads, state and step counts exactly as they were."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fusedopt
from fusedopt.registry import ALGORITHMS


def _snapshot(opt, params):
    return ([p.detach().clone() for p in params],
            [None if p.grad is None else p.grad.clone() for p in params],
            copy.deepcopy(opt.state_dict()))


def _assert_unchanged(opt, params, snap):
    ps, gs, sd = snap
    for p, p0, g0 in zip(params, ps, gs):
        assert torch.equal(p.detach(), p0)
        if g0 is not None:
            dense = (lambda t: t.to_dense() if t.is_sparse else t)  # noqa: E731
            torch.testing.assert_close(dense(p.grad), dense(g0), rtol=0, atol=0, equal_nan=True)
    now = opt.state_dict()
    # Schedule-Free's host schedule (k, weight_sum, lr_max, scheduled_lr) advances on a step
    # the device skips: documented (docs/algorithms.md#schedule-free-adamw, its AMP note)
    host_schedule = ("k", "weight_sum", "lr_max", "scheduled_lr")
    strip = (lambda gs: [{k: v for k, v in g.items() if k not in host_schedule} for g in gs]
             if isinstance(opt, fusedopt.ScheduleFreeAdamW) else gs)  # noqa: E731
    assert strip(now["param_groups"]) == strip(sd["param_groups"])
    assert now["state"].keys() == sd["state"].keys()
    for k, st0 in sd["state"].items():
        if isinstance(st0, torch.Tensor):  # a global tensor (AdaGrad-Norm's accumulator)
            assert torch.equal(now["state"][k], st0), k
            continue
        for key, v in st0.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(now["state"][k][key], v), key
            elif isinstance(v, dict):
                for kk, vv in v.items():
                    assert torch.equal(now["state"][k][key][kk], vv)


def _stepped(algo="adamw", n=2, **kw):
    """An optimizer that has already taken ``n`` steps (so it has state to protect)."""
    info = ALGORITHMS[algo]
    params = [torch.randn(4, 3, requires_grad=True), torch.randn(5, requires_grad=True)]
    opt = info.make(params, backend="reference", **kw)
    for _ in range(n):
        _drive(info, opt, params)
    return info, opt, params


def _drive(info, opt, params, loss=1.0):
    for p in params:
        p.grad = torch.randn_like(p)
    if info.needs_normalizer:
        opt.record_normalizer()
    if info.needs_loss:
        opt.step(loss=torch.tensor(loss))
    else:
        opt.step()


# ---------------------------------------------------------------- construction-time errors
@pytest.mark.parametrize("kw,match", [
    (dict(lr=float("nan")), "learning rate"),
    (dict(lr=-1e-3), "learning rate"),
    (dict(lr=float("inf")), "learning rate"),
    (dict(betas=(1.0, 0.999)), "beta parameter at index 0"),
    (dict(betas=(0.9, float("nan"))), "beta parameter at index 1"),
    (dict(betas=(0.9,)), "betas"),
    (dict(eps=-1e-8), "eps"),
    (dict(eps=float("nan")), "eps"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(variant="adamx"), "variant"),
    (dict(max_grad_norm=0.0), "max_grad_norm"),
    (dict(max_grad_norm=float("nan")), "max_grad_norm"),
    (dict(backend="tpu"), "backend"),
    (dict(state_dtype=torch.float16), "state_dtype"),
])
def test_bad_adamw_hyperparameters(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fusedopt.AdamW([torch.randn(3, requires_grad=True)], **kw)


def test_empty_param_list():
    with pytest.raises(ValueError, match="empty"):
        fusedopt.AdamW([])


@pytest.mark.parametrize("make,match", [
    (lambda: torch.randn(3, dtype=torch.complex64, requires_grad=True), "complex"),
    (lambda: torch.randn(3).to(torch.int32), "dtype"),
    (lambda: torch.randn(1, 4).expand(3, 4).detach().requires_grad_(), "share memory"),
    (lambda: torch.randn(4).to_sparse().requires_grad_(), "sparse"),
])
def test_bad_params(make, match):
    with pytest.raises((TypeError, ValueError), match=match):
        fusedopt.AdamW([torch.randn(2, requires_grad=True), make()])


def test_iansgd_delta_and_floor_zero():
    with pytest.raises(ValueError, match="delta and floor"):
        fusedopt.IANSGD([torch.randn(3, requires_grad=True)], delta=0.0, floor=0.0)


def test_backend_not_built_is_clear():
    for name in fusedopt.backends.BACKENDS:
        ok, reason = fusedopt.backends.availability(name)
        if not ok:
            with pytest.raises(fusedopt.backends.BackendNotAvailable, match=name):
                fusedopt.AdamW([torch.randn(3, requires_grad=True)], backend=name)
            assert reason


# ---------------------------------------------------------------- step-time errors, no mutation
def _set_grad(p, g):
    p.grad_dtype = None  # let torch accept the odd grad so that fusedopt has to catch it
    p.grad = g


def _reshape_param(p):
    """torch refuses a wrong-shape grad, but a param's data can be swapped under its grad."""
    p.data = torch.randn(p.numel() + 1)


def _bad_grad_cases():
    yield "complex", lambda p: _set_grad(p, torch.randn(p.shape, dtype=torch.complex64)), \
        TypeError, "complex"
    yield "shape", _reshape_param, ValueError, "shape"
    yield "dtype", lambda p: _set_grad(p, torch.randn(p.shape, dtype=torch.float64)), \
        TypeError, "dtype"
    yield "sparse", lambda p: _set_grad(p, torch.randn(p.shape).to_sparse()), TypeError, "sparse"


@pytest.mark.parametrize("algo", list(ALGORITHMS))
@pytest.mark.parametrize("case", list(_bad_grad_cases()), ids=lambda c: c[0])
def test_bad_grad_leaves_everything_untouched(algo, case):
    _, spoil, exc, match = case
    info, opt, params = _stepped(algo)
    for p in params:
        p.grad = torch.randn_like(p)
    if info.needs_normalizer:
        opt.record_normalizer()
    spoil(params[1])
    snap = _snapshot(opt, params)
    with pytest.raises(exc, match=match) as err:
        opt.step(**({"loss": torch.tensor(1.0)} if info.needs_loss else {}))
    assert "param 1" in str(err.value)
    _assert_unchanged(opt, params, snap)


@pytest.mark.parametrize("key,value,match", [
    ("lr", float("nan"), "learning rate"), ("lr", -0.1, "learning rate"),
    ("betas", (0.9, 1.5), "beta"), ("eps", float("nan"), "eps"),
    ("weight_decay", float("-inf"), "weight_decay"),
])
def test_bad_hyperparameter_set_between_steps(key, value, match):
    info, opt, params = _stepped("adamw")
    for p in params:
        p.grad = torch.randn_like(p)
    opt.param_groups[0][key] = value
    snap = _snapshot(opt, params)
    with pytest.raises(ValueError, match=match):
        opt.step()
    _assert_unchanged(opt, params, snap)


@pytest.mark.parametrize("algo", ["adaml", "adaml_additive"])
def test_adaml_without_loss(algo):
    info, opt, params = _stepped(algo)
    for p in params:
        p.grad = torch.randn_like(p)
    snap = _snapshot(opt, params)
    with pytest.raises(ValueError, match="loss"):
        opt.step()
    _assert_unchanged(opt, params, snap)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_adaml_non_finite_loss_skips_the_step(bad):
    info, opt, params = _stepped("adaml")
    for p in params:
        p.grad = torch.randn_like(p)
    snap = _snapshot(opt, params)
    opt.step(loss=torch.tensor(bad))  # no error: skipped on the device, as AMP skips
    _assert_unchanged(opt, params, snap)
    _drive(info, opt, params)  # and the next finite loss steps again
    assert not torch.equal(params[0].detach(), snap[0][0])


def test_iansgd_step_without_normalizer():
    info, opt, params = _stepped("iansgd")
    for p in params:
        p.grad = torch.randn_like(p)
    snap = _snapshot(opt, params)
    with pytest.raises(ValueError, match="record_normalizer"):
        opt.step()
    _assert_unchanged(opt, params, snap)


def test_param_on_another_device_is_rejected():
    meta = torch.empty(3, device="meta", requires_grad=True)
    with pytest.raises(ValueError, match="device"):
        fusedopt.AdamW([torch.randn(3, requires_grad=True), meta])


def test_add_param_group_validates_before_adding():
    opt = fusedopt.AdamW([torch.randn(3, requires_grad=True)], backend="reference")
    with pytest.raises(ValueError, match="learning rate"):
        opt.add_param_group({"params": [torch.randn(2, requires_grad=True)], "lr": -1.0})
    assert len(opt.param_groups) == 1


def test_named_parameters_are_named_in_errors():
    model = torch.nn.Linear(3, 2)
    opt = fusedopt.AdamW(model.named_parameters(), backend="reference")
    model.weight.grad = torch.randn(2, 3)
    model.bias.grad = torch.randn(2)
    _reshape_param(model.bias)
    with pytest.raises(ValueError, match='"bias"'):
        opt.step()


# ---------------------------------------------------------------- properties (hypothesis)
_floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                    st.sampled_from([0.0, -0.0, 1.0, 1e-300, -1e-8, math.nan, math.inf]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lr=_floats, b1=_floats, b2=_floats, eps=_floats, wd=_floats)
def test_property_invalid_hyperparameters_never_mutate(lr, b1, b2, eps, wd):
    """Whatever the hyperparameters: either the step runs, or it raises and nothing changed."""
    torch.manual_seed(0)
    params = [torch.randn(3, 2, requires_grad=True), torch.randn(4, requires_grad=True)]
    opt = fusedopt.AdamW(params, backend="reference")
    _drive(ALGORITHMS["adamw"], opt, params)
    for p in params:
        p.grad = torch.randn_like(p)
    group = opt.param_groups[0]
    group.update(lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    valid = (math.isfinite(lr) and lr >= 0 and all(math.isfinite(b) and 0 <= b < 1 for b in (b1, b2))
             and math.isfinite(eps) and eps >= 0 and math.isfinite(wd) and wd >= 0)
    snap = _snapshot(opt, params)
    if valid:
        opt.step()
    else:
        with pytest.raises(ValueError):
            opt.step()
        _assert_unchanged(opt, params, snap)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(algo=st.sampled_from(sorted(ALGORITHMS)), which=st.integers(0, 2),
       kind=st.sampled_from(["nan", "inf", "-inf"]), clip=st.booleans())
def test_property_skip_on_inf_leaves_everything_untouched(algo, which, kind, clip):
    """Under a LossScaler a non-finite grad anywhere skips the whole step for every param."""
    torch.manual_seed(1)
    info = ALGORITHMS[algo]
    params = [torch.randn(3, 2, requires_grad=True), torch.randn(4, requires_grad=True),
              torch.randn(1, requires_grad=True)]
    opt = info.make(params, backend="reference", max_grad_norm=1.0 if clip else None)
    _drive(info, opt, params)  # one good step first, so that there is state to protect
    scaler = fusedopt.amp.LossScaler(init_scale=8.0)
    for p in params:
        p.grad = torch.randn_like(p) * 8.0
    if info.needs_normalizer:
        opt.record_normalizer(grad_scale=scaler.get_scale())
    params[which].grad.view(-1)[0] = float(kind)
    snap = _snapshot(opt, params)
    scaler.step(opt, **({"loss": torch.tensor(1.0)} if info.needs_loss else {}))
    scaler.update()
    _assert_unchanged(opt, params, snap)
    assert float(scaler.get_scale()) == 4.0
