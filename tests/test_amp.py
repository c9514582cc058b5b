"""AMP: ``torch.amp.GradScaler`` and ``fusedopt.amp.LossScaler`` drive every fusedopt optimizer.

What is checked, and against what (docs/architecture.md#amp and #passes-over-memory,
docs/numerics.md#non-finite-values):

* Against torch.optim under GradScaler, on an MLP trained by real backward passes whose loss
  overflows on some steps: the same steps are skipped, the loss scale follows the same
  trajectory (bitwise), the step counts agree and the params agree to fp32 rounding. Clipping is
  fusedopt's fused ``max_grad_norm`` against torch's ``scaler.unscale_`` + ``clip_grad_norm_``.
* Exactness, every algorithm of the registry, fp32/bf16/fp16 params: with a power-of-two scale
  the unscale is exact, so a run under either scaler is *bitwise* the run without AMP that leaves
  the overflowing steps out, and a skipped step changes no param, state or step count.
* The fused clip under GradScaler, every algorithm, against the float64 oracle of "unscale, clip,
  then step" (docs/algorithms.md#prologue): within the error budget of torch's explicit
  ``unscale_`` + ``clip_grad_norm_`` path in fp32.
* ``LossScaler`` makes no host sync in ``scale``/``step``/``update`` (counted on the CPU, where a
  sync cannot be observed: the reads that would cause one) and reads each grad in exactly two
  passes, the norm pass and the update pass, where torch's clip composition needs four.
"""
from __future__ import annotations

import functools

import pytest
import torch

import fusedopt
from fusedopt.registry import ALGORITHMS

from grad_passes import GradPassCounter
from host_sync import HostSyncCounter

BACKENDS = fusedopt.available_backends("cpu")
#: Triton runs on the CPU only under TRITON_INTERPRET=1, at ~3 s a test here (all of this file:
#: 8.5 min). It gets the host-sync and pass-count tests, and the bitwise skip test for one
#: algorithm per kernel family; its AMP and clip numerics against the reference are covered by
#: tests/test_conformance.py's gradscaler / lossscaler / clip modes.
NATIVE_CPU = [b for b in BACKENDS if b != "triton"]
TRITON_BITWISE = {"algos": ("adamw", "adagrad", "nsgdm"), "dtypes": ("fp32", "fp16_master")}
SCALERS = ("gradscaler", "lossscaler")
#: power of two: scaling and unscaling are exact; growth every 3 good steps exercises growth
INIT_SCALE, GROWTH_INTERVAL = 2.0 ** 10, 3
STEPS = 12
#: steps whose loss overflows: inf, nan, inf (two in a row: two backoffs)
OVERFLOW = {2: float("inf"), 3: float("nan"), 7: float("inf")}
#: fusedopt's classes with torch.optim's fused equivalent (their kwargs are torch's names)
TORCH_FUSED = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam,
               "amsgrad": torch.optim.AdamW, "adagrad": torch.optim.Adagrad}
TORCH_ALGOS = [n for n, info in ALGORITHMS.items() if info.torch_equivalent is not None]
#: k of the error budget (as tests/test_conformance.py): fusedopt may be at most this many times
#: further from the float64 oracle than the baseline it is compared with, plus a floor of a few
#: ulps of the storage dtype at the values' magnitude
K, FLOOR_ULPS = 2.0, 4.0


def _make_scaler(kind: str):
    if kind == "gradscaler":
        return torch.amp.GradScaler("cpu", init_scale=INIT_SCALE, growth_interval=GROWTH_INTERVAL)
    return fusedopt.amp.LossScaler(init_scale=INIT_SCALE, growth_interval=GROWTH_INTERVAL)


def _snapshot(opt: torch.optim.Optimizer, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Every tensor a step may change: params, per-param states (step, moments, masters) and
    optimizer-global states (AdamL's loss EMA, AdaGrad-Norm's accumulator)."""
    out = [p.detach().clone() for p in params]
    for value in opt.state.values():
        tensors = value.values() if isinstance(value, dict) else [value]
        out += [t.detach().clone() for t in tensors if isinstance(t, torch.Tensor)]
    return out


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


# --------------------------------------------------------------------------- an MLP, real backward
def _mlp(dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 4)).to(dtype)


def _batches(dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(2)
    out = []
    for t in range(STEPS):
        x, y = torch.randn(16, 8, generator=gen), torch.randn(16, 4, generator=gen)
        if t in OVERFLOW:
            y[0, 0] = OVERFLOW[t]  # the loss, and every grad through it, is non-finite
        out.append((x.to(dtype), y.to(dtype)))
    return out


def _train_mlp(make_opt, scaler_kind: str, explicit_clip: float | None = None,
               dtype: torch.dtype = torch.float32):
    """Train under a scaler; ``explicit_clip``: torch's way, ``unscale_`` + ``clip_grad_norm_``.

    Returns (params, scale after each step, indices of the skipped steps, step counts).
    """
    model = _mlp(dtype)
    params = list(model.parameters())
    opt = make_opt(params)
    scaler = _make_scaler(scaler_kind)
    scales, skipped = [], []
    for t, (x, y) in enumerate(_batches(dtype)):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        scaler.scale(loss).backward()
        if explicit_clip is not None:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, explicit_clip)
        before = _snapshot(opt, params) if opt.state else None
        scaler.step(opt, **({"loss": loss.detach()} if isinstance(opt, fusedopt.AdamL) else {}))
        scaler.update()
        if before is not None and all(torch.equal(a, b) for a, b in zip(before,
                                                                         _snapshot(opt, params))):
            skipped.append(t)
        scales.append(float(scaler.get_scale()))
    steps = [float(opt.state[p]["step"]) for p in params]
    return [p.detach().clone() for p in params], scales, skipped, steps


@functools.lru_cache(maxsize=None)
def _torch_run(algo: str, clip: float | None, dtype: torch.dtype = torch.float32):
    """torch.optim under GradScaler: its fused implementation where it has one (GradScaler then
    hands grad_scale/found_inf to the kernel), else its for-loop one (GradScaler's unscale_ +
    host-side skip path)."""
    info = ALGORITHMS[algo]
    if algo in TORCH_FUSED:
        make = lambda ps: TORCH_FUSED[algo](ps, fused=True, **info.kwargs)  # noqa: E731
    else:
        make = info.make_torch
    return _train_mlp(make, "gradscaler", explicit_clip=clip, dtype=dtype)


@pytest.mark.parametrize("backend", NATIVE_CPU)
@pytest.mark.parametrize("clip", [None, 0.5])
@pytest.mark.parametrize("scaler_kind", SCALERS)
@pytest.mark.parametrize("algo", TORCH_ALGOS)
def test_scalers_follow_torch_gradscaler_trajectory(algo, scaler_kind, clip, backend):
    """fusedopt under GradScaler or LossScaler == torch.optim under GradScaler: the same skipped
    steps, the same scale after every step, the same step counts, params within fp32 rounding.

    Budget: the fp32 reference matches torch.optim to <= 1e-6 relative over 200 steps
    (test_reference_vs_torch.py); with clipping the clip coefficient is rounded once from fp64
    here and computed in fp32 by torch, ~1e-7 relative per step, hence 2e-6. (Measured: at most
    3.6e-7, RMSprop with clipping.)
    """
    info = ALGORITHMS[algo]
    ours, our_scales, our_skips, our_steps = _train_mlp(
        lambda ps: info.make(ps, backend=backend, max_grad_norm=clip), scaler_kind)
    theirs, their_scales, their_skips, their_steps = _torch_run(algo, clip)
    assert our_skips == their_skips == sorted(OVERFLOW)
    assert our_scales == their_scales
    assert our_scales[-1] != INIT_SCALE  # the trajectory moved (backoffs and growths)
    assert our_steps == their_steps == [STEPS - len(OVERFLOW)] * len(ours)
    for a, b in zip(ours, theirs):
        assert _rel_err(a, b) <= (1e-6 if clip is None else 2e-6), algo


@functools.lru_cache(maxsize=None)
def _float64_adamw_run():
    return _train_mlp(lambda ps: ALGORITHMS["adamw"].make(ps, backend="reference"), "gradscaler",
                      dtype=torch.float64)


@pytest.mark.parametrize("backend", NATIVE_CPU)
@pytest.mark.parametrize("scaler_kind", SCALERS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_params_under_scalers_match_torch_fused_adamw(dtype, scaler_kind, backend):
    """bf16/fp16 model and params: the same skips, scales and step counts as
    torch.optim.AdamW(fused=True) under GradScaler, and at least as accurate against the float64
    run of the same model (budget: k = 2 times torch's error, plus 4 ulps of the param dtype).
    fusedopt keeps fp32 moments for 16-bit params, torch keeps them in the param dtype (measured
    on fp16: fusedopt's error 4.8e-4, torch's 2.1e-2; on bf16 both 3.5e-3, the param rounding)."""
    info = ALGORITHMS["adamw"]
    ours, our_scales, our_skips, our_steps = _train_mlp(
        lambda ps: info.make(ps, backend=backend), scaler_kind, dtype=dtype)
    theirs, their_scales, their_skips, their_steps = _torch_run("adamw", None, dtype)
    oracle, oracle_scales, _, _ = _float64_adamw_run()
    assert our_skips == their_skips == sorted(OVERFLOW)
    assert our_scales == their_scales == oracle_scales
    assert our_steps == their_steps
    err_ours = max(float((a.double() - o).abs().max()) for a, o in zip(ours, oracle))
    err_torch = max(float((a.double() - o).abs().max()) for a, o in zip(theirs, oracle))
    mag = max(float(o.abs().max()) for o in oracle)
    assert err_ours <= K * err_torch + FLOOR_ULPS * torch.finfo(dtype).eps * mag


# --------------------------------------------------------------------------- bitwise, every algorithm
SHAPES = [(6, 5), (17,), (1,), (0,), (3, 3)]
DTYPE_CASES = {
    "fp32": (torch.float32, {}),
    "bf16": (torch.bfloat16, {}),
    "fp16": (torch.float16, {}),
    "fp16_master": (torch.float16, {"master_weights": True}),
}


def _problem(seed: int):
    """fp64 initial params, per-step grads (and IAN-SGD's independent-batch grads), losses."""
    gen = torch.Generator().manual_seed(seed)
    rand = lambda s: torch.randn(s, generator=gen, dtype=torch.float64)  # noqa: E731
    params = [rand(s) for s in SHAPES]
    grads = [[rand(s) for s in SHAPES] for _ in range(STEPS)]
    aux = [[rand(s) for s in SHAPES] for _ in range(STEPS)]
    losses = [2.0 * 0.9 ** t + 0.05 * float(torch.rand((), generator=gen)) for t in range(STEPS)]
    return params, grads, aux, losses


def _drive_lists(algo, backend, dtype, extra, scaler_kind, *, clip=None, explicit_clip=None,
                 seed=0):
    """Drive an optimizer over the tensor-list problem; return (params, states, scales).

    ``scaler_kind=None``: no AMP, and the overflowing steps are left out. Otherwise each grad is
    the storage-dtype grad times the current scale (exact: a power of two), and ``OVERFLOW`` puts
    a non-finite value into the grads of those steps. Every skipped step is checked to leave
    every param and state bitwise unchanged.
    """
    info = ALGORITHMS[algo]
    init, grads, aux, losses = _problem(seed)
    params = [p.to(dtype).requires_grad_() for p in init]
    opt = info.make(params, backend=backend, max_grad_norm=clip, **extra)
    scaler = _make_scaler(scaler_kind) if scaler_kind else None
    scales = []
    for t in range(STEPS):
        if scaler is None and t in OVERFLOW:
            if isinstance(opt, fusedopt.ScheduleFreeAdamW):
                # its schedule (k, weight_sum) is host-side: a step skipped on the device
                # still advances it, with no host read (docs/algorithms.md#schedule-free-adamw)
                for group in opt.param_groups:
                    opt._advance_schedule(group)
            continue
        scale = float(scaler.get_scale()) if scaler is not None else 1.0

        def set_grads(gs):
            for p, g in zip(params, gs):
                g = g.to(dtype) * scale  # the storage-dtype grad, then scaled (exactly)
                if t in OVERFLOW and scaler is not None and g.numel():
                    g.view(-1)[0] = OVERFLOW[t]
                p.grad = g

        if info.needs_normalizer:
            set_grads(aux[t])
            opt.record_normalizer(grad_scale=torch.tensor(scale) if scaler else None)
        set_grads(grads[t])
        before = _snapshot(opt, params)
        kw = {"loss": torch.tensor(losses[t])} if info.needs_loss else {}
        if scaler is None:
            opt.step(**kw)
        else:
            if scaler_kind == "gradscaler":
                scaler.scale(torch.ones(()))  # the scaler's scale tensor is created lazily
            if explicit_clip is not None:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, explicit_clip)
            scaler.step(opt, **kw)
            scaler.update()
            scales.append(float(scaler.get_scale()))
        if t in OVERFLOW:
            after = _snapshot(opt, params)
            assert all(torch.equal(a, b) for a, b in zip(before, after)), (algo, t, "not skipped")
    return [p.detach() for p in params], _snapshot(opt, []), scales


def _bitwise_cases():
    for backend in BACKENDS:
        for algo in ALGORITHMS:
            for dt in DTYPE_CASES:
                if backend != "triton" or (algo in TRITON_BITWISE["algos"]
                                           and dt in TRITON_BITWISE["dtypes"]):
                    yield backend, algo, dt


@pytest.mark.parametrize("scaler_kind", SCALERS)
@pytest.mark.parametrize("backend,algo,dt", list(_bitwise_cases()))
def test_scaled_run_is_bitwise_the_unscaled_run_without_overflow_steps(backend, algo, dt,
                                                                      scaler_kind):
    dtype, extra = DTYPE_CASES[dt]
    amp_params, amp_states, scales = _drive_lists(algo, backend, dtype, extra, scaler_kind)
    plain_params, plain_states, _ = _drive_lists(algo, backend, dtype, extra, None)
    for a, b in zip(amp_params, plain_params):
        assert torch.equal(a, b), (algo, dt, scaler_kind)
    assert len(amp_states) == len(plain_states)
    for a, b in zip(amp_states, plain_states):
        assert torch.equal(a, b), (algo, dt, scaler_kind)
    assert scales == _expected_scales()


def _expected_scales() -> list[float]:
    """The dynamic loss scale rule (GradScaler's docs): backoff x0.5 on an overflow, growth x2
    after GROWTH_INTERVAL consecutive good steps."""
    scale, good, out = INIT_SCALE, 0, []
    for t in range(STEPS):
        if t in OVERFLOW:
            scale, good = scale * 0.5, 0
        else:
            good += 1
            if good == GROWTH_INTERVAL:
                scale, good = scale * 2.0, 0
        out.append(scale)
    return out


# --------------------------------------------------------------------------- fused clip, error budget
CLIP = 0.5


@pytest.mark.parametrize("backend", NATIVE_CPU)
@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_fused_clip_within_budget_of_unscale_then_clip_grad_norm(algo, backend):
    """Oracle: float64 run of the definition (docs/algorithms.md#prologue: unscale, clip the global
    norm, then the algorithm on the clipped grads), overflow steps left out: clip_grad_norm_ in
    fp64, then the reference optimizer without clipping."""
    fused, _, scales = _drive_lists(algo, backend, torch.float32, {}, "gradscaler", clip=CLIP)
    explicit, _, _ = _drive_lists(algo, backend, torch.float32, {}, "gradscaler",
                                  explicit_clip=CLIP)
    oracle, _, _ = _drive_lists(algo, "reference", torch.float64, {}, "gradscaler",
                                explicit_clip=CLIP)
    assert scales == _expected_scales()
    err_f = max(float((a.double() - o).abs().max()) for a, o in zip(fused, oracle) if o.numel())
    err_e = max(float((a.double() - o).abs().max()) for a, o in zip(explicit, oracle) if o.numel())
    mag = max(float(o.abs().max()) for o in oracle if o.numel())
    bound = K * err_e + FLOOR_ULPS * torch.finfo(torch.float32).eps * mag
    assert err_f <= bound, (f"{algo}: fused clip error {err_f:.3e} > budget {bound:.3e} "
                            f"(explicit unscale_+clip_grad_norm_ error {err_e:.3e})")


# --------------------------------------------------------------------------- no host sync
#: code that reads only CPU tensors it created on the host from Python numbers (never a device
#: value, so no sync on CUDA either): the Triton backend builds its pointer and chunk tables on
#: the host (``repeat_interleave``, an alignment check) once per tensor signature, then copies
#: them over
HOST_ONLY_READS = (("triton_kernels/_common.py", "build_tables"),
                   # the reference's IEEE fp64 sqrt goes through numpy, for CPU tensors only
                   # (a device tensor takes torch.sqrt): no device value reaches the host
                   ("fusedopt/reference/prologue.py", "ieee_sqrt"))


def _amp_iteration(opt, params, scaler, t: int):
    """One AMP iteration on the tensor-list problem: grads of a scaled loss, step, update."""
    gen = torch.Generator().manual_seed(100 + t)
    for p in params:
        p.grad = None
    loss = sum((p * torch.randn(p.shape, generator=gen)).sum() for p in params)
    scaler.scale(loss).backward()
    if isinstance(opt, fusedopt.IANSGD) and opt.normalizer == "independent":
        opt.record_normalizer(grad_scale=scaler.get_scale())
    scaler.step(opt, **({"loss": loss.detach()} if isinstance(opt, fusedopt.AdamL) else {}))
    scaler.update()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_lossscaler_step_makes_no_host_sync(algo, backend, monkeypatch):
    """scale + step + update with clipping, every algorithm: zero host reads of a tensor value
    (``.item()``/``bool()``/``float()``/``int()``/``tolist``/``numpy``/``cpu`` and data-dependent
    shapes, :mod:`host_sync`) and no ``torch.cuda.synchronize``."""
    syncs = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: syncs.append("synchronize"))
    params = [p.to(torch.float32).requires_grad_() for p in _problem(3)[0]]
    opt = ALGORITHMS[algo].make(params, backend=backend, max_grad_norm=1.0)
    scaler = fusedopt.amp.LossScaler(init_scale=INIT_SCALE)
    with HostSyncCounter(allow=HOST_ONLY_READS) as counter:
        _amp_iteration(opt, params, scaler, 0)  # the first step also creates the state
        _amp_iteration(opt, params, scaler, 1)
    assert counter.calls == [] and syncs == [], (algo, counter.calls, syncs)


def test_host_sync_counter_sees_torch_gradscaler_skip_decision():
    """The counter can fail: GradScaler with a torch.optim for-loop/foreach optimizer reads
    found_inf on the host (``.item()``) to decide the skip."""
    params = [p.to(torch.float32).requires_grad_() for p in _problem(3)[0]]
    opt = torch.optim.AdamW(params, lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE)
    with HostSyncCounter() as counter:
        _amp_iteration(opt, params, scaler, 0)
    assert "_local_scalar_dense" in counter.calls


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradscaler_with_fusedopt_makes_no_host_sync(backend):
    """Under torch's own GradScaler too, the skip is decided on the device (found_inf is handed
    to the kernel), unlike torch.optim's non-fused optimizers."""
    params = [p.to(torch.float32).requires_grad_() for p in _problem(3)[0]]
    opt = fusedopt.AdamW(params, lr=1e-3, backend=backend, max_grad_norm=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE)
    _amp_iteration(opt, params, scaler, 0)
    with HostSyncCounter(allow=HOST_ONLY_READS) as counter:
        _amp_iteration(opt, params, scaler, 1)
    assert counter.calls == []


# --------------------------------------------------------------------------- passes over grads
def _count_step_passes(opt, params, scaler, monkeypatch, backend=None, explicit_clip=None):
    """Backward of a scaled loss, then count the passes over each grad of clip + step."""
    gen = torch.Generator().manual_seed(7)
    loss = sum((p * torch.randn(p.shape, generator=gen)).sum() for p in params)
    scaler.scale(loss).backward()
    grads = [p.grad for p in params]
    with GradPassCounter(grads, monkeypatch, backend) as counter:
        if explicit_clip is not None:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, explicit_clip)
        scaler.step(opt)
    scaler.update()
    return counter


def _nonempty_params():
    return [p.to(torch.float32).requires_grad_() for p in _problem(4)[0] if p.numel()]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("clip", [None, 1.0])
def test_lossscaler_reads_each_grad_in_two_passes(backend, clip, monkeypatch):
    """LossScaler + AdamW: one norm pass (unscale, inf check, clip norm) and one update pass,
    with or without clipping: nothing else touches the grads."""
    params = _nonempty_params()
    opt = fusedopt.AdamW(params, lr=1e-3, backend=backend, max_grad_norm=clip)
    counter = _count_step_passes(opt, params, fusedopt.amp.LossScaler(), monkeypatch, backend)
    assert counter.passes == [["fusedopt.grad_prologue_", "fusedopt.adam_step_"]] * len(params)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("clip", [None, 1.0])
def test_gradscaler_with_fusedopt_pass_count(backend, clip, monkeypatch):
    """torch's GradScaler reads every grad once for its inf check (``_check_inf_per_device``);
    then fusedopt's norm pass (only when clipping) and its update pass."""
    params = _nonempty_params()
    opt = fusedopt.AdamW(params, lr=1e-3, backend=backend, max_grad_norm=clip)
    scaler = torch.amp.GradScaler("cpu")
    counter = _count_step_passes(opt, params, scaler, monkeypatch, backend)
    expected = ["_amp_foreach_non_finite_check_and_unscale_"]
    expected += ["fusedopt.grad_prologue_"] if clip is not None else []
    assert counter.passes == [expected + ["fusedopt.adam_step_"]] * len(params)


def test_torch_clip_composition_pass_count(monkeypatch):
    """The counter sees torch's composition (docs/architecture.md#passes-over-memory: 4 passes):
    unscale_, the norm, the clip multiply, the fused AdamW step."""
    params = _nonempty_params()
    opt = torch.optim.AdamW(params, lr=1e-3, fused=True)
    counter = _count_step_passes(opt, params, torch.amp.GradScaler("cpu"), monkeypatch,
                                 explicit_clip=1.0)
    torch_passes = ["_amp_foreach_non_finite_check_and_unscale_", "_foreach_norm", "_foreach_mul_",
                    "_fused_adamw_"]
    assert counter.passes == [torch_passes] * len(params)
