"""The torch.library custom ops: schemas, fake impls and mutation annotations (opcheck)."""
from __future__ import annotations

import pytest
import torch

import fusedopt
from fusedopt import _stats as S

BACKENDS = [b for b in fusedopt.available_backends("cpu")]


def _lists(n=3, dtype=torch.float32):
    shapes = [(4, 3), (5,), (1,)][:n]
    ps = [torch.randn(s, dtype=dtype) for s in shapes]
    gs = [torch.randn(s, dtype=dtype) for s in shapes]
    return shapes, ps, gs


def _stats():
    st = torch.zeros(S.NUM_SLOTS, dtype=torch.float64)
    st[S.COEF] = 0.5
    st[S.SCALE] = 0.01
    st[S.ABC:S.ABC + 3] = torch.tensor([0.0, 1e-8, 1.0], dtype=torch.float64)
    return st


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck_grad_prologue(backend):
    _, _, gs = _lists()
    torch.library.opcheck(torch.ops.fusedopt.grad_prologue_.default,
                          (gs, _stats(), S.GRAD, torch.tensor(8.0), None, 1.0, True, backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["adam", "amsgrad", "rmsprop"])
def test_opcheck_adam_step(backend, variant):
    shapes, ps, gs = _lists()
    z = lambda: [torch.zeros(s) for s in shapes]  # noqa: E731
    steps = [torch.zeros(()) for _ in shapes]
    torch.library.opcheck(
        torch.ops.fusedopt.adam_step_.default,
        (ps, gs, [] if variant == "rmsprop" else z(), z(), z() if variant == "amsgrad" else [],
         [], steps, _stats(), 1e-3, None, 0.9, 0.999, 1e-8, 0.01, variant, "decoupled", True,
         True, False, True, backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck_adagrad_sgd_momentum(backend):
    shapes, ps, gs = _lists()
    steps = [torch.zeros(()) for _ in shapes]
    sums = [torch.full(s, 0.1) for s in shapes]
    torch.library.opcheck(torch.ops.fusedopt.elementwise_step_.default,
                          (ps, gs, sums, [], [], [], [], steps, _stats(), "adagrad", 1e-2,
                           torch.tensor(1e-2), [0.0, 1e-10, 0.0], True, True, backend))
    bufs = [torch.zeros(s) for s in shapes]
    torch.library.opcheck(torch.ops.fusedopt.momentum_step_.default,
                          (ps, gs, bufs, steps, _stats(), 0.1, True, backend))
    torch.library.opcheck(torch.ops.fusedopt.sgd_step_.default,
                          (ps, gs, bufs, [], steps, _stats(), "momentum", False, True, backend))


def test_ops_and_eager_path_agree():
    """The custom op and the eager call of the same backend give bitwise the same result."""
    shapes, ps, gs = _lists()
    qs = [p.clone() for p in ps]
    opt = fusedopt.AdamW([p.requires_grad_() for p in ps], lr=1e-2, backend="reference")
    for p, g in zip(ps, gs):
        p.grad = g.clone()
    opt.step()
    ms, vs = [torch.zeros(s) for s in shapes], [torch.zeros(s) for s in shapes]
    steps = [torch.zeros(()) for _ in shapes]
    torch.ops.fusedopt.adam_step_(qs, gs, ms, vs, [], [], steps, _stats(), 1e-2, None, 0.9,
                                  0.999, 1e-8, 1e-2, "adam", "decoupled", True, False, False,
                                  False, "reference")
    for p, q in zip(ps, qs):
        assert torch.equal(p.detach(), q)
