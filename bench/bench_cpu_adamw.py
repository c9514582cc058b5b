"""Focused CPU benchmark of the native AdamW step (GitHub issue 4's targets).

GPT-2-small parameter list (148 tensors, 124.4M params, python/fusedopt/bench/workloads.json),
``--threads`` threads (2), one optimizer step per timing, warm-up steps, then ``--repeats``
rounds in which every contender of a scenario is timed once, in an order rotated per round
(noise hits all alike); the median, p20 and p80 are reported. Each scenario's roofline is timed
in the same rounds as its contenders: an in-place ``buffer.mul_(1.0)`` over a buffer that moves
as many bytes as fusedopt's step in that scenario (the read-and-write-back pattern of a step;
:mod:`fusedopt.bench.roofline` explains why a copy into another buffer is the wrong bound).

Scenarios and targets (speedup = contender's median / fusedopt's median):

* fp32 AdamW:      fusedopt cpu vs torch.optim.AdamW(fused=True) (>= 1.0x) and DeepSpeed
                   CPUAdam (>= 1.15x)
* clip+AMP AdamW:  fusedopt's two passes (norm pass + update with unscale, clip, skip) vs
                   GradScaler.unscale_ + clip_grad_norm_ + fused AdamW (>= 1.4x)
* bf16 params:     fusedopt with fp32 states vs torch fused AdamW on bf16 params (>= 1.4x) and
                   DeepSpeed CPUAdam on bf16 params with fp32 states (>= 3x)

GB/s = the bytes the contender's passes move (its byte model, below) / time. Writes a Markdown
table and a JSON file with the machine metadata to ``--out``.

    python bench/bench_cpu_adamw.py --out bench/results/cpu-<machine>   (writes bench_cpu_adamw.md/.json)
    python bench/bench_cpu_adamw.py --max-params 3000 --no-deepspeed --out /tmp/x   (smoke run;
        tests/test_bench_cli.py runs it)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

import fusedopt
from fusedopt import _native
from fusedopt.amp import LossScaler
from fusedopt.bench import workloads

HP = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
MAX_NORM = 1.0
SCALE = 1024.0

# Bytes per parameter each implementation moves (reads + writes).
#   fp32 AdamW, one pass: read p g m v, write p m v = 7 * 4
#   clip + AMP, fusedopt: + one read of g (norm pass) = 8 * 4
#   torch composition: unscale_ (read g, write g), norm (read g), clip (read g, write g),
#                      fused AdamW (7 * 4) = 12 * 4
#   bf16 params, fp32 states: read p g (2 + 2) m v (4 + 4), write p (2) m v (4 + 4) = 22
#   torch fused on bf16 params (bf16 states): 7 * 2 = 14
BYTES = {"adamw_fp32": 28, "adamw_clip_amp": 32, "torch_clip_amp": 48, "adamw_bf16_fp32": 22,
         "adamw_bf16_bf16": 14}


@dataclass
class Contender:
    name: str
    bytes_per_param: int
    step: Callable[[], None]
    prepare: Callable[[], None] = lambda: None  # run before each timed step, not timed
    times: list[float] = field(default_factory=list)


def gpt2_workload(max_params: int | None = None) -> workloads.Workload:
    """GPT-2 small, scaled down by one factor per dimension to at most ``max_params`` params
    when given (the smoke test's tiny run)."""
    w = workloads.named("gpt2-small")
    return w if max_params is None else workloads.scaled(w, max_params)


def make_params(shapes, dtype, seed=0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = []
    for s in shapes:
        p = torch.empty(s, dtype=torch.float32).uniform_(-0.1, 0.1, generator=gen).to(dtype)
        p.grad = (torch.empty(s, dtype=torch.float32).uniform_(-1e-3, 1e-3, generator=gen)
                  .to(dtype))
        params.append(p)
    return params


def fusedopt_contender(name, shapes, dtype, *, clip_amp=False) -> Contender:
    params = make_params(shapes, dtype)
    opt = fusedopt.AdamW(params, backend="cpu", max_grad_norm=MAX_NORM if clip_amp else None,
                         **HP)
    key = "adamw_clip_amp" if clip_amp else ("adamw_fp32" if dtype == torch.float32
                                             else "adamw_bf16_fp32")
    if not clip_amp:
        return Contender(name, BYTES[key], opt.step)
    scaler = LossScaler(init_scale=SCALE, growth_interval=10**9)
    for p in params:
        p.grad.mul_(SCALE)

    def step():
        scaler.step(opt)
        scaler.update()

    return Contender(name, BYTES[key], step)


def torch_contender(name, shapes, dtype, *, clip_amp=False) -> Contender:
    params = make_params(shapes, dtype)
    opt = torch.optim.AdamW(params, fused=True, **HP)
    if not clip_amp:
        key = "adamw_fp32" if dtype == torch.float32 else "adamw_bf16_bf16"
        return Contender(name, BYTES[key], opt.step)
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE, growth_interval=10**9)
    scaler.scale(torch.ones(()))  # GradScaler creates its scale tensor on the first scale()
    grads = [p.grad.mul_(SCALE).clone() for p in params]

    def prepare():
        # GradScaler.unscale_ divides the grads in place: restore the scaled grads (untimed),
        # or repeated steps would shrink them into the denormal range.
        for p, g in zip(params, grads):
            p.grad.copy_(g)

    def step():
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
        scaler.step(opt)
        scaler.update()

    return Contender(name, BYTES["torch_clip_amp"], step, prepare)


def deepspeed_contender(name, shapes, dtype) -> Contender | None:
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        print(f"DeepSpeed CPUAdam not available: {exc}")
        return None
    params = make_params(shapes, dtype)
    opt = DeepSpeedCPUAdam(params, adamw_mode=True, fp32_optimizer_states=True, **HP)
    key = "adamw_fp32" if dtype == torch.float32 else "adamw_bf16_fp32"
    return Contender(name, BYTES[key], opt.step)


def time_once(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_rounds(contenders: list[Contender], warmup: int, repeats: int) -> None:
    for c in contenders:
        for _ in range(warmup):
            c.prepare()
            c.step()
    for r in range(repeats):
        for i in range(len(contenders)):
            c = contenders[(i + r) % len(contenders)]
            c.prepare()
            c.times.append(time_once(c.step))


def quantiles(ts: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(ts, n=10, method="inclusive")
    return q[1], statistics.median(ts), q[7]


def roofline_contender(bytes_per_param: int, numel: int) -> Contender:
    """The in-place copy roofline of a scenario: ``buffer.mul_(1.0)`` over a buffer of half the
    bytes fusedopt's step moves, so that its read + write moves the same bytes per param.

    An earlier version timed numpy copies into a second buffer once, before the rounds; on an
    AMD EPYC guest that measured 25 GB/s while in-place passes ran at 50-60 GB/s (every row
    ~200% "of copy"), because a copy into another buffer also reads each written line for
    ownership, and timed apart from the contenders it saw a different machine load.
    """
    buf = torch.ones(max(2, bytes_per_param * numel // 8), dtype=torch.float32)
    return Contender("roofline: in-place copy", bytes_per_param, lambda: buf.mul_(1.0))


def python_overhead_us(shapes, repeats=2000) -> dict[str, float]:
    """Python cost of one eager cpu-backend adam_step_ on 148 cached tensors, without the kernel,
    and of a whole fusedopt.AdamW.step() on 148 one-element tensors."""
    from fusedopt.backends import cpu_backend

    params = make_params([[1]] * len(shapes), torch.float32)
    opt = fusedopt.AdamW(params, backend="cpu", **HP)
    opt.step()
    b = opt._last_plan.groups[0][1][0]
    stats = opt._stats

    def python_part():
        _native.bucket_table(b, "adam")
        _native.lr_args(1e-3)
        cpu_backend.VARIANT_CODES["adam"]
        stats.data_ptr()
        _native.num_threads()

    python_part()
    t_backend = min(time_once(lambda: [python_part() for _ in range(100)]) for _ in range(20)) / 100
    t_step = min(time_once(opt.step) for _ in range(repeats))
    return {"backend_python_us": t_backend * 1e6, "whole_step_1elem_us": t_step * 1e6}


def machine_metadata(threads: int) -> dict:
    model = "unknown"
    flags = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1]
    isa_flags = sorted(f for f in flags.split() if f.startswith(("avx", "f16c", "fma", "amx")))
    C = _native.native()
    try:
        import deepspeed
        ds = deepspeed.__version__
    except Exception:  # noqa: BLE001
        ds = "not installed"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).parent).stdout.strip()
    return {
        "cpu": model, "cpu_flags": " ".join(isa_flags), "logical_cpus": os.cpu_count(),
        "threads": threads, "fusedopt_isa": C.isa(), "torch": torch.__version__,
        "deepspeed": ds, "python": platform.python_version(), "commit": commit,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "loadavg_before": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-deepspeed", action="store_true")
    ap.add_argument("--max-params", type=int, default=None,
                    help="scale GPT-2 small down to at most this many params (smoke test)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    w = gpt2_workload(args.max_params)
    shapes, numel = w.shapes, w.numel
    label = f"{w.name.split('@')[0]}: {len(shapes)} tensors, {workloads.human(numel)} params"
    meta = machine_metadata(args.threads)
    meta["workload"] = label
    print(f"{label}, "
          f"{args.threads} threads, load {meta['loadavg_before']}")

    scenarios = {
        "fp32 AdamW": lambda: [
            fusedopt_contender("fusedopt cpu", shapes, torch.float32),
            torch_contender("torch fused", shapes, torch.float32),
            None if args.no_deepspeed else deepspeed_contender("DeepSpeed CPUAdam", shapes,
                                                               torch.float32)],
        "clip + AMP + AdamW": lambda: [
            fusedopt_contender("fusedopt cpu (2 passes)", shapes, torch.float32, clip_amp=True),
            torch_contender("torch unscale_+clip+fused", shapes, torch.float32, clip_amp=True)],
        "bf16 params": lambda: [
            fusedopt_contender("fusedopt cpu (fp32 states)", shapes, torch.bfloat16),
            torch_contender("torch fused (bf16 states)", shapes, torch.bfloat16),
            None if args.no_deepspeed else deepspeed_contender(
                "DeepSpeed CPUAdam (fp32 states)", shapes, torch.bfloat16)],
    }
    rows = []
    for scenario, build in scenarios.items():
        contenders = [c for c in build() if c is not None]
        roof = roofline_contender(contenders[0].bytes_per_param, numel)
        run_rounds(contenders + [roof], args.warmup, args.repeats)
        ours = statistics.median(contenders[0].times)
        roof_gbps = roof.bytes_per_param * numel / statistics.median(roof.times) / 1e9
        for c in contenders + [roof]:
            p20, med, p80 = quantiles(c.times)
            gbps = c.bytes_per_param * numel / med / 1e9
            rows.append({"scenario": scenario, "contender": c.name, "median_ms": med * 1e3,
                         "p20_ms": p20 * 1e3, "p80_ms": p80 * 1e3, "GBps": gbps,
                         "pct_copy_roofline": 100 * gbps / roof_gbps,
                         "bytes_per_param": c.bytes_per_param,
                         "fusedopt_speedup": None if c is roof else med / ours})
            print(f"{scenario:<20} {c.name:<34} {med * 1e3:8.1f} ms  "
                  f"[{p20 * 1e3:.1f}, {p80 * 1e3:.1f}]  {gbps:6.1f} GB/s "
                  f"({rows[-1]['pct_copy_roofline']:.0f}% of copy)"
                  + ("" if c is roof else f"  fusedopt x{med / ours:.2f}"))
        del contenders, roof
    overhead = python_overhead_us(shapes)
    print(f"python overhead: backend {overhead['backend_python_us']:.1f} us per adam_step_ "
          f"(148 tensors, tables cached); whole step on 148 one-element tensors "
          f"{overhead['whole_step_1elem_us']:.1f} us")
    meta["loadavg_after"] = os.getloadavg()
    if args.out is not None:
        write_results(args.out, meta, rows, overhead)


def write_results(out: Path, meta, rows, overhead) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_cpu_adamw.json").write_text(json.dumps(
        {"metadata": meta, "rows": rows, "python_overhead": overhead},
        indent=2) + "\n")
    lines = [
        f"# bench_cpu_adamw: {meta['workload']}", "",
        f"{meta['cpu']} ({meta['cpu_flags']}), {meta['threads']} threads, fusedopt ISA "
        f"{meta['fusedopt_isa']}, torch {meta['torch']}, DeepSpeed {meta['deepspeed']}, "
        f"commit {meta['commit']}, {meta['date']}, load average before "
        f"{meta['loadavg_before'][0]:.2f} / after {meta['loadavg_after'][0]:.2f}", "",
        "Roofline: `buffer.mul_(1.0)` (in-place read + write, torch, same threads) over a buffer "
        "moving the bytes of fusedopt's step in each scenario, timed in the same rounds; "
        "% copy is against the scenario's roofline row.", "",
        "| scenario | contender | median ms | p20 | p80 | B/param | GB/s | % copy | "
        "fusedopt speedup |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['contender']} | {r['median_ms']:.1f} | "
                     f"{r['p20_ms']:.1f} | {r['p80_ms']:.1f} | {r['bytes_per_param']} | "
                     f"{r['GBps']:.1f} | {r['pct_copy_roofline']:.0f}% | "
                     + ("- |" if r["fusedopt_speedup"] is None else
                        f"{r['fusedopt_speedup']:.2f}x |"))
    lines += ["", f"Python overhead: {overhead['backend_python_us']:.1f} us per cpu-backend "
              f"adam_step_ (148 tensors, tables cached, kernel excluded); a whole "
              f"fusedopt.AdamW.step() on 148 one-element tensors: "
              f"{overhead['whole_step_1elem_us']:.1f} us.", ""]
    (out / "bench_cpu_adamw.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
