"""The plans (which cases a run times) and the loop that runs them, one case at a time.

* short (the default, README command 1): GPT-2 small, AdamW, plain / clip+AMP / bf16, every
  fusedopt backend and installed peer, the roofline: a few minutes on 2 CPU cores.
* full (``--full``): GPT-2 small AdamW in every mode; the Llama-style list scaled to the
  memory budget; the size sweep (one tensor and many) for AdamW against torch's fused and
  foreach implementations; and every other algorithm of the registry on GPT-2 small, plain and
  clip+AMP, against its torch.optim equivalent where there is one (not compiled).

Memory: a case holds params and grads once, each optimizer contender's states, and the roofline
buffer. A case whose estimate exceeds the budget (``mem_fraction`` of what the device has free
when the case starts) is skipped with the numbers, never started.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Iterator

import torch

from .. import registry
from . import metadata, modes, workloads
from .bytes_model import fusedopt_state_dtype, resident_bytes
from .case import Case
from .contenders import ROOFLINE, Contender, Skip
from .harness import Clock, interleaved
from .modes import Mode
from .report import Progress
from .results import Row, Skipped, case_rows
from .roofline import working_set_bytes
from .workloads import Workload

SHORT_MODES = ("plain", "clip_amp", "bf16")
#: Contenders of the size sweep: the scaling story needs the fused and foreach baselines only.
SWEEP_PEERS = ("torch.fused", "torch.foreach")
#: Left out of the other algorithms' cases of the full plan: a ~40 s compile per case on 2 CPU
#: cores (measured for GPT-2 small's 148 tensors) would double the full run for little news.
OTHERS_EXCLUDE = ("torch.compile",)
#: Name under which a plan asks for the size sweep.
SWEEP = "sweep"


@dataclass(frozen=True)
class CaseSpec:
    """One case of a plan; ``only`` limits it to some contenders and ``exclude`` leaves some out
    (prefixes of their names; the roofline always runs)."""

    workload: Workload
    algorithm: str
    mode: Mode
    only: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()

    def selects(self, contender: Contender) -> bool:
        if contender.kind == ROOFLINE:
            return True
        if contender.algorithms is not None and self.algorithm not in contender.algorithms:
            return False
        if any(contender.name.startswith(x) for x in self.exclude):
            return False
        return self.only is None or any(contender.name.startswith(o) for o in self.only)


@dataclass
class Settings:
    """How to time: the device, warm-up calls, timed rounds, minimum sample length, memory."""

    device: torch.device
    repeats: int = 5
    warmup: int = 2
    min_sample_s: float = 0.01
    mem_fraction: float = 0.5
    seed: int = 0


def bytes_per_param_needed(algorithm: str, mode: Mode, optimizers: int) -> int:
    """Memory a case needs per param: shared params and grads, every optimizer's states
    (fusedopt's state dtype, an upper bound for torch's 16-bit states), the roofline buffer."""
    sdt = fusedopt_state_dtype(mode)
    shared = 2 * mode.param_dtype.itemsize
    states = resident_bytes(algorithm, mode, sdt) - shared
    return shared + optimizers * states + resident_bytes(algorithm, mode, sdt)


def _expand(names: list[str], max_params: int | None, sweep_sizes: tuple[int, ...],
            fit_params: int) -> list[Workload]:
    out = []
    for name in names:
        if name == SWEEP:
            out.extend(workloads.sweep(sweep_sizes))
            continue
        w = workloads.named(name)
        if name.startswith("llama"):  # scaled to the machine: the whole list rarely fits
            w = workloads.scaled(w, fit_params)
        out.append(w if max_params is None else workloads.scaled(w, max_params))
    return out


def plan(workload_names: list[str], algorithms: list[str], mode_names: list[str], *,
         max_params: int | None = None, sweep_sizes: tuple[int, ...] = workloads.SWEEP_SIZES,
         fit_params: int = 1 << 62, only: tuple[str, ...] | None = None,
         exclude: tuple[str, ...] = ()) -> list[CaseSpec]:
    """Every (workload, algorithm, mode) of the lists, workloads outermost."""
    for a in algorithms:
        registry.get(a)
    ms = [modes.get(m) for m in mode_names]
    return [CaseSpec(w, a, m, only, exclude)
            for w in _expand(workload_names, max_params, sweep_sizes, fit_params)
            for a in algorithms for m in ms]


def short_plan(*, max_params: int | None = None) -> list[CaseSpec]:
    """README command 1: GPT-2 small AdamW, plain / clip+AMP / bf16."""
    return plan(["gpt2-small"], ["adamw"], list(SHORT_MODES), max_params=max_params)


def full_plan(*, max_params: int | None = None,
              sweep_sizes: tuple[int, ...] = workloads.SWEEP_SIZES,
              fit_params: int = 1 << 62) -> list[CaseSpec]:
    """Everything: see the module docstring."""
    others = [a for a in registry.ALGORITHMS if a != "adamw"]
    return (plan(["gpt2-small"], ["adamw"], list(modes.MODES), max_params=max_params)
            + plan(["llama-1b-like"], ["adamw"], list(SHORT_MODES), max_params=max_params,
                   fit_params=fit_params)
            + plan([SWEEP], ["adamw"], ["plain"], sweep_sizes=sweep_sizes,
                   only=("fusedopt.",) + SWEEP_PEERS)
            + plan(["gpt2-small"], others, ["plain", "clip_amp"], max_params=max_params,
                   exclude=OTHERS_EXCLUDE))


def budget_bytes(settings: Settings) -> int:
    return int(workloads.available_memory(settings.device) * settings.mem_fraction)


def run(specs: list[CaseSpec], contenders: list[Contender], settings: Settings,
        progress: Progress) -> Iterator[tuple[CaseSpec, list[Row], list[Skipped]]]:
    """Time every case of ``specs``; yields each case's rows and skips as soon as it is done."""
    clock = Clock(settings.device)
    for i, spec in enumerate(specs):
        case = Case(spec.workload, spec.algorithm, spec.mode, settings.device)
        selected = [c for c in contenders if spec.selects(c)]
        optimizers = sum(c.kind != ROOFLINE for c in selected)
        need = spec.workload.numel * bytes_per_param_needed(spec.algorithm, spec.mode, optimizers)
        budget = budget_bytes(settings)
        progress.case(i + 1, f"{spec.workload.describe()} · {spec.algorithm} · {spec.mode.name}"
                             f" · {len(selected)} contenders, ~{need / 2**30:.1f} GiB")
        if need > budget:
            yield spec, [], [Skipped(case.label, "(whole case)",
                                     f"needs ~{need / 2**30:.1f} GiB, budget "
                                     f"{budget / 2**30:.1f} GiB (--mem-fraction)")]
            continue
        load1 = metadata.load_average()
        skipped: list[Skipped] = []
        case.allocate(settings.seed)
        setups = []
        for c in selected:
            try:
                setups.append((c, c.build(case)))
            except Skip as exc:
                skipped.append(Skipped(case.label, c.name, str(exc)))
            except Exception as exc:  # a peer that breaks on setup is reported, not fatal
                skipped.append(Skipped(case.label, c.name, f"{type(exc).__name__}: {exc}"[:300]))
        progress.note(f"roofline buffer {working_set_bytes(case) / 2**30:.2f} GiB; timing "
                      f"{settings.warmup} warm-up + {settings.repeats} interleaved rounds")
        timings, failures = interleaved(
            {c.name: r.step for c, r in setups}, clock, warmup=settings.warmup,
            repeats=settings.repeats, min_sample_s=settings.min_sample_s, progress=progress,
            after={c.name: r.after for c, r in setups if r.after is not None})
        skipped += [Skipped(case.label, name, why) for name, why in failures.items()]
        rows = case_rows(case, setups, timings, load1)
        del setups
        case.release()
        torch.compiler.reset()  # compiled steps hold the case's optimizers and tensors
        gc.collect()
        if settings.device.type == "cuda":
            torch.cuda.empty_cache()
        yield spec, rows, skipped
