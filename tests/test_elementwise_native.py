"""The element-wise algorithms in the native CPU core (csrc/math/elementwise.h): one list, one
traversal, the reference's bits.

* what the native build lists (``_C.elementwise_algorithms()``, from csrc/math/algorithms.h)
  agrees with every reference module (states, hyperparameters, scalars), and the limits of
  csrc/math/elementwise.h are the Python side's;
* the cpu backend computes, bit for bit, what the reference backend computes in the same
  precision, on Buckets of odd sizes over several steps, in every mode of the contract (plain,
  AMP skip and unscale, maximize, telemetry, a tensor lr, a NaN tensor lr that skips, fp32 master
  weights with bf16 params, bf16 states): the C++ and the reference run the same IEEE
  operations in the same order (no FMA on either side), so anything but equality is a bug.
"""
from __future__ import annotations

import pytest
import torch

from fusedopt import _native
from fusedopt import _stats as S
from fusedopt.backends import Bucket, load
from fusedopt.reference import elementwise

pytestmark = pytest.mark.skipif(_native.LOAD_ERROR is not None, reason="fusedopt._C not built")

#: every element-wise algorithm with hyperparameters that make each state and term matter
CASES = {
    "lion": dict(lr=3e-2, hyper=(0.9, 0.99, 0.1)),
    "adan": dict(lr=2e-2, hyper=(0.98, 0.92, 0.99, 1e-8, 0.05, 0.0)),
    "adan_no_prox": dict(lr=2e-2, hyper=(0.98, 0.92, 0.99, 1e-8, 0.05, 1.0), algo="adan"),
    "schedule_free_adamw": dict(lr=2e-2, hyper=(0.9, 0.999, 1e-8, 0.05, 0.25)),
    # coupled decay and the t^(1/4) clip; decoupled decay without a clip (bound +inf)
    "adopt": dict(lr=2e-2, hyper=(0.9, 0.99, 1e-6, 0.05, 0.0, 1.0, 0.25)),
    "adopt_decoupled_no_clip": dict(lr=2e-2, hyper=(0.9, 0.99, 1e-6, 0.05, 1.0, 0.0, 0.0),
                                    algo="adopt"),
}
SIZES = (1, 7, 4095, 4097, 70001)


def _native_list() -> dict:
    return _native.native().elementwise_algorithms()


def test_native_list_matches_the_reference_modules():
    built = _native_list()
    assert set(built) >= {"lion", "adan", "schedule_free_adamw", "adagrad", "adopt"}
    for name, (states, hyper, scalars) in built.items():
        mod = elementwise.spec(name)
        assert (states, hyper, scalars) == (len(mod.STATES), len(mod.HYPER), mod.N_SCALARS), name


def test_limits_are_the_native_ones():
    C = _native.native()
    ptrs = [[0]] * elementwise.MAX_STATES
    C.TensorTable([1], [0], [0], [], ptrs, [0], 0, 0, 0)  # MAX_STATES streams are accepted
    with pytest.raises(ValueError, match=f"at most {elementwise.MAX_STATES} state streams"):
        C.TensorTable([1], [0], [0], [], ptrs + [[0]], [0], 0, 0, 0)
    with pytest.raises(ValueError, match=f"at most {elementwise.MAX_HYPER} hyperparameters"):
        _step(_bucket("lion", torch.float32, torch.float32, False, (3,), seed=0),
              "cpu", "lion", 0.1, (0.5,) * (elementwise.MAX_HYPER + 1))


def test_triton_rows_are_the_cuda_rows():
    """The Triton pointer table and the CUDA device table order their rows the same way: the
    CUDA enum (csrc/cuda/device_table.h) read from the header, the Triton constants imported."""
    import re
    from pathlib import Path

    from fusedopt.triton_kernels import _common as T

    header = (Path(__file__).resolve().parents[1] / "csrc/cuda/device_table.h").read_text()
    enum = header[header.index("enum Row"):header.index("};", header.index("enum Row"))]
    values: dict[str, int] = {}
    for name, expr in re.findall(r"(kRow\w+|kNumRows) = ([^,]+),", enum):
        expr = expr.replace("math::kMaxStates", str(elementwise.MAX_STATES))
        for known, v in values.items():
            expr = re.sub(rf"\b{known}\b", str(v), expr)
        values[name] = int(eval(expr, {}))  # small integer sums only
    cuda = {"PARAM": values["kRowParam"], "GRAD": values["kRowGrad"],
            "MASTER": values["kRowMaster"], "STEP": values["kRowStep"]}
    cuda.update({f"STATE{i}": values["kRowState0"] + i for i in range(elementwise.MAX_STATES)})
    triton = {k: getattr(T, f"ROW_{k}") for k in cuda}
    assert triton == cuda
    assert T.MAX_STATES == elementwise.MAX_STATES == values["kRowStep"] - values["kRowState0"]


def _bucket(algo: str, param_dtype, state_dtype, master: bool, sizes, seed: int) -> Bucket:
    gen = torch.Generator().manual_seed(seed)
    params, grads, steps, masters = [], [], [], []
    for n in sizes:
        p32 = torch.randn(n, generator=gen, dtype=torch.float64)
        params.append(p32.to(param_dtype))
        grads.append(torch.randn(n, generator=gen, dtype=torch.float64).to(param_dtype))
        steps.append(torch.zeros((), dtype=torch.float32))
        masters.append(params[-1].to(torch.float32))
    mod = elementwise.spec(algo)
    states = {}
    for k in mod.STATES:
        # start from non-zero states so that every stream is read from the first step
        states[k] = [0.1 * torch.rand(n, generator=gen, dtype=torch.float64).to(state_dtype)
                     for n in sizes]
    return Bucket(params, grads, steps, states, masters if master else None)


def _clone(b: Bucket) -> Bucket:
    return Bucket([p.clone() for p in b.params], [g.clone() for g in b.grads],
                  [s.clone() for s in b.steps], {k: [t.clone() for t in v]
                                                 for k, v in b.states.items()},
                  [m.clone() for m in b.masters] if b.masters is not None else None)


def _step(b: Bucket, backend: str, algo: str, lr, hyper, *, stats=None, use_prologue=False,
          telemetry=False, maximize=False) -> torch.Tensor:
    stats = torch.zeros(S.NUM_SLOTS, dtype=torch.float64) if stats is None else stats
    load(backend).elementwise_step_(b, stats, algo=algo, lr=lr, hyper=hyper,
                                    use_prologue=use_prologue, telemetry=telemetry,
                                    maximize=maximize)
    return stats


def _assert_same(a: Bucket, b: Bucket, what: str) -> None:
    pairs = [("param", a.params, b.params), ("step", a.steps, b.steps)]
    pairs += [(k, a.states[k], b.states[k]) for k in a.states]
    if a.masters is not None:
        pairs.append(("master", a.masters, b.masters))
    for name, xs, ys in pairs:
        for i, (x, y) in enumerate(zip(xs, ys)):
            assert torch.equal(x, y), (what, name, i, (x.double() - y.double()).abs().max())


DTYPE_CASES = {
    "fp32": (torch.float32, torch.float32, False),
    "fp64": (torch.float64, torch.float64, False),
    "bf16_master": (torch.bfloat16, torch.float32, True),
    "fp32_bf16_states": (torch.float32, torch.bfloat16, False),
}
MODES = ("plain", "amp", "maximize_telemetry", "tensor_lr")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dt", sorted(DTYPE_CASES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_cpu_core_is_the_reference_bit_for_bit(case, dt, mode):
    spec = CASES[case]
    algo = spec.get("algo", case)
    param_dtype, state_dtype, master = DTYPE_CASES[dt]
    ref = _bucket(algo, param_dtype, state_dtype, master, SIZES, seed=len(case) + len(dt))
    cpu = _clone(ref)
    lr = spec["lr"]
    if mode == "tensor_lr":
        lr = torch.tensor(lr, dtype=torch.float64)
    for step in range(4):
        gen = torch.Generator().manual_seed(100 + step)
        for gr, gc in zip(ref.grads, cpu.grads):
            new = torch.randn(gr.shape, generator=gen, dtype=torch.float64).to(gr.dtype)
            gr.copy_(new)
            gc.copy_(new)
        kw = dict(telemetry=mode == "maximize_telemetry", maximize=mode == "maximize_telemetry")
        stats_r = torch.zeros(S.NUM_SLOTS, dtype=torch.float64)
        if mode == "amp":
            kw["use_prologue"] = True
            stats_r[S.COEF] = 0.5 ** 7            # an unscale coefficient
            stats_r[S.FOUND_INF] = float(step == 2)  # one skipped step
        stats_c = stats_r.clone()
        _step(ref, "reference", algo, lr, spec["hyper"], stats=stats_r, **kw)
        _step(cpu, "cpu", algo, lr, spec["hyper"], stats=stats_c, **kw)
        _assert_same(ref, cpu, f"{case}/{dt}/{mode}/step {step}")
        if kw["telemetry"]:
            # the sums are reduced in different orders (chunks vs whole tensors)
            torch.testing.assert_close(stats_c, stats_r, rtol=1e-5, atol=0.0)
        else:
            assert torch.equal(stats_c, stats_r)
    assert float(cpu.steps[0]) == (3.0 if mode == "amp" else 4.0)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_nan_tensor_lr_skips_and_flags(backend):
    b = _bucket("adan", torch.float32, torch.float32, False, (5, 9), seed=3)
    before = _clone(b)
    stats = _step(b, backend, "adan", torch.tensor(float("nan")), CASES["adan"]["hyper"])
    _assert_same(before, b, "NaN lr")
    assert stats[S.LR_INVALID] == 1.0


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_missing_state_stream_is_refused_before_any_write(backend):
    b = _bucket("adan", torch.float32, torch.float32, False, (5,), seed=4)
    del b.states["prev_grad"]
    before = _clone(b)
    with pytest.raises((ValueError, KeyError)):
        _step(b, backend, "adan", 0.1, CASES["adan"]["hyper"])
    _assert_same(before, b, "refused")


def test_unknown_algorithm_and_wrong_hyper_count_are_refused():
    b = _bucket("lion", torch.float32, torch.float32, False, (5,), seed=5)
    with pytest.raises(ValueError, match="element-wise algorithm"):
        _step(b, "cpu", "lionx", 0.1, (0.9, 0.99, 0.0))
    with pytest.raises(ValueError, match="hyperparameters"):
        _native.native().elementwise_step(_native.bucket_table(b, "lion"), 0, "lion", 0.1, 0, 0,
                                          [0.9, 0.99], False, False, False, 1)
