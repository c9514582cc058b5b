"""Command line of the monitor.

``python -m fusedopt.monitor plot run.csv [more.csv ...] -o run.png [--labels ...]``
    draw monitor CSV logs as one multi-panel PNG (needs matplotlib).
``python -m fusedopt.monitor demo --out DIR [--steps N]``
    run P4's quadratic under several lr policies with the monitor attached, write one CSV per
    policy, the PNG and a Markdown summary into DIR.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

PROG = "python -m fusedopt.monitor"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG,
                                     description="fusedopt convergence monitor tools")
    sub = parser.add_subparsers(dest="command", required=True)
    p_plot = sub.add_parser("plot", help="draw monitor CSV logs as a multi-panel PNG")
    p_plot.add_argument("csv", nargs="+", help="CSV files written by ConvergenceMonitor")
    p_plot.add_argument("-o", "--output", required=True, help="PNG to write")
    p_plot.add_argument("--labels", nargs="+", help="one label per CSV (default: file names)")
    p_plot.add_argument("--title", help="figure title")
    p_demo = sub.add_parser("demo", help="P4's quadratic under several lr policies")
    p_demo.add_argument("--out", required=True, help="output directory")
    p_demo.add_argument("--steps", type=int, default=20_000)
    p_demo.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)
    if args.command == "plot":
        missing = [f for f in args.csv if not os.path.isfile(f)]
        if missing:  # a usage error: one line, exit 2 (argparse's code), no traceback
            print(f"{PROG} plot: no such file: {', '.join(missing)}", file=sys.stderr)
            return 2
        from .plot import plot_runs
        plot_runs(args.csv, args.output, labels=args.labels, title=args.title)
        print(f"wrote {args.output}")
        return 0
    from .demo import run_demo
    print(run_demo(args.out, steps=args.steps, backend=args.backend))
    return 0


if __name__ == "__main__":
    sys.exit(main())
