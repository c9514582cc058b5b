"""``python -m fusedopt``: the command-line entry points, or ``python -m fusedopt NAME ARGS``
to run one (the same as ``python -m fusedopt.NAME ARGS``)."""
from __future__ import annotations

import runpy
import sys

#: Entry point -> what it does (each is ``python -m fusedopt.<name>``; ``--help`` on each).
ENTRY_POINTS = {
    "env": "what this install can run: versions, native build, CPU ISA, OpenMP, backends",
    "bench": "benchmark against torch and other peers on this machine (ratios, roofline)",
    "demo": "a short training run, fusedopt next to torch.optim",
    "monitor": "convergence monitor tools: plot CSV logs, P4's lr-policy demo",
    "papers": "reproduce the papers' claims (p1..p5, all)",
}


def menu() -> str:
    width = max(map(len, ENTRY_POINTS))
    lines = ["usage: python -m fusedopt [NAME [ARGS ...]]", "", "entry points "
             "(python -m fusedopt.NAME --help for each):"]
    lines += [f"  {name:<{width}}  {doc}" for name, doc in ENTRY_POINTS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(menu())
        return 0
    if args[0] not in ENTRY_POINTS:
        print(f"python -m fusedopt: unknown entry point {args[0]!r}; choose from "
              f"{', '.join(ENTRY_POINTS)}", file=sys.stderr)
        return 2
    sys.argv = [f"python -m fusedopt.{args[0]}", *args[1:]]
    runpy.run_module(f"fusedopt.{args[0]}", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
