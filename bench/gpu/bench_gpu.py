"""GPU benchmark of issue 21 (step 5 of bench/gpu/validate.sh): fusedopt's CUDA and Triton AdamW
against torch's, with a same-run copy roofline, on GPT-2 small and a Llama-1B-like list.

Cases (``--cases``, default below): GPT-2 small's 148 tensors (124.4M params) in the modes
``plain`` (fp32), ``clip_amp`` (fp32, clipping + dynamic loss scaling) and ``bf16`` (bf16 params
and grads; fusedopt keeps fp32 states, torch bf16 states, each its default), and the
Llama-1B-like list (147 tensors, 1.5B params) in ``bf16``. Modes, workloads and the bytes model
are :mod:`fusedopt.bench`'s.

Contenders of a case, all stepping the same params with the same grads:

* ``roofline.copy``: ``buf.mul_(1.0)``, a device-to-device in-place copy (every byte read and
  written back, as an optimizer step does), over min(half the bytes fusedopt's step moves,
  2 GiB) — far larger than the 50-60 MB L2, so it runs at HBM bandwidth. ``roofline.d2d``:
  ``dst.copy_(src)`` over as many bytes, for reference.
* ``fusedopt.cuda`` / ``fusedopt.triton``: ``fusedopt.AdamW(backend=..., max_grad_norm=...)``,
  under ``fusedopt.amp.LossScaler`` in ``clip_amp``; ``fusedopt.cuda.bf16state``
  (``state_dtype=torch.bfloat16``, torch's bytes) in ``bf16`` on GPT-2 small.
* ``fusedopt.<backend>.graph`` (GPT-2 small): the same step with ``capturable=True`` and a tensor
  lr, captured once in a CUDA graph (LossScaler step and update inside) and replayed.
* ``torch.fused`` / ``torch.foreach`` (:mod:`fusedopt.bench.peers`): ``torch.optim.AdamW``; in
  ``clip_amp`` torch's composition ``GradScaler.unscale_ + clip_grad_norm_ + AdamW`` via
  ``GradScaler.step``. ``torch.foreach`` on GPT-2 small only (memory).

Grads are re-assigned before every step as in training: eager contenders get
``p.grad = None`` then ``p.grad = <fresh copy of the case's grads>`` (what
``zero_grad(set_to_none=True)`` and the next backward do; GradScaler.unscale_ may then rewrite
them in place); graph contenders get the values copied into the static grads their graph reads.
That preparation is outside the timed region.

A sample is one step: prepare, synchronize, record a CUDA event, call ``step()``, record an
event, synchronize. GPU time is the events' elapsed time (the step as a training loop sees it
with the GPU otherwise idle, launch gaps included); host time is ``perf_counter`` around the
``step()`` call alone (no synchronize inside). Contenders take turns in rotated order for
``--repeats`` rounds (>= 20) after ``--warmup`` steps each; medians are reported. Then each is
run ``--profile-steps`` times under ``torch.profiler``: host time per step (the
``record_function`` range), device kernels and launch calls per step, kernel time per step.

GB/s = the bytes the contender's work must move (:mod:`fusedopt.bench.bytes_model`, with its
own state dtype; torch's composition counts its extra grad passes) / median GPU time. "% of
copy" = GB/s / roofline.copy's GB/s in the same case. Ratios "vs torch.X" = torch.X's median /
the contender's median (> 1: faster than torch).

Writes ``bench_gpu.json`` and ``bench_gpu.md`` to ``--out`` (after every case, so a run cut by
its time box keeps what it measured). ``--dry-run`` (= ``--device cpu --tiny``) runs the same
code on the CPU with the ``cpu`` backend and torch's CPU optimizers at a tiny size, so that it
cannot rot where there is no GPU; its numbers are not claims.

    python bench/gpu/bench_gpu.py --out $OUT                  # on the GPU (about a minute)
    python bench/gpu/bench_gpu.py --dry-run --out /tmp/x      # CPU, seconds
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

import fusedopt
from fusedopt import backends, registry
from fusedopt.amp import LossScaler
from fusedopt.bench import bytes_model, metadata, workloads
from fusedopt.bench import modes as bench_modes
from fusedopt.bench.case import Case
from fusedopt.bench.contenders import Skip
from fusedopt.bench.harness import quantile
from fusedopt.bench.modes import LOSS_SCALE, SCALER_GROWTH_INTERVAL, Mode
from fusedopt.bench.peers import PEERS

ALGO = "adamw"
DEFAULT_CASES = "gpt2-small:plain,gpt2-small:clip_amp,gpt2-small:bf16,llama-1b-like:bf16"
#: Workloads that also get the graph-captured, bf16-state and foreach contenders (memory: the
#: Llama-1B-like list in bf16 with two fp32-state fusedopt optimizers is ~45 GB already).
SMALL_WORKLOADS = ("gpt2-small",)
#: Params of each workload in the tiny (dry-run) mode.
TINY_PARAMS = 30_000
#: Largest roofline buffer: 2 GiB is 40x an H100's L2, so the copy runs at HBM bandwidth.
ROOFLINE_CAP_BYTES = 2 << 30
#: Issue 21's goals: fraction of the same-run copy bandwidth per backend; ratios to torch.
COPY_TARGET = {"cuda": 0.90, "triton": 0.85}
DEFAULT_COPY_TARGET = 0.90
VS_TORCH_FUSED_TARGET = 1.0
COMPOSITION_TARGET = 1.4
STEP_LABEL = "bench_step"

FUSEDOPT, PEER, ROOFLINE = "fusedopt", "peer", "roofline"


@dataclass
class Contender:
    """One way to run a case's step, with its samples."""

    name: str
    kind: str
    impl: str
    step: Callable[[], object]
    #: untimed, before every step: re-assign (eager) or refill (graph) the grads
    prepare: Callable[[], None]
    #: bytes one step must move (bytes model) or moves (roofline); set after warm-up for optimizers
    bytes_per_step: int | None = None
    optimizer: torch.optim.Optimizer | None = None
    #: the eager contender a graph contender is compared with
    eager_of: str | None = None
    gpu_ms: list[float] = field(default_factory=list)
    host_ms: list[float] = field(default_factory=list)
    profile: dict | None = None
    error: str | None = None


# ----------------------------------------------------------------------------- contenders
def _adamw_kwargs() -> dict:
    """AdamW hyperparameters shared with the torch peers (the registry's test values)."""
    return dict(registry.get(ALGO).kwargs)


def _eager_prepare(params: list[torch.Tensor], src: list[torch.Tensor]) -> Callable[[], None]:
    def prepare() -> None:
        for p in params:  # zero_grad(set_to_none=True): the allocator gets the blocks back
            p.grad = None
        for p, g in zip(params, src):  # ... and the next backward allocates fresh grads
            p.grad = g.clone()
    return prepare


def _fusedopt_eager(case: Case, backend: str, src: list[torch.Tensor], *,
                    state_dtype: torch.dtype | None = None) -> Contender:
    mode = case.mode
    opt = fusedopt.AdamW(case.params, backend=backend, max_grad_norm=mode.max_grad_norm,
                         state_dtype=state_dtype, **_adamw_kwargs())
    scaler = (LossScaler(init_scale=LOSS_SCALE, growth_interval=SCALER_GROWTH_INTERVAL)
              if mode.amp else None)

    def step() -> None:
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()

    args = [f"backend={backend!r}"]
    if mode.clip:
        args.append(f"max_grad_norm={mode.max_grad_norm}")
    if state_dtype is not None:
        args.append(f"state_dtype={state_dtype}")
    impl = f"fusedopt.AdamW({', '.join(args)})" + (" via LossScaler" if scaler else "")
    suffix = ".bf16state" if state_dtype == torch.bfloat16 else ""
    return Contender(f"fusedopt.{backend}{suffix}", FUSEDOPT, impl, step,
                     _eager_prepare(case.params, src), optimizer=opt)


def _fusedopt_graph(case: Case, backend: str, src: list[torch.Tensor]) -> Contender:
    """The step captured once in a CUDA graph and replayed (capturable=True, tensor lr)."""
    mode, params = case.mode, case.params
    static = [torch.empty_like(g) for g in src]
    kw = _adamw_kwargs()
    kw["lr"] = torch.tensor(kw["lr"], dtype=torch.float32, device=case.device)
    opt = fusedopt.AdamW(params, backend=backend, max_grad_norm=mode.max_grad_norm,
                         capturable=True, **kw)
    scaler = (LossScaler(init_scale=LOSS_SCALE, growth_interval=SCALER_GROWTH_INTERVAL)
              if mode.amp else None)

    def eager_step() -> None:
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()

    def prepare() -> None:
        for p, g, s in zip(params, static, src):
            g.copy_(s)
            p.grad = g  # the buffers the graph reads (other contenders re-assign p.grad)

    for _ in range(2):  # eager warm-up: states, device tables, Triton autotuning
        prepare()
        eager_step()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(side), torch.cuda.graph(graph):
        eager_step()
    torch.cuda.current_stream().wait_stream(side)
    impl = (f"CUDA graph replay of fusedopt.AdamW(backend={backend!r}, capturable=True, "
            f"lr=tensor{', max_grad_norm=' + str(mode.max_grad_norm) if mode.clip else ''})"
            + (" via LossScaler" if scaler else ""))
    return Contender(f"fusedopt.{backend}.graph", FUSEDOPT, impl, graph.replay, prepare,
                     optimizer=opt, eager_of=f"fusedopt.{backend}")


def _peer(case: Case, name: str, src: list[torch.Tensor]) -> Contender:
    runner = PEERS[name].build(case)
    return Contender(name, PEER, runner.impl, runner.step, _eager_prepare(case.params, src),
                     optimizer=runner.optimizer)


def _roofline(case: Case) -> list[Contender]:
    """In-place copy (the roofline) and a copy into another buffer, moving as many bytes."""
    step_bytes = bytes_model.fused_bytes(ALGO, case.mode, bytes_model.fusedopt_state_dtype(
        case.mode)) * case.workload.numel
    n = max(2, min(step_bytes // 2, ROOFLINE_CAP_BYTES) // 4 // 2 * 2)
    buf = torch.ones(n, dtype=torch.float32, device=case.device)
    src = torch.ones(n, dtype=torch.float32, device=case.device)
    dst = torch.empty_like(src)
    moved = 2 * n * 4  # each: n elements read + n written

    def nothing() -> None:
        return None

    return [Contender("roofline.copy", ROOFLINE, "buf.mul_(1.0): in-place read + write",
                      lambda: buf.mul_(1.0), nothing, bytes_per_step=moved),
            Contender("roofline.d2d", ROOFLINE, "dst.copy_(src): device-to-device copy",
                      lambda: dst.copy_(src), nothing, bytes_per_step=moved)]


def plan(case: Case, device: torch.device) -> tuple[list[str], dict[str, str]]:
    """Names of the contenders to build for ``case`` and the ones left out, with why."""
    small = case.workload.name.split("@")[0] in SMALL_WORKLOADS
    names = ["roofline.copy", "roofline.d2d"]
    skipped: dict[str, str] = {}
    wanted = ["cuda", "triton"] if device.type == "cuda" else ["cpu"]
    available = backends.available_backends(device)
    for b in wanted:
        if b in available:
            names.append(f"fusedopt.{b}")
        else:
            ok, why = backends.availability(b)
            skipped[f"fusedopt.{b}"] = why if not ok else f"cannot run {device.type} tensors"
    if device.type != "cuda":
        skipped["fusedopt.triton"] = ("Triton runs CPU tensors only in its interpreter "
                                      "(a correctness tool, not timed)")
    if small and case.mode.param_dtype == torch.bfloat16:
        base = next((n for n in names if n.startswith("fusedopt.")), None)
        if base is not None:
            names.append(base + ".bf16state")
    if small:
        for n in [n for n in names if n.startswith("fusedopt.") and n.count(".") == 1]:
            if device.type == "cuda":
                names.append(n + ".graph")
            else:
                skipped[n + ".graph"] = "CUDA graphs need a CUDA device"
    names.append("torch.fused")
    if small:
        names.append("torch.foreach")
    return names, skipped


def build(case: Case, name: str, src: list[torch.Tensor]) -> Contender:
    if name.startswith("torch."):
        return _peer(case, name, src)
    parts = name.split(".")
    backend = parts[1]
    if len(parts) == 3 and parts[2] == "graph":
        return _fusedopt_graph(case, backend, src)
    if len(parts) == 3 and parts[2] == "bf16state":
        return _fusedopt_eager(case, backend, src, state_dtype=torch.bfloat16)
    return _fusedopt_eager(case, backend, src)


def _state_dtype(opt: torch.optim.Optimizer | None, p: torch.Tensor) -> torch.dtype | None:
    """Dtype of the optimizer's per-element states of ``p`` (after its first step)."""
    if opt is None:
        return None
    for key, value in opt.state.get(p, {}).items():
        if (key != "master_param" and isinstance(value, torch.Tensor)
                and value.numel() == p.numel() and value.is_floating_point()):
            return value.dtype
    return None


def _model_bytes(c: Contender, case: Case) -> int | None:
    if c.bytes_per_step is not None:
        return c.bytes_per_step
    sdt = _state_dtype(c.optimizer, case.params[0])
    if sdt is None:
        return None
    per_param = (bytes_model.torch_composition_bytes(ALGO, case.mode, sdt) if c.kind == PEER
                 else bytes_model.fused_bytes(ALGO, case.mode, sdt))
    return per_param * case.workload.numel


# ----------------------------------------------------------------------------- memory
def bytes_per_param(names: list[str], mode: Mode) -> int:
    """Device bytes per param the case holds with these contenders (sizing only)."""
    p = mode.param_dtype.itemsize
    fs = bytes_model.fusedopt_state_dtype(mode).itemsize
    total = p + 2 * p  # params; the case's grads (kept as the source) + one fresh copy
    for n in names:
        if n.endswith(".graph"):
            total += 2 * fs + p  # states + static grads
        elif n.endswith(".bf16state"):
            total += 2 * 2
        elif n.startswith("fusedopt."):
            total += 2 * fs
        elif n == "torch.fused":
            total += 2 * p
        elif n == "torch.foreach":
            total += 4 * p  # states + foreach temporaries
    return total


def fit(w: workloads.Workload, names: list[str], mode: Mode, device: torch.device,
        fraction: float, tiny: bool) -> workloads.Workload:
    """``w`` scaled down (same tensor count and shape ratios) to what fits."""
    if tiny:
        return workloads.scaled(w, TINY_PARAMS)
    budget = fraction * workloads.available_memory(device) - 3 * ROOFLINE_CAP_BYTES  # 3 buffers
    return workloads.scaled(w, max(1, int(budget // bytes_per_param(names, mode))))


# ----------------------------------------------------------------------------- timing
class Timer:
    """One step: GPU time by CUDA events (wall clock on a CPU) and host time of the call."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, c: Contender) -> tuple[float, float]:
        c.prepare()
        self.sync()
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            t0 = time.perf_counter()
            c.step()
            t1 = time.perf_counter()
            end.record()
            end.synchronize()
            return start.elapsed_time(end), (t1 - t0) * 1e3
        t0 = time.perf_counter()
        c.step()
        t1 = time.perf_counter()
        return (t1 - t0) * 1e3, (t1 - t0) * 1e3


def _failure(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def time_contenders(cs: list[Contender], timer: Timer, warmup: int, repeats: int) -> None:
    """Warm every contender up, then time them round-robin in rotated order."""
    for c in cs:
        try:
            for _ in range(warmup):
                timer(c)
        except Exception as exc:  # a contender that fails is reported; the others go on
            c.error = _failure(exc)
    live = [c for c in cs if c.error is None]
    gc.collect()
    gc.disable()
    try:
        for r in range(repeats):
            k = r % len(live) if live else 0
            for c in live[k:] + live[:k]:
                if c.error is not None:
                    continue
                try:
                    gpu, host = timer(c)
                except Exception as exc:
                    c.error = _failure(exc)
                    continue
                c.gpu_ms.append(gpu)
                c.host_ms.append(host)
    finally:
        gc.enable()


#: CPU-side calls that put work on the GPU (runtime and driver API, graph launches)
LAUNCH_CALLS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx",
                "cudaGraphLaunch", "cuGraphLaunch", "cudaLaunchCooperativeKernel")


def profile_contender(c: Contender, timer: Timer, steps: int) -> dict:
    """Host time per step from the profiler's ``record_function`` range; on a GPU also the
    device kernels, launch calls and kernel time per step (the grads are prepared once before
    the profiled steps so that only step work is recorded)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if timer.cuda else [])
    c.prepare()
    timer.sync()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            with record_function(STEP_LABEL):
                c.step()
        timer.sync()
    out: dict = {"steps": steps}
    averages = prof.key_averages()
    host = [e for e in averages if e.key == STEP_LABEL and e.device_type == DeviceType.CPU]
    out["host_ms_per_step"] = (host[0].cpu_time_total / host[0].count / 1e3) if host else None
    if timer.cuda:
        device = [e for e in averages
                  if e.device_type == DeviceType.CUDA and e.key != STEP_LABEL]
        kernels = [e for e in device if not e.key.startswith(("Memcpy", "Memset"))]

        def dev_us(e) -> float:
            return float(getattr(e, "self_device_time_total",
                                 getattr(e, "self_cuda_time_total", 0.0)))

        out["kernels_per_step"] = sum(e.count for e in kernels) / steps
        out["device_ops_per_step"] = sum(e.count for e in device) / steps
        out["kernel_ms_per_step"] = sum(dev_us(e) for e in device) / steps / 1e3
        out["launch_calls_per_step"] = sum(e.count for e in averages
                                           if e.key in LAUNCH_CALLS) / steps
        out["kernel_names"] = sorted({e.key for e in kernels})[:20]
    return out


# ----------------------------------------------------------------------------- one case
def _stat(xs: list[float], q: float) -> float | None:
    return quantile(xs, q) if xs else None


def run_case(workload: str, mode_name: str, device: torch.device, args) -> dict:
    mode = bench_modes.get(mode_name)
    probe = Case(workloads.named(workload), ALGO, mode, device)
    names, skipped = plan(probe, device)
    w = fit(workloads.named(workload), names, mode, device, args.mem_fraction, args.tiny)
    case = Case(w, ALGO, mode, device)
    case.allocate(seed=0)
    src = [p.grad for p in case.params]
    timer = Timer(device)
    cs: list[Contender] = []
    for name in names:
        try:
            if name.startswith("roofline."):
                if name == "roofline.copy":
                    cs += _roofline(case)
                continue
            cs.append(build(case, name, src))
        except Skip as exc:
            skipped[name] = str(exc)
        except Exception as exc:
            skipped[name] = "failed to build: " + _failure(exc)
    t0 = time.perf_counter()
    time_contenders(cs, timer, args.warmup, args.repeats)
    for c in cs:
        if c.error is None and args.profile_steps > 0:
            try:
                c.profile = profile_contender(c, timer, args.profile_steps)
            except Exception as exc:
                c.profile = {"error": _failure(exc)}
    rows = {}
    copy = next((c for c in cs if c.name == "roofline.copy" and c.error is None), None)
    copy_gbps = None
    if copy is not None and copy.gpu_ms:
        copy_gbps = copy.bytes_per_step / (quantile(copy.gpu_ms, 0.5) / 1e3) / 1e9
    for c in cs:
        med = _stat(c.gpu_ms, 0.5)
        nbytes = _model_bytes(c, case) if c.error is None else None
        gbps = nbytes / (med / 1e3) / 1e9 if (nbytes and med) else None
        sdt = _state_dtype(c.optimizer, case.params[0])
        rows[c.name] = {
            "kind": c.kind, "impl": c.impl, "error": c.error,
            "state_dtype": str(sdt).replace("torch.", "") if sdt is not None else None,
            "bytes_per_step": nbytes,
            "bytes_per_param": (nbytes / case.workload.numel) if nbytes else None,
            "samples": len(c.gpu_ms),
            "median_ms": med, "p20_ms": _stat(c.gpu_ms, 0.2), "p80_ms": _stat(c.gpu_ms, 0.8),
            "host_median_ms": _stat(c.host_ms, 0.5),
            "gbps": gbps,
            "pct_of_copy": (100 * gbps / copy_gbps) if (gbps and copy_gbps) else None,
            "profile": c.profile,
            "eager_of": c.eager_of,
        }
    for c in cs:  # ratios: torch.X median / contender median; graph: eager / graph
        row = rows[c.name]
        if c.kind != FUSEDOPT or row["median_ms"] is None:
            continue
        for peer in ("torch.fused", "torch.foreach"):
            pm = rows.get(peer, {}).get("median_ms")
            if pm:
                row[f"vs_{peer}"] = pm / row["median_ms"]
        if c.eager_of and rows.get(c.eager_of, {}).get("median_ms"):
            row["eager_over_graph"] = rows[c.eager_of]["median_ms"] / row["median_ms"]
    # free everything before the next case
    for c in cs:
        c.optimizer = None
    del cs
    case.release()
    src.clear()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"workload": w.name, "workload_full": workload, "mode": mode_name,
            "mode_doc": mode.doc, "params": w.numel, "tensors": w.tensors,
            "copy_gbps": copy_gbps, "seconds": time.perf_counter() - t0,
            "contenders": rows, "skipped": skipped}


# ----------------------------------------------------------------------------- goals
def goals(cases: list[dict]) -> list[dict]:
    """Issue 21's goals, evaluated on the cases of this run (each a ratio within one case)."""
    out = []

    def add(goal: str, case: dict, who: str, value: float | None, target: float,
            higher: bool = True) -> None:
        met = None if value is None else (value >= target if higher else value <= target)
        out.append({"goal": goal, "case": f"{case['workload']} {case['mode']}",
                    "contender": who, "value": value, "target": target, "met": met})

    for case in cases:
        for name, row in case["contenders"].items():
            parts = name.split(".")
            if row["kind"] != FUSEDOPT:
                continue
            backend = parts[1]
            if len(parts) == 2 and case["mode"] in ("plain", "bf16"):
                target = COPY_TARGET.get(backend, DEFAULT_COPY_TARGET)
                pct = row["pct_of_copy"]
                add(f">= {target:.0%} of copy", case, name,
                    None if pct is None else pct / 100, target)
                add(f">= {VS_TORCH_FUSED_TARGET:.1f}x torch.fused", case, name,
                    row.get("vs_torch.fused"), VS_TORCH_FUSED_TARGET)
            if len(parts) == 2 and case["mode"] == "clip_amp":
                add(f">= {COMPOSITION_TARGET:.1f}x torch composition", case, name,
                    row.get("vs_torch.fused"), COMPOSITION_TARGET)
            if parts[-1] == "graph":
                graph, eager = row["median_ms"], case["contenders"].get(
                    row["eager_of"], {}).get("median_ms")
                add("captured step <= eager step", case, name,
                    None if not (graph and eager) else graph / eager, 1.0, higher=False)
    return out


# ----------------------------------------------------------------------------- output
def _f(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def markdown(result: dict) -> str:
    meta = result["meta"]
    lines = [f"# bench_gpu: fusedopt AdamW on {meta.get('gpu') or meta.get('cpu')}", "",
             f"{meta['date']}; torch {meta['versions'].get('torch')}, triton "
             f"{meta['versions'].get('triton')}, CUDA {meta.get('cuda')}; median of "
             f"{meta['repeats']} steps after {meta['warmup']} warm-up steps, rotated rounds."
             + (" DRY RUN on the CPU at a tiny size: not a claim." if meta["dry_run"] else ""),
             ""]
    for case in result["cases"]:
        lines += [f"## {case['workload']} ({case['tensors']} tensors, "
                  f"{workloads.human(case['params'])} params), {case['mode']}", "",
                  f"{case['mode_doc']}. Copy roofline: {_f(case['copy_gbps'], '.0f')} GB/s.", "",
                  "| contender | states | B/param | median ms | p20-p80 ms | host ms | GB/s "
                  "| % of copy | vs torch.fused | vs torch.foreach | eager/graph "
                  "| kernels/step | kernel ms/step | profiler host ms |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, r in case["contenders"].items():
            prof = r.get("profile") or {}
            if r["error"]:
                lines.append(f"| {name} | failed: {r['error']} |" + " |" * 12)
                continue
            lines.append(
                f"| {name} | {r['state_dtype'] or '-'} | {_f(r['bytes_per_param'], '.0f')} | "
                f"{_f(r['median_ms'], '.3f')} | {_f(r['p20_ms'], '.3f')}-{_f(r['p80_ms'], '.3f')}"
                f" | {_f(r['host_median_ms'], '.3f')} | {_f(r['gbps'], '.0f')} | "
                f"{_f(r['pct_of_copy'], '.0f')} | {_f(r.get('vs_torch.fused'), '.2f')} | "
                f"{_f(r.get('vs_torch.foreach'), '.2f')} | {_f(r.get('eager_over_graph'), '.2f')}"
                f" | {_f(prof.get('kernels_per_step'), '.1f')} | "
                f"{_f(prof.get('kernel_ms_per_step'), '.3f')} | "
                f"{_f(prof.get('host_ms_per_step'), '.3f')} |")
        lines.append("")
        for name, r in case["contenders"].items():
            lines.append(f"- `{name}`: {r['impl']}")
        for name, why in case["skipped"].items():
            lines.append(f"- `{name}` skipped: {why}")
        lines.append("")
    lines += ["## Goals (issue 21)", "", "| goal | case | contender | value | met |",
              "|---|---|---|---:|---|"]
    for g in result["goals"]:
        met = {True: "yes", False: "NO", None: "not measured"}[g["met"]]
        lines.append(f"| {g['goal']} | {g['case']} | {g['contender']} | "
                     f"{_f(g['value'], '.2f')} | {met} |")
    return "\n".join(lines) + "\n"


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result["goals"] = goals(result["cases"])
    (out / "bench_gpu.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (out / "bench_gpu.md").write_text(markdown(result))


def parse_cases(text: str) -> list[tuple[str, str]]:
    cases = []
    for item in text.split(","):
        wname, _, mname = item.strip().partition(":")
        workloads.named(wname)  # ValueError naming the known ones
        bench_modes.get(mname)
        cases.append((wname, mname))
    return cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help=f"every workload at {TINY_PARAMS} params")
    ap.add_argument("--dry-run", action="store_true", help="--device cpu --tiny")
    ap.add_argument("--cases", default=DEFAULT_CASES, help=f"workload:mode,... ({DEFAULT_CASES})")
    ap.add_argument("--repeats", type=int, default=25, help="timed steps per contender (25)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--mem-fraction", type=float, default=0.7,
                    help="fraction of free device memory a case may use (0.7)")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="seconds: cases not started by then are skipped (the time box)")
    args = ap.parse_args(argv)
    if args.dry_run:
        args.device, args.tiny = "cpu", True
    if args.repeats < 20 and not args.tiny:
        ap.error("--repeats must be >= 20 (issue 21: median of >= 20)")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device (use --dry-run on a CPU)", file=sys.stderr)
        return 2
    try:
        cases = parse_cases(args.cases)
    except ValueError as exc:
        ap.error(str(exc))
    meta = metadata.collect(device)
    meta.update(repeats=args.repeats, warmup=args.warmup, dry_run=args.dry_run or args.tiny,
                profile_steps=args.profile_steps, mem_fraction=args.mem_fraction,
                roofline_cap_bytes=ROOFLINE_CAP_BYTES, algorithm=ALGO,
                fusedopt_file=fusedopt.__file__)
    result = {"meta": meta, "cases": [], "not_run": []}
    t0 = time.perf_counter()
    for wname, mname in cases:
        if args.time_budget is not None and time.perf_counter() - t0 > args.time_budget:
            print(f"SKIP case {wname} {mname}: time budget of {args.time_budget:.0f} s spent",
                  flush=True)
            result["not_run"].append(f"{wname}:{mname}")
            continue
        print(f"bench_gpu: {wname} {mname} ...", flush=True)
        try:
            case = run_case(wname, mname, device, args)
        except Exception as exc:  # record it and go on with the next case
            print(f"bench_gpu: case {wname} {mname} FAILED: {_failure(exc)}", flush=True)
            result["not_run"].append(f"{wname}:{mname} ({_failure(exc)})")
            del exc  # its traceback holds the case's tensors
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()  # an out-of-memory case must not starve the next
            continue
        result["cases"].append(case)
        write(result, args.out)
        print(markdown({"meta": meta, "cases": [case], "goals": []}).split("\n## Goals")[0]
              .split("\n", 3)[-1], flush=True)
    write(result, args.out)
    print("## Goals (issue 21)" + markdown(result).split("## Goals (issue 21)", 1)[1], flush=True)
    print(f"bench_gpu: {len(result['cases'])} cases in {time.perf_counter() - t0:.0f} s, "
          f"wrote {args.out / 'bench_gpu.json'} and bench_gpu.md", flush=True)
    return 0 if result["cases"] and not result["not_run"] else 1


if __name__ == "__main__":
    sys.exit(main())
