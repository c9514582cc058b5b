"""``python -m fusedopt.bench``: see :mod:`fusedopt.bench.cli` (``--help``)."""
from .cli import main

raise SystemExit(main())
