"""Reproductions of the five source papers' claims, run through the fusedopt optimizers.

Each module reproduces one experiment of docs/algorithms.md#papers, seeded, in minutes on 2 CPU
cores, and returns a :class:`~fusedopt.papers._common.Report` (claims with verdicts, tables, a
figure). ``python -m fusedopt.papers all|p1|...|p5 [--backend ...] [--fast]`` runs them and writes
``bench/results/papers/<name>.md`` and ``.png``; ``--fast`` is the subset the tests run.

Data come only from generators in the modules and from datasets bundled inside scikit-learn
(digits, diabetes): nothing is downloaded.
"""
from __future__ import annotations

import importlib
from types import ModuleType

#: CLI key -> module (and file stem of the outputs)
EXPERIMENTS = {
    "p1": "p1_adaml",
    "p2": "p2_adamd",
    "p3": "p3_pl",
    "p4": "p4_nonconvergence",
    "p5": "p5_iansgd",
}


def load(key: str) -> ModuleType:
    """The reproduction module of ``key`` ("p1" ... "p5")."""
    if key not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {key!r}; one of {sorted(EXPERIMENTS)}")
    return importlib.import_module(f"{__name__}.{EXPERIMENTS[key]}")


__all__ = ["EXPERIMENTS", "load"]
