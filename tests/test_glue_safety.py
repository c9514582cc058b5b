"""The backend glue never misreads: caches keyed by everything a kernel reads, bounded, holding
no grads; the traced path's caches bounded; a forked child steps instead of hanging
(issue 16: items 6, 9, 13, 16; the cuda backend's tables are tested on the CUDA emulator in
tests/test_cuda_emulation.py, Triton's in tests/test_glue_triton.py)."""
from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import weakref

import pytest
import torch

import fusedopt
from fusedopt import _native, _native_cuda, _stats as S
from fusedopt.backends import Bucket, cpu_backend

needs_cpu_core = pytest.mark.skipif(_native.LOAD_ERROR is not None,
                                    reason=str(_native.LOAD_ERROR))


def _stats() -> torch.Tensor:
    s = torch.zeros(S.NUM_SLOTS, dtype=torch.float64)
    s[S.CLIP_COEF] = 1.0
    s[S.COEF] = 1.0
    return s


def _norm(grads: list[torch.Tensor]) -> float:
    stats = _stats()
    cpu_backend.grad_prologue_(grads, stats, region=S.GRAD, grad_scale=None, found_inf=None,
                               max_norm=None, compute_norm=True)
    return float(stats[S.GRAD_NORM])


def _true_norm(grads: list[torch.Tensor]) -> float:
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))


# ------------------------------------------------------------------ item 6: cpu grad lists
@needs_cpu_core
def test_grad_list_cache_keyed_by_dtype():
    """Two grads of different dtypes at one address with one numel (a recycled allocation):
    each norm is its own (707bfd3 reused the fp32 list for the bf16 grad)."""
    n = 1000
    buf = torch.zeros(4 * n, dtype=torch.uint8)
    g32 = buf.view(torch.float32)
    g32.copy_(torch.full((n,), 2.0))
    assert _norm([g32]) == pytest.approx(_true_norm([g32]), rel=1e-12)
    g16 = buf[:2 * n].view(torch.bfloat16)
    g16.copy_(torch.full((n,), 3.0))
    assert g16.data_ptr() == g32.data_ptr() and g16.numel() == g32.numel()
    assert _norm([g16]) == pytest.approx(_true_norm([g16]), rel=1e-12)


@needs_cpu_core
def test_grad_list_cache_keyed_by_layout():
    """A grad viewed with other strides at the same address and numel gets its own entry: a
    dense one (transposed) has the same sum of squares; one with gaps is refused (the kernel
    reads numel elements in memory order)."""
    g = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    assert _norm([g]) == pytest.approx(_true_norm([g]), rel=1e-12)
    assert _norm([g.t()]) == pytest.approx(_true_norm([g]), rel=1e-12)
    with pytest.raises(ValueError, match="dense"):
        _norm([g[:, ::2]])


@needs_cpu_core
def test_grad_list_cache_bounded_and_holds_no_grads():
    for i in range(3 * _native._GRAD_LISTS_MAX):
        g = torch.randn(10 + i)
        ref = weakref.ref(g)
        assert _norm([g]) == pytest.approx(_true_norm([g]), rel=1e-6)
        del g
        gc.collect()
        assert ref() is None
        assert len(_native._GRAD_LISTS) <= _native._GRAD_LISTS_MAX


# ------------------------------------------------------------------ item 6: cpu bucket tables
def _sgd_bucket(p: torch.Tensor, g: torch.Tensor, cache: dict) -> Bucket:
    """A one-param bucket; its step count lives in ``cache`` (the optimizer's per-param state is
    the same tensor from step to step, which is what lets a cached table be reused)."""
    step = cache.setdefault("test_step", torch.zeros((), dtype=torch.float32))
    return Bucket([p], [g], [step], {}, None, cache)


def _sgd(b: Bucket, scale: float) -> None:
    stats = _stats()
    stats[S.SCALE] = scale
    cpu_backend.sgd_step_(b, stats, direction="grad", use_prologue=False, telemetry=False)


@needs_cpu_core
def test_bucket_table_grad_dtype_change_at_same_address():
    """A bf16 param's grad replaced by one of another dtype at the same address (fp32 then bf16
    over one buffer): the cached table must not read the new grad as the old dtype."""
    n = 256
    buf = torch.zeros(4 * n, dtype=torch.uint8)
    p = torch.ones(n, dtype=torch.bfloat16)
    cache: dict = {}
    g32 = buf.view(torch.float32)
    g32.fill_(0.5)
    _sgd(_sgd_bucket(p, g32, cache), 1.0)
    assert torch.equal(p, torch.full((n,), 0.5, dtype=torch.bfloat16))
    g16 = buf[:2 * n].view(torch.bfloat16)
    g16.fill_(0.25)
    assert g16.data_ptr() == g32.data_ptr()
    _sgd(_sgd_bucket(p, g16, cache), 1.0)
    assert torch.equal(p, torch.full((n,), 0.25, dtype=torch.bfloat16))


@needs_cpu_core
def test_bucket_table_grad_numel_change_at_same_address():
    """A grad replaced by a smaller one at the same address: refused with a clear error, never
    read past its end (707bfd3 kept reading the param's numel of elements)."""
    n = 64
    p = torch.ones(n)
    storage = torch.full((n,), 0.5)
    cache: dict = {}
    _sgd(_sgd_bucket(p, storage, cache), 1.0)
    before = p.clone()
    with pytest.raises(ValueError, match="grad tensor of param 0"):
        _sgd(_sgd_bucket(p, storage[: n // 2], cache), 1.0)
    assert torch.equal(p, before)


@needs_cpu_core
def test_bucket_table_param_view_of_another_size():
    """``p.data = p.data[:k]`` keeps the address and changes the element count: the table is
    rebuilt for k elements (707bfd3 kept updating all n)."""
    n, k = 64, 16
    storage = torch.ones(n)
    cache: dict = {}
    _sgd(_sgd_bucket(storage, torch.full((n,), 0.5), cache), 1.0)
    head = storage[:k]
    _sgd(_sgd_bucket(head, torch.full((k,), 0.25), cache), 1.0)
    assert torch.equal(storage[:k], torch.full((k,), 0.25))
    assert torch.equal(storage[k:], torch.full((n - k,), 0.5))


# ------------------------------------------------------------------ item 9: the traced path
def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))


@needs_cpu_core
def test_compiled_steps_keep_traced_caches_bounded():
    """200 compiled steps with fresh grads every step (``zero_grad(set_to_none=True)``): the
    traced path's caches stay at one entry per bucket (707bfd3: one more per step), and the
    optimizer's tensors are freed with it."""
    from fusedopt import ops

    ops._TRACED.clear()
    model = _mlp()
    opt = fusedopt.AdamW(model.parameters(), lr=1e-2, max_grad_norm=1.0, backend="cpu")
    torch._dynamo.reset()
    step = torch.compile(opt.step, fullgraph=True)
    gen = torch.Generator().manual_seed(3)
    keep = []  # other allocations between steps move the grads' addresses around
    for i in range(200):
        opt.zero_grad(set_to_none=True)
        x, y = torch.randn(4, 8, generator=gen), torch.randn(4, 2, generator=gen)
        keep.append(torch.empty(i % 7 + 1))
        torch.nn.functional.mse_loss(model(x), y).backward()
        step()
        assert len(ops._TRACED) <= 2, f"step {i}: {len(ops._TRACED)} traced entries"
    assert len(ops._TRACED) >= 1  # the compiled step did go through the custom ops
    state = weakref.ref(opt.state[next(model.parameters())]["exp_avg"])
    del opt, step, model, keep
    torch._dynamo.reset()
    gc.collect()
    assert state() is None
    assert len(ops._TRACED) == 0


@needs_cpu_core
def test_traced_caches_bounded_by_lru():
    from fusedopt import ops

    ops._TRACED.clear()
    params = [torch.zeros(4) for _ in range(ops._TRACED_MAX + 10)]
    for p in params:
        ops._bucket("sgd", "cpu", [p], [torch.zeros(4)], [torch.zeros(())], {}, None)
    assert len(ops._TRACED) == ops._TRACED_MAX
    del params, p
    gc.collect()
    assert len(ops._TRACED) == 0


# ------------------------------------------------------------------ item 13: a CPU lr
def test_cpu_tensor_lr_read_on_host_by_both_gpu_backends():
    """A CPU tensor lr with GPU params is host memory: both GPU backends read it at every call
    and pass it by value (707bfd3: triton copied it to the device every step)."""
    from fusedopt.triton_kernels import _common

    lr = torch.tensor(0.1)
    stats = torch.empty(S.NUM_SLOTS, dtype=torch.float64, device="meta")  # a non-CPU device
    assert _native_cuda.lr_args(lr) == (pytest.approx(0.1), 0, 0)
    value, _, from_ptr = _common.lr_arguments(lr, stats)
    assert (value, from_ptr) == (pytest.approx(0.1), False)
    lr.fill_(0.05)  # a schedule writes it in place: the next call sees it
    assert _native_cuda.lr_args(lr)[0] == pytest.approx(0.05)
    assert _common.lr_arguments(lr, stats)[0] == pytest.approx(0.05)


# ------------------------------------------------------------------ item 16: fork
_FORK_SCRIPT = textwrap.dedent("""
    import os, pickle, sys, warnings
    import torch
    import fusedopt

    def make():
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(300_000)) for _ in range(2)]
        return params, fusedopt.AdamW(params, lr=1e-2, max_grad_norm=1.0, backend="cpu")

    def step(params, opt, seed):
        gen = torch.Generator().manual_seed(seed)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()

    torch.set_num_threads(2)
    params, opt = make()
    step(params, opt, 1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one more step, results to the parent
        os.close(r)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step(params, opt, 2)
            step(params, opt, 3)
        msgs = [str(c.message) for c in caught if "fork" in str(c.message)]
        with os.fdopen(w, "wb") as f:  # numpy copies: torch's own parallel copy would hang here
            pickle.dump(([p.detach().numpy().copy() for p in params], msgs), f)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        child, msgs = pickle.load(f)
    os.waitpid(pid, 0)
    torch.set_num_threads(1)  # the reference: the same two steps on one thread
    step(params, opt, 2)
    step(params, opt, 3)
    assert len(msgs) == 1, msgs
    assert all(torch.equal(torch.from_numpy(a), b.detach()) for a, b in zip(child, params)), \
        "child != 1-thread result"
    print("OK")
""")


@needs_cpu_core
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_forked_child_steps_on_one_thread():
    """Parent steps on 2 threads, forks; the child steps (707bfd3: hung in libgomp), warns
    once, and its result is the one-thread result."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    proc = subprocess.Popen([sys.executable, "-c", _FORK_SCRIPT], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and its hung child
        proc.communicate()
        pytest.fail("the forked child hung")
    assert proc.returncode == 0 and "OK" in out, out + err[-3000:]


# ------------------------------------------------------------------ item 13 on a GPU
def _gpu_backends() -> list[str]:
    if not torch.cuda.is_available():
        return []
    return [b for b in ("cuda", "triton") if b in fusedopt.available_backends("cuda")]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_tables_used_on_a_side_stream(backend, monkeypatch):
    """Tables built on the default stream, a step on a side stream: record_stream is called for
    that stream, and the result is the default-stream result."""
    if backend not in _gpu_backends():
        pytest.skip(f"backend {backend} not available")
    from fusedopt.triton_kernels import _common

    module = _native_cuda if backend == "cuda" else _common
    seen: list[int] = []
    real = module._record_stream
    monkeypatch.setattr(module, "_record_stream",
                        lambda t, s: (seen.append(s.cuda_stream), real(t, s)))

    def run(side: bool) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(1)
        params = [torch.nn.Parameter(torch.randn(n, generator=gen).cuda()) for n in (1000, 70000)]
        opt = fusedopt.AdamW(params, lr=1e-2, max_grad_norm=1.0, backend=backend)
        for i in range(3):
            for p in params:  # the same grad tensors every step: the tables are reused
                g = torch.randn(p.shape, generator=gen).cuda()
                if p.grad is None:
                    p.grad = g
                else:
                    p.grad.copy_(g)
            stream = torch.cuda.Stream() if side and i > 0 else torch.cuda.current_stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                opt.step()
            torch.cuda.current_stream().wait_stream(stream)
        return [p.detach().cpu() for p in params]

    for a, b in zip(run(True), run(False)):
        assert torch.equal(a, b)
    assert seen, "no record_stream on the side stream"


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_capture_refuses_new_grads(backend):
    """New grad storage while a CUDA graph is captured: a clear error, not a copy from a
    temporary pinned buffer recorded into the graph."""
    if backend not in _gpu_backends():
        pytest.skip(f"backend {backend} not available")
    params = [torch.nn.Parameter(torch.randn(1000, device="cuda"))]
    opt = fusedopt.AdamW(params, lr=torch.tensor(1e-2, device="cuda"), capturable=True,
                         backend=backend)
    params[0].grad = torch.randn(1000, device="cuda")
    opt.step()
    torch.cuda.synchronize()
    keep = params[0].grad.data  # noqa: F841
    params[0].grad.data = torch.randn(1000, device="cuda")
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="captur"):
        with torch.cuda.graph(graph):
            opt.step()
