"""The optimizer classes of the element-wise algorithms (Lion, Adan, ScheduleFreeAdamW):
validation, checkpoints, maximize, and Schedule-Free's train()/eval() and schedulefree
checkpoint compatibility (the numerics against the public implementations are in
tests/test_public_references.py)."""
from __future__ import annotations

import io

import pytest
import torch

import fusedopt
from fusedopt.registry import ALGORITHMS

NEW = ["lion", "adan", "schedule_free_adamw"]


def _native_elementwise() -> bool:
    try:
        import fusedopt._C as C
    except ImportError:
        return False
    return hasattr(C, "elementwise_step")


#: the backends the class-level tests run on: the reference, and cpu once its native
#: element-wise kernel is built
BACKENDS = ["reference"] + (["cpu"] if _native_elementwise() else [])
SHAPES = [(6, 4), (9,), (1,), (0,)]


def _params(dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
            for s in SHAPES]


def _grads(t, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1000 + t)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES]


def _drive(opt, params, steps, start=0, dtype=torch.float32, sign=1.0):
    for t in range(start, start + steps):
        for p, g in zip(params, _grads(t, dtype)):
            p.grad = sign * g
        opt.step()


def _roundtrip(sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _equal(xs, ys):
    return all(torch.equal(x.detach(), y.detach()) for x, y in zip(xs, ys))


# --------------------------------------------------------------------------- every new class
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("algo", NEW)
def test_state_dict_round_trip_continues_bitwise(algo, dtype, backend):
    info = ALGORITHMS[algo]
    straight = _params(dtype)
    _drive(info.make(straight, backend=backend), straight, 7, dtype=dtype)
    first = _params(dtype)
    opt1 = info.make(first, backend=backend)
    _drive(opt1, first, 4, dtype=dtype)
    resumed = [p.detach().clone().requires_grad_() for p in first]
    opt2 = info.make(resumed, backend=backend)
    opt2.load_state_dict(_roundtrip(opt1.state_dict()))
    _drive(opt2, resumed, 3, start=4, dtype=dtype)
    assert _equal(straight, resumed)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo", NEW)
def test_maximize_is_the_negated_gradient(algo, backend):
    info = ALGORITHMS[algo]
    a, b = _params(), _params()
    _drive(info.make(a, backend=backend, maximize=True), a, 5)
    _drive(info.make(b, backend=backend), b, 5, sign=-1.0)
    assert _equal(a, b)
    assert not _equal(a, _params())


@pytest.mark.parametrize("algo", NEW)
def test_state_keys_and_dtypes(algo):
    info = ALGORITHMS[algo]
    params = _params(torch.bfloat16)
    opt = info.make(params, backend="reference", master_weights=True)
    for p in params:
        st = opt.state[p]
        assert set(st) == {"step", "master_param", *info.state_keys}
        assert all(st[k].dtype == torch.float32 and st[k].shape == p.shape
                   for k in info.state_keys)


@pytest.mark.parametrize("cls,kw,match", [
    (fusedopt.Lion, dict(betas=(0.9, 1.0)), "Invalid beta parameter at index 1"),
    (fusedopt.Lion, dict(betas=(-0.1, 0.9)), "Invalid beta parameter at index 0"),
    (fusedopt.Lion, dict(betas=(0.9, 0.99, 0.9)), "betas must be a tuple of 2"),
    (fusedopt.Lion, dict(weight_decay=-1.0), "Invalid weight_decay value"),
    (fusedopt.Lion, dict(lr=-1.0), "Invalid learning rate"),
    (fusedopt.Adan, dict(betas=(0.98, 0.92)), "betas must be a tuple of 3"),
    (fusedopt.Adan, dict(betas=(0.98, 0.92, 1.5)), "Invalid beta parameter at index 2"),
    (fusedopt.Adan, dict(eps=-1e-8), "Invalid epsilon value"),
    (fusedopt.Adan, dict(weight_decay=float("nan")), "Invalid weight_decay value"),
    (fusedopt.ScheduleFreeAdamW, dict(betas=(0.0, 0.999)), "Invalid beta parameter at index 0"),
    (fusedopt.ScheduleFreeAdamW, dict(warmup_steps=-1), "Invalid warmup_steps value"),
    (fusedopt.ScheduleFreeAdamW, dict(warmup_steps=2.5), "Invalid warmup_steps value"),
    (fusedopt.ScheduleFreeAdamW, dict(weight_lr_power=-1.0), "Invalid weight_lr_power value"),
    (fusedopt.ScheduleFreeAdamW, dict(r=float("inf")), "Invalid r value"),
    (fusedopt.ScheduleFreeAdamW, dict(eps=-1.0), "Invalid epsilon value"),
])
def test_bad_hyperparameters_raise_before_anything(cls, kw, match):
    with pytest.raises(ValueError, match=match):
        cls(_params(), **kw)


def test_adan_no_prox_must_be_a_bool():
    with pytest.raises(TypeError, match="no_prox must be a bool"):
        fusedopt.Adan(_params(), no_prox=1)


# --------------------------------------------------------------------------- Schedule-Free
def test_schedule_free_refuses_a_tensor_lr_and_capturable():
    with pytest.raises(TypeError, match="lr must be a float"):
        fusedopt.ScheduleFreeAdamW(_params(), lr=torch.tensor(1e-3))
    with pytest.raises(ValueError, match="capturable=True is not supported"):
        fusedopt.ScheduleFreeAdamW(_params(), capturable=True)
    opt = fusedopt.ScheduleFreeAdamW(_params())
    opt.param_groups[0]["lr"] = torch.tensor(1e-3)
    with pytest.raises(TypeError, match="lr must be a float"):
        opt.step()


def test_schedule_free_step_in_eval_mode_raises_and_changes_nothing():
    params = _params()
    opt = fusedopt.ScheduleFreeAdamW(params, backend="reference")
    _drive(opt, params, 2)
    opt.eval()
    before = [p.detach().clone() for p in params]
    k = opt.param_groups[0]["k"]
    for p, g in zip(params, _grads(9)):
        p.grad = g
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step()
    assert _equal(params, before) and opt.param_groups[0]["k"] == k
    opt.train()
    opt.step()
    assert opt.param_groups[0]["k"] == k + 1


def test_schedule_free_train_eval_before_the_first_step_move_nothing():
    params = _params()
    opt = fusedopt.ScheduleFreeAdamW(params, backend="reference")
    with torch.no_grad():  # params loaded after construction: z is stale until the first step
        for p in params:
            p.mul_(2.0)
    before = [p.detach().clone() for p in params]
    opt.eval()
    assert _equal(params, before) and not opt.param_groups[0]["train_mode"]
    opt.train()
    assert _equal(params, before) and opt.param_groups[0]["train_mode"]


def test_schedule_free_eval_train_round_trip():
    params = _params(torch.float64)
    opt = fusedopt.ScheduleFreeAdamW(params, backend="reference", weight_decay=0.1)
    _drive(opt, params, 5, dtype=torch.float64)
    y = [p.detach().clone() for p in params]
    opt.eval()
    assert not _equal(params, y)
    opt.train()
    for p, q in zip(params, y):
        torch.testing.assert_close(p.detach(), q, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_schedule_free_master_weights_switch_on_the_master(backend):
    """bf16 params with fp32 masters: eval()/train() interpolate the master, the param is
    the master rounded; a round trip restores the master to fp32 rounding."""
    params = _params(torch.bfloat16)
    opt = fusedopt.ScheduleFreeAdamW(params, backend=backend, master_weights=True)
    _drive(opt, params, 4, dtype=torch.bfloat16)
    masters = [opt.state[p]["master_param"].clone() for p in params]
    opt.eval()
    for p, m0 in zip(params, masters):
        m = opt.state[p]["master_param"]
        x = torch.lerp(m0.double(), opt.state[p]["z"].double(), 1 - 1 / 0.9)
        torch.testing.assert_close(m.double(), x, rtol=1e-6, atol=1e-6)
        assert torch.equal(p.detach(), m.to(torch.bfloat16))
    opt.train()
    for p, m0 in zip(params, masters):
        m = opt.state[p]["master_param"]
        torch.testing.assert_close(m, m0, rtol=1e-5, atol=1e-6)
        assert torch.equal(p.detach(), m.to(torch.bfloat16))


def _sf_pair(steps_before, **kw):
    sf = pytest.importorskip("schedulefree")
    a, b = _params(torch.float64), _params(torch.float64)
    ours = fusedopt.ScheduleFreeAdamW(a, backend="reference", **kw)
    theirs = sf.AdamWScheduleFree(b, **kw)
    theirs.train()
    _drive(ours, a, steps_before, dtype=torch.float64)
    _drive(theirs, b, steps_before, dtype=torch.float64)
    return a, b, ours, theirs


def _close(xs, ys):
    for x, y in zip(xs, ys):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=1e-12, atol=1e-12)


def test_schedule_free_loads_a_schedulefree_checkpoint():
    """A checkpoint of schedulefree.AdamWScheduleFree (saved in eval mode, as its authors
    advise; no per-param step) loads and continues as schedulefree does."""
    sf = pytest.importorskip("schedulefree")
    kw = dict(lr=1e-2, weight_decay=0.1, warmup_steps=5)
    a, b, _, theirs = _sf_pair(3, **kw)
    theirs.eval()
    sd = _roundtrip(theirs.state_dict())
    resumed = [p.detach().clone().requires_grad_() for p in b]
    ours = fusedopt.ScheduleFreeAdamW(resumed, backend="reference", **kw)
    ours.load_state_dict(sd)
    assert not ours.param_groups[0]["train_mode"] and ours.param_groups[0]["k"] == 3
    assert all(float(ours.state[p]["step"]) == 3.0 for p in resumed)
    ours.train()
    theirs.train()
    _drive(ours, resumed, 4, start=3, dtype=torch.float64)
    _drive(theirs, b, 4, start=3, dtype=torch.float64)
    _close(resumed, b)
    # and back: fusedopt's checkpoint into schedulefree
    back = [p.detach().clone().requires_grad_() for p in resumed]
    other = sf.AdamWScheduleFree(back, **kw)
    other.load_state_dict(_roundtrip(ours.state_dict()))
    _drive(ours, resumed, 2, start=7, dtype=torch.float64)
    _drive(other, back, 2, start=7, dtype=torch.float64)
    _close(resumed, back)


def test_schedule_free_params_loaded_after_construction_are_kept():
    """z is created at construction but set to the params at the first step: params written
    in between (a model checkpoint loaded after the optimizer was built) are stepped from,
    as schedulefree (which creates z at the first step) does."""
    sf = pytest.importorskip("schedulefree")
    a, b = _params(torch.float64), _params(torch.float64)
    ours = fusedopt.ScheduleFreeAdamW(a, backend="reference")
    theirs = sf.AdamWScheduleFree(b)
    theirs.train()
    with torch.no_grad():
        for x, y in zip(a, b):
            x.add_(1.0)
            y.add_(1.0)
    _drive(ours, a, 3, dtype=torch.float64)
    _drive(theirs, b, 3, dtype=torch.float64)
    _close(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_schedule_free_amp_skip_advances_the_schedule_only(backend):
    """A step skipped on the device (non-finite grad under AMP) leaves params and states
    bitwise as they were; the host schedule advances (documented: no host read per step)."""
    params = _params()
    opt = fusedopt.ScheduleFreeAdamW(params, backend=backend, warmup_steps=4)
    scaler = fusedopt.amp.LossScaler(init_scale=2.0 ** 10)
    _drive(opt, params, 2)
    before = [p.detach().clone() for p in params]
    states = [t.clone() for p in params for t in opt.state[p].values()]
    for p, g in zip(params, _grads(5)):
        p.grad = g * scaler.get_scale()
    params[0].grad.view(-1)[0] = float("inf")
    scaler.step(opt)
    scaler.update()
    assert _equal(params, before)
    assert _equal([t for p in params for t in opt.state[p].values()], states)
    assert opt.param_groups[0]["k"] == 3
