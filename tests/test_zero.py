"""ZeroRedundancyOptimizer (gloo, 2 processes) with a fusedopt optimizer and ``max_grad_norm``:
each rank's local optimizer holds one partition of the params, so a norm it computed alone
would clip every rank by its own partition's norm (finding 15: rank 0 used 0.30, rank 1 0.61,
global 0.68). fusedopt finds the ZeroRedundancyOptimizer constructing it and all-reduces the
squared partial norm on the device (Note [ZeRO norm], optim/_distributed.py), so every rank
clips by the global norm: the params equal a single-process run with the same clipping.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fusedopt

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")

WORLD = 2
STEPS = 4
MAX_NORM = 0.05  # far below the grads' norm: every step clips


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))


def _grads(model: torch.nn.Module, t: int) -> None:
    gen = torch.Generator().manual_seed(100 + t)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen) * (1.0 + t)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    from torch.distributed.optim import ZeroRedundancyOptimizer

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    try:
        model = _model()
        opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=fusedopt.AdamW,
                                      lr=1e-2, max_grad_norm=MAX_NORM, telemetry=True,
                                      backend="cpu")
        norms = []
        for t in range(STEPS):
            _grads(model, t)  # the same grads on every rank (as after DDP's all-reduce)
            opt.step()
            norms.append(float(opt.optim.last_stats["grad_norm"]))
        torch.save({"params": [p.detach().clone() for p in model.parameters()], "norms": norms},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def zero_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("zero")
    mp.spawn(_worker, args=(str(out / "init"), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.skipif("cpu" not in fusedopt.available_backends("cpu"), reason="no cpu backend")
def test_zero_clips_by_the_global_norm(zero_results):
    model = _model()
    opt = fusedopt.AdamW(model.parameters(), lr=1e-2, max_grad_norm=MAX_NORM, telemetry=True,
                         backend="cpu")
    norms = []
    for t in range(STEPS):
        _grads(model, t)
        opt.step()
        norms.append(float(opt.last_stats["grad_norm"]))
    for r in zero_results:
        # the same global norm on every rank, equal to the single process's (the two sums of
        # squares differ only in the order of the partial sums: a few ulps)
        torch.testing.assert_close(torch.tensor(r["norms"]), torch.tensor(norms), rtol=1e-6,
                                   atol=0)
        for a, b in zip(r["params"], model.parameters()):
            torch.testing.assert_close(a, b.detach(), rtol=1e-6, atol=1e-7)


def test_zero_detection_is_off_outside_zero():
    from fusedopt.optim import _distributed as D

    assert D.zero_groups("x", True) is None
