"""``python -m fusedopt.papers all|p1|p2|p3|p4|p5 [--backend NAME] [--fast] [--out DIR]``.

Runs the reproductions, prints one verdict line per claim and writes ``<name>.md`` and
``<name>.png`` (``<name>_fast.*`` with ``--fast``, so a quick run never overwrites the committed
full results) under ``--out`` (default ``bench/results/papers`` of the working directory);
``all`` also writes ``SUMMARY.md`` (``SUMMARY_fast.md``), every verdict in one table.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from . import EXPERIMENTS, load
from ._common import DEFAULT_OUT_DIR, write_report, write_summary


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status (0 when every run finished)."""
    parser = argparse.ArgumentParser(prog="python -m fusedopt.papers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["all", *EXPERIMENTS], help="experiment(s) to run")
    parser.add_argument("--backend", default="auto",
                        help="fusedopt backend of every optimizer under test (default auto)")
    parser.add_argument("--fast", action="store_true", help="the short subset the tests run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR,
                        help=f"output folder (default {DEFAULT_OUT_DIR})")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the problems are tiny, and more threads "
                             "only add overhead on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keys = list(EXPERIMENTS) if args.which == "all" else [args.which]
    reports = []
    for key in keys:
        report = load(key).run(backend=args.backend, fast=args.fast)
        paths = write_report(report, args.out)
        print(f"== {report.title} ({report.seconds:.0f} s, backend {report.backend})")
        for line in report.verdict_lines():
            print(line)
        print("   wrote " + ", ".join(str(p) for p in paths), flush=True)
        reports.append(report)
    if args.which == "all":
        print("   wrote " + str(write_summary(reports, args.out)))
    not_reproduced = sum(not c.reproduced for r in reports for c in r.claims)
    print(f"{not_reproduced} claim(s) not reproduced" if not_reproduced
          else "every claim reproduced")
    return 0


if __name__ == "__main__":
    sys.exit(main())
