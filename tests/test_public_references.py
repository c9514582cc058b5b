"""The element-wise algorithms against independent public implementations (test-only extras).

Each fusedopt optimizer (driven through its class, fp64 params, on the ``reference`` backend
and on ``cpu`` once its native kernels exist) and its public counterpart step the same params
with the same grads for STEPS steps, with the defaults aligned; then every param and every
state the two share must agree:

* Lion vs ``lion_pytorch.Lion`` and ``pytorch_optimizer.Lion``;
* Adan vs ``pytorch_optimizer.Adan`` (``weight_decouple`` <-> ``no_prox``; its
  ``previous_grad`` is stored negated);
* ScheduleFreeAdamW vs ``schedulefree.AdamWScheduleFree``, with warmup, weight decay, the
  polynomial weighting, and ``eval()``/``train()`` switches along the run (params equal in
  both modes);
* ADOPT vs ``pytorch_optimizer.ADOPT`` (its foreach and per-param paths; coupled and
  decoupled decay; ``clip_lambda`` ``step ** 0.25`` <-> ``clip_exponent`` 0.25, None <-> None);
* Yogi (``AdamW(variant="yogi")``) vs ``pytorch_optimizer.Yogi``, whose one difference is its
  ``initial_accumulator`` (docs/algorithms.md, Yogi).

Tolerance, RTOL = 1e-12 of each tensor's largest magnitude: every operation rounds at
2^-53 ~ 1.1e-16 of its operands, which are bounded by the tensor's scale; the two sides differ
in a few of those roundings per element and step (torch's CPU lerp and ``add(alpha=)`` fuse a
multiply-add, fusedopt's do not; ``x ** t`` against ``math.pow``), about 10 per element and
step at most, which accumulate at worst linearly: 120 steps x 10 x 1.1e-16 ~ 1.3e-13 < RTOL.
Measured (``python tests/test_public_references.py``, reference backend): params at most
1.8e-16 of their scale (Lion's bitwise equal), states at most 9.3e-16 (lion-pytorch's
momentum, written ``m * beta + g * (1 - beta)`` rather than as a lerp).
test_mutants_are_caught shows the bound is tight enough: a beta off by 1e-9, or a weight
decay left out, fails it.
"""
from __future__ import annotations

import math
import sys
from typing import Callable

import pytest
import torch
from torch import Tensor

import fusedopt

STEPS = 120
RTOL = 1e-12
SHAPES = [(7,), (31, 33), (1,), (257,), (5, 3, 2)]


def _native_elementwise() -> bool:
    try:
        import fusedopt._C as C
    except ImportError:
        return False
    return hasattr(C, "elementwise_step")


BACKENDS = ["reference"] + (["cpu"] if _native_elementwise() else [])


def _peer(name: str):
    return pytest.importorskip(name)


# --------------------------------------------------------------------------- the driver
def _problem(seed: int, steps: int) -> tuple[list[Tensor], list[list[Tensor]]]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
    grads = [[torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
             for _ in range(steps)]
    return params, grads


def run_pair(make_ours: Callable, make_theirs: Callable, *, steps: int = STEPS, seed: int = 0,
             every: Callable | None = None):
    """Step both optimizers on the same params and grads (each side its own copies: the
    peers modify ``p.grad`` in place). ``every(ours_opt, theirs_opt, a, b, t)`` runs after
    step t. Returns (ours params, theirs params, ours opt, theirs opt)."""
    p0, grads = _problem(seed, steps)
    a = [p.clone().requires_grad_() for p in p0]
    b = [p.clone().requires_grad_() for p in p0]
    oa, ob = make_ours(a), make_theirs(b)
    for t in range(steps):
        for x, y, g in zip(a, b, grads[t]):
            x.grad = g.clone()
            y.grad = g.clone()
        oa.step()
        ob.step()
        if every is not None:
            every(oa, ob, a, b, t)
    return a, b, oa, ob


def assert_close(what: str, ours: list[Tensor], theirs: list[Tensor], rtol: float = RTOL
                 ) -> float:
    """Every tensor within ``rtol`` of its largest magnitude; returns the worst such ratio."""
    worst = 0.0
    for i, (x, y) in enumerate(zip(ours, theirs)):
        assert x.shape == y.shape, f"{what} {i}: shape {tuple(x.shape)} != {tuple(y.shape)}"
        scale = float(y.detach().abs().max())
        err = float((x.detach() - y.detach()).abs().max())
        rel = err / scale if scale else err
        assert rel <= rtol, f"{what} {i}: max |ours - theirs| = {err:.3e}, {rel:.3e} of the " \
                            f"tensor's scale {scale:.3e} (> {rtol:.0e})"
        worst = max(worst, rel)
    return worst


def _states(opt, params: list[Tensor], key: str, sign: float = 1.0) -> list[Tensor]:
    return [sign * opt.state[p][key] for p in params]


#: the worst ratio of the params and of the states over the comparisons so far (``__main__``)
WORST = {"params": 0.0, "states": 0.0}


def compare(what: str, a, b, oa, ob, keys: dict[str, tuple[str, float]],
            rtol: float = RTOL) -> float:
    """Params and the states ``keys`` (ours -> (theirs, sign)); the worst ratio."""
    worst = assert_close(f"{what} params", a, b, rtol)
    WORST["params"] = max(WORST["params"], worst)
    for ours_key, (their_key, sign) in keys.items():
        w = assert_close(f"{what} {ours_key}", _states(oa, a, ours_key),
                         _states(ob, b, their_key, sign), rtol)
        WORST["states"] = max(WORST["states"], w)
        worst = max(worst, w)
    return worst


# --------------------------------------------------------------------------- the cases
LION_KEYS = {"exp_avg": ("exp_avg", 1.0)}
ADAN_KEYS = {"exp_avg": ("exp_avg", 1.0), "exp_avg_diff": ("exp_avg_diff", 1.0),
             "exp_avg_sq": ("exp_avg_sq", 1.0), "prev_grad": ("previous_grad", -1.0)}
SF_KEYS = {"z": ("z", 1.0), "exp_avg_sq": ("exp_avg_sq", 1.0)}
YOGI_KEYS = {"exp_avg": ("exp_avg", 1.0), "exp_avg_sq": ("exp_avg_sq", 1.0)}
ADOPT_KEYS = {"exp_avg": ("exp_avg", 1.0), "exp_avg_sq": ("exp_avg_sq", 1.0)}
#: (weight_decay, warmup_steps, r) of the Schedule-Free runs
SF_CASES = [(0.0, 0, 0.0), (0.1, 10, 0.0), (0.05, 20, 0.5)]


def lion_case(peer: str, backend: str, wd: float, mutant: dict | None = None):
    lr = 1e-3  # Lion's own default is 1e-4; 1e-3 lets the params move more in 120 steps
    if peer == "lion_pytorch":
        theirs = lambda p: _peer("lion_pytorch").Lion(p, lr=lr, weight_decay=wd)  # noqa: E731
    else:
        theirs = lambda p: _peer("pytorch_optimizer").Lion(p, lr=lr,  # noqa: E731
                                                           weight_decay=wd)
    kw = dict(lr=lr, weight_decay=wd, backend=backend)
    kw.update(mutant or {})  # a wrong setting on fusedopt's side only (test_mutants_are_caught)
    a, b, oa, ob = run_pair(lambda p: fusedopt.Lion(p, **kw), theirs)
    return compare(f"lion vs {peer} ({backend}, wd={wd})", a, b, oa, ob, LION_KEYS)


def adan_case(backend: str, wd: float, no_prox: bool, mutant: dict | None = None):
    po = _peer("pytorch_optimizer")
    lr = 1e-2
    kw = dict(lr=lr, weight_decay=wd, no_prox=no_prox, backend=backend)
    kw.update(mutant or {})  # a wrong setting on fusedopt's side only (test_mutants_are_caught)
    a, b, oa, ob = run_pair(lambda p: fusedopt.Adan(p, **kw),
                            lambda p: po.Adan(p, lr=lr, weight_decay=wd,
                                              weight_decouple=no_prox))
    return compare(f"adan ({backend}, wd={wd}, no_prox={no_prox})", a, b, oa, ob, ADAN_KEYS)


def sf_case(backend: str, wd: float, warmup: int, r: float, mutant: dict | None = None):
    sf = _peer("schedulefree")
    lr = 1e-2
    kw = dict(lr=lr, weight_decay=wd, warmup_steps=warmup, r=r, backend=backend)
    kw.update(mutant or {})  # a wrong setting on fusedopt's side only (test_mutants_are_caught)
    what = f"schedule_free_adamw ({backend}, wd={wd}, warmup={warmup}, r={r})"
    worst = [0.0]

    def theirs(p):
        opt = sf.AdamWScheduleFree(p, lr=lr, weight_decay=wd, warmup_steps=warmup, r=r)
        opt.train()  # the authors' API: train() before the first step
        return opt

    def switch(oa, ob, a, b, t):
        # eval() and train() along the run: the params hold x, then y again, on both sides
        if (t + 1) % 40 == 0:
            oa.eval()
            ob.eval()
            worst[0] = max(worst[0], compare(f"{what} eval after {t + 1}", a, b, oa, ob, SF_KEYS))
            oa.train()
            ob.train()

    a, b, oa, ob = run_pair(lambda p: fusedopt.ScheduleFreeAdamW(p, **kw), theirs, every=switch)
    worst[0] = max(worst[0], compare(f"{what} train", a, b, oa, ob, SF_KEYS))
    oa.eval()
    ob.eval()
    worst[0] = max(worst[0], compare(f"{what} eval", a, b, oa, ob, SF_KEYS))
    for key in ("k", "weight_sum", "lr_max", "scheduled_lr", "train_mode"):
        assert oa.param_groups[0][key] == ob.param_groups[0][key], (what, key)
    return worst[0]


def adopt_case(backend: str, wd: float, decouple: bool, foreach: bool = True,
               clip: bool = True, mutant: dict | None = None):
    po = _peer("pytorch_optimizer")
    lr = 1e-2
    kw = dict(lr=lr, weight_decay=wd, weight_decouple=decouple, backend=backend,
              clip_exponent=0.25 if clip else None)
    kw.update(mutant or {})  # a wrong setting on fusedopt's side only (test_mutants_are_caught)
    theirs = {} if clip else dict(clip_lambda=None)  # default clip_lambda: step ** 0.25
    a, b, oa, ob = run_pair(lambda p: fusedopt.ADOPT(p, **kw),
                            lambda p: po.ADOPT(p, lr=lr, weight_decay=wd,
                                               weight_decouple=decouple, foreach=foreach,
                                               **theirs))
    return compare(f"adopt ({backend}, wd={wd}, weight_decouple={decouple}, "
                   f"foreach={foreach}, clip={clip})", a, b, oa, ob, ADOPT_KEYS)


def yogi_case(backend: str, wd: float, *, initial_accumulator: float, seed_state: float,
              steps: int = STEPS, rtol: float = RTOL):
    """fusedopt's yogi, its moments seeded with ``seed_state``, vs pytorch-optimizer's Yogi
    with ``initial_accumulator`` (both at Yogi's lr 1e-2, eps 1e-3; decoupled decay)."""
    po = _peer("pytorch_optimizer")

    def ours(p):
        opt = fusedopt.AdamW(p, variant="yogi", lr=1e-2, eps=1e-3, weight_decay=wd,
                             backend=backend)
        for x in p:  # state exists from construction; seed both moments
            opt.state[x]["exp_avg"].fill_(seed_state)
            opt.state[x]["exp_avg_sq"].fill_(seed_state)
        return opt

    a, b, oa, ob = run_pair(ours, lambda p: po.Yogi(p, initial_accumulator=initial_accumulator,
                                                    weight_decay=wd), steps=steps)
    return compare(f"yogi ({backend}, wd={wd}, init={initial_accumulator})", a, b, oa, ob,
                   YOGI_KEYS, rtol)


# --------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("peer", ["lion_pytorch", "pytorch_optimizer"])
def test_lion(peer, backend, wd):
    lion_case(peer, backend, wd)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("no_prox", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adan(backend, wd, no_prox):
    adan_case(backend, wd, no_prox)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("wd,warmup,r", SF_CASES)
def test_schedule_free_adamw(backend, wd, warmup, r):
    sf_case(backend, wd, warmup, r)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("decouple", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adopt(backend, wd, decouple, foreach):
    adopt_case(backend, wd, decouple, foreach)


@pytest.mark.parametrize("backend", BACKENDS)
def test_adopt_without_clip(backend):
    adopt_case(backend, 0.1, True, clip=False)


def test_adopt_first_step_seeds_v_only():
    """ADOPT's first step moves no param (without decoupled decay) and sets v = g^2, m = 0,
    on both sides; the second step moves it."""
    po = _peer("pytorch_optimizer")
    for make in (lambda p: fusedopt.ADOPT(p, backend="reference"), lambda p: po.ADOPT(p)):
        p = torch.randn(9, dtype=torch.float64, requires_grad=True)
        g = torch.randn(9, dtype=torch.float64)
        p0 = p.detach().clone()
        opt = make([p])
        p.grad = g.clone()
        opt.step()
        assert torch.equal(p.detach(), p0)
        assert torch.equal(opt.state[p]["exp_avg_sq"], g * g)
        assert not torch.any(opt.state[p]["exp_avg"])
        p.grad = g.clone()
        opt.step()
        assert not torch.equal(p.detach(), p0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_yogi_matches_without_initial_accumulator(backend, wd):
    """With pytorch-optimizer's initial_accumulator at 0 the two Yogis agree to rounding."""
    yogi_case(backend, wd, initial_accumulator=0.0, seed_state=0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_yogi_difference_is_the_initial_accumulator(backend):
    """pytorch-optimizer's defaults start m and v at initial_accumulator = 1e-6 (as the
    TensorFlow Addons Yogi, initial_accumulator_value=1e-6); fusedopt starts them at 0. Seeding
    fusedopt's moments with 1e-6 reproduces its Yogi to rounding, and without the seed the two
    drift apart (the 1e-6 in v dominates the early denominators of small grads): that is the
    whole difference."""
    yogi_case(backend, 0.0, initial_accumulator=1e-6, seed_state=1e-6)
    with pytest.raises(AssertionError):
        yogi_case(backend, 0.0, initial_accumulator=1e-6, seed_state=0.0, steps=50)


MUTANTS = {
    "lion/beta2": lambda: lion_case("pytorch_optimizer", "reference", 0.1,
                                    dict(betas=(0.9, 0.99 + 1e-9))),
    "lion/no_decay": lambda: lion_case("pytorch_optimizer", "reference", 0.1,
                                       dict(weight_decay=0.0)),
    "adan/beta3": lambda: adan_case("reference", 0.1, False,
                                    dict(betas=(0.98, 0.92, 0.99 + 1e-9))),
    "adan/no_decay": lambda: adan_case("reference", 0.1, False, dict(weight_decay=0.0)),
    "adan/prox_swapped": lambda: adan_case("reference", 0.1, False, dict(no_prox=True)),
    "sf/beta1": lambda: sf_case("reference", 0.1, 10, 0.0, dict(betas=(0.9 + 1e-9, 0.999))),
    "sf/no_decay": lambda: sf_case("reference", 0.1, 10, 0.0, dict(weight_decay=0.0)),
    "sf/no_warmup": lambda: sf_case("reference", 0.1, 10, 0.0, dict(warmup_steps=0)),
    "adopt/beta2": lambda: adopt_case("reference", 0.1, False,
                                      mutant=dict(betas=(0.9, 0.9999 + 1e-9))),
    "adopt/no_decay": lambda: adopt_case("reference", 0.1, False,
                                         mutant=dict(weight_decay=0.0)),
    "adopt/decouple_swapped": lambda: adopt_case("reference", 0.1, False,
                                                 mutant=dict(weight_decouple=True)),
    "adopt/no_clip": lambda: adopt_case("reference", 0.0, False, mutant=dict(clip_exponent=None)),
    "adopt/clip_exponent": lambda: adopt_case("reference", 0.0, False,
                                              mutant=dict(clip_exponent=0.25 + 1e-9)),
}


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_mutants_are_caught(mutant):
    """A fusedopt run with one hyperparameter wrong (a beta or the clip exponent off by 1e-9,
    the decay left out or of the other kind, no warmup, no clip) fails the comparison: RTOL
    can fail."""
    with pytest.raises(AssertionError):
        MUTANTS[mutant]()


def _measure(label: str, case: Callable[[], float]) -> None:
    WORST.update(params=0.0, states=0.0)
    case()
    print(f"{label}: params {WORST['params']:.2e}, states {WORST['states']:.2e} "
          "(max |ours - theirs| / max |theirs|, per tensor)")


if __name__ == "__main__":  # the measured differences, for docs/algorithms.md and reports
    for backend in BACKENDS:
        for wd in (0.0, 0.1):
            for peer in ("lion_pytorch", "pytorch_optimizer"):
                _measure(f"{backend} lion vs {peer} wd={wd}",
                         lambda: lion_case(peer, backend, wd))
            for no_prox in (False, True):
                _measure(f"{backend} adan wd={wd} no_prox={no_prox}",
                         lambda: adan_case(backend, wd, no_prox))
            for decouple in (False, True):
                for foreach in (True, False):
                    _measure(f"{backend} adopt wd={wd} weight_decouple={decouple} "
                             f"foreach={foreach}", lambda: adopt_case(backend, wd, decouple,
                                                                      foreach))
            _measure(f"{backend} yogi (initial_accumulator 0) wd={wd}",
                     lambda: yogi_case(backend, wd, initial_accumulator=0.0, seed_state=0.0))
        for wd, warmup, r in SF_CASES:
            _measure(f"{backend} schedule_free_adamw wd={wd} warmup={warmup} r={r}",
                     lambda: sf_case(backend, wd, warmup, r))
        _measure(f"{backend} yogi (both 1e-6)",
                 lambda: yogi_case(backend, 0.0, initial_accumulator=1e-6, seed_state=1e-6))
        for steps in (50, STEPS):
            _measure(f"{backend} yogi defaults (ours 0, theirs 1e-6), {steps} steps",
                     lambda: yogi_case(backend, 0.0, initial_accumulator=1e-6, seed_state=0.0,
                                       steps=steps, rtol=math.inf))
    sys.exit(0)
