"""FSDP2 (``fully_shard``), gloo, 2 processes: sharded steps equal the non-sharded run, the global
scalars (grad norm, IAN-SGD normalizer, NSGDm momentum norm, AdamL loss) are reduced across ranks,
and torch.distributed.checkpoint round-trips the optimizer state."""
from __future__ import annotations

import os
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fusedopt

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")

WORLD = 2
STEPS = 6
# name -> (constructor, kwargs); max_grad_norm small enough that clipping binds
SCENARIOS = {
    "adamw_clip": (fusedopt.AdamW, dict(lr=1e-2, weight_decay=0.1, max_grad_norm=0.05,
                                         telemetry=True)),
    "iansgd": (fusedopt.IANSGD, dict(lr=0.05, delta=0.01, floor=0.2)),
    "nsgdm": (fusedopt.NSGDm, dict(lr=0.05, momentum=0.2)),
    "adaml": (fusedopt.AdamL, dict(lr=1e-2, f_star=0.0)),
    "adagrad_norm": (fusedopt.Adagrad, dict(lr=0.1, norm=True)),
}


#: every CPU backend built here (the triton interpreter is too slow for this)
BACKENDS = [b for b in fusedopt.available_backends("cpu") if b != "triton"]
RUNS = [(name, backend) for backend in BACKENDS for name in SCENARIOS]


def _model():
    torch.manual_seed(0)
    # 5 rows: uneven shards over 2 ranks (3 + 2), and a bias of 3 (2 + 1)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def _batches():
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 6, generator=gen), torch.randn(8, 3, generator=gen))
            for _ in range(2 * STEPS)]


def _train(model, opt, batches, shard=None):
    """shard=(rank, world): this rank's half of every batch (FSDP averages the grads)."""
    for x, y in batches:
        if shard is not None:
            rank, world = shard
            x, y = x.chunk(world)[rank], y.chunk(world)[rank]
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        if isinstance(opt, fusedopt.IANSGD) and opt.normalizer == "independent":
            # the independent batch B': each row's features reversed, a stand-in for a second
            # sample that splits across ranks exactly as the batch does
            norm_loss = torch.nn.functional.mse_loss(model(x.flip(-1)), y)
            opt.zero_grad()
            norm_loss.backward()
            opt.record_normalizer()
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
        if isinstance(opt, fusedopt.AdamL):
            opt.step(loss=loss.detach())
        else:
            opt.step()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        for name, backend in RUNS:
            _scenario(rank, name, backend, out_dir)
        for backend in BACKENDS:
            _skip_scenario(rank, backend, out_dir)
    finally:
        dist.destroy_process_group()


def _scenario(rank: int, name: str, backend: str, out_dir: str) -> None:
    """Train sharded, checkpoint with DCP, continue; restore into a fresh optimizer, continue."""
    from torch.distributed.fsdp import fully_shard
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (get_optimizer_state_dict,
                                                         set_optimizer_state_dict)
    cls, kw = SCENARIOS[name]
    model = _model()
    fully_shard(model)
    opt = cls(model.parameters(), backend=backend, **kw)
    batches = _batches()
    _train(model, opt, batches[:STEPS], shard=(rank, WORLD))
    # checkpoint the optimizer, continue; then restore into a fresh optimizer and continue
    ckpt = os.path.join(out_dir, f"ckpt-{name}-{backend}")
    dcp.save({"optim": get_optimizer_state_dict(model, opt)}, checkpoint_id=ckpt)
    saved = [p.detach().full_tensor().clone() for p in model.parameters()]
    _train(model, opt, batches[STEPS:], shard=(rank, WORLD))
    straight = [p.detach().full_tensor() for p in model.parameters()]
    stats = opt.last_stats if opt.telemetry else None

    model2 = _model()
    fully_shard(model2)
    with torch.no_grad():
        for p, s in zip(model2.parameters(), saved):
            p.copy_(torch.distributed.tensor.distribute_tensor(s, p.device_mesh, p.placements))
    opt2 = cls(model2.parameters(), backend=backend, **kw)
    state = {"optim": get_optimizer_state_dict(model2, opt2)}
    dcp.load(state, checkpoint_id=ckpt)
    set_optimizer_state_dict(model2, opt2, state["optim"])
    _train(model2, opt2, batches[STEPS:], shard=(rank, WORLD))
    resumed = [p.detach().full_tensor() for p in model2.parameters()]
    if rank == 0:
        torch.save({"straight": straight, "resumed": resumed,
                    "stats": {k: float(v) for k, v in stats.items()} if stats else None},
                   os.path.join(out_dir, f"result-{name}-{backend}.pt"))


def _skip_scenario(rank: int, backend: str, out_dir: str) -> None:
    """LossScaler steps where one rank's shard holds an inf (step 1), then both ranks' (step 2):
    every rank must skip both steps (the inf flags are combined across ranks), report
    found_inf as exactly 1.0 and back the scale off twice."""
    from torch.distributed.fsdp import fully_shard
    model = _model()
    fully_shard(model)
    opt = fusedopt.AdamW(model.parameters(), backend=backend, max_grad_norm=1.0,
                         telemetry=True)
    scaler = fusedopt.amp.LossScaler(init_scale=4.0)
    x, y = _batches()[0]
    before = [p.detach().full_tensor().clone() for p in model.parameters()]
    flags = []
    for bad_ranks in ((1,), (0, 1)):
        opt.zero_grad()
        xs, ys = x.chunk(WORLD)[rank], y.chunk(WORLD)[rank]
        scaler.scale(torch.nn.functional.mse_loss(model(xs), ys)).backward()
        if rank in bad_ranks:
            local = next(p.grad._local_tensor for p in model.parameters()
                         if p.grad._local_tensor.numel() > 0)
            local.view(-1)[0] = float("inf")
        scaler.step(opt)
        scaler.update()
        flags.append(float(opt.last_stats["found_inf"]))
    after = [p.detach().full_tensor() for p in model.parameters()]
    torch.save({"unchanged": all(torch.equal(a, b) for a, b in zip(after, before)),
                "flags": flags, "scale": float(scaler.get_scale())},
               os.path.join(out_dir, f"skip-{backend}-{rank}.pt"))


@pytest.fixture(scope="module")
def sharded_results():
    """One 2-process spawn runs every scenario (process start-up dominates on 2 cores)."""
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(_free_port(), out_dir), nprocs=WORLD, join=True)
        results = {run: torch.load(os.path.join(out_dir, "result-{}-{}.pt".format(*run)))
                   for run in RUNS}
        results.update({("skip", backend, rank): torch.load(
            os.path.join(out_dir, f"skip-{backend}-{rank}.pt"))
            for backend in BACKENDS for rank in range(WORLD)})
        return results


@pytest.mark.parametrize("name,backend", RUNS)
def test_fsdp2_equals_unsharded_and_checkpoint_round_trips(name, backend, sharded_results):
    cls, kw = SCENARIOS[name]
    result = sharded_results[(name, backend)]
    model = _model()
    opt = cls(model.parameters(), backend=backend, **kw)
    _train(model, opt, _batches())
    full = [p.detach() for p in model.parameters()]
    # Budget: the sharded run sums the grad of each half-batch on its rank and averages across
    # ranks, the single run averages the whole batch: a few fp32 ulps per step on the grads.
    for a, b in zip(result["straight"], full):
        assert float((a - b).abs().max()) <= 1e-5 * max(1.0, float(b.abs().max())), name
    # DCP: restoring the checkpoint and continuing is bitwise the uninterrupted run.
    for a, b in zip(result["resumed"], result["straight"]):
        assert torch.equal(a, b), name
    if result["stats"] is not None:
        assert result["stats"]["param_norm"] == pytest.approx(
            float(torch.sqrt(sum((p.double() ** 2).sum() for p in full))), rel=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_inf_on_one_rank_skips_the_step_on_every_rank(backend, sharded_results):
    for rank in range(WORLD):
        result = sharded_results[("skip", backend, rank)]
        assert result["unchanged"], rank
        assert result["flags"] == [1.0, 1.0], rank  # a flag, not a count of ranks
        assert result["scale"] == 1.0, rank  # 4 backed off twice
