"""One result row per (case, contender), with the derived columns: GB/s, % of roofline, speedup.

* ``gbps``: the bytes model's bytes per param (:mod:`fusedopt.bench.bytes_model`, with the
  contender's own state dtype) times the param count, over the median time; the roofline rows
  use the bytes their kernel moves.
* ``pct_copy``: ``gbps`` over the same case's ``roofline.copy`` GB/s, in percent.
* ``speedup``: the best peer's median over this contender's median (> 1: faster than every
  peer; the best peer itself shows 1.00). Peers are every non-fusedopt optimizer contender.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch

from .bytes_model import fused_bytes
from .case import Case
from .contenders import FUSEDOPT, PEER, Contender, Runner, state_dtype
from .harness import Timing
from .roofline import COPY


def dtype_name(dtype: torch.dtype | None) -> str:
    return "-" if dtype is None else str(dtype).replace("torch.", "").replace("float", "fp") \
        .replace("bfp16", "bf16")


@dataclass
class Row:
    """One contender's timing on one case (times in milliseconds)."""

    workload: str
    tensors: int
    params: int
    algorithm: str
    mode: str
    contender: str
    kind: str
    impl: str
    param_dtype: str
    state_dtype: str
    bytes_per_param: float
    median_ms: float
    p20_ms: float
    p80_ms: float
    samples: int
    inner: int
    gbps: float
    pct_copy: float | None
    speedup: float | None
    best_peer: str
    load1: float

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Skipped:
    """A contender left out of a case (or a whole case), and why."""

    case: str
    contender: str
    reason: str


def case_rows(case: Case, setups: list[tuple[Contender, Runner]], timings: dict[str, Timing],
              load1: float) -> list[Row]:
    """Rows for every timed contender of ``case``, derived columns filled in."""
    n = case.workload.numel
    rows = []
    for contender, runner in setups:
        t = timings.get(contender.name)
        if t is None:
            continue
        sdt = state_dtype(runner, case)
        bpp = (runner.moved_bytes / n if runner.moved_bytes is not None
               else fused_bytes(case.algorithm, case.mode, sdt))
        rows.append(Row(
            workload=case.workload.name, tensors=case.workload.tensors, params=n,
            algorithm=case.algorithm, mode=case.mode.name, contender=contender.name,
            kind=contender.kind, impl=runner.impl, param_dtype=dtype_name(case.mode.param_dtype),
            state_dtype=dtype_name(sdt), bytes_per_param=bpp, median_ms=t.median * 1e3,
            p20_ms=t.p20 * 1e3, p80_ms=t.p80 * 1e3, samples=len(t.samples), inner=t.inner,
            gbps=bpp * n / t.median / 1e9, pct_copy=None, speedup=None, best_peer="",
            load1=load1))
    copy = next((r for r in rows if r.contender == COPY.name), None)
    peers = [r for r in rows if r.kind == PEER]
    best = min(peers, key=lambda r: r.median_ms) if peers else None
    for r in rows:
        if copy is not None:
            r.pct_copy = 100.0 * r.gbps / copy.gbps
        if best is not None and r.kind in (FUSEDOPT, PEER):
            r.speedup = best.median_ms / r.median_ms
            r.best_peer = best.contender
    return rows
