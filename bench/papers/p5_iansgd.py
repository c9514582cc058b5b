"""P5 (Yang et al. 2025): IAN-SGD vs NSGD, NSGDm, Clip-SGD, SGD.

Thin wrapper of ``python -m fusedopt.papers p5``: same options (``--backend``, ``--fast``,
``--out``); writes to this repository's bench/results/papers/ unless ``--out`` is given.
"""
import sys
from pathlib import Path

from fusedopt.papers.__main__ import main

RESULTS = Path(__file__).resolve().parents[1] / "results" / "papers"

if __name__ == "__main__":
    sys.exit(main(["p5", "--out", str(RESULTS), *sys.argv[1:]]))
