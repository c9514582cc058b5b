"""Host overhead of one optimizer step: ``python -m fusedopt.bench.host`` (or ``python -m
fusedopt.bench --host``).

On a GPU a fused step over GPT-2 small takes about a millisecond of kernels; the Python around
it (finding the grads, checking them, building tables) runs on the host before the first
launch and costs the same on any device. To see only that, this mode steps *tiny* tensors on
the cpu backend with one thread, so the kernels take a few µs and what remains is host time:

* ``gpt2-small@20K``: GPT-2 small's 148 tensor shapes scaled down to ~20K params in total
  (:func:`fusedopt.bench.workloads.scaled`), and ``many-1500``: the same shapes cycled to
  1,500 tensors (~200K params; same per-tensor size, 10x the count).
* Scenarios: ``reassigned`` — fresh grad tensors before every step, as ``zero_grad()``
  (``set_to_none=True``, torch's default) then ``backward()`` gives in every real training
  step; ``kept`` — the same grad tensors every step (``zero_grad(set_to_none=False)``);
  ``2 groups`` — re-assigned grads, params split into decay / no-decay groups as GPT-2
  training does; ``clip+amp+telemetry`` — re-assigned grads, ``max_grad_norm=1.0``, a dynamic
  loss scale and (fusedopt only) telemetry.
* Contenders on the same shapes and values: ``fusedopt`` (AdamW, ``--backend``, default cpu),
  ``torch.fused`` / ``torch.foreach`` (``torch.optim.AdamW(fused=True)`` / ``(foreach=True)``;
  clip and AMP as torch composes them: ``GradScaler.unscale_``, ``clip_grad_norm_``,
  ``GradScaler.step``, ``GradScaler.update``) and ``deepspeed.cpu_adam`` where DeepSpeed is
  installed. fusedopt's AMP is its :class:`~fusedopt.amp.LossScaler` (``step`` + ``update``).

Only the step is timed (``time.perf_counter_ns`` around ``opt.step()``, or around the scaler
calls and the clip in the clip+amp case); the fresh grads are allocated just before it,
outside the timed region, as backward allocates them before ``step()``. Each contender runs
``--steps`` steps per round and ``--repeats`` rounds, interleaved (round r of every contender
before round r+1 of any), after ``--warmup`` steps; a row reports the min and the median
over rounds of the mean µs per step, and its ratio (min over min) to ``torch.fused`` in the
same workload and scenario; the fastest single step and its ratio are printed too (on a busy
machine the least disturbed measure).

``--fsdp`` adds the FSDP2 variant (optional; 2 processes, gloo, ``fully_shard``): fusedopt
on the DTensor params vs the same optimizer on plain copies of this rank's local shards, with
clipping by 1.0 (the global norm's all-reduce included) and without (what the DTensors cost
besides it), vs torch AdamW(fused=True) + ``clip_grad_norm_`` on the DTensors; grads
re-assigned every step, timed on rank 0.

The module imports fusedopt only by absolute name, so a copy of it times any fusedopt on
``sys.path``, e.g. an older checkout:
``cp host.py /tmp/host_any.py && PYTHONPATH=<old>/python python /tmp/host_any.py --out ...``.
Results: ``host.json`` (metadata + every sample) and ``host.md`` under ``--out`` (default a
fresh dated folder under ``bench/results/host/``; existing results are never overwritten).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

import fusedopt
from fusedopt.bench import metadata, workloads

LR, WD, MAX_NORM, INIT_SCALE = 1e-3, 1e-2, 1.0, 2.0 ** 16
TORCH_FUSED = "torch.fused"
FSDP_WORLD = 2


# ---------------------------------------------------------------------------------------------
# workloads and scenarios


def host_workloads(max_params: int, many: int) -> list[workloads.Workload]:
    """GPT-2 small scaled to ``max_params`` params, and its shapes cycled to ``many`` tensors."""
    small = workloads.scaled(workloads.named("gpt2-small"), max_params)
    small = workloads.Workload(f"gpt2-small@{workloads.human(small.numel)}", small.shapes)
    out = [small]
    if many > 0:
        shapes = tuple(small.shapes[i % small.tensors] for i in range(many))
        out.append(workloads.Workload(f"many-{many}", shapes))
    return out


@dataclass(frozen=True)
class Scenario:
    name: str
    doc: str
    fresh_grads: bool = True   # new grad tensors before every step (zero_grad() + backward)
    groups: int = 1            # 2: decay (>= 2-D) / no-decay (1-D) param groups
    extras: bool = False       # max_grad_norm + dynamic loss scale (+ fusedopt telemetry)


SCENARIOS = (
    Scenario("reassigned", "fresh grad tensors before every step (zero_grad() + backward)"),
    Scenario("kept", "the same grad tensors every step (zero_grad(set_to_none=False))",
             fresh_grads=False),
    Scenario("2 groups", "re-assigned grads; decay / no-decay param groups", groups=2),
    Scenario("clip+amp+telemetry", "re-assigned grads; max_grad_norm=1, dynamic loss scale, "
             "telemetry (fusedopt only)", extras=True),
)


def _param_groups(params: list[torch.Tensor], groups: int) -> list[dict]:
    if groups == 1:
        return [{"params": params}]
    return [{"params": [p for p in params if p.dim() >= 2]},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


# ---------------------------------------------------------------------------------------------
# contenders: build(params, scenario, backend) -> (step callable, description)

Step = Callable[[], None]


def _fusedopt(params: list, sc: Scenario, backend: str) -> tuple[Step, str]:
    opt = fusedopt.AdamW(_param_groups(params, sc.groups), lr=LR, weight_decay=WD,
                         backend=backend, max_grad_norm=MAX_NORM if sc.extras else None,
                         telemetry=sc.extras)
    if not sc.extras:
        return opt.step, f"fusedopt.AdamW(backend={backend!r}).step"
    scaler = fusedopt.amp.LossScaler(init_scale=INIT_SCALE)

    def step() -> None:
        scaler.step(opt)
        scaler.update()

    return step, (f"fusedopt.AdamW(backend={backend!r}, max_grad_norm, telemetry) via "
                  "LossScaler.step + update")


KERNELS = "fusedopt kernels only"


def kernels_apply(sc: Scenario, backend: str) -> bool:
    """Does the kernels-only floor run in scenario ``sc``? (The cpu backend, one group.)"""
    return backend == "cpu" and sc.groups == 1


def _fusedopt_kernels(params: list, sc: Scenario, backend: str) -> tuple[Step, str] | None:
    """The floor under a fusedopt step: its backend calls alone — the norm pass (clip + AMP
    scenario) and one update per bucket, with the scenario's telemetry — on the tables the
    first step cached: no plan check, no grad read, no stats bookkeeping, no scaler update.
    On these tiny tensors that is mostly kernel time (it grows with the element count, not
    the tensor count); a fusedopt step's host overhead is its time minus this one. It keeps
    the first step's grads alive (its tables point at them)."""
    if not kernels_apply(sc, backend):
        return None
    from fusedopt import _stats
    try:
        from fusedopt.backends import PlanGrads
    except ImportError:  # an older fusedopt timed through a copy of this module
        return None
    opt = fusedopt.AdamW(params, lr=LR, weight_decay=WD, backend=backend,
                         max_grad_norm=MAX_NORM if sc.extras else None, telemetry=sc.extras)
    scale = torch.full((), INIT_SCALE)
    calls: list[Callable[[], None]] = []

    def step() -> None:
        if calls:
            for call in calls:
                call()
            return
        # first call: a real step caches the plan and the tables
        kept = [p.grad for p in params]
        opt.step()
        kernels = opt._backend  # noqa: SLF001 (a benchmark of the internals)
        stats = opt._stats  # noqa: SLF001
        if sc.extras:
            grads = PlanGrads(kept, [g.data_ptr() for g in kept], 0, {})
            calls.append(lambda: kernels.grad_prologue_(
                grads, stats, region=_stats.GRAD, grad_scale=scale, found_inf=None,
                max_norm=MAX_NORM, compute_norm=True))
        for group, buckets in opt._last_plan.groups:  # noqa: SLF001
            hp = opt._group_hyper(group)  # noqa: SLF001
            for b in buckets:
                calls.append(lambda b=b, lr=group["lr"], hp=hp: kernels.adam_step_(
                    b, stats, lr=lr, hp=hp, use_prologue=sc.extras, use_abc=False,
                    telemetry=sc.extras, maximize=False))

    return step, (f"fusedopt.AdamW(backend={backend!r}"
                  + (", max_grad_norm, telemetry): norm pass with the loss scale and "
                     if sc.extras else "): ")
                  + "the update calls of its cached plan")


def _composed(opt: torch.optim.Optimizer, params: list, sc: Scenario, name: str
              ) -> tuple[Step, str]:
    """torch's composition of clip and AMP around ``opt`` (as fusedopt.bench's peers)."""
    if not sc.extras:
        return opt.step, f"{name}.step"
    from torch.nn.utils import clip_grad_norm_
    scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE)
    scaler.scale(torch.ones(()))  # GradScaler makes its scale tensor on the first scale()

    def step() -> None:
        scaler.unscale_(opt)
        clip_grad_norm_(params, MAX_NORM, foreach=True)
        scaler.step(opt)
        scaler.update()

    return step, (f"GradScaler.unscale_ + clip_grad_norm_(foreach=True) + {name}.step via "
                  "GradScaler.step + update")


def _torch(**flags) -> Callable[[list, Scenario, str], tuple[Step, str]]:
    def build(params: list, sc: Scenario, backend: str) -> tuple[Step, str]:
        opt = torch.optim.AdamW(_param_groups(params, sc.groups), lr=LR, weight_decay=WD,
                                **flags)
        flag = ", ".join(f"{k}={v}" for k, v in flags.items())
        return _composed(opt, params, sc, f"torch.optim.AdamW({flag})")
    return build


def _deepspeed(params: list, sc: Scenario, backend: str) -> tuple[Step, str]:
    from deepspeed.ops.adam import DeepSpeedCPUAdam
    opt = DeepSpeedCPUAdam(_param_groups(params, sc.groups), lr=LR, weight_decay=WD,
                           adamw_mode=True)
    return _composed(opt, params, sc, "deepspeed DeepSpeedCPUAdam")


def contenders() -> tuple[dict[str, Callable], list[str]]:
    """Name -> builder for every contender available here, and notes on the ones left out."""
    out = {"fusedopt": _fusedopt, KERNELS: _fusedopt_kernels,
           TORCH_FUSED: _torch(fused=True), "torch.foreach": _torch(foreach=True)}
    notes = []
    if importlib.util.find_spec("deepspeed") is not None:
        out["deepspeed.cpu_adam"] = _deepspeed
    else:
        notes.append("deepspeed.cpu_adam left out: deepspeed is not installed")
    return out, notes


# ---------------------------------------------------------------------------------------------
# timing


class Runner:
    """One contender on its own copy of a workload's params, timing ``steps`` steps a round."""

    def __init__(self, params: list[torch.Tensor], grads: list[torch.Tensor], step: Step,
                 fresh_grads: bool) -> None:
        self.params, self.grads, self.step, self.fresh = params, grads, step, fresh_grads
        if not fresh_grads:
            for p, g in zip(params, grads):
                p.grad = g.clone()

    def round(self, steps: int) -> tuple[float, float]:
        """Mean and fastest µs of ``steps`` timed steps (grads re-assigned untimed before each).
        """
        total, best = 0, None
        params, grads, step, clock = self.params, self.grads, self.step, time.perf_counter_ns
        for _ in range(steps):
            if self.fresh:
                for p, g in zip(params, grads):
                    p.grad = g.clone()
            t0 = clock()
            step()
            dt = clock() - t0
            total += dt
            best = dt if best is None or dt < best else best
        return total / steps / 1e3, best / 1e3


@dataclass
class Row:
    workload: str
    tensors: int
    params: int
    scenario: str
    contender: str
    what: str
    samples_us: list[float] = field(default_factory=list)   # each round's mean µs per step
    best_step_us: float = math.inf                          # the fastest single step
    ratio_to_torch_fused: float | None = None
    best_ratio_to_torch_fused: float | None = None

    def add(self, mean_us: float, best_us: float) -> None:
        self.samples_us.append(mean_us)
        self.best_step_us = min(self.best_step_us, best_us)

    @property
    def min_us(self) -> float:
        return min(self.samples_us)

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples_us)

    def as_dict(self) -> dict:
        return {**asdict(self), "min_us": self.min_us, "median_us": self.median_us}


def _tensors(w: workloads.Workload, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen) for s in w.shapes]
    grads = [torch.randn(s, generator=gen) * 1e-2 for s in w.shapes]
    return params, grads


def run(wls: list[workloads.Workload], scenarios: tuple[Scenario, ...], builders: dict,
        backend: str, steps: int, repeats: int, warmup: int, seed: int = 0) -> list[Row]:
    """Every (workload, scenario, contender), interleaved round by round; rows in that order."""
    rows, runners = [], []
    for w in wls:
        base_params, grads = _tensors(w, seed)
        for sc in scenarios:
            for name, build in builders.items():
                params = [torch.nn.Parameter(p.clone()) for p in base_params]
                built = build(params, sc, backend)
                if built is None:  # not meaningful in this scenario
                    continue
                step, what = built
                runner = Runner(params, grads, step, sc.fresh_grads)
                runner.round(warmup)
                runners.append(runner)
                rows.append(Row(w.name, w.tensors, w.numel, sc.name, name, what))
    for _ in range(repeats):
        for row, runner in zip(rows, runners):
            row.add(*runner.round(steps))
    _ratios(rows)
    return rows


def _ratios(rows: list[Row]) -> None:
    ref = {(r.workload, r.scenario): r for r in rows if r.contender == TORCH_FUSED}
    for r in rows:
        base = ref.get((r.workload, r.scenario))
        if base is not None:
            r.ratio_to_torch_fused = r.min_us / base.min_us
            r.best_ratio_to_torch_fused = r.best_step_us / base.best_step_us


# ---------------------------------------------------------------------------------------------
# FSDP2 variant (optional)

#: (contender, clip by the global norm?); the torch row, last, is every ratio's base. The
#: no-clip pair shows what the DTensor params cost beyond the norm's all-reduce.
FSDP_CONTENDERS = (("fusedopt (DTensor)", True), ("fusedopt (local shards)", True),
                   ("fusedopt (DTensor)", False), ("fusedopt (local shards)", False),
                   ("torch.fused + clip_grad_norm_ (DTensor)", True))


def _fsdp_worker(rank: int, port: int, cfg: dict, out_file: str) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.nn.utils import clip_grad_norm_
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=FSDP_WORLD)
    try:
        w = host_workloads(cfg["max_params"], 0)[0]
        base_params, base_grads = _tensors(w, cfg["seed"])
        runners, whats = [], []
        for name, clip in FSDP_CONTENDERS:
            module = torch.nn.Module()
            module.ps = torch.nn.ParameterList([torch.nn.Parameter(p.clone())
                                                for p in base_params])
            fully_shard(module)
            dparams = list(module.parameters())
            # the grads: DTensors of the params' placements holding this rank's shard of the
            # same values on every contender
            dgrads = []
            with torch.no_grad():
                for p, g in zip(dparams, base_grads):
                    d = p.detach().clone()
                    d.copy_(torch.distributed.tensor.distribute_tensor(g, p.device_mesh,
                                                                       p.placements))
                    dgrads.append(d)
            if name == "fusedopt (local shards)":
                params = [torch.nn.Parameter(p._local_tensor.detach().clone()) for p in dparams]
                grads = [g._local_tensor.detach().clone() for g in dgrads]
            else:
                params, grads = dparams, dgrads
            if name.startswith("fusedopt"):
                opt = fusedopt.AdamW(params, lr=LR, weight_decay=WD, backend=cfg["backend"],
                                     max_grad_norm=MAX_NORM if clip else None)
                step, what = opt.step, (f"fusedopt.AdamW(backend={cfg['backend']!r}, "
                                        f"max_grad_norm={MAX_NORM if clip else None}).step")
            else:
                opt = torch.optim.AdamW(params, lr=LR, weight_decay=WD, fused=True)

                def step(opt=opt, params=params) -> None:
                    clip_grad_norm_(params, MAX_NORM, foreach=True)
                    opt.step()
                what = f"clip_grad_norm_({MAX_NORM}, foreach=True) + AdamW(fused=True).step"
            runner = Runner(params, grads, step, fresh_grads=True)
            runner.round(cfg["warmup"])
            runners.append(runner)
            whats.append(what)
        samples = [[] for _ in runners]   # (mean, best) per round
        for _ in range(cfg["repeats"]):
            for s, runner in zip(samples, runners):
                dist.barrier()
                s.append(runner.round(cfg["steps"]))
        if rank == 0:
            Path(out_file).write_text(json.dumps(
                {"workload": w.name, "tensors": w.tensors, "params": w.numel,
                 "samples": samples, "whats": whats}))
    finally:
        dist.destroy_process_group()


def run_fsdp(max_params: int, backend: str, steps: int, repeats: int, warmup: int,
             seed: int = 0) -> list[Row]:
    """The FSDP2 rows (rank 0's times; ratios to torch fused AdamW + clip on the DTensors)."""
    import socket
    import tempfile

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = dict(max_params=max_params, backend=backend, steps=steps, repeats=repeats,
               warmup=warmup, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        out_file = os.path.join(tmp, "fsdp.json")
        mp.spawn(_fsdp_worker, args=(port, cfg, out_file), nprocs=FSDP_WORLD, join=True)
        res = json.loads(Path(out_file).read_text())
    rows = []
    for (name, clip), what, samples in zip(FSDP_CONTENDERS, res["whats"], res["samples"]):
        rows.append(Row(f"fsdp2x{FSDP_WORLD} {res['workload']}", res["tensors"], res["params"],
                        "fsdp reassigned+clip" if clip else "fsdp reassigned", name, what))
        for mean_us, best_us in samples:
            rows[-1].add(mean_us, best_us)
    base = rows[-1]
    for r in rows:
        r.ratio_to_torch_fused = r.min_us / base.min_us
        r.best_ratio_to_torch_fused = r.best_step_us / base.best_step_us
    return rows


# ---------------------------------------------------------------------------------------------
# report


def table(rows: list[Row]) -> list[str]:
    """A markdown table: one line per row. µs per step: min and median over rounds of the
    round's mean, and the fastest single step; ratios to torch fused of the mins and of the
    fastest steps (on a busy machine the fastest step is the one least disturbed)."""
    out = ["| workload | scenario | contender | min µs/step | median µs/step | best step µs "
           "| x torch fused (min) | x torch fused (best step) |",
           "|---|---|---|---:|---:|---:|---:|---:|"]

    def fmt(x: float | None) -> str:
        return "" if x is None else f"{x:.3f}"

    for r in rows:
        out.append(f"| {r.workload} ({r.tensors} tensors) | {r.scenario} | {r.contender} | "
                   f"{r.min_us:,.1f} | {r.median_us:,.1f} | {r.best_step_us:,.1f} | "
                   f"{fmt(r.ratio_to_torch_fused)} | {fmt(r.best_ratio_to_torch_fused)} |")
    return out


def default_out(machine: str) -> Path:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("bench") / "results" / "host" / f"{stamp}-{machine}"


def outputs(out: Path) -> list[Path]:
    """The files a run writes into ``out`` that exist already."""
    return [p for p in (out / "host.json", out / "host.md") if p.exists()]


def _existing(out: Path) -> list[str]:
    return [str(p) for p in outputs(out)]


def write(out: Path, meta: dict, rows: list[Row]) -> list[Path]:
    """``host.json`` and ``host.md`` under ``out``; refuses to overwrite earlier results."""
    paths = [out / "host.json", out / "host.md"]
    existing = _existing(out)
    if existing:
        raise FileExistsError(f"not overwriting earlier results: {', '.join(existing)}")
    out.mkdir(parents=True, exist_ok=True)
    paths[0].write_text(json.dumps({"meta": meta, "rows": [r.as_dict() for r in rows]},
                                   indent=2, default=str) + "\n")
    md = [f"# fusedopt host overhead on {meta['machine']}", "",
          f"{meta['cpu']} · torch {meta['versions']['torch']} · {meta['threads']} thread(s) · "
          f"fusedopt {meta['fusedopt_path']} (commit {meta['commit']}) · {meta['date']}", "",
          f"load average {meta['load_avg_start']:.2f} at start, {meta['load_avg_end']:.2f} at "
          f"end; {meta['repeats']} rounds of {meta['steps']} steps after {meta['warmup']} "
          f"warm-up steps; command `{meta['command']}`", "", *table(rows), "",
          "What each row runs:", ""]
    seen = set()
    for r in rows:
        if (r.contender, r.scenario, r.what) not in seen:
            seen.add((r.contender, r.scenario, r.what))
            md.append(f"- {r.contender} · {r.scenario}: {r.what}")
    md += ["", *[f"- note: {n}" for n in meta["notes"]]]
    paths[1].write_text("\n".join(md) + "\n")
    return paths


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fusedopt.bench.host", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="cpu", help="fusedopt backend (cpu)")
    p.add_argument("--max-params", type=int, default=20_000,
                   help="GPT-2 small scaled to at most this many params (20000)")
    p.add_argument("--many", type=int, default=1500,
                   help="tensor count of the many-tensor workload; 0 leaves it out (1500)")
    p.add_argument("--steps", type=int, default=50, help="timed steps per round (50)")
    p.add_argument("--repeats", type=int, default=7, help="rounds (7)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    p.add_argument("--scenarios", help="comma list of " + ", ".join(s.name for s in SCENARIOS))
    p.add_argument("--fsdp", action="store_true",
                   help=f"also the FSDP2 variant ({FSDP_WORLD} processes, gloo; optional)")
    p.add_argument("--out", type=Path, help="results folder (default: a fresh dated folder "
                   "under bench/results/host/)")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if min(args.steps, args.repeats, args.warmup, args.threads) < 1 or args.many < 0:
        p.error("--steps, --repeats, --warmup and --threads must be >= 1, --many >= 0")
    scenarios = SCENARIOS
    if args.scenarios:
        names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
        known = {s.name: s for s in SCENARIOS}
        bad = [n for n in names if n not in known]
        if bad:
            p.error(f"--scenarios: unknown {bad}; choose from {list(known)}")
        scenarios = tuple(known[n] for n in names)
    out = None if args.no_write else args.out or default_out(metadata.machine_name(
        torch.device("cpu")))
    if out is not None and _existing(out):
        p.error(f"--out: not overwriting earlier results {_existing(out)}")
    torch.set_num_threads(args.threads)
    builders, notes = contenders()
    meta = metadata.collect(torch.device("cpu"))
    # run as a copied script (an older fusedopt on sys.path) the module has no spec
    prog = "python -m fusedopt.bench.host" if __spec__ is not None else f"python {sys.argv[0]}"
    meta.update(command=" ".join([prog] + (sys.argv[1:] if argv is None else list(argv))),
                fusedopt_path=str(Path(fusedopt.__file__).parent), steps=args.steps,
                repeats=args.repeats, warmup=args.warmup, notes=notes)
    wls = host_workloads(args.max_params, args.many)
    print(f"fusedopt host overhead ({meta['fusedopt_path']}, {meta['cpu']}, "
          f"{torch.get_num_threads()} thread(s), load {meta['load_avg_start']:.2f}): "
          f"{', '.join(w.describe() for w in wls)}; {args.repeats} rounds of {args.steps} "
          "steps", flush=True)
    for n in notes:
        print(f"  note: {n}")
    rows = run(wls, scenarios, builders, args.backend, args.steps, args.repeats, args.warmup,
               args.seed)
    if args.fsdp:
        rows += run_fsdp(args.max_params, args.backend, args.steps, args.repeats, args.warmup,
                         args.seed)
    meta["load_avg_end"] = metadata.load_average()
    print("\n".join(table(rows)))
    print(f"load average {meta['load_avg_start']:.2f} at start, {meta['load_avg_end']:.2f} at end")
    if out is not None:
        print("wrote " + ", ".join(str(x) for x in write(out, meta, rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
