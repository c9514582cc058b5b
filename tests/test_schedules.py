"""fusedopt.schedules against their closed forms, and every torch scheduler with a tensor lr.

Error budget of the comparisons:

* closed forms: both sides evaluate the factor with at most ~10 fp64 operations on numbers
  <= 1 in magnitude (cos, sqrt and the division are correctly rounded or within 1 ulp), so they
  agree to 16 * 2^-53 times the base lr (absolute, because ``1 + cos`` cancels near the end of a
  cosine; a relative bound would be wrong there);
* tensor lr: an fp64 lr tensor goes through the same fp64 operations in the same order as a
  Python float, so lr values and whole parameter trajectories must be bitwise equal; an fp32
  lr tensor rounds at most 4 times per scheduler step (torch's recursive schedulers carry the
  previous lr, so errors accumulate linearly): |lr32_t - lr_t| <= (1 + 4 t) * 2^-24 * max lr.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as L

import fusedopt
from fusedopt.schedules import (DECAY_SHAPES, InverseSqrtLR, WarmupCosineLR,
                                WarmupStableDecayLR, scale_lr_)

from host_sync import HostSyncCounter

BASE_LR = 1e-2
U64 = 2.0 ** -53
U32 = 2.0 ** -24


def _opt(lr, n_groups: int = 1, **kw) -> fusedopt.Adam:
    groups = [{"params": [torch.nn.Parameter(torch.linspace(-1.0, 1.0, 5) * (i + 1))]}
              for i in range(n_groups)]
    return fusedopt.Adam(groups, lr=lr, backend="reference", **kw)


def _step_alone(sched) -> None:
    """A scheduler step without an optimizer step (torch warns about that order; irrelevant)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
        sched.step()


def _lrs(sched, steps: int) -> list[float]:
    """lr of group 0 after construction and after each of ``steps`` scheduler steps."""
    out = [float(sched.optimizer.param_groups[0]["lr"])]
    for _ in range(steps):
        _step_alone(sched)
        out.append(float(sched.optimizer.param_groups[0]["lr"]))
    return out


# ---------------------------------------------------------------------- closed forms
def _warmup_np(t, w, s):
    return s + (1 - s) * t / max(w, 1)


def closed_warmup_cosine(t: np.ndarray, w: int, total: int, r: float, s: float) -> np.ndarray:
    p = np.clip((t - w) / (total - w), 0.0, 1.0)
    decay = r + (1 - r) * (1 + np.cos(np.pi * p)) / 2
    return np.where(t < w, _warmup_np(t, w, s), decay)


def closed_wsd(t, w, stable, d, r, shape, s):
    p = np.clip((t - w - stable) / d, 0.0, 1.0)
    g = {"linear": 1 - p, "cosine": (1 + np.cos(np.pi * p)) / 2, "1-sqrt": 1 - np.sqrt(p)}[shape]
    return np.where(t < w, _warmup_np(t, w, s), r + (1 - r) * g)


def closed_inverse_sqrt(t, w, tau, s):
    return np.where(t < w, _warmup_np(t, w, s), np.sqrt(tau / np.maximum(t, tau)))


CLOSED_FORMS = [
    ("cosine", lambda o: WarmupCosineLR(o, 5, 40, 0.1, 0.0),
     lambda t: closed_warmup_cosine(t, 5, 40, 0.1, 0.0)),
    ("cosine-nowarmup", lambda o: WarmupCosineLR(o, 0, 17, 0.0, 0.5),
     lambda t: closed_warmup_cosine(t, 0, 17, 0.0, 0.5)),
    ("cosine-start", lambda o: WarmupCosineLR(o, 8, 30, 0.05, 0.25),
     lambda t: closed_warmup_cosine(t, 8, 30, 0.05, 0.25)),
    *[(f"wsd-{shape}", lambda o, sh=shape: WarmupStableDecayLR(o, 4, 10, 16, 0.1, sh),
       lambda t, sh=shape: closed_wsd(t, 4, 10, 16, 0.1, sh, 0.0)) for shape in DECAY_SHAPES],
    ("wsd-nowarmup", lambda o: WarmupStableDecayLR(o, 0, 0, 7, 0.0, "cosine", 0.3),
     lambda t: closed_wsd(t, 0, 0, 7, 0.0, "cosine", 0.3)),
    ("inverse-sqrt", lambda o: InverseSqrtLR(o, 6), lambda t: closed_inverse_sqrt(t, 6, 6, 0.0)),
    ("inverse-sqrt-t5", lambda o: InverseSqrtLR(o, 0, timescale=9),
     lambda t: closed_inverse_sqrt(t, 0, 9, 0.0)),
    ("inverse-sqrt-start", lambda o: InverseSqrtLR(o, 10, timescale=20, warmup_start_factor=0.1),
     lambda t: closed_inverse_sqrt(t, 10, 20, 0.1)),
]


@pytest.mark.parametrize("name,make,closed", CLOSED_FORMS, ids=[c[0] for c in CLOSED_FORMS])
def test_schedule_matches_closed_form(name, make, closed):
    steps = 60
    got = np.array(_lrs(make(_opt(BASE_LR)), steps))
    want = BASE_LR * closed(np.arange(steps + 1, dtype=np.float64))
    np.testing.assert_allclose(got, want, rtol=0, atol=16 * U64 * BASE_LR)


def test_schedule_landmarks():
    """Values every reader of the docstrings can check by hand (exact in fp64)."""
    lrs = _lrs(WarmupCosineLR(_opt(1.0), warmup_steps=10, total_steps=110, min_lr_ratio=0.2), 120)
    assert lrs[0] == 0.0 and lrs[5] == 0.5 and lrs[10] == 1.0
    assert lrs[60] == pytest.approx(0.6, abs=4 * U64)  # half-way: r + (1 - r) / 2
    assert lrs[110] == 0.2 and lrs[120] == 0.2
    lrs = _lrs(WarmupStableDecayLR(_opt(1.0), 2, 5, 4, 0.0, "1-sqrt"), 15)
    assert lrs[2:8] == [1.0] * 6 and lrs[8] == 0.5 and lrs[11:] == [0.0] * 5
    lrs = _lrs(InverseSqrtLR(_opt(1.0), warmup_steps=4), 16)
    assert lrs[:5] == [0.0, 0.25, 0.5, 0.75, 1.0] and lrs[16] == 0.5


RESUMABLE = [lambda o: WarmupCosineLR(o, 5, 40, 0.1), lambda o: WarmupStableDecayLR(o, 4, 10, 16),
             lambda o: InverseSqrtLR(o, 0, timescale=9)]


@pytest.mark.parametrize("make", RESUMABLE, ids=["cosine", "wsd", "inverse-sqrt"])
def test_schedule_resume_and_epoch_form(make):
    """state_dict mid-run resumes the same lrs; step(epoch) jumps to the closed form."""
    ref = _lrs(make(_opt(BASE_LR)), 30)
    sched = make(_opt(BASE_LR))
    _lrs(sched, 12)
    saved = sched.state_dict()
    opt2 = _opt(BASE_LR)
    sched2 = make(opt2)
    sched2.load_state_dict(saved)
    assert _lrs(sched2, 18)[1:] == ref[13:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch deprecates step(epoch)
        sched2.step(7)
    assert float(opt2.param_groups[0]["lr"]) == ref[7]


def test_schedules_are_torch_lr_schedulers_per_group():
    """Lightning and HF Trainer accept any LRScheduler; every group keeps its own base lr."""
    opt = _opt(BASE_LR, n_groups=2)
    opt.param_groups[1]["lr"] = 3 * BASE_LR
    sched = WarmupStableDecayLR(opt, 2, 3, 5)
    assert isinstance(sched, L.LRScheduler)
    assert _lrs(sched, 3)[-1] == BASE_LR
    assert [g["lr"] for g in opt.param_groups] == [BASE_LR, 3 * BASE_LR]
    assert sched.get_last_lr() == [BASE_LR, 3 * BASE_LR]


@pytest.mark.parametrize("bad", [
    lambda o: WarmupCosineLR(o, 10, 10), lambda o: WarmupCosineLR(o, -1, 10),
    lambda o: WarmupCosineLR(o, 0, 10, min_lr_ratio=1.5),
    lambda o: WarmupStableDecayLR(o, 0, 0, 0), lambda o: WarmupStableDecayLR(o, 0, 1, 1,
                                                                             decay_shape="exp"),
    lambda o: InverseSqrtLR(o, 10, timescale=5), lambda o: InverseSqrtLR(o, 2.5),
    lambda o: scale_lr_(o, 0.0), lambda o: scale_lr_(o, math.nan),
])
def test_schedule_validation(bad):
    with pytest.raises(ValueError):
        bad(_opt(BASE_LR))


# ---------------------------------------------------------------------- tensor lr
def _torch_schedulers():
    """Every torch.optim.lr_scheduler scheduler (2.13) and ours: (name, factory, stepper)."""
    plain = lambda s, t: s.step()  # noqa: E731
    metric = lambda s, t: s.step(1.0 if t < 3 else 2.0)  # noqa: E731 - worse after step 3
    return [
        ("LambdaLR", lambda o: L.LambdaLR(o, lambda e: 1.0 / (1 + 0.3 * e)), plain),
        ("MultiplicativeLR", lambda o: L.MultiplicativeLR(o, lambda e: 0.9), plain),
        ("StepLR", lambda o: L.StepLR(o, 4, 0.5), plain),
        ("MultiStepLR", lambda o: L.MultiStepLR(o, [3, 7, 11], 0.3), plain),
        ("ConstantLR", lambda o: L.ConstantLR(o, 0.25, 5), plain),
        ("LinearLR", lambda o: L.LinearLR(o, 0.1, 1.0, 8), plain),
        ("ExponentialLR", lambda o: L.ExponentialLR(o, 0.93), plain),
        ("SequentialLR", lambda o: L.SequentialLR(
            o, [L.LinearLR(o, 0.1, 1.0, 5), L.CosineAnnealingLR(o, 12, 1e-4)], [5]), plain),
        ("PolynomialLR", lambda o: L.PolynomialLR(o, 15, 2.0), plain),
        ("CosineAnnealingLR", lambda o: L.CosineAnnealingLR(o, 9, 1e-4), plain),
        ("ChainedScheduler", lambda o: L.ChainedScheduler(
            [L.ConstantLR(o, 0.5, 4), L.ExponentialLR(o, 0.9)]), plain),
        ("ReduceLROnPlateau", lambda o: L.ReduceLROnPlateau(o, factor=0.5, patience=2), metric),
        ("CyclicLR", lambda o: L.CyclicLR(o, 1e-3, 1e-2, step_size_up=4), plain),
        ("CosineAnnealingWarmRestarts", lambda o: L.CosineAnnealingWarmRestarts(o, 5, 2, 1e-4),
         plain),
        ("OneCycleLR", lambda o: L.OneCycleLR(o, 2e-2, total_steps=40), plain),
        ("WarmupCosineLR", lambda o: WarmupCosineLR(o, 4, 20, 0.1), plain),
        ("WarmupStableDecayLR", lambda o: WarmupStableDecayLR(o, 3, 6, 8, 0.1, "1-sqrt"), plain),
        ("InverseSqrtLR", lambda o: InverseSqrtLR(o, 5), plain),
    ]


SCHEDULERS = _torch_schedulers()
STEPS = 30


def _train(lr, make, stepper, lr_dtype_check=None):
    """30 Adam steps on a fixed quadratic; returns (lr per step, params per step, the optimizer)."""
    torch.manual_seed(1)
    p = torch.nn.Parameter(torch.randn(7))
    target = torch.randn(7)
    opt = fusedopt.Adam([p], lr=lr, capturable=isinstance(lr, torch.Tensor), backend="reference")
    sched = make(opt)
    lrs, params = [], []
    for t in range(STEPS):
        p.grad = 2 * (p.detach() - target) + 0.1 * torch.randn(7)
        opt.step()
        stepper(sched, t)
        lrs.append(float(opt.param_groups[0]["lr"]))  # a copy: the tensor lr is mutated later
        params.append(p.detach().clone())
        if lr_dtype_check is not None:
            lr_dtype_check(opt)
    return lrs, torch.stack(params), opt


@pytest.mark.parametrize("name,make,stepper", SCHEDULERS, ids=[s[0] for s in SCHEDULERS])
def test_tensor_lr_same_trajectory_as_float(name, make, stepper):
    lr_f, params_f, _ = _train(BASE_LR, make, stepper)
    lr_t = torch.tensor(BASE_LR, dtype=torch.float64)
    ptr = lr_t.data_ptr()

    def same_tensor(opt):  # graph safety: the scheduler writes into the captured tensor
        assert opt.param_groups[0]["lr"] is lr_t and lr_t.data_ptr() == ptr

    lr64, params64, _ = _train(lr_t, make, stepper, same_tensor)
    assert lr64 == lr_f, name
    assert torch.equal(params64, params_f), name
    assert len(set(lr_f)) > 1, f"{name}: the schedule never changed the lr in {STEPS} steps"

    lr_32 = torch.tensor(BASE_LR, dtype=torch.float32)
    lr32, _, _ = _train(lr_32, make, stepper)
    budget = [(1 + 4 * (t + 1)) * U32 * max(lr_f) for t in range(STEPS)]
    err = [abs(a - b) for a, b in zip(lr32, lr_f)]
    assert all(e <= b for e, b in zip(err, budget)), (name, max(err))


@pytest.mark.parametrize("name,make,stepper", SCHEDULERS, ids=[s[0] for s in SCHEDULERS])
def test_scheduler_with_tensor_lr_reads_nothing_on_the_host(name, make, stepper):
    """Only ReduceLROnPlateau reads the lr on the host (``float(group["lr"])`` when it reduces:
    torch 2.13 lr_scheduler.py, ``_reduce_lr``); on CUDA that is a sync at those steps."""
    lr = torch.tensor(BASE_LR)
    sched = make(_opt(lr, capturable=True))
    with HostSyncCounter() as counter:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            for t in range(STEPS):
                stepper(sched, t)
    if name == "ReduceLROnPlateau":
        assert counter.calls and set(counter.calls) == {"_local_scalar_dense"}
    else:
        assert counter.calls == []


@pytest.mark.parametrize("make", RESUMABLE, ids=["cosine", "wsd", "inverse-sqrt"])
def test_schedule_rounds_once_into_fp32_lr(make):
    """fusedopt's schedules compute base * factor in fp64 and round once into an fp32 lr."""
    lr32 = torch.tensor(BASE_LR, dtype=torch.float32)
    exact = _lrs(make(_opt(float(lr32))), 50)  # the same base, every value in fp64
    got = _lrs(make(_opt(lr32, capturable=True)), 50)
    assert got == [float(torch.tensor(x, dtype=torch.float32)) for x in exact]


@pytest.mark.parametrize("make", [lambda o: WarmupCosineLR(o, 3, 20, 0.1),
                                  lambda o: WarmupStableDecayLR(o, 2, 3, 5),
                                  lambda o: InverseSqrtLR(o, 3)],
                         ids=["cosine", "wsd", "inverse-sqrt"])
def test_schedule_step_reads_nothing_on_the_host(make):
    lr = torch.tensor(BASE_LR)
    opt = _opt(lr, capturable=True)
    sched = make(opt)
    with HostSyncCounter() as counter:
        for _ in range(10):
            _step_alone(sched)
        scale_lr_(opt, 0.5)
    assert counter.calls == []
    assert opt.param_groups[0]["lr"] is lr
    with HostSyncCounter() as control:  # the counter does see a host read
        float(lr)
    assert control.calls == ["_local_scalar_dense"]


def test_scale_lr_in_place():
    lr = torch.tensor(0.25, dtype=torch.float64)
    opt = _opt(lr, n_groups=2, capturable=True)
    opt.param_groups[1]["lr"] = 0.5
    scale_lr_(opt, 0.5)
    assert opt.param_groups[0]["lr"] is lr and float(lr) == 0.125
    assert opt.param_groups[1]["lr"] == 0.25


@pytest.mark.gpu
def test_cuda_graph_replay_sees_scheduled_lr():
    """A captured fusedopt step replayed under a schedule equals the eager run (needs CUDA)."""
    dev = "cuda"
    target = torch.randn(1000, device=dev)

    def make():
        p = torch.nn.Parameter(torch.zeros(1000, device=dev))
        opt = fusedopt.AdamW([p], lr=torch.tensor(1e-2, device=dev), capturable=True)
        sched = WarmupCosineLR(opt, 5, 40, 0.1)
        p.grad = torch.zeros_like(p)
        return p, opt, sched

    p_e, opt_e, sched_e = make()
    p_g, opt_g, sched_g = make()
    for p, opt in ((p_e, opt_e), (p_g, opt_g)):  # one eager step creates the state
        p.grad.copy_(2 * (p.detach() - target))
        opt.step()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            opt_g.step()
    torch.cuda.current_stream().wait_stream(s)
    sched_e.step()
    sched_g.step()
    for _ in range(30):
        p_e.grad.copy_(2 * (p_e.detach() - target))
        opt_e.step()
        sched_e.step()
        p_g.grad.copy_(2 * (p_g.detach() - target))
        graph.replay()
        sched_g.step()
    torch.testing.assert_close(p_g, p_e, rtol=0, atol=0)
