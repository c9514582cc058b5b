"""The CUDA kernels run on the CPU emulator (Note [CUDA emulation], csrc/cuda/emulation/):
the same csrc/cuda sources, compiled by the host compiler, with every thread a fiber and
__syncthreads / warp shuffles keeping their CUDA meaning. No GPU and no CUDA toolkit needed.

The emulated module replaces ``fusedopt._C_cuda`` behind the ``cuda`` backend, on CPU tensors,
and the checks of tests/cuda_checks.py run as they do on a GPU: conformance with the reference
within the error budget, bitwise equality with the CPU core where no reduction is involved,
run-to-run determinism, misaligned views, skip-on-inf, more than 1,000 tensors. This tests the
kernels' logic (tables, chunking, vector and element paths, reductions, finish, skip) and the
Python side; it cannot test nvcc's code generation or real GPU concurrency (GPU tests:
tests/test_cuda_backend.py).
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fusedopt
from fusedopt import _native_cuda
from fusedopt.backends import Bucket, cuda_backend
from fusedopt.registry import ALGORITHMS

import cuda_checks as checks

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "cpu"


class _FakeStream:
    """A stand-in for torch.cuda.Stream on the emulator: only its handle is read."""

    def __init__(self, handle: int) -> None:
        self.cuda_stream = handle


@pytest.fixture(scope="module")
def emulated_module():
    """Build (incrementally: build/cuda-emulation is kept) and load _C_cuda_emulated."""
    import pybind11

    build = ROOT / "build" / "cuda-emulation"
    build.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cmake", "-S", str(ROOT / "csrc" / "cuda" / "emulation"), "-B", str(build),
                    "-G", "Ninja", f"-DPython_EXECUTABLE={sys.executable}",
                    f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"],
                   check=True, capture_output=True, text=True)
    done = subprocess.run(["cmake", "--build", str(build), "-j", "2"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr
    path = next(build.glob("_C_cuda_emulated*.so"))
    spec = importlib.util.spec_from_file_location("fusedopt._C_cuda_emulated", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _cuda_backend_on_emulator(emulated_module, monkeypatch):
    """The cuda backend, with the emulated module, on CPU tensors (host memory, stream 0)."""
    monkeypatch.setattr(_native_cuda, "_module", emulated_module)
    monkeypatch.setattr(_native_cuda, "_GRAD_TABLES", {})
    monkeypatch.setattr(_native_cuda, "_EMPTY", {})
    monkeypatch.setattr(_native_cuda, "stream_handle", lambda device: 0)
    monkeypatch.setattr(_native_cuda, "current_stream", lambda device: _FakeStream(0))
    monkeypatch.setattr(_native_cuda, "_record_stream", lambda t, stream: None)
    monkeypatch.setattr(_native_cuda, "device_index", lambda device: 0)
    monkeypatch.setattr(_native_cuda, "_check_not_capturing", lambda what: None)
    monkeypatch.setattr(_native_cuda, "_upload", lambda table, device: torch.frombuffer(
        bytearray(table), dtype=torch.int64).clone())
    monkeypatch.setattr(cuda_backend, "availability", lambda: (True, "CPU emulation"))
    monkeypatch.setattr(cuda_backend, "supports", lambda device: True)
    monkeypatch.setattr(cuda_backend, "UNVALIDATED", None)


#: one dtype/mode per row of the conformance matrix that exercises a different kernel path
EMULATED_CASES = [
    ("fp32", "plain"), ("fp32", "clip"), ("fp32", "telemetry"), ("fp32", "tensor_lr"),
    ("bf16", "amp"), ("bf16_master", "clip_amp"), ("fp16_master_fp32grad", "clip_amp"),
    ("fp64", "lossscaler"), ("fp32_bf16state", "plain"),
]


@pytest.mark.parametrize("dt,mode", EMULATED_CASES)
@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_matches_reference(algo, dt, mode):
    if not ALGORITHMS[algo].has_moments and "state" in dt:
        pytest.skip("no moments: the state dtype does not apply")
    checks.check_conformance(algo, dt, mode, device=DEVICE, steps=4)


@pytest.mark.parametrize("mode", ["clip_amp", "telemetry"])
@pytest.mark.parametrize("algo", ["adamw", "adagrad", "iansgd", "nsgdm"])
def test_chunk_boundaries(algo, mode):
    """Several chunks per block: the persistent loop, per-chunk sums, reused shared memory."""
    checks.check_conformance(algo, "fp32", mode, device=DEVICE, shapes="chunks", steps=2)


@pytest.mark.parametrize("algo", ["adamw", "nsgdm"])
def test_fp64_norms_over_many_elements(algo):
    """fp64 params: the norm (and NSGDm's momentum norm) over hundreds of thousands of elements
    is compensated, so the clip coefficient and the normalizers match the fp64 reference."""
    checks.check_conformance(algo, "fp64", "clip", device=DEVICE, shapes="chunks", steps=3)


@pytest.mark.parametrize("dt,mode", [("fp32", "plain"), ("bf16_master", "amp"),
                                     ("fp64", "telemetry"), ("fp32", "clip")])
@pytest.mark.parametrize("algo", ["adamw", "amsgrad", "adabelief", "yogi", "rmsprop",
                                  "adagrad", "nsgdm", "iansgd"])
def test_matches_cpu_core(algo, dt, mode):
    checks.check_matches_cpu_core(algo, dt, mode, device=DEVICE)


def test_run_to_run_bitwise():
    checks.check_determinism(device=DEVICE)


def test_more_than_1000_tensors():
    checks.check_many_tensors(device=DEVICE, count=1100)


def test_misaligned_views_take_the_element_path():
    checks.check_misaligned_views(device=DEVICE)


@pytest.mark.parametrize("algo", ["adamw", "adaml", "adagrad", "adagrad_norm", "iansgd",
                                  "nsgdm"])
def test_skip_on_inf_leaves_everything(algo):
    checks.check_skip_leaves_everything(algo, device=DEVICE)


def test_compiled_training_step_fullgraph():
    checks.check_compiled_step(device=DEVICE)


# ---------------------------------------------------------------- issue 16: glue and emulator
_REAL_CHECK_NOT_CAPTURING = _native_cuda._check_not_capturing


def _two_step_run(backend: str, swap) -> list[torch.Tensor]:
    """Two AdamW steps with clipping; between them ``swap(params, gen)`` changes the grads."""
    gen = torch.Generator().manual_seed(7)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in [(33,), (7, 5), (260,)]]
    opt = fusedopt.AdamW(params, lr=1e-2, max_grad_norm=0.5, backend=backend)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    keep = swap(params, gen)  # noqa: F841 (old grads stay alive: no address is recycled)
    opt.step()
    return [p.detach().clone() for p in params]


def test_grad_storage_swap_is_read():
    """``p.grad.data = new_storage`` keeps the grad objects (the optimizer's plan may reuse its
    buckets): the next step reads the new grads, in the update and in the norm pass (707bfd3
    kept the old table: it read the old grads)."""
    def swap(params, gen):
        old = [p.grad.data for p in params]
        for p in params:
            p.grad.data = torch.randn(p.shape, generator=gen)
        return old

    for a, b in zip(_two_step_run("cuda", swap), _two_step_run("cpu", swap)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def _sgd_on(backend, p, g, cache) -> None:
    stats = torch.zeros(32, dtype=torch.float64)
    stats[3] = stats[4] = 1.0  # CLIP_COEF, COEF
    stats[13] = 1.0  # SCALE
    step = cache.setdefault("test_step", torch.zeros((), dtype=torch.float32))  # kept, as the
    b = Bucket([p], [g], [step], {}, None, cache)  # optimizer keeps a param's step count
    backend.sgd_step_(b, stats, direction="grad", use_prologue=False, telemetry=False)


def test_grad_dtype_and_numel_change_at_same_address():
    """A bucket's grad replaced at the same address by one of another dtype is read as its own
    dtype; by a smaller one, refused before any launch."""
    n = 256
    buf = torch.zeros(4 * n, dtype=torch.uint8)
    p = torch.ones(n, dtype=torch.bfloat16)
    cache: dict = {}
    g32 = buf.view(torch.float32)
    g32.fill_(0.5)
    _sgd_on(cuda_backend, p, g32, cache)
    assert torch.equal(p, torch.full((n,), 0.5, dtype=torch.bfloat16))
    g16 = buf[:2 * n].view(torch.bfloat16)
    g16.fill_(0.25)
    _sgd_on(cuda_backend, p, g16, cache)
    assert torch.equal(p, torch.full((n,), 0.25, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="grad tensor of param 0"):
        _sgd_on(cuda_backend, p, g16[: n // 2], cache)
    assert torch.equal(p, torch.full((n,), 0.25, dtype=torch.bfloat16))


def test_tables_record_the_streams_they_are_used_on(emulated_module, monkeypatch):
    """Note [table streams]: a table and workspace used on a stream other than the one they were
    allocated on are record_stream-ed there, once; launches run on the stream current then."""
    current = [_FakeStream(11)]
    recorded: list[tuple[int, int]] = []
    monkeypatch.setattr(_native_cuda, "current_stream", lambda device: current[0])
    monkeypatch.setattr(_native_cuda, "stream_handle", lambda device: current[0].cuda_stream)
    monkeypatch.setattr(_native_cuda, "_record_stream",
                        lambda t, s: recorded.append((t.data_ptr(), s.cuda_stream)))
    gen = torch.Generator().manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(n, generator=gen)) for n in (40, 9)]
    opt = fusedopt.AdamW(params, lr=1e-2, max_grad_norm=1.0, backend="cuda")
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    assert recorded == []  # used only on the stream they were allocated on
    current[0] = _FakeStream(12)
    emulated_module.clear_launch_log()
    opt.step()
    entries = [e for e in _native_cuda._GRAD_TABLES.values()]
    memory = {t.data_ptr() for e in entries for t in (e.table, e.workspace)}
    bucket_entries = [v for c in opt._caches.values() for v in c.values()
                      if isinstance(v, _native_cuda._Entry)]
    assert bucket_entries
    memory |= {t.data_ptr() for e in bucket_entries for t in (e.table, e.workspace)}
    assert {ptr for ptr, s in recorded if s == 12} >= memory
    assert all(s == 12 for _, s in recorded)
    count = len(recorded)
    opt.step()
    assert len(recorded) == count  # once per stream
    launches = emulated_module.launch_log()
    assert launches and all(entry["stream"] == 12 for entry in launches)


def test_grad_swap_during_capture_raises(monkeypatch):
    """``p.grad.data = ...`` while a CUDA graph is being captured: the tables would need a
    host-to-device copy, so the step raises (707bfd3 launched on the stale table)."""
    gen = torch.Generator().manual_seed(5)
    params = [torch.nn.Parameter(torch.randn(20, generator=gen))]
    opt = fusedopt.AdamW(params, lr=1e-2, backend="cuda")
    params[0].grad = torch.randn(20, generator=gen)
    opt.step()
    monkeypatch.setattr(_native_cuda, "_check_not_capturing", _REAL_CHECK_NOT_CAPTURING)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    opt.step()  # same tensors: no rebuild, nothing to refuse
    keep = params[0].grad.data  # noqa: F841
    params[0].grad.data = torch.randn(20, generator=gen)
    before = params[0].detach().clone()
    with pytest.raises(RuntimeError, match="CUDA graph is being captured"):
        opt.step()
    assert torch.equal(params[0].detach(), before)


def test_emulator_faults_on_misaligned_vector_access(emulated_module):
    """A 16-byte streaming load or store off a 16-byte boundary faults on a GPU; the emulator
    raises (707bfd3: a plain dereference, so a vector path on misaligned data passed)."""
    buf = torch.zeros(128, dtype=torch.uint8)
    aligned = (buf.data_ptr() + 15) // 16 * 16
    emulated_module.selftest_vector_access(aligned, True)
    for offset in (2, 4, 8):
        with pytest.raises(RuntimeError, match="misaligned address"):
            emulated_module.selftest_vector_access(aligned + offset, False)
        with pytest.raises(RuntimeError, match="misaligned address"):
            emulated_module.selftest_vector_access(aligned + offset, True)


def test_emulator_faults_on_full_mask_shuffle_with_exited_lanes(emulated_module):
    assert emulated_module.selftest_shuffle(0) == sum(range(32))
    for exited in (1, 5, 31):
        with pytest.raises(RuntimeError, match="has exited"):
            emulated_module.selftest_shuffle(exited)
    assert emulated_module.selftest_shuffle(0) == sum(range(32))  # the emulator recovered


def test_launches_run_on_the_table_device_and_stream(emulated_module, monkeypatch):
    """Every launch runs under a DeviceGuard of the table's device and on the stream it was
    given (the emulator logs both; a launch outside a guard would raise)."""
    monkeypatch.setattr(_native_cuda, "device_index", lambda device: 3)
    monkeypatch.setattr(_native_cuda, "stream_handle", lambda device: 4242)
    gen = torch.Generator().manual_seed(9)
    params = [torch.nn.Parameter(torch.randn(n, generator=gen)) for n in (70, 3)]
    for algo in ("adamw", "adagrad", "nsgdm"):
        opt = ALGORITHMS[algo].make(params, backend="cuda", max_grad_norm=1.0, telemetry=True)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        emulated_module.clear_launch_log()
        opt.step()
        launches = emulated_module.launch_log()
        names = {entry["name"] for entry in launches}
        assert "norm_partials_kernel" in names and "finish_kernel" in names, names
        assert all(entry["device"] == 3 and entry["stream"] == 4242 for entry in launches)


def test_misaligned_grads_and_states_take_the_element_path():
    """DDP-style buckets: grads (and states) that are views at odd element offsets into flat
    buffers, params aligned. Every stream must be checked before a vector access (the emulator
    faults on a misaligned one); the results equal those of aligned copies, bitwise."""
    sizes = [5, 4099, 9, 64]
    gen = torch.Generator().manual_seed(11)
    init = [torch.randn(n, generator=gen) for n in sizes]
    grads = [[torch.randn(n, generator=gen) for n in sizes] for _ in range(3)]

    def run(misaligned: bool, dtype: torch.dtype) -> list[torch.Tensor]:
        params = [torch.nn.Parameter(t.to(dtype).clone()) for t in init]
        # the norm pass runs over the grads too; a max norm it never reaches keeps the clip
        # coefficient 1 whatever the order of its sums (the two paths sum in different orders)
        opt = fusedopt.AdamW(params, lr=1e-2, max_grad_norm=1e6, telemetry=True,
                             backend="cuda")
        flat = torch.zeros(sum(sizes) + 1, dtype=dtype)
        for step, gs in enumerate(grads):
            off = 1
            for p, g in zip(params, gs):
                if misaligned:
                    view = flat[off:off + g.numel()]
                    view.copy_(g)
                    p.grad = view
                    off += g.numel()
                else:
                    p.grad = g.to(dtype).clone()
            opt.step()
            if step == 0 and misaligned:  # states moved into flat buffers at odd offsets
                for key in ("exp_avg", "exp_avg_sq"):
                    states = [opt.state[p][key] for p in params]
                    flat_state = torch.zeros(sum(sizes) + 1, dtype=states[0].dtype)
                    off = 1
                    for p, s in zip(params, states):
                        view = flat_state[off:off + s.numel()]
                        view.copy_(s)
                        opt.state[p][key] = view
                        off += s.numel()
        if misaligned:  # every grad and state off a 16-byte boundary (element path)
            assert all(p.grad.data_ptr() % 16 and opt.state[p]["exp_avg"].data_ptr() % 16
                       for p in params)
        states = [opt.state[p][k].clone() for p in params for k in ("exp_avg", "exp_avg_sq")]
        return [p.detach().clone() for p in params] + states, opt._stats.clone()

    for dtype in (torch.float32, torch.bfloat16):
        (moved, stats_moved), (plain, stats_plain) = run(True, dtype), run(False, dtype)
        for a, b in zip(moved, plain):
            assert torch.equal(a, b)
        assert stats_moved[3] == stats_plain[3] == 1.0
        torch.testing.assert_close(stats_moved, stats_plain, rtol=1e-12, atol=0)
