"""The error budget can fail: a matrix of wrong backends ("mutants") that it must catch.

Each mutant is the ``reference`` backend with one bug a real kernel could have:

====================  =========================================================================
``skip_param``         the params (and fp32 masters) are not written; moments and steps are
``lr_x1.5``            the learning rate is 1.5 times the given one
``swap_betas``         beta1 and beta2 trade places
``no_weight_decay``    the weight decay is dropped
``skip_tensor``        one tensor of the bucket (not the last) keeps its params, master and
                       moments; its step count still advances
``skip_last_chunk``    the last CHUNK-aligned chunk of the last tensor (here its 5-element tail)
                       keeps its old values; its step still advances
``truncate_16bit``     every bf16/fp16 store rounds toward zero instead of to nearest even
====================  =========================================================================

Every mutant runs AdamW on the same seeded problem as the naive run and the float64 oracle of
the conformance tests (tests/harness.py), for every param dtype (fp32, bf16, fp16, fp64; fp32
with bf16 moments for the 16-bit store of fp32 params) and mode (plain, clip, clip + GradScaler,
master weights for 16-bit params), and ``harness.assert_within_budget`` must raise. The
unmutated fake (``none``: the same wrapping, no bug) must pass, so a caught mutant is the
budget's doing, not a broken setup. ``truncate_16bit`` applies where a 16-bit store exists.
``no_weight_decay`` is also run on Adagrad, and every mutant on the element-wise algorithms
(Lion, Adan, Schedule-Free AdamW, ADOPT; ``swap_betas`` and ``no_weight_decay`` act on
their HYPER tuple by name) in fp32 and in bf16 with master weights under AMP and clipping.

The 16-bit runs use a larger lr and more steps, so that an update spans many ulps of the
param: at the registry's lr (1e-2) an AdamW update is about one bf16 ulp of a unit param, and
a budget of a few ulps would be blind to a wrong update of that size.

``python tests/test_mutations.py`` prints the matrix (case x mutant: FAIL = caught).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
import types
from pathlib import Path

import pytest
import torch

from fusedopt import backends
from fusedopt.backends import reference_backend as ref
from fusedopt.reference import elementwise
from fusedopt.registry import ALGORITHMS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (DTYPES, MODES, DtypeCase, assert_within_budget, make_problem,  # noqa: E402
                     naive_runs, run)

#: as tests/test_conformance.py
K = 2.0
#: The chunk the fake cuts its last tensor into: the Triton interpreter's (INTERPRET_CHUNK in
#: fusedopt.triton_kernels._common). The last tensor holds one chunk and a 5-element tail, so the
#: "last chunk" is the tail a kernel that rounds its grid down would skip.
CHUNK = 4096
SHAPES = [(3, 5), (0,), (1,), (33,), (CHUNK + 5,)]
#: the size of the tensor skip_tensor leaves out: the (33,), neither the first nor the last
SKIPPED_NUMEL = 33

#: (param dtype case, mode): every param dtype in plain, clip and clip + GradScaler; master
#: weights for the 16-bit params; fp32 params with bf16 moments (a 16-bit store of fp32 params)
CASES = [(dt, mode) for dt in ("fp32", "bf16", "fp16", "fp64")
         for mode in ("plain", "clip", "clip_amp")]
CASES += [("bf16_master", "plain"), ("bf16_master", "clip_amp"),
          ("fp16_master", "plain"), ("fp16_master", "clip_amp"), ("fp32_bf16state", "plain")]
_DTYPES = {**DTYPES, "fp16_master": DtypeCase("fp16_master", torch.float16, master=True)}

MUTANTS = ("skip_param", "lr_x1.5", "swap_betas", "no_weight_decay", "skip_tensor",
           "skip_last_chunk", "truncate_16bit")


#: steps and lr of the cases with a 16-bit store (see _settings)
STEPS_16BIT, LR_16BIT = 60, 0.1


def _settings(dt: str) -> tuple[int, dict]:
    """(steps, hyperparameters) of a case: with a 16-bit store, 60 steps at lr 0.1, so an
    update is ~10 bf16 ulps of a unit param and the decay (lr * wd = 5e-3 per step) ~0.6 ulp
    per step, ~40 over the run; fp32/fp64 8 steps at the registry's lr."""
    if _has_16bit_store(dt):
        return STEPS_16BIT, {"lr": LR_16BIT}
    return 8, {}


def _has_16bit_store(dt: str) -> bool:
    case = _DTYPES[dt]
    return case.param.itemsize == 2 or case.state == torch.bfloat16


# ------------------------------------------------------------------------------ the mutants
def _truncate(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` rounded toward zero to ``dtype`` (round to nearest, then one step back toward zero
    where that went past ``x`` in magnitude)."""
    r = x.to(dtype)
    past = r.to(x.dtype).abs() > x.abs()
    return torch.where(past, torch.nextafter(r, torch.zeros_like(r)), r)


class _TruncatingPass(ref._Pass):
    """The reference's per-call state, storing 16-bit values by truncation."""

    def commit(self, dst: torch.Tensor, new: torch.Tensor) -> None:
        if dst.dtype in (torch.bfloat16, torch.float16) and new.dtype != dst.dtype:
            new = _truncate(new, dst.dtype)
        super().commit(dst, new)


def _bucket_tensors(b, i: int, tail: int | None = None) -> list[torch.Tensor]:
    """Tensor ``i``'s params, master and states (``tail``: only their last ``tail`` elements)."""
    ts = [b.params[i]] + ([b.masters[i]] if b.masters is not None else [])
    ts += [v[i] for v in b.states.values()]
    return [t.view(-1)[-tail:] if tail else t for t in ts]


@contextlib.contextmanager
def _kept(tensors: list[torch.Tensor]):
    """Leave ``tensors`` as they were before the block (the update skipped them)."""
    saved = [t.clone() for t in tensors]
    yield
    for t, s in zip(tensors, saved):
        t.copy_(s)


def _hyper(kw: dict) -> dict[str, float]:
    """An element-wise call's hyperparameters by name (fusedopt.reference.elementwise)."""
    return dict(zip(elementwise.spec(kw["algo"]).HYPER, kw["hyper"]))


def _mutate(update, mutant: str):
    """``update`` (a reference update function) with the bug ``mutant``."""

    def mutated(b, stats, **kw):
        if mutant == "lr_x1.5":
            kw["lr"] = kw["lr"] * 1.5
        elif mutant == "swap_betas":
            if "hp" in kw:
                kw["hp"] = dataclasses.replace(kw["hp"], beta1=kw["hp"].beta2,
                                               beta2=kw["hp"].beta1)
            else:  # an element-wise algorithm's HYPER tuple
                h = _hyper(kw)
                h["beta1"], h["beta2"] = h["beta2"], h["beta1"]
                kw["hyper"] = tuple(h.values())
        elif mutant == "no_weight_decay":
            if "hp" in kw:
                kw["hp"] = dataclasses.replace(kw["hp"], weight_decay=0.0)
            elif "hyper" in kw:
                h = _hyper(kw)
                h["weight_decay"] = 0.0
                kw["hyper"] = tuple(h.values())
            else:
                kw["weight_decay"] = 0.0
        kept: list[torch.Tensor] = []
        if mutant == "skip_param":
            kept = list(b.params) + list(b.masters or [])
        elif mutant == "skip_tensor":
            kept = _bucket_tensors(b, [p.numel() for p in b.params].index(SKIPPED_NUMEL))
        elif mutant == "skip_last_chunk":
            last = max(i for i in range(len(b)) if b.params[i].numel())
            n = b.params[last].numel()
            kept = _bucket_tensors(b, last, tail=n % CHUNK or min(n, CHUNK))
        with _kept(kept):
            if mutant == "truncate_16bit":
                ref._Pass = _TruncatingPass
                try:
                    update(b, stats, **kw)
                finally:
                    ref._Pass = _TruncatingPass.__base__
            else:
                update(b, stats, **kw)

    return mutated


def fake_backend(mutant: str) -> types.ModuleType:
    """A backend module: the reference's attributes, its update functions with ``mutant``
    (``"none"``: wrapped the same way, unchanged)."""
    mod = types.ModuleType(f"fusedopt_mutant_{mutant}")
    mod.__dict__.update({k: v for k, v in vars(ref).items() if not k.startswith("__")})
    if mutant != "none":
        for name in ("adam_step_", "elementwise_step_"):
            setattr(mod, name, _mutate(getattr(ref, name), mutant))
    return mod


@contextlib.contextmanager
def _serving(module: types.ModuleType):
    """Optimizers built in the block get ``module`` as their backend (whatever name they ask)."""
    real = backends.resolve
    backends.resolve = lambda name, device: module
    try:
        yield
    finally:
        backends.resolve = real


# ------------------------------------------------------------------------------ the runs
@functools.lru_cache(maxsize=None)
def _references(algo: str, dt: str, mode: str):
    steps, extra = _settings(dt)
    problem = make_problem(SHAPES, steps=steps, seed=23)
    info, case = ALGORITHMS[algo], _DTYPES[dt]
    oracle = run(info, "reference", problem, case, MODES[mode], oracle=True, extra=extra)
    return problem, oracle, naive_runs(info, problem, case, MODES[mode], extra=extra)


def _budget(algo: str, dt: str, mode: str, mutant: str) -> None:
    """Run ``mutant`` on the case and apply the budget (raises AssertionError outside it)."""
    problem, oracle, naive = _references(algo, dt, mode)
    _, extra = _settings(dt)
    with _serving(fake_backend(mutant)):
        out = run(ALGORITHMS[algo], "reference", problem, _DTYPES[dt], MODES[mode], extra=extra)
    case = _DTYPES[dt]
    assert_within_budget(out, naive, oracle, k=K, param_dtype=case.param, state_dtype=case.state,
                         what=f"{mutant}/{algo}/{dt}/{mode}")


def _applies(mutant: str, dt: str) -> bool:
    return mutant != "truncate_16bit" or _has_16bit_store(dt)


MATRIX = [(m, dt, mode) for m in MUTANTS for dt, mode in CASES if _applies(m, dt)]


@pytest.mark.parametrize("dt,mode", CASES)
def test_unmutated_fake_passes(dt, mode):
    """The fake backend without a bug is within the budget: the setup is sound."""
    _budget("adamw", dt, mode, "none")


@pytest.mark.parametrize("mutant,dt,mode", MATRIX)
def test_mutant_is_caught(mutant, dt, mode):
    with pytest.raises(AssertionError):
        _budget("adamw", dt, mode, mutant)


#: the element-wise algorithms (one elementwise_step_ call, their hyperparameters a tuple named
#: by the reference module's HYPER): every mutant in fp32 and in bf16 with master weights and
#: AMP + clipping (a 16-bit store, the prologue, the master re-seed)
ELEMENTWISE = ("lion", "adan", "schedule_free_adamw", "adopt")
ELEMENTWISE_CASES = [("fp32", "plain"), ("bf16_master", "clip_amp")]


@pytest.mark.parametrize("dt,mode", ELEMENTWISE_CASES)
@pytest.mark.parametrize("algo", ELEMENTWISE)
def test_elementwise_unmutated_fake_passes(algo, dt, mode):
    _budget(algo, dt, mode, "none")


@pytest.mark.parametrize("mutant", MUTANTS)
@pytest.mark.parametrize("dt,mode", ELEMENTWISE_CASES)
@pytest.mark.parametrize("algo", ELEMENTWISE)
def test_elementwise_mutant_is_caught(algo, dt, mode, mutant):
    if not _applies(mutant, dt):
        pytest.skip("no 16-bit store in this case")
    with pytest.raises(AssertionError):
        _budget(algo, dt, mode, mutant)


@pytest.mark.parametrize("dt", ["fp32", "bf16", "fp64"])
def test_adagrad_without_weight_decay_is_caught(dt):
    _budget("adagrad", dt, "clip", "none")
    with pytest.raises(AssertionError):
        _budget("adagrad", dt, "clip", "no_weight_decay")


@pytest.mark.parametrize("dt", ["bf16", "bf16_master"])
@pytest.mark.parametrize("wrong", ["skip_param", "lr_x2"])
def test_conformance_settings_catch_a_frozen_or_doubled_update(dt, wrong):
    """Finding 10 of issue 17, at the conformance tests' own settings (the "small" shapes, 8
    steps, the registry's lr): bf16 params that are never updated, or updated at twice the lr,
    passed the old floor (4 ulps of the largest value of all tensors); the per-element budget
    rejects both."""
    from harness import SHAPES as H_SHAPES

    info, case, mode = ALGORITHMS["adamw"], _DTYPES[dt], MODES["clip"]
    problem = make_problem(H_SHAPES["small"], steps=8, seed=0)
    oracle = run(info, "reference", problem, case, mode, oracle=True)
    naive = naive_runs(info, problem, case, mode)
    if wrong == "skip_param":
        with _serving(fake_backend("skip_param")):
            out = run(info, "reference", problem, case, mode)
    else:
        out = run(info, "reference", problem, case, mode, extra={"lr": 2 * info.kwargs["lr"]})
    with pytest.raises(AssertionError):
        assert_within_budget(out, naive, oracle, k=K, param_dtype=case.param,
                             state_dtype=case.state, what=f"{wrong}/{dt}")


def test_truncation_is_round_toward_zero():
    """The truncating store is what it says: never larger in magnitude, never more than an ulp
    below the nearest value, and different from round-to-nearest somewhere."""
    x = torch.randn(10000, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.bfloat16, torch.float16):
        t, r = _truncate(x, dtype), x.to(dtype)
        assert bool((t.float().abs() <= x.abs()).all())
        assert bool(((r.float() - t.float()).abs() <= torch.finfo(dtype).eps * x.abs()).all())
        assert not torch.equal(t, r)


def matrix_table() -> str:
    """The matrix, one row per case and one column per mutant: FAIL where the budget caught
    the mutant, pass where it did not, n/a where the mutant does not apply; the first column is
    the unmutated fake (pass expected)."""
    cols = ("none",) + MUTANTS
    widths = [max(len(c), 4) for c in cols]
    lines = [f"{'case':<20}" + "".join(f" {c:>{w}}" for c, w in zip(cols, widths))]
    for dt, mode in CASES:
        cells = []
        for mutant in cols:
            if not _applies(mutant, dt):
                cells.append("n/a")
                continue
            try:
                _budget("adamw", dt, mode, mutant)
                cells.append("pass")
            except AssertionError:
                cells.append("FAIL")
        lines.append(f"{dt + '/' + mode:<20}" + "".join(f" {c:>{w}}" for c, w in zip(cells,
                                                                                      widths)))
    return "\n".join(lines)


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(matrix_table())
