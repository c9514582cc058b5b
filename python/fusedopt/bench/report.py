"""What a run prints and writes: progress, the terminal table, the CSV, the Markdown table."""
from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import TextIO

from .results import Row, Skipped
from .workloads import human

#: Run-level metadata repeated on every CSV row, so a row read alone still says where it ran.
CSV_META = ("date", "machine", "device", "cpu", "gpu", "threads", "torch", "commit")

_HEAD = ("contender", "median ms", "p20 ms", "p80 ms", "GB/s", "% copy", "vs best peer",
         "state", "B/param")


class Progress:
    """Progress on stderr: one line per case, then the warm-up and the rounds as they run
    (rewritten in place on a terminal, one line per phase change in a log)."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = total
        self.stream = stream
        self.tty = stream.isatty()
        self._last = ""

    def case(self, index: int, text: str) -> None:
        self._end_line()
        print(f"[{index}/{self.total}] {text}", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        self._end_line()
        print(f"    {text}", file=self.stream, flush=True)

    def __call__(self, phase: str, name: str, index: int, total: int) -> None:
        """Harness callback: ("warmup" | "round", contender, i, n)."""
        if phase == "warmup":
            text = f"    warm-up {name} ({index}/{total})"
        else:
            text = f"    round {index}/{total}"
            if self.tty:
                text += f": {name}"
        if text == self._last:
            return
        self._last = text
        if self.tty:
            print("\r\033[K" + text, end="", file=self.stream, flush=True)
        else:
            print(text, file=self.stream, flush=True)

    def _end_line(self) -> None:
        if self.tty and self._last:
            print("\r\033[K", end="", file=self.stream, flush=True)
        self._last = ""


def _ms(x: float) -> str:
    return f"{x:.1f}" if x >= 100 else f"{x:.2f}" if x >= 1 else f"{x:.4f}"


def _cells(r: Row) -> list[str]:
    return [
        r.contender, _ms(r.median_ms), _ms(r.p20_ms), _ms(r.p80_ms), f"{r.gbps:.1f}",
        "-" if r.pct_copy is None else f"{r.pct_copy:.0f}%",
        "-" if r.speedup is None else f"{r.speedup:.2f}x",
        r.state_dtype, f"{r.bytes_per_param:.0f}",
    ]


def case_header(rows: list[Row], mode_doc: str) -> str:
    r = rows[0]
    return (f"{r.workload} ({r.tensors} tensors, {human(r.params)} params) · {r.algorithm} "
            f"· {r.mode}: {mode_doc} · load {r.load1:.2f}")


def text_table(rows: list[Row]) -> str:
    """The rows of one case as an aligned text table."""
    body = [list(_HEAD)] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in body) for i in range(len(_HEAD))]
    out = []
    for line in body:
        out.append("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                    for i, (c, w) in enumerate(zip(line, widths))))
    return "\n".join(out)


def skipped_lines(skipped: list[Skipped]) -> list[str]:
    return [f"  skipped {s.contender}: {s.reason}" for s in skipped]


def legend(rows: list[Row]) -> list[str]:
    """What each contender ran, once per distinct implementation."""
    order = list(dict.fromkeys(r.contender for r in rows))
    seen: dict[tuple[str, str], list[str]] = {}
    for r in sorted(rows, key=lambda r: order.index(r.contender)):
        seen.setdefault((r.contender, r.impl), [])
        if r.mode not in seen[(r.contender, r.impl)]:
            seen[(r.contender, r.impl)].append(r.mode)
    return [f"  {name} [{', '.join(modes)}]: {impl}" for (name, impl), modes in seen.items()]


def markdown(rows: list[Row]) -> str:
    """All rows as one Markdown table (the form committed in bench/README.md)."""
    head = ("workload", "algorithm", "mode") + _HEAD
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---|" + "---:|" * 6 + "---|---:|"]
    for r in rows:
        cells = [r.workload, r.algorithm, r.mode] + _cells(r)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(path: Path, rows: list[Row], meta: dict) -> None:
    """One line per row: the run's metadata columns, then every :class:`Row` field."""
    run = {k: meta.get(k) for k in CSV_META}
    run["torch"] = meta.get("versions", {}).get("torch")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(CSV_META) + Row.columns())
        w.writeheader()
        for r in rows:
            w.writerow({**run, **r.as_dict()})
