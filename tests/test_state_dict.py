"""state_dict compatibility with torch.optim and bitwise round trips (docs/migration.md#state_dict,
docs/numerics.md#determinism)."""
from __future__ import annotations

import copy
import io

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fusedopt
from fusedopt.registry import ALGORITHMS

SHAPES = [(6, 4), (9,), (1,), (0,)]


def _params(seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen).to(dtype).requires_grad_() for s in SHAPES]


def _grads(step, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(s, generator=gen).to(dtype) for s in SHAPES]


def _drive(info, opt, params, steps, start=0, dtype=torch.float32):
    for t in range(start, start + steps):
        for p, g in zip(params, _grads(t, dtype)):
            p.grad = g
        if info.needs_normalizer:
            opt.record_normalizer()
        if info.needs_loss:
            opt.step(loss=torch.tensor(2.0 * 0.9 ** t))
        else:
            opt.step()


def _roundtrip(sd):
    """Through torch.save/torch.load, as a checkpoint would go."""
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(algo=st.sampled_from(sorted(ALGORITHMS)), k=st.integers(0, 4), n=st.integers(1, 4),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_property_state_dict_round_trip_continues_bitwise(algo, k, n, dtype):
    info = ALGORITHMS[algo]
    straight = _params(dtype=dtype)
    opt = info.make(straight, backend="reference")
    _drive(info, opt, straight, k + n, dtype=dtype)

    first = _params(dtype=dtype)
    opt1 = info.make(first, backend="reference")
    _drive(info, opt1, first, k, dtype=dtype)
    sd = _roundtrip(opt1.state_dict())
    resumed = [p.detach().clone().requires_grad_() for p in first]
    opt2 = info.make(resumed, backend="reference")
    opt2.load_state_dict(sd)
    _drive(info, opt2, resumed, n, start=k, dtype=dtype)
    for a, b in zip(straight, resumed):
        assert torch.equal(a.detach(), b.detach())


@pytest.mark.parametrize("algo", ["adamw", "adam", "amsgrad", "adagrad", "rmsprop"])
def test_torch_to_fusedopt_and_back(algo):
    """torch.optim k steps -> fusedopt n steps == torch k+n steps (to rounding); and back.

    (RMSprop only one way: fusedopt runs it as ``Adam(variant="rmsprop")``, whose param groups
    carry ``betas``, not torch.optim.RMSprop's ``alpha``.)"""
    info = ALGORITHMS[algo]
    k, n = 5, 7
    straight = _params()
    ref = info.make_torch(straight)
    _drive(info, ref, straight, k + n)

    # torch -> fusedopt
    a = _params()
    ta = info.make_torch(a)
    _drive(info, ta, a, k)
    fa = info.make(a, backend="reference")
    fa.load_state_dict(_roundtrip(ta.state_dict()))
    _drive(info, fa, a, n, start=k)
    # fusedopt -> torch
    b = _params()
    fb = info.make(b, backend="reference")
    _drive(info, fb, b, k)
    if algo != "rmsprop":
        tb = info.make_torch(b)
        tb.load_state_dict(_roundtrip(fb.state_dict()))
        _drive(info, tb, b, n, start=k)
    for x, y, z in zip(straight, a, b):
        if x.numel():
            scale = float(x.detach().abs().max())
            assert float((x - y).detach().abs().max()) <= 1e-6 * scale
            if algo != "rmsprop":
                assert float((x - z).detach().abs().max()) <= 1e-6 * scale
    for p in a:
        assert fa.state[p]["step"].dtype == torch.float32
        assert float(fa.state[p]["step"]) == k + n


def test_load_keeps_fp32_states_and_master_of_bf16_params():
    """torch's load would cast fp32 moments and the fp32 master to bf16; fusedopt keeps them."""
    params = _params(dtype=torch.bfloat16)
    opt = fusedopt.AdamW(params, master_weights=True, backend="reference")
    _drive(ALGORITHMS["adamw"], opt, params, 3, dtype=torch.bfloat16)
    sd = _roundtrip(opt.state_dict())
    again = [p.detach().clone().requires_grad_() for p in params]
    opt2 = fusedopt.AdamW(again, master_weights=True, backend="reference")
    opt2.load_state_dict(sd)
    for p, q in zip(params, again):
        for key in ("exp_avg", "exp_avg_sq", "master_param"):
            assert opt2.state[q][key].dtype == torch.float32
            assert torch.equal(opt2.state[q][key], opt.state[p][key])


def test_load_rejects_mismatched_groups_without_mutating():
    params = _params()
    opt = fusedopt.AdamW(params, backend="reference")
    _drive(ALGORITHMS["adamw"], opt, params, 2)
    before = copy.deepcopy(opt.state_dict())
    other = fusedopt.AdamW(_params()[:2], backend="reference")
    _drive(ALGORITHMS["adamw"], other, other.param_groups[0]["params"], 1)
    with pytest.raises(ValueError, match="params"):
        opt.load_state_dict(other.state_dict())
    after = opt.state_dict()
    for k in before["state"]:
        for key in before["state"][k]:
            assert torch.equal(before["state"][k][key], after["state"][k][key])


def test_state_dict_uses_torch_keys():
    params = _params()
    opt = fusedopt.AdamW(params, amsgrad=True, backend="reference")
    _drive(ALGORITHMS["amsgrad"], opt, params, 1)
    st0 = opt.state_dict()["state"][0]
    assert set(st0) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert st0["step"].shape == () and st0["step"].dtype == torch.float32


def test_group_level_step_is_given_to_every_param():
    """Apex keeps ``step`` in the param group and none per param: each param gets the group's."""
    params = _params()
    opt = fusedopt.AdamW(params, backend="reference")
    _drive(ALGORITHMS["adamw"], opt, params, 3)
    sd = opt.state_dict()
    apex_like = {"state": {i: {k: v for k, v in st.items() if k != "step"}
                           for i, st in sd["state"].items()},
                 "param_groups": [dict(g, step=3) for g in sd["param_groups"]]}
    again = [p.detach().clone().requires_grad_() for p in params]
    opt2 = fusedopt.AdamW(again, backend="reference")
    opt2.load_state_dict(apex_like)
    assert all(float(opt2.state[p]["step"]) == 3.0 for p in again)
    _drive(ALGORITHMS["adamw"], opt, params, 2, start=3)
    _drive(ALGORITHMS["adamw"], opt2, again, 2, start=3)
    for a, b in zip(params, again):
        assert torch.equal(a.detach(), b.detach())


def test_state_without_any_step_is_rejected_before_mutation():
    params = _params()
    opt = fusedopt.AdamW(params, backend="reference")
    _drive(ALGORITHMS["adamw"], opt, params, 1)
    sd = opt.state_dict()
    broken = {"state": {i: {k: v for k, v in st.items() if k != "step"}
                        for i, st in sd["state"].items()},
              "param_groups": sd["param_groups"]}
    before = [opt.state[p]["exp_avg"].clone() for p in params]
    with pytest.raises(KeyError, match="step"):
        opt.load_state_dict(broken)
    assert all(torch.equal(opt.state[p]["exp_avg"], b) for p, b in zip(params, before))
