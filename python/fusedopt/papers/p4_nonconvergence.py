"""P4: Dereich, Graeber & Jentzen 2024 (arXiv 2407.08100): Adam and RMSprop with learning rates
bounded away from zero do not converge, even on a one-dimensional quadratic.

Problem (docs/algorithms.md#papers): ``theta`` in R, loss ``(theta - X)^2`` averaged over a batch
of J draws ``X ~ N(1, 1)``, so the mini-batch gradient is ``2 (theta - Xbar)`` with
``Xbar ~ N(1, 1/J)`` (drawn directly: the mean of J iid N(1, 1) draws is exactly N(1, 1/J)).
Many independent paths from ``theta_0 = 0``; the "spread" is the standard deviation of
``theta_t`` across paths. If the iterates converged, the spread would go to 0.

What to expect (a back-of-envelope linearisation, used only to state the bands): near the
minimum ``v ~ E g^2 ~ 4/J``, so Adam/RMSprop behave like SGD with the effective step
``lr / sqrt(v) = lr sqrt(J) / 2`` on gradient noise of variance ``4/J``; the stationary variance
of that linear recursion is ``lr / (2 sqrt(J))``, i.e.

    spread ~ sqrt(lr / 2) * J^(-1/4)          (0.071 at lr 1e-2, J = 1)

flat in t, proportional to sqrt(lr), and shrinking with J as J^(-1/4) (plain SGD would give
``sqrt(lr / J)``: 0.1 and J^(-1/2) -- so the J exponent tells Adam's normalisation apart).
With a vanishing learning rate ``lr_t = lr_0 / (1 + t / tau)`` the spread keeps falling, as
``sqrt(lr_t)`` once the path tracks its stationary law.

Every Adam/RMSprop path is one element of a parameter tensor: both algorithms are element-wise,
so each element is an independent path, and one fused step updates all of them.
"""
from __future__ import annotations

import math
import numpy as np
import torch

import fusedopt

from ._common import Claim, Report, Table, Timer, fmt, generator, in_band, linear_fit

NAME = "p4_nonconvergence"
TITLE = "P4: non-convergence of Adam and RMSprop with non-vanishing learning rates"

LRS = (1e-2, 10 ** -2.5, 1e-3)          # constant learning rates
BATCHES = (1, 4)                        # J
VANISH_LR0, VANISH_TAU = 1e-2, 1000.0   # lr_t = lr0 / (1 + t / tau)
VARIANTS = {                            # fusedopt.Adam arguments of each method
    "Adam": dict(variant="adam", betas=(0.9, 0.999)),
    "RMSprop": dict(variant="rmsprop", betas=(0.0, 0.99)),   # beta2 = torch's alpha
}
SEED = 4

# Bands of the verdicts, from the linearisation above and the sampling error of a std over
# P paths (relative standard error 1/sqrt(2P): 1.6% for 2,000 paths, 3.5% for 400).
SPREAD_BAND = (0.06, 0.08)      # spread at lr 1e-2, J = 1 (prediction 0.0707)
FLAT_BAND = (0.9, 1.1)          # spread over the last quarter / spread over the third quarter
SQRT_LR_BAND = (0.4, 0.6)       # slope of log spread vs log lr (prediction 0.5)
J_RATIO_BAND = (1.25, 1.6)      # spread(J=1) / spread(J=4) (prediction 4^(1/4) = 1.41)
# Vanishing lr: the quarter means fall one after the other, and the last quarter is below this
# fraction of the second (equilibrium tracking predicts sqrt(1.5/3.5) = 0.65 for tau << steps).
VANISH_MAX_RATIO = 0.8


def simulate(variant: str, *, paths: int, steps: int, record_every: int, backend: str,
             seed: int) -> dict:
    """Run every (lr, J) path set of one method; return the recorded spreads.

    One param group per learning rate (plus one with the vanishing schedule); each holds
    ``len(BATCHES) * paths`` elements, the first ``paths`` with J = 1, the next with J = 4.
    Returns ``{"t": steps recorded, "spread": {(lr or "vanishing", J): array}, "backend": str}``.
    """
    keys = [*LRS, "vanishing"]
    thetas = [torch.zeros(len(BATCHES) * paths) for _ in keys]
    groups = [{"params": [th], "lr": VANISH_LR0 if k == "vanishing" else k}
              for k, th in zip(keys, thetas)]
    opt = fusedopt.Adam(groups, eps=1e-8, backend=backend, **VARIANTS[variant])
    gen = generator(seed)
    noise_scale = torch.cat([torch.full((paths,), 1.0 / math.sqrt(j)) for j in BATCHES])
    n_rec = steps // record_every
    spread = {(k, j): np.zeros(n_rec) for k in keys for j in BATCHES}
    for t in range(1, steps + 1):
        for th in thetas:
            xbar = 1.0 + noise_scale * torch.randn(th.shape, generator=gen)
            th.grad = 2.0 * (th - xbar)
        opt.param_groups[-1]["lr"] = VANISH_LR0 / (1.0 + (t - 1) / VANISH_TAU)
        opt.step()
        if t % record_every == 0:
            r = t // record_every - 1
            for k, th in zip(keys, thetas):
                per_j = th.view(len(BATCHES), paths).std(dim=1)
                for j, s in zip(BATCHES, per_j.tolist()):
                    spread[(k, j)][r] = s
    return {"t": np.arange(1, n_rec + 1) * record_every, "spread": spread,
            "backend": opt.backend}


def _quarters(x: np.ndarray) -> list[float]:
    """Mean of the record over each quarter of the run."""
    n = len(x)
    return [float(x[i * n // 4:(i + 1) * n // 4].mean()) for i in range(4)]


def analyse(runs: dict[str, dict]) -> tuple[list[Claim], list[Table], dict]:
    """Claims and tables from the spreads of :func:`simulate` (one run per method)."""
    claims: list[Claim] = []
    rows = []
    data: dict = {}
    for variant, run in runs.items():
        sp = run["spread"]
        q = {key: _quarters(s) for key, s in sp.items()}
        final = {key: v[3] for key, v in q.items()}
        for key in sp:
            lr, j = key
            lr_txt = f"{VANISH_LR0:g}/(1+t/{VANISH_TAU:g})" if lr == "vanishing" else f"{lr:.3g}"
            rows.append([variant, lr_txt, j, *(fmt(v) for v in q[key][1:]),
                         fmt(q[key][3] / q[key][2])])
        s_main = final[(LRS[0], 1)]
        flat = [q[(lr, j)][3] / q[(lr, j)][2] for lr in LRS for j in BATCHES]
        slope, _ = linear_fit(np.log(LRS), np.log([final[(lr, 1)] for lr in LRS]))
        j_ratio = [final[(lr, BATCHES[0])] / final[(lr, BATCHES[1])] for lr in LRS]
        vq = q[("vanishing", 1)]
        v_ratio = vq[3] / vq[1]
        v_falls = vq[1] > vq[2] > vq[3] and v_ratio < VANISH_MAX_RATIO
        data[variant] = dict(spread_main=s_main, flat=flat, lr_slope=slope, j_ratio=j_ratio,
                             vanish_ratio=v_ratio, lr_ratio=final[(LRS[0], 1)] / final[(LRS[2], 1)])
        claims += [
            Claim("P4", f"{variant}, constant lr 1e-2, J = 1: the spread of theta stays at "
                  "about 0.07", f"{SPREAD_BAND[0]} <= spread <= {SPREAD_BAND[1]}",
                  f"spread {s_main:.4f} (linearisation predicts 0.0707)",
                  in_band(s_main, *SPREAD_BAND)),
            Claim("P4", f"{variant}, constant lr: the spread is flat over the steps (no "
                  "convergence)", f"last/third-quarter ratio in {FLAT_BAND} for every lr and J",
                  "ratios " + ", ".join(f"{r:.3f}" for r in flat),
                  all(in_band(r, *FLAT_BAND) for r in flat)),
            Claim("P4", f"{variant}: the spread scales like sqrt(lr)",
                  f"slope of log spread vs log lr in {SQRT_LR_BAND}",
                  f"slope {slope:.3f}; spread(1e-2)/spread(1e-3) = "
                  f"{data[variant]['lr_ratio']:.2f} (sqrt(10) = 3.16)",
                  in_band(slope, *SQRT_LR_BAND)),
            Claim("P4", f"{variant}: the spread shrinks with the batch size J",
                  f"spread(J=1)/spread(J=4) in {J_RATIO_BAND} for every lr (4^(1/4) = 1.41)",
                  "ratios " + ", ".join(f"{r:.3f}" for r in j_ratio),
                  all(in_band(r, *J_RATIO_BAND) for r in j_ratio)),
            Claim("P4", f"{variant}: with a vanishing lr the spread keeps falling",
                  "quarter means fall (2nd > 3rd > 4th), last/second-quarter ratio < "
                  f"{VANISH_MAX_RATIO}", f"{vq[1]:.4f} -> {vq[2]:.4f} -> {vq[3]:.4f}, ratio "
                  f"{v_ratio:.3f}", bool(v_falls)),
        ]
    table = Table("Spread of theta across paths (std), mean over each quarter of the run "
                  "(ratio: last / third quarter)",
                  ["method", "lr", "J", "2nd quarter", "3rd quarter", "last quarter", "ratio"],
                  rows)
    return claims, [table], data


def plot(runs: dict[str, dict]):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (variant, run) in zip(axes[:2], runs.items()):
        for (lr, j), s in run["spread"].items():
            label = "lr vanishing" if lr == "vanishing" else f"lr {lr:.2g}"
            ax.plot(run["t"], s, label=f"{label}, J={j}", lw=1.2,
                    ls="-" if j == 1 else "--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("step t")
        ax.set_ylabel("spread of theta_t across paths")
        ax.set_title(f"{variant}")
        ax.legend(fontsize=7, ncol=2)
    ax = axes[2]
    lrs = np.array(LRS)
    for variant, run in runs.items():
        for j in BATCHES:
            final = [_quarters(run["spread"][(lr, j)])[3] for lr in LRS]
            ax.plot(lrs, final, "o-", label=f"{variant}, J={j}")
    ax.plot(lrs, np.sqrt(lrs / 2), "k:", label="sqrt(lr/2)")
    ax.plot(lrs, np.sqrt(lrs / 2) / math.sqrt(2), "k-.", label="sqrt(lr/2) * 4^(-1/4)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("constant lr")
    ax.set_ylabel("stationary spread")
    ax.set_title("spread ~ sqrt(lr), shrinking with J")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def run(*, backend: str = "auto", fast: bool = False) -> Report:
    """Run P4 (full: 2,000 paths, 20,000 steps; fast: 2,000 paths, 4,000 steps).

    The cost is per step, not per path (one fused step updates every path of a group), so the
    fast run keeps all the paths and cuts the steps.
    """
    timer = Timer()
    paths, steps = 2000, (4000 if fast else 20000)
    record_every = steps // 200
    runs = {v: simulate(v, paths=paths, steps=steps, record_every=record_every,
                        backend=backend, seed=SEED + i) for i, v in enumerate(VARIANTS)}
    claims, tables, data = analyse(runs)
    seconds, load = timer.done()
    setup = [
        "theta in R, loss (theta - X)^2 averaged over J draws of X ~ N(1, 1) (the batch mean "
        "Xbar ~ N(1, 1/J) is drawn directly); theta_0 = 0; fp32.",
        f"{paths} independent paths per (method, lr, J) -- one element of a param tensor each "
        f"-- and {steps} steps; spread = std of theta_t across paths, recorded every "
        f"{record_every} steps.",
        "Adam: fusedopt.Adam(betas=(0.9, 0.999), eps=1e-8). RMSprop: fusedopt.Adam("
        "variant='rmsprop', betas=(0, 0.99), eps=1e-8) (torch.optim.RMSprop with alpha 0.99).",
        f"Constant lr in {{{', '.join(f'{lr:.3g}' for lr in LRS)}}}, J in {BATCHES}; vanishing "
        f"lr_t = {VANISH_LR0:g} / (1 + t/{VANISH_TAU:g}), set in the param group each step.",
        f"Seeds {SEED} (Adam) and {SEED + 1} (RMSprop).",
    ]
    notes = [
        "The bands come from a linearisation around the minimum (module docstring): spread "
        "~ sqrt(lr/2) J^(-1/4). The paper proves non-convergence; docs/algorithms.md quotes the "
        "value ~0.07 at lr 1e-2, J = 1, which the linearisation gives as 0.0707.",
        "Plain SGD would give spread sqrt(lr/J) (0.1 at lr 1e-2, J = 1, and a J ratio of 2), "
        "so the measured J ratio near 4^(1/4) checks Adam's normalisation, not just noise.",
    ]
    return Report(NAME, "p4", TITLE, setup, claims, tables, notes,
                  backend=runs["Adam"]["backend"], fast=fast, seconds=seconds, load=load,
                  figure=plot(runs), data=data)
