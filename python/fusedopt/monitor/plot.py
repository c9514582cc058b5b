"""A multi-panel PNG of one or more monitor CSV logs: loss, lr, norms, update ratio, firings.

Host-side only; needs matplotlib (imported here, not by :mod:`fusedopt.monitor`). Uses the
object-oriented ``matplotlib.figure.Figure`` API, so no GUI backend and no global state.
"""
from __future__ import annotations

import csv
import math
import os
from typing import Sequence

import numpy as np


def load_run(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a monitor CSV into one float array per column (empty cells become NaN)."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        missing = [c for c in ("step", "loss", "lr") if c not in header]
        if missing:
            raise ValueError(f"{path}: not a ConvergenceMonitor CSV (missing {missing})")
        cells = list(reader)
    return {name: np.array([float(r[i]) if r[i] != "" else math.nan for r in cells])
            for i, name in enumerate(header)}


def _smooth(y: np.ndarray, n: int) -> np.ndarray:
    """Trailing mean over ``n`` points, ignoring NaN (a readable line through noisy losses)."""
    ok = np.isfinite(y)
    num = np.convolve(np.where(ok, y, 0.0), np.ones(n), mode="full")[: len(y)]
    den = np.convolve(ok.astype(float), np.ones(n), mode="full")[: len(y)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def _scale_to(ax, *arrays: np.ndarray) -> None:
    """Log axis when every value is positive; limits from ``arrays`` (the smoothed curves), so
    single noisy steps (a per-sample loss near 0) do not squash the picture."""
    vals = np.concatenate([a[np.isfinite(a)] for a in arrays])
    if not vals.size:
        return
    lo, hi = float(vals.min()), float(vals.max())
    if lo > 0:
        ax.set_yscale("log")
        ax.set_ylim(lo / 1.5, hi * 1.5)
    else:
        pad = 0.05 * (hi - lo) or 1.0
        ax.set_ylim(lo - pad, hi + pad)


def plot_runs(paths: Sequence[str | os.PathLike], out: str | os.PathLike,
              labels: Sequence[str] | None = None, title: str | None = None) -> None:
    """Write a PNG with four panels sharing the step axis, one colour per run.

    Panels: loss (raw, trailing mean, window means), lr, grad and param norms (trailing means;
    the clip coefficient when clipping happened), and the update ratio ``||dp|| / ||p||`` (raw,
    trailing mean, window means, plateau windows shaded). A dashed vertical line marks each
    step at which the monitor fired; crosses on the loss curve mark skipped (found_inf) steps.
    The y limits follow the smoothed curves; single noisy rows may leave the frame.
    """
    from matplotlib.figure import Figure

    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"plot_runs: {len(labels)} labels for {len(paths)} runs")
    runs = [load_run(p) for p in paths]
    labels = list(labels) if labels is not None else [os.path.basename(os.fspath(p))
                                                       for p in paths]
    fig = Figure(figsize=(11, 11), layout="constrained")
    ax_loss, ax_lr, ax_norm, ax_ratio = fig.subplots(4, 1, sharex=True)
    smooth: dict[str, list[np.ndarray]] = {"loss": [], "lr": [], "norm": [], "ratio": []}
    for i, (run, label) in enumerate(zip(runs, labels)):
        c = f"C{i % 10}"
        step = run["step"]
        n = max(1, len(step) // 60)
        wend = np.isfinite(run["loss_window_mean"])
        loss_s = _smooth(run["loss"], n)
        ax_loss.plot(step, run["loss"], color=c, alpha=0.1, lw=0.5)
        ax_loss.plot(step, loss_s, color=c, lw=1.2, label=f"{label} (mean of {n} rows)")
        ax_loss.plot(step[wend], run["loss_window_mean"][wend], "o", color=c, ms=3,
                     label=f"{label}: window mean")
        skipped = run["found_inf"] == 1.0
        if skipped.any():
            ax_loss.plot(step[skipped], loss_s[skipped], "x", color=c, ms=6,
                         label=f"{label}: skipped step")
        ax_lr.plot(step, run["lr"], color=c, lw=1.2, label=label)
        grad_s, param_s = _smooth(run["grad_norm"], n), _smooth(run["param_norm"], n)
        ax_norm.plot(step, grad_s, color=c, lw=1.0, ls=":", label=f"{label}: grad norm")
        ax_norm.plot(step, param_s, color=c, lw=1.2, label=f"{label}: param norm")
        if (run["clip_coef"] < 1.0).any():
            ax_norm.plot(step, run["clip_coef"], color=c, lw=0.8, ls="-.",
                         label=f"{label}: clip coef")
        ratio_s = _smooth(run["update_ratio"], n)
        ax_ratio.plot(step, run["update_ratio"], color=c, alpha=0.1, lw=0.5)
        ax_ratio.plot(step, ratio_s, color=c, lw=0.8, alpha=0.7)
        ax_ratio.step(step[wend], run["update_ratio_window_mean"][wend], where="pre", color=c,
                      lw=1.8, label=f"{label}: window mean")
        ends = step[wend]
        width = float(np.diff(ends)[0]) if len(ends) > 1 else 0.0
        for s in step[run["plateau"] == 1.0]:
            ax_ratio.axvspan(s - width, s, color=c, alpha=0.08, lw=0)
        for j, s in enumerate(step[run["fired"] == 1.0]):
            for ax in (ax_loss, ax_lr, ax_norm, ax_ratio):
                ax.axvline(s, color=c, ls="--", lw=1.0,
                           label=f"{label}: monitor fired" if ax is ax_ratio and j == 0 else None)
        smooth["loss"] += [loss_s, run["loss_window_mean"]]
        smooth["lr"].append(run["lr"])
        smooth["norm"] += [grad_s, param_s]
        smooth["ratio"] += [ratio_s, run["update_ratio_window_mean"]]
    _scale_to(ax_loss, *smooth["loss"])
    _scale_to(ax_lr, *smooth["lr"])
    _scale_to(ax_norm, *smooth["norm"])
    _scale_to(ax_ratio, *smooth["ratio"])
    ax_loss.set_ylabel("loss")
    ax_lr.set_ylabel("learning rate")
    ax_norm.set_ylabel("norm")
    ax_ratio.set_ylabel("||update|| / ||param||")
    ax_ratio.set_xlabel("step")
    for ax in (ax_loss, ax_lr, ax_norm, ax_ratio):
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title or "fusedopt ConvergenceMonitor: " + ", ".join(labels))
    fig.savefig(out, dpi=110)


__all__ = ["load_run", "plot_runs"]
