"""The pytest-benchmark view of the suite, for the thin ``bench/bench_<algorithm>.py`` files.

pytest-benchmark times one contender after another (no interleaving), so its numbers are for
its history and comparison tooling; speed claims come from ``python -m fusedopt.bench``, whose
contenders take turns in one run. Both build the same cases and contenders from this package.

``FUSEDOPT_BENCH_MAX_PARAMS`` scales the workload down (e.g. 3000 for a smoke run with
``--benchmark-disable``); by default it is the full GPT-2 small list. ``FUSEDOPT_BENCH_PEERS``
(comma list, or "none") picks the peers; by default every installed one.
"""
from __future__ import annotations

import os

import pytest
import torch

from . import roofline
from .case import Case
from .contenders import Contender, Skip, fusedopt_contenders
from .modes import get as get_mode
from .peers import peer_contenders
from .suite import CaseSpec, plan

ENV_MAX_PARAMS = "FUSEDOPT_BENCH_MAX_PARAMS"
ENV_PEERS = "FUSEDOPT_BENCH_PEERS"


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cases(algorithm: str, modes: tuple[str, ...] = ("plain", "clip_amp", "bf16"),
          workload: str = "gpt2-small") -> list[CaseSpec]:
    """The cases of one algorithm, scaled by ``FUSEDOPT_BENCH_MAX_PARAMS`` when it is set."""
    max_params = os.environ.get(ENV_MAX_PARAMS)
    for m in modes:
        get_mode(m)
    return plan([workload], [algorithm], list(modes),
                max_params=int(max_params) if max_params else None)


def contenders() -> list[Contender]:
    """fusedopt's backends, the installed peers and the roofline, for this machine's device."""
    dev = device()
    wanted = os.environ.get(ENV_PEERS)
    names = None if wanted is None else [p for p in wanted.split(",") if p and p != "none"]
    return fusedopt_contenders(dev)[0] + peer_contenders(dev, names)[0] + roofline.CONTENDERS


def run(benchmark, spec: CaseSpec, contender: Contender, rounds: int = 5) -> None:
    """Time ``contender`` on ``spec`` with pytest-benchmark (skips when it cannot run it)."""
    case = Case(spec.workload, spec.algorithm, spec.mode, device())
    case.allocate()
    try:
        try:
            runner = contender.build(case)
        except Skip as exc:
            pytest.skip(str(exc))
        benchmark.extra_info.update(workload=spec.workload.describe(),
                                    impl=runner.impl)
        benchmark.pedantic(runner.step, rounds=rounds, warmup_rounds=2, iterations=1)
    finally:
        case.release()
        torch.compiler.reset()
