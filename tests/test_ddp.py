"""DDP (gloo, 2 processes): fusedopt optimizers under ``DistributedDataParallel``, unchanged.

Each rank trains a DDP-wrapped MLP on its half of every batch; DDP averages the grads in the
backward, so every rank steps with the same grads. After ``STEPS`` steps:

* the params are bitwise identical on both ranks (nothing rank-dependent enters a step: AdamL's
  loss is the one scalar that differs per rank, and fusedopt averages it over the process group);
* they equal a single-process run on the concatenated batch within the error budget: the
  distance of the DDP run from the float64 single-process run is at most k = 2 times that of the
  fp32 single-process run, plus 4 fp32 ulps of the params' magnitude (the two fp32 runs differ
  only in how the batch mean is rounded: per half, then averaged across ranks, vs. at once);
* under ``LossScaler`` a loss that overflows on one rank only skips the step on both (the inf
  reaches every rank through DDP's all-reduce of the grads), exactly like the single run that
  leaves that step out.

One ``mp.spawn`` runs every case (starting two processes costs seconds); the tests read its
results.
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
STEPS = 8
#: the Triton interpreter is too slow for a multi-process test; it is covered on the GPU
BACKENDS = [b for b in fusedopt.available_backends("cpu") if b != "triton"]
BATCH = 16  # per step, split 8 + 8 across the ranks
#: name -> (class, kwargs); the LossScaler case overflows on rank 0 only at OVERFLOW_STEP
CASES = {
    "adamw": (fusedopt.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    "adamw_clip_lossscaler": (fusedopt.AdamW, dict(lr=1e-2, weight_decay=0.1, max_grad_norm=0.5)),
    "adagrad": (fusedopt.Adagrad, dict(lr=5e-2, lr_decay=1e-3, weight_decay=0.01)),
    "adaml": (fusedopt.AdamL, dict(lr=1e-2)),
}
OVERFLOW_STEP = 3
K, FLOOR_ULPS = 2.0, 4.0


def _model(dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 3)).to(dtype)


def _batches(dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 6, generator=gen).to(dtype),
             torch.randn(BATCH, 3, generator=gen).to(dtype)) for _ in range(STEPS)]


def _train(name: str, backend: str, model: torch.nn.Module, dtype: torch.dtype,
           rank: int | None = None):
    """Train ``STEPS`` steps; ``rank``: DDP, this rank's half of every batch. Returns params."""
    cls, kw = CASES[name]
    params = list(model.parameters())
    opt = cls(params, backend=backend, **kw)
    scaler = fusedopt.amp.LossScaler(init_scale=2.0 ** 8) if "lossscaler" in name else None
    for t, (x, y) in enumerate(_batches(dtype)):
        if rank is not None:
            x, y = x.chunk(WORLD)[rank], y.chunk(WORLD)[rank]
        if scaler is not None and t == OVERFLOW_STEP:
            if rank is None:
                continue  # the single-process run leaves the overflowing step out
            if rank == 0:
                y = y.clone()
                y[0, 0] = float("inf")
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        kw_step = {"loss": loss.detach()} if isinstance(opt, fusedopt.AdamL) else {}
        if scaler is None:
            loss.backward()
            opt.step(**kw_step)
        else:
            scaler.scale(loss).backward()
            scaler.step(opt, **kw_step)
            scaler.update()
    return [p.detach().clone() for p in params]


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    try:
        results = {}
        for name in CASES:
            for backend in BACKENDS:
                model = torch.nn.parallel.DistributedDataParallel(_model(torch.float32))
                results[name, backend] = _train(name, backend, model, torch.float32, rank=rank)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    """Final params on each rank: ``[rank0, rank1]``, each ``{(case, backend): params}``."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(out / "init"), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_ddp_ranks_identical_and_equal_to_single_process(ddp_results, name, backend):
    rank0, rank1 = (r[name, backend] for r in ddp_results)
    for a, b in zip(rank0, rank1):
        assert torch.equal(a, b), f"{name}: params differ across ranks"
    single = _train(name, backend, _model(torch.float32), torch.float32)
    oracle = _train(name, "reference", _model(torch.float64), torch.float64)
    err_ddp = max(float((a.double() - o).abs().max()) for a, o in zip(rank0, oracle))
    err_single = max(float((a.double() - o).abs().max()) for a, o in zip(single, oracle))
    mag = max(float(o.abs().max()) for o in oracle)
    bound = K * err_single + FLOOR_ULPS * torch.finfo(torch.float32).eps * mag
    assert err_ddp <= bound, (f"{name}: DDP error {err_ddp:.3e} > budget {bound:.3e} "
                              f"(single-process fp32 error {err_single:.3e})")
    init = [p.detach() for p in _model(torch.float32).parameters()]
    moved = max(float((a - b).abs().max()) for a, b in zip(single, init))
    assert moved > 1e3 * bound, f"{name}: training barely moved the params ({moved:.3e})"
