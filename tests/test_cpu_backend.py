"""The ``cpu`` backend (native C++ core) against the reference, within the error budget.

The budget is the one of every backend (``harness.assert_elementwise``, docs/numerics.md): for
every element of every stream (params, masters, states) and every telemetry value,

    |cpu - ref64| <= K |ref_same - ref64| + FLOOR_ULPS ulp(storage, peak)

where ref64 is the reference backend run on float64 copies of the same inputs (ground truth),
ref_same the reference backend run in the storage precision (the naive same-precision
baseline) and peak the element's largest magnitude over ref64's run since the last re-sync
(``harness.Trajectory``). K = 2: the kernel may be at most twice as wrong as the reference
itself; FLOOR_ULPS is the harness's (4). Step counts must be equal, and with master weights the
param must be the master rounded to nearest even.

The kernel follows the reference's operation order; what remains is the norm's summation order
(torch.sum vs the kernels' compensated fp64 lanes, Note [fixed lanes]), which moves the clip
coefficient by about an ulp. So in the clipping modes ref_same is three runs, with the clip
norm as given and one opmath ulp up and down (``harness.clip_perturbations``), and the K term
takes, per element, the largest of their errors: all three are exactly as correct, and where an
element's update is ill-conditioned that ulp moves it by many. For fp64 params ref_same with
the norm as given *is* ref64 (its error is 0), so the perturbed runs and the floor carry the
budget.

16-bit params without master weights are re-synced to the kernel's values after every step
(single-step error, not compounded); test_drift_16bit checks the same runs without re-sync.
fp64 runs are re-synced too: their ground truth is the reference itself, exact only to about an
ulp per step, so over 1,000 steps the two drift apart by a random walk of such ulps
(measured on adamw without re-sync: 1.4 ulps after 10 steps, 2.2 after 100, 3.2 after 300).
"""
from __future__ import annotations

import math

import pytest
import torch

from fusedopt import _native, _stats, registry
from fusedopt.amp import LossScaler
from fusedopt.backends import Bucket, cpu_backend

from harness import (FLOOR_ULPS, Trajectory, advance_trajectories, assert_elementwise,
                     clip_perturbations, envelope)

C = pytest.importorskip("fusedopt._C", reason="native core not built")

K = 2.0

#: vector widths (16 fp32 / 8 fp64 lanes on AVX-512) +-1, the 16 reduction lanes, a 4097
#: dimension, more than one 65,536-element chunk (and enough work for two threads), and an
#: empty tensor.
SHAPES = [(0,), (1,), (3,), (7,), (9,), (15,), (17,), (33,), (3, 4097), (65537,)]

#: (param dtype, grad dtype, state dtype, master weights)
DTYPE_CASES = {
    "fp32": (torch.float32, torch.float32, torch.float32, False),
    "fp32_bf16states": (torch.float32, torch.float32, torch.bfloat16, False),
    "bf16": (torch.bfloat16, torch.bfloat16, torch.float32, False),
    "bf16_bf16states": (torch.bfloat16, torch.bfloat16, torch.bfloat16, False),
    "bf16_fp32grads": (torch.bfloat16, torch.float32, torch.float32, False),
    "bf16_master": (torch.bfloat16, torch.bfloat16, torch.float32, True),
    "fp16": (torch.float16, torch.float16, torch.float32, False),
    "fp16_master_bf16states": (torch.float16, torch.float16, torch.bfloat16, True),
    "fp64": (torch.float64, torch.float64, torch.float64, False),
}
MODES = ("plain", "clip", "amp", "clip_amp", "telemetry", "tensor_lr")
AMP_SCALE = 1024.0
SKIP_STEP = 2  # under AMP this step's grads hold an inf: the step must be skipped


@pytest.fixture(autouse=True)
def _one_thread():
    """The comparisons run torch's reference on one thread (fast on a shared 2-core machine);
    the kernels' multi-threaded path is held to the single-threaded bits below
    (test_threads_do_not_change_bits) and to the reference (test_two_threads_match_reference)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ------------------------------------------------------------------------------ the runner
class Run:
    """One optimizer of a registry algorithm on its own copies of the initial params."""

    def __init__(self, algo, params0, *, dtype, grad_dtype, state_dtype, master, backend,
                 mode, max_grad_norm: float = 1.0):
        self.algo, self.mode, self.grad_dtype = algo, mode, grad_dtype
        self.params = [p.to(dtype).clone() for p in params0]
        if grad_dtype != dtype:  # torch >= 2.9 checks .grad's dtype unless told not to
            for p in self.params:
                p.grad_dtype = None
        kw = {"backend": backend}
        if mode in ("clip", "clip_amp"):
            kw["max_grad_norm"] = max_grad_norm
        if mode in ("telemetry", "clip_amp"):
            kw["telemetry"] = True
        if mode == "tensor_lr":
            if not algo.tensor_lr:
                pytest.skip(f"{algo.name} refuses a tensor lr (AlgoInfo.tensor_lr)")
            kw["lr"] = torch.tensor(algo.kwargs["lr"], dtype=torch.float32)
        if algo.has_moments and dtype != torch.float64:
            kw["state_dtype"] = state_dtype
        if master:
            kw["master_weights"] = True
        self.opt = algo.make(self.params, **kw)
        self.scaler = (LossScaler(init_scale=AMP_SCALE, growth_interval=10**9)
                       if mode in ("amp", "clip_amp") else None)

    def _set_grads(self, grads):
        scale = AMP_SCALE if self.scaler is not None else 1.0
        for p, g in zip(self.params, grads):
            p.grad = (g * scale).to(self.grad_dtype)

    def step(self, grads, indep_grads, loss):
        if self.algo.needs_normalizer:
            self._set_grads(indep_grads)
            self.opt.record_normalizer(
                grad_scale=self.scaler.scale_tensor if self.scaler is not None else None)
        self._set_grads(grads)
        kwargs = {"loss": torch.tensor(loss, dtype=torch.float64)} if self.algo.needs_loss else {}
        if self.scaler is not None:
            self.scaler.step(self.opt, **kwargs)
            self.scaler.update()
        else:
            self.opt.step(**kwargs)

    def streams(self) -> dict[str, list[torch.Tensor]]:
        out = {"param": self.params}
        st = [self.opt.state[p] for p in self.params]
        for key in self.algo.state_keys + ("master_param", "step"):
            if all(key in s for s in st):
                out[key] = [s[key] for s in st]
        return out

    def telemetry(self) -> dict[str, torch.Tensor]:
        return self.opt.last_stats if self.opt.telemetry else {}

    def resync_from(self, other: "Run") -> None:
        """Copy ``other``'s params, states and masters into this run (cast to its dtypes)."""
        mine, theirs = self.streams(), other.streams()
        for key, tensors in mine.items():
            for dst, src in zip(tensors, theirs[key]):
                dst.copy_(src)


def _grads(shapes, steps, mode, seed):
    gen = torch.Generator().manual_seed(seed)
    seq = []
    for i in range(steps):
        gs = [torch.randn(s, generator=gen, dtype=torch.float64) * (1 + i % 3) for s in shapes]
        if mode in ("amp", "clip_amp") and i == SKIP_STEP:
            big = max(range(len(gs)), key=lambda j: gs[j].numel())
            gs[big].view(-1)[gs[big].numel() // 2] = math.inf
        seq.append(gs)
    return seq


def compare(cpu: Run, sames: list[Run], ref64: Run, trajectories: dict[str, Trajectory]) -> None:
    """Every stream and telemetry value of ``cpu`` within the budget; ``sames``: the naive runs
    (the first with the mode's clip norm, then an ulp up and down: harness.naive_runs);
    ``trajectories``: ref64's per stream since the last re-sync."""
    same = sames[0]
    cs, rs = cpu.streams(), ref64.streams()
    ss = [s.streams() for s in sames]
    assert set(cs) == set(ss[0]), f"streams {sorted(cs)} != {sorted(ss[0])}"
    for key in cs:
        if key == "step":
            assert all(torch.equal(a, b) for a, b in zip(cs[key], rs[key])), "step counts differ"
            continue
        ref_key = "param" if key == "master_param" else key
        traj = trajectories[ref_key]
        naive = envelope([s[key] for s in ss], rs[ref_key])
        assert_elementwise(key, cs[key], naive, rs[ref_key], storage=cs[key][0].dtype, k=K,
                           floor_ulps=FLOOR_ULPS, peak=traj.peak)
    if "master_param" in cs:  # the param is the master rounded to nearest even, exactly
        for p, m in zip(cs["param"], cs["master_param"]):
            assert torch.equal(p, m.to(p.dtype))
    ct, st, rt = cpu.telemetry(), same.telemetry(), ref64.telemetry()
    for key in ct:
        assert_elementwise(f"last_stats[{key}]", [ct[key]], [st[key]], [rt[key]],
                           storage=torch.float32, k=K, floor_ulps=FLOOR_ULPS)


def _values(run: Run) -> dict[str, list[torch.Tensor]]:
    return {k: v for k, v in run.streams().items() if k != "step"}


def run_case(algo_name, case, mode, steps, *, resync=True, shapes=SHAPES, seed=0):
    algo = registry.get(algo_name)
    dtype, grad_dtype, state_dtype, master = DTYPE_CASES[case]
    gen = torch.Generator().manual_seed(seed + 1)
    params0 = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]
    common = dict(dtype=dtype, grad_dtype=grad_dtype, state_dtype=state_dtype, master=master,
                  mode=mode)
    cpu = Run(algo, params0, backend="cpu", **common)
    sames = [Run(algo, params0, backend="reference", **common)]
    if mode in ("clip", "clip_amp"):
        sames += [Run(algo, params0, backend="reference", max_grad_norm=norm, **common)
                  for norm in clip_perturbations(1.0, dtype)]
    ref64 = Run(algo, params0, backend="reference", mode=mode, dtype=torch.float64,
                grad_dtype=torch.float64, state_dtype=torch.float64, master=False)
    grads = _grads(shapes, steps, mode, seed)
    indep = _grads(shapes, steps, "plain", seed + 7)
    resync = resync and (dtype == torch.float64 or (dtype in (torch.bfloat16, torch.float16)
                                                      and not master))
    trajectories = {k: Trajectory(v) for k, v in _values(ref64).items()}
    for i in range(steps):
        # The reference computes in the storage precision from the storage values of the grads.
        g = [x.to(grad_dtype).double() for x in grads[i]]
        ig = [x.to(grad_dtype).double() for x in indep[i]]
        loss = 1.0 / (1.0 + i) + 0.05
        for r in (cpu, *sames, ref64):
            r.step(g, ig, loss)
        advance_trajectories(trajectories, _values(ref64))
        compare(cpu, sames, ref64, trajectories)
        if resync:
            for r in (*sames, ref64):
                r.resync_from(cpu)
            trajectories = {k: Trajectory(v) for k, v in _values(ref64).items()}
    return cpu


# ------------------------------------------------------------------------------ conformance
@pytest.mark.parametrize("case", list(DTYPE_CASES))
@pytest.mark.parametrize("algo_name", list(registry.ALGORITHMS))
def test_dtypes_match_reference(algo_name, case):
    algo = registry.get(algo_name)
    dtype, _, state_dtype, _ = DTYPE_CASES[case]
    if dtype not in algo.param_dtypes or (algo.has_moments and dtype != torch.float64
                                          and state_dtype not in algo.state_dtypes):
        pytest.skip(f"{algo_name} does not support {case}")
    run_case(algo_name, case, "clip_amp", steps=4)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("algo_name", list(registry.ALGORITHMS))
def test_modes_match_reference(algo_name, mode):
    run_case(algo_name, "fp32", mode, steps=4)


@pytest.mark.parametrize("case", ["bf16", "fp16", "bf16_bf16states"])
@pytest.mark.parametrize("algo_name", ["adamw", "adagrad", "nsgdm"])
def test_drift_16bit(algo_name, case):
    """No re-sync: the kernel's 16-bit params drift no more than the reference's own."""
    run_case(algo_name, case, "clip", steps=20, resync=False)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["fp32", "bf16_master", "bf16", "fp64"])
@pytest.mark.parametrize("algo_name", list(registry.ALGORITHMS))
def test_1000_steps(algo_name, case):
    algo = registry.get(algo_name)
    if DTYPE_CASES[case][0] not in algo.param_dtypes:
        pytest.skip(f"{algo_name} does not support {case}")
    run_case(algo_name, case, "clip_amp", steps=1000, shapes=[(1,), (17,), (4097,), (65537,)])


@pytest.mark.parametrize("algo_name", ["adamw", "adagrad", "iansgd", "nsgdm"])
def test_two_threads_match_reference(algo_name):
    torch.set_num_threads(2)
    run_case(algo_name, "bf16_master", "clip_amp", steps=3, shapes=SHAPES + [(140000,)])


def test_many_tensors():
    """300 tensors in one bucket (more than one launch's worth on a GPU)."""
    shapes = [(1 + (7 * i) % 300,) for i in range(300)]
    run_case("adamw", "bf16_master", "clip_amp", steps=3, shapes=shapes)


def test_amp_skip_leaves_everything_untouched():
    algo = registry.get("adamw")
    params = [torch.randn(s, dtype=torch.float64).float() for s in SHAPES]
    run = Run(algo, params, dtype=torch.float32, grad_dtype=torch.float32,
              state_dtype=torch.float32, master=False, backend="cpu", mode="clip_amp")
    run.step([torch.randn(s, dtype=torch.float64) for s in SHAPES], None, 1.0)
    before = {k: [t.clone() for t in v] for k, v in run.streams().items()}
    bad = [torch.randn(s, dtype=torch.float64) for s in SHAPES]
    bad[-1][5] = math.nan
    run.step(bad, None, 1.0)
    assert run.opt.last_stats["found_inf"].item() == 1.0
    for key, tensors in run.streams().items():
        for a, b in zip(tensors, before[key]):
            assert torch.equal(a, b), f"{key} changed on a skipped step"


# ------------------------------------------------------------------------------ determinism
def _adamw_run(threads: int, isa: str | None = None, steps: int = 3):
    old_threads, old_isa = torch.get_num_threads(), C.isa()
    torch.set_num_threads(threads)
    if isa is not None:
        C.set_isa(isa)
    try:
        gen = torch.Generator().manual_seed(3)
        shapes = [(300000,), (70000,), (17,), (5,)]
        params = [torch.randn(s, generator=gen) for s in shapes]
        opt = registry.get("adamw").make(params, backend="cpu", max_grad_norm=1.0,
                                         telemetry=True)
        norms = []
        for _ in range(steps):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
            norms.append(opt._stats.clone())
        return [p.clone() for p in params], torch.stack(norms)
    finally:
        torch.set_num_threads(old_threads)
        C.set_isa(old_isa)


def _bitwise_equal(a, b) -> bool:
    (pa, na), (pb, nb) = a, b
    return all(torch.equal(x, y) for x, y in zip(pa, pb)) and torch.equal(na, nb)


@pytest.mark.parametrize("threads", [1, 2])
def test_run_to_run_bitwise(threads):
    assert _bitwise_equal(_adamw_run(threads), _adamw_run(threads))


def test_threads_do_not_change_bits():
    """Chunks, not threads, fix the reduction order (Note [chunk plan], Note [fixed lanes])."""
    assert _bitwise_equal(_adamw_run(1), _adamw_run(2))


@pytest.mark.parametrize("isa", C.supported_isas())
def test_every_isa_gives_the_same_bits(isa):
    """No FMA contraction, IEEE sqrt/div, 16 fixed lanes: every ISA computes the same bits."""
    assert _bitwise_equal(_adamw_run(2, isa), _adamw_run(2, "generic"))


@pytest.mark.parametrize("isa", C.supported_isas())
@pytest.mark.parametrize("algo_name", ["adamw", "amsgrad", "yogi", "adagrad", "nsgdm"])
def test_every_isa_matches_reference(isa, algo_name):
    old = C.isa()
    C.set_isa(isa)
    try:
        run_case(algo_name, "bf16_master", "clip_amp", steps=3)
        run_case(algo_name, "fp16", "telemetry", steps=2)
    finally:
        C.set_isa(old)


# ------------------------------------------------------------------------------ conversions
def _sgd_bucket(params, masters=None):
    return Bucket(params, [torch.zeros_like(p) for p in params],
                  [torch.zeros(()) for _ in params], {}, masters)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_round_trip_is_torchs(dtype):
    """Every 16-bit word loads to fp32 and stores back unchanged (NaNs stay NaN), and fp32
    master values round to the 16-bit param exactly as torch's .to(dtype): a zero-scale SGD step
    is load + store."""
    words = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype)
    stats = torch.zeros(_stats.NUM_SLOTS, dtype=torch.float64)
    p = words.clone()
    cpu_backend.sgd_step_(_sgd_bucket([p]), stats, direction="grad", use_prologue=False,
                          telemetry=False)
    nan = torch.isnan(words)
    assert torch.equal(torch.isnan(p), nan)
    assert torch.equal(p.view(torch.int16)[~nan], words.view(torch.int16)[~nan])

    gen = torch.Generator().manual_seed(0)
    exps = torch.randint(-30, 20, (1 << 18,), generator=gen).double()
    masters = (torch.randn(1 << 18, generator=gen, dtype=torch.float64) * 2.0 ** exps).float()
    ties = torch.tensor([65504.0, 65519.0, 65520.0, 1e38, 2.0**-24 * 1.5, 2.0**-25, 2.0**-26,
                         math.inf, -math.inf, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8])
    masters = torch.cat([masters, ties, -ties])
    # each param holds its master as torch rounds it (no write since the last step: Note
    # [master re-seed]); where the kernel rounded differently it would take the param for a
    # write and re-seed the master from it, so the masters must come back unchanged
    p = masters.to(dtype)
    m = masters.clone()
    cpu_backend.sgd_step_(_sgd_bucket([p], [m]), stats, direction="grad",
                          use_prologue=False, telemetry=False)
    assert torch.equal(p.view(torch.int16), masters.to(dtype).view(torch.int16))
    assert torch.equal(m, masters)


# ------------------------------------------------------------------------------ contract
def test_stats_slots_agree_with_python():
    for name, slot in C.STATS_SLOTS.items():
        assert getattr(_stats, name) == slot, name


def test_prologue_without_norm_pass():
    stats = torch.zeros(_stats.NUM_SLOTS, dtype=torch.float64)
    cpu_backend.grad_prologue_([torch.ones(3)], stats, region=_stats.GRAD,
                               grad_scale=torch.tensor(4.0), found_inf=torch.tensor(1.0),
                               max_norm=1.0, compute_norm=False)
    assert stats[:5].tolist() == [0.0, 0.0, 1.0, 1.0, 0.25]


def test_prologue_mixed_dtypes_and_aux_region():
    grads = [torch.randn(1000, dtype=d) for d in (torch.float32, torch.bfloat16, torch.float16,
                                                   torch.float64)]
    cpu = torch.zeros(_stats.NUM_SLOTS, dtype=torch.float64)
    ref = cpu.clone()
    kw = dict(region=_stats.AUX, grad_scale=None, found_inf=None, max_norm=0.5,
              compute_norm=True)
    cpu_backend.grad_prologue_(grads, cpu, **kw)
    from fusedopt.backends import reference_backend
    reference_backend.grad_prologue_(grads, ref, **kw)
    assert torch.allclose(cpu, ref, rtol=1e-12, atol=0)  # fp64 opmath: only summation order
    assert cpu[:_stats.AUX].abs().sum() == 0  # nothing outside the region


def test_table_cache_follows_new_grads_and_swapped_params():
    params = [torch.randn(100), torch.randn(10)]
    ref_params = [p.clone() for p in params]
    opt = registry.get("adamw").make(params, backend="cpu")
    ref = registry.get("adamw").make(ref_params, backend="reference")
    for i in range(4):
        grads = [torch.randn(p.shape) for p in params]  # new grad tensors every step
        for p, q, g in zip(params, ref_params, grads):
            p.grad, q.grad = g.clone(), g.clone()
        if i == 2:  # swap a param's storage: the cached pointer must not be used
            new = params[0].detach().clone()
            params[0].data = new
        opt.step()
        ref.step()
        for p, q in zip(params, ref_params):
            assert torch.equal(p, q)


def test_lr_tensor_is_read_at_step_time():
    lr = torch.tensor(1e-2)
    p = torch.ones(5)
    opt = registry.get("adamw").make([p], backend="cpu", lr=lr, weight_decay=0.0)
    p.grad = torch.ones(5)
    lr.fill_(0.0)
    opt.step()
    assert torch.equal(p, torch.ones(5))


def test_native_module_reports_build():
    info = C.build_info()
    assert "-ffp-contract=off" in info["flags"] and "fast-math" not in info["flags"]
    assert C.isa() in C.supported_isas()
    assert _native.LOAD_ERROR is None

