"""The Triton backend's tables (Note [table cache] and Note [table streams] in
fusedopt.triton_kernels._common) under Triton's interpreter on CPU tensors (issue 16, items 7
and 13): keyed by every tensor's signature, never rebuilt while a CUDA graph is captured, and
record_stream-ed on every stream they are used on.

``TRITON_INTERPRET=1`` must be set before triton is first imported (Note [interpreter mode] in
fusedopt.triton_kernels), so when this process cannot interpret, ``test_interpreter_suite``
re-runs this file in a child process that can (as tests/test_triton_backend.py does).
"""
from __future__ import annotations

import pytest
import torch

import fusedopt
from fusedopt.backends import triton_backend

from interpreted import assert_interpreted_run_passes

TRITON_OK, TRITON_WHY = triton_backend.availability()
INTERPRETER = TRITON_OK and triton_backend.supports("cpu")
needs_interpreter = pytest.mark.skipif(
    not INTERPRETER, reason="runs in the TRITON_INTERPRET=1 child process (test_interpreter_suite)")


@pytest.mark.skipif(INTERPRETER or not TRITON_OK, reason="this process runs the tests itself")
def test_interpreter_suite():
    """Every test of this file, in a child process with TRITON_INTERPRET=1."""
    assert_interpreted_run_passes(__file__)


def _common():
    from fusedopt.triton_kernels import _common
    return _common


def _opt(params, backend="triton", **kw):
    return fusedopt.AdamW(params, lr=1e-2, max_grad_norm=0.5, backend=backend, **kw)


def _tables(opt):
    return [c["triton"] for c in opt._caches.values() if "triton" in c]


@needs_interpreter
def test_grad_storage_swap_is_read():
    """``p.grad.data = new_storage`` (the grad objects unchanged): the next step reads the new
    grads in the update and in the norm pass."""
    def run(backend):
        gen = torch.Generator().manual_seed(7)
        params = [torch.nn.Parameter(torch.randn(n, generator=gen)) for n in (33, 5000)]
        opt = _opt(params, backend)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
        old = [p.grad.data for p in params]  # noqa: F841 (kept: no address is recycled)
        for p in params:
            p.grad.data = torch.randn(p.shape, generator=gen)
        opt.step()
        return params

    for a, b in zip(run("triton"), run("reference")):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)


def _sgd(p: torch.Tensor, g: torch.Tensor, cache: dict) -> None:
    """``p <- p - g`` by the Triton backend's SGD pass, through the bucket cache ``cache``."""
    from fusedopt import _stats as S
    from fusedopt.backends import Bucket

    stats = torch.zeros(S.NUM_SLOTS, dtype=torch.float64)
    stats[S.CLIP_COEF] = stats[S.COEF] = stats[S.SCALE] = 1.0
    step = cache.setdefault("test_step", torch.zeros((), dtype=torch.float32))  # kept, as the
    b = Bucket([p], [g], [step], {}, None, cache)  # optimizer keeps a param's step count
    triton_backend.sgd_step_(b, stats, direction="grad", use_prologue=False, telemetry=False)


@needs_interpreter
def test_param_view_of_another_size_rebuilds():
    """``p.data = p.data[:k]`` keeps the address and changes the element count: the tables are
    rebuilt for k elements (707bfd3 kept the old sizes and updated all n)."""
    storage = torch.zeros(100)
    cache: dict = {}
    _sgd(storage, torch.ones(100), cache)
    assert torch.equal(storage, torch.full((100,), -1.0))
    _sgd(storage[:40], torch.ones(40), cache)
    assert torch.equal(storage[:40], torch.full((40,), -2.0))
    assert torch.equal(storage[40:], torch.full((60,), -1.0))


@needs_interpreter
def test_grad_of_another_size_at_the_same_address_refused():
    p = torch.ones(64)
    grads = torch.full((64,), 0.5)
    cache: dict = {}
    _sgd(p, grads, cache)
    assert torch.equal(p, torch.full((64,), 0.5))
    with pytest.raises(ValueError, match="elements"):
        _sgd(p, grads[:32], cache)
    assert torch.equal(p, torch.full((64,), 0.5))


@needs_interpreter
def test_no_table_copy_while_capturing(monkeypatch):
    """Note [table streams]: while the stream captures a CUDA graph, tables are used as they
    are; a change that needs a host-to-device copy (new grads, a swapped param) raises, leaving
    the tables as they were (707bfd3 copied from a temporary pinned buffer into the graph)."""
    C = _common()
    gen = torch.Generator().manual_seed(2)
    params = [torch.nn.Parameter(torch.randn(n, generator=gen)) for n in (10, 300)]
    opt = _opt(params)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    monkeypatch.setattr(C, "_capturing", lambda device: True)
    opt.step()  # the same tensors: nothing to copy
    (tables,) = _tables(opt)
    host = tables.host_ptrs.clone()
    keep = [p.grad for p in params]  # noqa: F841
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    before = [p.detach().clone() for p in params]
    with pytest.raises(RuntimeError, match="CUDA graph is being captured"):
        opt.step()
    assert torch.equal(tables.host_ptrs, host)
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, params))


class _FakeStream:
    def __init__(self, handle: int) -> None:
        self.cuda_stream = handle


@needs_interpreter
def test_tables_record_the_streams_they_are_used_on(monkeypatch):
    C = _common()
    current = [_FakeStream(1)]
    recorded: list[tuple[int, int]] = []
    monkeypatch.setattr(C, "_current_stream", lambda device: current[0])
    monkeypatch.setattr(C, "_record_stream",
                        lambda t, s: recorded.append((t.data_ptr(), s.cuda_stream)))
    gen = torch.Generator().manual_seed(4)
    params = [torch.nn.Parameter(torch.randn(n, generator=gen)) for n in (10, 300)]
    opt = _opt(params, telemetry=True)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    (tables,) = _tables(opt)
    # allocated on stream 1 (the partial sums after the tables: recorded on the streams seen)
    assert {s for _, s in recorded} <= {1}
    recorded.clear()
    current[0] = _FakeStream(2)
    opt.step()
    mine = {t.data_ptr() for t in (tables.ptrs, tables.numels, tables.chunks, tables.partials)}
    assert mine <= {ptr for ptr, s in recorded if s == 2}
    count = len(recorded)
    opt.step()
    assert len(recorded) == count  # once per stream
