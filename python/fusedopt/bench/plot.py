"""The PNGs of a run (matplotlib, optional: without it the run writes no PNG and says so).

* ``<name>.png``: one panel per (workload, algorithm); for each mode a group of bars, one per
  contender, the median step time with p20-p80 whiskers, and a black tick at the copy-roofline
  time: the fused byte count moved at the same-run ``copy_`` bandwidth, the fastest a
  memory-bound step could run.
* ``<name>-sweep.png`` (when the run has a size sweep): achieved GB/s against the param count,
  one tensor and many tensors, with the copy and read rooflines.
"""
from __future__ import annotations

import math
from pathlib import Path

from .contenders import FUSEDOPT, ROOFLINE
from .results import Row
from .roofline import COPY, READ
from .workloads import human


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _colors(rows: list[Row]) -> dict[str, tuple]:
    plt = _pyplot()
    names = list(dict.fromkeys(r.contender for r in rows))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _roofline_ms(rows: list[Row]) -> float | None:
    """Time to move the fused step's bytes at the copy bandwidth of the same case."""
    copy = next((r for r in rows if r.contender == COPY.name), None)
    fused = [r for r in rows if r.kind == FUSEDOPT] or [r for r in rows if r.kind != ROOFLINE]
    if copy is None or not fused:
        return None
    return min(r.bytes_per_param for r in fused) * fused[0].params / (copy.gbps * 1e9) * 1e3


def _bars(ax, rows: list[Row], colors: dict) -> None:
    modes = list(dict.fromkeys(r.mode for r in rows))
    names = list(dict.fromkeys(r.contender for r in rows if r.kind != ROOFLINE))
    width = 0.8 / max(1, len(names))
    labeled: set[str] = set()
    for mi, mode in enumerate(modes):
        group = [r for r in rows if r.mode == mode]
        for ni, name in enumerate(names):
            r = next((x for x in group if x.contender == name), None)
            if r is None:
                continue
            x = mi - 0.4 + width * (ni + 0.5)
            ax.bar(x, r.median_ms, width, color=colors[name],
                   label=None if name in labeled else name,
                   yerr=[[r.median_ms - r.p20_ms], [r.p80_ms - r.median_ms]], capsize=2)
            labeled.add(name)
            if r.speedup is not None and r.kind == FUSEDOPT:
                ax.annotate(f"{r.speedup:.2f}x", (x, r.p80_ms), ha="center", va="bottom",
                            fontsize=7)
        roof = _roofline_ms(group)
        if roof is not None:
            ax.hlines(roof, mi - 0.45, mi + 0.45, colors="black", linewidth=2,
                      label=None if "copy roofline" in labeled else "copy roofline")
            labeled.add("copy roofline")
    ax.set_xticks(range(len(modes)), modes)
    ax.set_ylabel("median step time, ms (lower is better)")


def _sweep(ax, rows: list[Row], colors: dict, title: str) -> None:
    combos = list(dict.fromkeys((r.algorithm, r.mode) for r in rows))
    for name, algo, mode in dict.fromkeys((r.contender, r.algorithm, r.mode) for r in rows):
        pts = sorted((r.params, r.gbps) for r in rows
                     if (r.contender, r.algorithm, r.mode) == (name, algo, mode))
        style = "--" if name in (COPY.name, READ.name) else "-"
        label = name if len(combos) == 1 else f"{name} {algo}/{mode}"
        ax.plot([p for p, _ in pts], [g for _, g in pts], style, marker="o", label=label,
                color="black" if name == COPY.name else "gray" if name == READ.name
                else colors[name])
    ax.set_xscale("log")
    ax.set_xlabel("params")
    ax.set_ylabel("GB/s (bytes model / median time)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)


def write_pngs(out: Path, name: str, rows: list[Row], title: str) -> list[Path]:
    """Write the run's PNGs under ``out``; returns their paths."""
    plt = _pyplot()
    colors = _colors(rows)
    written = []
    main = [r for r in rows if not r.workload.startswith("sweep-")]
    panels = list(dict.fromkeys((r.workload, r.algorithm) for r in main))
    if panels:
        ncols = 1 if len(panels) == 1 else 2
        nrows = math.ceil(len(panels) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(7 * ncols, 4.2 * nrows), squeeze=False)
        for ax, (wl, algo) in zip(axes.flat, panels):
            sel = [r for r in main if r.workload == wl and r.algorithm == algo]
            _bars(ax, sel, colors)
            ax.set_title(f"{wl} ({sel[0].tensors} tensors, {human(sel[0].params)} params)"
                         f" · {algo} · above fusedopt bars: speedup vs best peer", fontsize=9)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    sweep = [r for r in rows if r.workload.startswith("sweep-")]
    if sweep:
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), squeeze=False)
        one = [r for r in sweep if r.tensors == 1]
        many = [r for r in sweep if r.tensors > 1]
        _sweep(axes[0][0], one, colors, "one tensor")
        _sweep(axes[0][1], many, colors,
               f"{many[0].tensors} equal tensors" if many else "many tensors")
        axes[0][0].legend(fontsize=7)
        fig.suptitle(title + " · size sweep", fontsize=10)
        fig.tight_layout()
        path = out / f"{name}-sweep.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
